"""Image geometry and channel handling, on uint8 data.

Transforms run once at load time for in-memory datasets (so a train step only gathers and scales) and per example
for lazily read TFDS datasets. They stay in uint8: padding uses 0, which becomes the background value -1 after the
per-batch scaling x / 127.5 - 1.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from gan_jax.data.base import ImageOptions


def stored_channels(native: int, requested: int) -> int:
    """Channels kept in memory: 1 when either side is grey (1 -> 3 is repeated per batch, which is free compared with
    storing three copies), else 3."""
    if native not in (1, 3):
        raise ValueError(f"images with {native} channels are not supported (expected 1 or 3 after dropping alpha)")
    if requested == 0:
        return native
    return 1 if (native == 1 or requested == 1) else 3


def output_shape(height: int, width: int, native_channels: int, opts: ImageOptions) -> tuple[int, int, int]:
    """Per-example shape a dataset yields for images of this native size under `opts`."""
    if opts.resolution:
        height = width = opts.resolution
    return (height, width, opts.channels or native_channels)


def check_geometry(height: int, width: int, opts: ImageOptions, *, what: str) -> None:
    """Fails at load time, not at step 10_000, when "pad" would have to shrink an image."""
    if opts.resolution and opts.resize == "pad" and (height > opts.resolution or width > opts.resolution):
        raise ValueError(
            f"config.data.resize='pad' cannot fit {what} of {height}x{width} into resolution {opts.resolution}; "
            "use resize='resize' or a larger config.data.resolution"
        )


def _drop_alpha(x: np.ndarray) -> np.ndarray:
    """HWC or NHWC with 2 (grey+alpha) or 4 (RGBA) channels -> 1 or 3."""
    c = x.shape[-1]
    if c == 2:
        return x[..., :1]
    if c == 4:
        return x[..., :3]
    return x


def reduce_channels(x: np.ndarray, requested: int) -> np.ndarray:
    """Channel conversion that shrinks data (RGB -> grey by averaging); grey -> RGB is left to `expand_channels`."""
    x = _drop_alpha(x)
    if requested == 1 and x.shape[-1] == 3:
        # Plain mean of R, G and B, as documented for config.data.channels=1 (not luma weights).
        return np.round(x.astype(np.float32).mean(axis=-1, keepdims=True)).astype(np.uint8)
    return x


def expand_channels(x: np.ndarray, requested: int) -> np.ndarray:
    """Repeats a stored grey channel to 3 when 3 were requested (per batch, on uint8)."""
    if requested == 3 and x.shape[-1] == 1:
        return np.repeat(x, 3, axis=-1)
    return x


def _pad_amounts(size: int, target: int) -> tuple[int, int]:
    before = (target - size) // 2
    return before, target - size - before


def _resize_one(img: np.ndarray, resolution: int) -> np.ndarray:
    """Centre-crop to a square, then PIL bilinear resize (antialiased when shrinking) of one HWC uint8 image."""
    h, w, c = img.shape
    if h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        img = img[top : top + s, left : left + s]
    if img.shape[0] == resolution:
        return np.ascontiguousarray(img)
    pil = Image.fromarray(img[..., 0] if c == 1 else img)
    out = np.asarray(pil.resize((resolution, resolution), Image.Resampling.BILINEAR))
    return out.reshape(resolution, resolution, c)


def transform_image(img: np.ndarray, opts: ImageOptions) -> np.ndarray:
    """One HWC (or HW) uint8 image -> the stored layout: final size, `stored_channels` channels."""
    if img.ndim == 2:
        img = img[..., None]
    img = reduce_channels(img, opts.channels)
    if not opts.resolution:
        return img
    h, w, _ = img.shape
    if opts.resize == "pad":
        check_geometry(h, w, opts, what="an image")
        return np.pad(img, (_pad_amounts(h, opts.resolution), _pad_amounts(w, opts.resolution), (0, 0)))
    return _resize_one(img, opts.resolution)


def transform_images(x: np.ndarray, opts: ImageOptions) -> np.ndarray:
    """A whole NHWC uint8 array at once: vectorised padding, a loop over PIL for resizing."""
    x = reduce_channels(x, opts.channels)
    if not opts.resolution:
        return x
    _, h, w, c = x.shape
    if opts.resize == "pad":
        check_geometry(h, w, opts, what="images")
        if (h, w) == (opts.resolution, opts.resolution):
            return x
        return np.pad(x, ((0, 0), _pad_amounts(h, opts.resolution), _pad_amounts(w, opts.resolution), (0, 0)))
    if (h, w) == (opts.resolution, opts.resolution):
        return x
    out = np.empty((len(x), opts.resolution, opts.resolution, c), np.uint8)
    for i in range(len(x)):
        out[i] = _resize_one(x[i], opts.resolution)
    return out


def to_float(x: np.ndarray) -> np.ndarray:
    """uint8 0..255 -> float32 in [-1, 1], in place on the new array to avoid temporaries."""
    out = x.astype(np.float32)
    out *= np.float32(1.0 / 127.5)
    out -= np.float32(1.0)
    return out
