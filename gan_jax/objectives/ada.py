"""Adaptive discriminator augmentation (ADA; Karras et al. 2020, "Training Generative Adversarial Networks with Limited
Data"): the stochastic 'bgc' augmentation pipeline applied to every image the discriminator sees.

With little data D memorises the real set and its feedback to G becomes useless. ADA augments real and fake images
alike (in D's and in G's loss), each transform applied to each image independently with probability p, and a controller
(not here) tunes p from an overfitting heuristic. As long as p stays below about 0.8 the transforms are "non-leaking":
the augmented distribution still determines the clean one, so G learns un-augmented images while D cannot memorise.
The augmentations must be differentiable in the images, so G's gradient flows through them.

The transforms, their order and their parameters follow the official pipeline (NVlabs/stylegan2-ada-pytorch,
training/augment.py, the 'bgc' preset), written for NHWC images in [-1, 1]:

- blit: xflip (mirror with probability 1/2 when it fires), rotate90 (k * 90 degrees, k uniform in 0..3), xint (an
  integer translation, uniform in +-0.125 of the width and height, rounded to whole pixels).
- geometric: isotropic scale (2 ** N(0, 0.2)), a rotation uniform in +-pi, anisotropic scale (2 ** N(0, 0.2) on x, its
  inverse on y), a second rotation, fractional translation (N(0, 0.125) of the width and height). Each rotation fires
  with p_rot = 1 - sqrt(1 - p), so that at least one of the pair fires with probability p.
- colour: brightness (+ N(0, 0.2)), contrast (* 2 ** N(0, 0.5)), luma flip (a Householder reflection that negates the
  luma component, with probability 1/2 when it fires), hue rotation (uniform in +-pi about the luma axis), saturation
  (the chroma scaled by 2 ** N(0, 1)). Single-channel images skip hue and saturation and use the luma average of the
  colour matrix, as the official code does.

The blit and geometric transforms compose into one 3x3 homogeneous matrix per image (mapping output pixel coordinates,
centred on the image, to input ones) and the colour transforms into one 4x4 matrix on (R, G, B, 1), so each image is
resampled once and recoloured once. An image none of whose transforms fired is returned bit-identical, so p = 0 is the
identity.

Deviation from the official code: the resampler is plain bilinear sampling of the original image with an unbounded
reflect extension, not the official 2x upsampling with a sym6 wavelet filter, bilinear sampling of an image
reflect-padded by less than its size (zeros beyond) and filtered downsampling. Fractional transforms therefore blur a
little more and minification aliases a little; the integer-only ones (xflip, rotate90, xint) land exactly on pixel
centres and are exact for square images (or any H, W of equal parity; rotate90 of other non-square images lands on
half pixels, as in the official geometry).
"""

from __future__ import annotations

import math
from collections.abc import Collection

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

GROUPS: dict[str, tuple[str, ...]] = {
    "b": ("xflip", "rotate90", "xint"),
    "g": ("scale", "rotate", "aniso", "xfrac"),
    "c": ("brightness", "contrast", "lumaflip", "hue", "saturation"),
}

# The official defaults (AugmentPipe's keyword arguments); the log-normal stds are in octaves (log base 2).
XINT_MAX = 0.125
SCALE_STD = 0.2
ROTATE_MAX = 1.0
ANISO_STD = 0.2
XFRAC_STD = 0.125
BRIGHTNESS_STD = 0.2
CONTRAST_STD = 0.5
HUE_MAX = 1.0
SATURATION_STD = 1.0

_GEOMETRIC_TRANSFORMS = GROUPS["b"] + GROUPS["g"]
_COLOR_TRANSFORMS = GROUPS["c"]


def parse_groups(groups: str) -> tuple[str, ...]:
    """The group letters in order, e.g. ("b", "g", "c") for "bgc"; () for "". An unknown or repeated letter raises
    ValueError, so a misspelt pipeline never silently trains without augmentation. Whatever the order given, the
    pipeline always applies blit and geometric transforms (one resampling) before colour."""
    letters = tuple(groups.strip())
    for i, letter in enumerate(letters):
        if letter not in GROUPS:
            raise ValueError(f"unknown ADA augmentation group {letter!r}; choose letters from {''.join(GROUPS)!r}")
        if letter in letters[:i]:
            raise ValueError(f"ADA augmentation group {letter!r} given twice in {groups!r}")
    return letters


# ----------------------------------------------------------------------------------------------------------------------
# Batched matrices: each entry is a scalar or a (B,) array; the result is (B, n, n) float32.


