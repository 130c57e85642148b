"""FIR up- and down-sampling by 2 with StyleGAN2's [1, 3, 3, 1] filter, written as shifted sums.

StyleGAN2 (Karras et al. 2020) resamples with a separable low-pass filter instead of nearest-neighbour copies or
strided taps, which keeps aliasing out of the feature maps. The official code runs `upfirdn2d` (zero-insertion,
padding, 4x4 filtering); for a factor of 2 that reduces to two-tap and four-tap sums of neighbouring pixels per axis,
which is what this module computes with slices and zero padding: exact, differentiable, and only elementwise work, so
it costs next to nothing on a CPU, where a depthwise convolution with input dilation would be slow.

Per axis, with x zero outside the image:
  upsample:    out[2i] = (x[i-1] + 3 x[i]) / 4,   out[2i+1] = (3 x[i] + x[i+1]) / 4
  downsample:  out[i] = (x[2i-1] + 3 x[2i] + 3 x[2i+1] + x[2i+2]) / 8
  blur:        out[j] = (x[j-1] + 3 x[j] + 3 x[j+1] + x[j+2]) / 8      (same size; `downsample` is blur at even j)
These are the official `upsample2d(x, [1,3,3,1])` and `downsample2d(x, [1,3,3,1])` (padding 0) exactly, gain included.
The result of the first axis is `materialize`d, so that XLA:CPU runs two loops of 4 reads per pixel (forward and
backward) instead of fusing both axes into one loop of 16.

Where the convolutions run on oneDNN (conv.py's "onednn" formulation, the CPU default), the blur of a feature map (8
or more channels) is instead one oneDNN depthwise convolution with the 4x4 filter, as PyTorch runs it: in a StyleGAN2
step the shifted sums' zero padding and slicing became standalone copies that cost more than the filtering itself.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gan_jax.layers import onednn
from gan_jax.layers.conv import resolve_conv_impl
from gan_jax.layers.materialize import materialize

Array = jax.Array
_FILTER = (1.0 / 8.0, 3.0 / 8.0, 3.0 / 8.0, 1.0 / 8.0)
_ONEDNN_MIN_CHANNELS = 8  # below this (an image) the shifted sums are faster than a depthwise call


def _blur_taps(gain: float) -> onednn.Taps:
    return tuple(tuple(gain * a * b for b in _FILTER) for a in _FILTER)


def _blur_on_onednn(x: Array) -> bool:
    return x.dtype == jnp.float32 and x.shape[3] >= _ONEDNN_MIN_CHANNELS and resolve_conv_impl() == "onednn"


def _shift(x: Array, offset: int, axis: int) -> Array:
    """y[i] = x[i + offset] along `axis`, zero where i + offset falls outside."""
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (max(-offset, 0), max(offset, 0))
    x = jnp.pad(x, pad)
    start = max(offset, 0)
    return jax.lax.slice_in_dim(x, start, start + n, axis=axis)


def _upsample_axis(x: Array, axis: int) -> Array:
    even = 0.25 * _shift(x, -1, axis) + 0.75 * x
    odd = 0.75 * x + 0.25 * _shift(x, 1, axis)
    out = jnp.stack([even, odd], axis=axis + 1)  # interleave: (..., n, 2, ...) -> (..., 2n, ...)
    return out.reshape(x.shape[:axis] + (2 * x.shape[axis],) + x.shape[axis + 1 :])


def _blur_axis(x: Array, axis: int) -> Array:
    return (_shift(x, -1, axis) + 3.0 * x + 3.0 * _shift(x, 1, axis) + _shift(x, 2, axis)) / 8.0


def upsample2d(x: Array) -> Array:
    """NHWC -> (N, 2H, 2W, C): zero-insertion followed by the [1, 3, 3, 1] filter with gain 4 (bilinear-like)."""
    return _upsample_axis(materialize(_upsample_axis(x, 1), backward=True), 2)


def blur2d(x: Array) -> Array:
    """The [1, 3, 3, 1] filter (unit gain) at every pixel, aligned so that `downsample2d` = blur at even pixels.

    Before a stride-2 convolution it gives StyleGAN2's filtered downsampling convolution: blur then stride-2 taps
    equals stride-2 sampling of (convolution then blur), since the two stride-1 filters commute.
    """
    if _blur_on_onednn(x):
        return onednn.depthwise(x, _blur_taps(1.0), 1, 2)
    return _blur_axis(materialize(_blur_axis(x, 1), backward=True), 2)


def blur2d_cropped(x: Array, height: int, width: int, gain: float = 1.0) -> Array:
    """`gain * blur2d(x)[:, :height, :width]`; on oneDNN, where x is square and the crop square and at most 2 pixels,
    the crop is the filter's own smaller padding, so the pixels cut away are never computed."""
    pad_hi = height - x.shape[1] + 2  # the filter's output size is H + 1 + pad_hi - 3
    if height == width and x.shape[1] == x.shape[2] and 0 <= pad_hi <= 2 and _blur_on_onednn(x):
        return onednn.depthwise(x, _blur_taps(gain), 1, pad_hi)
    return gain * blur2d(x)[:, :height, :width]


def downsample2d(x: Array) -> Array:
    """NHWC (even H, W) -> (N, H/2, W/2, C): the [1, 3, 3, 1] filter then every second pixel."""
    if x.shape[1] % 2 or x.shape[2] % 2:
        raise ValueError(f"downsample2d needs an even height and width, got {x.shape[1]}x{x.shape[2]}")
    return blur2d(x)[:, ::2, ::2, :]