def _matrix(rows: list[list[Array | float]], batch: int) -> Array:
    return jnp.stack(
        [jnp.stack([jnp.broadcast_to(jnp.asarray(e, jnp.float32), (batch,)) for e in row], -1) for row in rows], -2
    )


def _matmul(a: Array, b: Array) -> Array:
    """Batched a @ b written as an elementwise product and sum, so it is exact for identities on every backend (a dot
    may run at reduced precision, e.g. TF32 on GPUs)."""
    return jnp.sum(a[..., :, :, None] * b[..., None, :, :], axis=-2)


def translate2d(tx: Array | float, ty: Array | float, batch: int) -> Array:
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], batch)


def scale2d(sx: Array | float, sy: Array | float, batch: int) -> Array:
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], batch)


def rotate2d(cos: Array | float, sin: Array | float, batch: int) -> Array:
    """Rotation given its cosine and sine (so quarter turns can be built from exact 0, +-1 entries)."""
    return _matrix([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]], batch)


def translate3d(t: Array | float, batch: int) -> Array:
    return _matrix([[1, 0, 0, t], [0, 1, 0, t], [0, 0, 1, t], [0, 0, 0, 1]], batch)


def scale3d(s: Array | float, batch: int) -> Array:
    return _matrix([[s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1]], batch)


def _luma_outer() -> Array:
    """v v^T for the unit luma axis v = (1, 1, 1, 0) / sqrt(3), as a 4x4 matrix."""
    v = jnp.array([1.0, 1.0, 1.0, 0.0], jnp.float32) / math.sqrt(3.0)
    return jnp.outer(v, v)


def rotate_luma(theta: Array, batch: int) -> Array:
    """Rotation by theta about the luma axis (Rodrigues' formula; exactly the identity for theta = 0)."""
    v = 1.0 / math.sqrt(3.0)
    c, s = jnp.cos(theta), jnp.sin(theta)
    d, o1, o2 = v * v * (1 - c) + c, v * v * (1 - c) - v * s, v * v * (1 - c) + v * s
    return _matrix([[d, o1, o2, 0], [o2, d, o1, 0], [o1, o2, d, 0], [0, 0, 0, 1]], batch)


# ----------------------------------------------------------------------------------------------------------------------
# Drawing the per-image matrices.


class _Draws:
    """All of a pipeline's random numbers from one uniform draw (a single threefry call: several make jit compile
    slowly on CPU), handed out in a fixed order: each transform always gets the same rows, so disabling one never
    changes another's draws."""

    def __init__(self, key: Array, batch: int, fires: int, uniforms: int, normals: int) -> None:
        u = jax.random.uniform(key, (fires + uniforms + normals, batch))
        self.fire = iter(u[:fires])
        self.uniform = iter(u[fires : fires + uniforms])
        # Standard normals by the inverse CDF, as jax.random.normal does, kept off -1 where erf_inv is infinite.
        tiny = float(np.nextafter(np.float32(-1.0), np.float32(0.0)))
        self.normal = iter(math.sqrt(2.0) * jax.lax.erf_inv(jnp.maximum(2.0 * u[fires + uniforms :] - 1.0, tiny)))

    def fires(self, prob: Array) -> Array:
        return next(self.fire) < prob

    def symmetric(self) -> Array:
        """Uniform in [-1, 1)."""
        return next(self.uniform) * 2.0 - 1.0


def geometric_matrix(
    key: Array,
    p: Array | float,
    batch: int,
    height: int,
    width: int,
    transforms: Collection[str] = _GEOMETRIC_TRANSFORMS,
) -> tuple[Array, Array]:
    """Draws the blit and geometric `transforms` for `batch` images of `height` x `width`: (the (B, 3, 3) matrices that
    map output pixel coordinates to input ones, whether any transform fired for each image (B,) bool). Coordinates are
    (x, y) = (column, row) in pixels, centred on the image; a transform that does not fire contributes an exact
    identity."""
    p = jnp.asarray(p, jnp.float32)
    draws = _Draws(key, batch, fires=8, uniforms=6, normals=4)
    fire = {name: draws.fires(p) for name in ("xflip", "rotate90", "xint", "scale", "aniso", "xfrac")}
    # The rotation is split into two around the anisotropic scale; each fires with p_rot, so one of them with p.
    p_rot = 1.0 - jnp.sqrt(jnp.clip(1.0 - p, 0.0, 1.0))
    fire_rot = (draws.fires(p_rot), draws.fires(p_rot))
    coin, quarter, tx, ty = next(draws.uniform), next(draws.uniform), draws.symmetric(), draws.symmetric()
    thetas = (draws.symmetric() * math.pi * ROTATE_MAX, draws.symmetric() * math.pi * ROTATE_MAX)
    z_scale, z_aniso, z_x, z_y = (next(draws.normal) for _ in range(4))

    g = jnp.broadcast_to(jnp.eye(3, dtype=jnp.float32), (batch, 3, 3))
    fired = jnp.zeros((batch,), bool)

    def rotation(i: int) -> None:
        nonlocal g, fired
        theta = jnp.where(fire_rot[i], thetas[i], 0.0)
        g = _matmul(g, rotate2d(jnp.cos(theta), jnp.sin(theta), batch))
        fired |= fire_rot[i]

    if "xflip" in transforms:
        flip = (coin < 0.5) & fire["xflip"]
        g = _matmul(g, scale2d(jnp.where(flip, -1.0, 1.0), 1.0, batch))
        fired |= fire["xflip"]
    if "rotate90" in transforms:
        k = jnp.where(fire["rotate90"], jnp.clip(jnp.floor(quarter * 4).astype(jnp.int32), 0, 3), 0)
        cos, sin = jnp.array([1.0, 0.0, -1.0, 0.0])[k], jnp.array([0.0, 1.0, 0.0, -1.0])[k]  # exact quarter turns
        g = _matmul(g, rotate2d(cos, sin, batch))
        fired |= fire["rotate90"]
    if "xint" in transforms:
        f = fire["xint"]
        sx = jnp.where(f, jnp.round(tx * XINT_MAX * width), 0.0)
        sy = jnp.where(f, jnp.round(ty * XINT_MAX * height), 0.0)
        g = _matmul(g, translate2d(-sx, -sy, batch))
        fired |= f
    if "scale" in transforms:
        s = jnp.where(fire["scale"], jnp.exp2(z_scale * SCALE_STD), 1.0)
        g = _matmul(g, scale2d(1.0 / s, 1.0 / s, batch))
        fired |= fire["scale"]
    if "rotate" in transforms:
        rotation(0)
    if "aniso" in transforms:
        s = jnp.where(fire["aniso"], jnp.exp2(z_aniso * ANISO_STD), 1.0)
        g = _matmul(g, scale2d(1.0 / s, s, batch))
        fired |= fire["aniso"]
    if "rotate" in transforms:
        rotation(1)
    if "xfrac" in transforms:
        f = fire["xfrac"]
        sx, sy = jnp.where(f, z_x * XFRAC_STD * width, 0.0), jnp.where(f, z_y * XFRAC_STD * height, 0.0)
        g = _matmul(g, translate2d(-sx, -sy, batch))
        fired |= f
    return g, fired


def color_matrix(
    key: Array, p: Array | float, batch: int, channels: int, transforms: Collection[str] = _COLOR_TRANSFORMS
) -> tuple[Array, Array]:
    """Draws the colour `transforms` for `batch` images: (the (B, 4, 4) matrices acting on (R, G, B, 1), whether any
    transform fired for each image (B,) bool). Hue and saturation are skipped for single-channel images."""
    p = jnp.asarray(p, jnp.float32)
    draws = _Draws(key, batch, fires=5, uniforms=2, normals=3)
    fire = {name: draws.fires(p) for name in _COLOR_TRANSFORMS}
    coin, theta = next(draws.uniform), draws.symmetric() * math.pi * HUE_MAX
    z_brightness, z_contrast, z_saturation = (next(draws.normal) for _ in range(3))

    eye = jnp.eye(4, dtype=jnp.float32)
    vv = _luma_outer()
    c = jnp.broadcast_to(eye, (batch, 4, 4))
    fired = jnp.zeros((batch,), bool)

    if "brightness" in transforms:
        b = jnp.where(fire["brightness"], z_brightness * BRIGHTNESS_STD, 0.0)
        c = _matmul(translate3d(b, batch), c)
        fired |= fire["brightness"]
    if "contrast" in transforms:
        s = jnp.where(fire["contrast"], jnp.exp2(z_contrast * CONTRAST_STD), 1.0)
        c = _matmul(scale3d(s, batch), c)
        fired |= fire["contrast"]
    if "lumaflip" in transforms:
        flip = ((coin < 0.5) & fire["lumaflip"]).astype(jnp.float32)
        c = _matmul(eye - 2.0 * vv * flip[:, None, None], c)  # Householder reflection: negates the luma component.
        fired |= fire["lumaflip"]
    if "hue" in transforms and channels > 1:
        c = _matmul(rotate_luma(jnp.where(fire["hue"], theta, 0.0), batch), c)
        fired |= fire["hue"]
    if "saturation" in transforms and channels > 1:
        s = jnp.where(fire["saturation"], jnp.exp2(z_saturation * SATURATION_STD), 1.0)
        # The official vv^T + (I - vv^T) s, written as I + (I - vv^T)(s - 1) on the colour block so s = 1 is exact.
        chroma = (eye - vv).at[3, 3].set(0.0)
        c = _matmul(eye + chroma * (s - 1.0)[:, None, None], c)
        fired |= fire["saturation"]
    return c, fired


# ----------------------------------------------------------------------------------------------------------------------
# Applying them.


def _reflect(i: Array, n: int) -> Array:
    """Integer index i mirrored into [0, n) without repeating the edge (numpy's 'reflect'), periodically."""
    if n == 1:
        return jnp.zeros_like(i)
    period = 2 * (n - 1)
    i = jnp.mod(i, period)
    return jnp.where(i >= n, period - i, i)


def apply_geometric(x: Array, g_inv: Array) -> Array:
    """Resamples NHWC images: out[b] at pixel centre q is x[b] at g_inv[b] @ q (centred (column, row) coordinates),
    bilinearly interpolated with reflect extension. Exact wherever the source lands on a pixel centre."""
    _, h, w, _ = x.shape
    cx, cy = (w - 1) / 2, (h - 1) / 2
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - cy, jnp.arange(w, dtype=jnp.float32) - cx, indexing="ij")
    g = g_inv.astype(jnp.float32)[:, :, :, None, None]  # (B, 3, 3, 1, 1) against (H, W) grids
    sx = g[:, 0, 0] * xs + g[:, 0, 1] * ys + g[:, 0, 2] + cx  # (B, H, W) source column
    sy = g[:, 1, 0] * xs + g[:, 1, 1] * ys + g[:, 1, 2] + cy
    x0, y0 = jnp.floor(sx), jnp.floor(sy)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
    c0, c1 = _reflect(x0, w), _reflect(x0 + 1, w)
    r0, r1 = _reflect(y0, h), _reflect(y0 + 1, h)
    b = jnp.arange(x.shape[0])[:, None, None]
    top = x[b, r0, c0] * (1 - fx) + x[b, r0, c1] * fx
    bottom = x[b, r1, c0] * (1 - fx) + x[b, r1, c1] * fx
    return (top * (1 - fy) + bottom * fy).astype(x.dtype)


def apply_color(x: Array, c: Array) -> Array:
    """Applies (B, 4, 4) colour matrices to NHWC images with 3 channels (the 3x4 affine part) or 1 channel (the
    official rule: the luma average of the rows, its colour part summed into one gain)."""
    channels = x.shape[-1]
    c = c.astype(jnp.float32)
    if channels == 3:
        out = jnp.sum(x[..., None, :] * c[:, None, None, :3, :3], axis=-1) + c[:, None, None, :3, 3]
    elif channels == 1:
        avg = jnp.mean(c[:, :3, :], axis=1)  # (B, 4)
        out = x * jnp.sum(avg[:, :3], axis=-1)[:, None, None, None] + avg[:, 3][:, None, None, None]
    else:
        raise ValueError(f"ADA colour transforms need 1 or 3 channels, got {channels}")
    return out.astype(x.dtype)


def augment(x: Array, p: Array | float, key: Array, groups: str = "bgc") -> Array:
    """Augments NHWC images `x` in [-1, 1] with the ADA `groups` ("b" blit, "g" geometric, "c" colour), each transform
    applied to each image independently with probability `p` (a traced scalar is fine), every random choice drawn from
    `key`; `groups` is static under jit. Differentiable in `x`; "" and p = 0 return `x` unchanged (bit-identical), and
    so does every image none of whose transforms fired."""
    names = parse_groups(groups)
    if not names:
        return x
    batch, height, width, channels = x.shape
    k_geometric, k_color = jax.random.split(key)
    geometric = tuple(t for name in ("b", "g") if name in names for t in GROUPS[name])
    if geometric:
        g_inv, fired = geometric_matrix(k_geometric, p, batch, height, width, geometric)
        x = jnp.where(fired[:, None, None, None], apply_geometric(x, g_inv), x)
    if "c" in names:
        c, fired = color_matrix(k_color, p, batch, channels)
        x = jnp.where(fired[:, None, None, None], apply_color(x, c), x)
    return x
