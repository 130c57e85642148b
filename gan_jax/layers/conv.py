"""2-D convolution and transposed convolution with PyTorch semantics, and a formulation that is fast on XLA:CPU.

Why this module exists: XLA's CPU backend has no fast kernel for a convolution with input ("lhs"/base) dilation, and
that is what autodiff makes of strided convolutions. The input gradient of a stride-s convolution is a convolution
of the output gradient dilated by s, and a transposed convolution is itself such a convolution, so its weight
gradient is one too. On a 2-core CPU the weight gradient of a DCGAN generator layer takes ~700 ms this way against
~12 ms for its forward pass, which makes a whole GAN step ~10x slower than PyTorch.

The "fast" formulation has the same math and never dilates an input; both ops use `jax.custom_jvp` rules, so
reverse mode (the transpose of the tangent), forward mode and any order of differentiation (gradient penalties)
stay exact and dilation-free:

* A stride-s transposed convolution is computed per output phase (the pixels (s*m + r, s*n + q) for fixed (r, q)):
  each phase is a stride-1 convolution with the sub-kernel K[a0::s, b0::s] of the taps that reach it, and the
  phases are interleaved (sub-pixel convolution, depth-to-space). Its input gradient is then stride-1 convolutions
  too. Its kernel tangent is written as a convolution whose transpose is the weight gradient of a *strided*
  convolution, conv(cotangent, x, rhs_dilation=s), which dilates the filter operand and is fast.
* A stride-s convolution keeps its plain forward pass and plain weight gradient (that same fast form); its input
  tangent is the convolution rewritten over the input phases x[r::s, q::s] (space-to-depth), whose transpose is
  the phase form of the transposed convolution above.

Each phase form comes in two variants: "split" (s*s convolutions with exactly the taps needed) and "merged" (one
convolution with s*s times the channels on the phase side and the kernel zero-padded to a multiple of s). Merged
is faster when that side has few channels, e.g. the RGB image of a generator's last or a discriminator's first
layer. A transposed convolution of a 1x1 map (DCGAN's first layer) is a single matrix product.

On the fast path every convolution's input also goes through `materialize` (materialize.py), an exact identity that
stops XLA:CPU from recomputing the previous layer's elementwise arithmetic inside the batch/channel transpose it makes
for the weight gradient (such a fused transpose runs about 3.5x slower than a copy of the stored activation).

A third formulation, "onednn" (onednn.py), leaves XLA's convolution kernel out: every convolution (but those of an
image, at most 16 input channels, where the merged form above is faster), its input gradient (which is also the
transposed convolution) and its weight gradient run as oneDNN's primitives, the
kernels PyTorch uses on CPUs, called from the compiled program through XLA's FFI. XLA:CPU's own kernel runs the large
strided layers about 20% slower than oneDNN's, and those layers are most of a GAN step. It needs a library that gan_jax
compiles once per machine; where that cannot be done, "fast" is the CPU formulation.

Layout: activations are NHWC, kernels HWIO `(kh, kw, in, out)`. `impl="auto"` picks "onednn" on the CPU backend
(or "fast" without the library) and "xla" (the plain `lax.conv_general_dilated` formulation, which GPUs and TPUs run
well) elsewhere, at trace time. `set_conv_impl` / `conv_impl` override "auto" process-wide, e.g. to benchmark or
test one path. Every formulation has the same parameters, so checkpoints move between them.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from gan_jax.layers import onednn
from gan_jax.layers.lax_conv import Padding1D, conv_nhwc
from gan_jax.layers.materialize import materialize

Array = jax.Array

_IMPLS = ("auto", "xla", "fast", "onednn")
_override: str | None = None

__all__ = [
    "Conv2D",
    "ConvTranspose2D",
    "conv2d",
    "conv_impl",
    "conv_transpose2d",
    "get_conv_impl",
    "resolve_conv_impl",
    "set_conv_impl",
]


# ----------------------------------------------------------------------------------------------------------------------
# Choosing the formulation.


def _check_impl(impl: str) -> None:
    if impl not in _IMPLS:
        raise ValueError(f"conv impl must be one of {_IMPLS}, got {impl!r}")


def set_conv_impl(impl: str | None) -> None:
    """Sets what `impl="auto"` means process-wide: "xla", "fast", "onednn", or "auto"/None for the backend default.

    The choice is read when a function is traced, so set it before `jax.jit` traces the model: a function that was
    already compiled keeps the formulation it was traced with. Explicit `impl=` arguments win over it.
    """
    global _override
    if impl is not None:
        _check_impl(impl)
    _override = None if impl in (None, "auto") else impl


def get_conv_impl() -> str:
    """The process-wide setting made by `set_conv_impl` / `conv_impl`: "xla", "fast", "onednn" or "auto"."""
    return _override or "auto"


@contextlib.contextmanager
def conv_impl(impl: str | None) -> Iterator[None]:
    """Context manager form of `set_conv_impl`; restores the previous setting on exit. Not thread-safe."""
    previous = _override
    set_conv_impl(impl)
    try:
        yield
    finally:
        set_conv_impl(previous)


def resolve_conv_impl(impl: str = "auto") -> Literal["xla", "fast", "onednn"]:
    """The formulation `impl` stands for now: an explicit choice, else the override, else the backend's default:
    on CPU "onednn" where its library is available (`onednn.available()`) and "fast" where not, elsewhere "xla".

    An explicit "onednn" that cannot be used (another backend, or no library) is an error, not a silent fallback."""
    _check_impl(impl)
    if impl == "auto":
        impl = _override or "auto"
    if impl == "auto":
        if jax.default_backend() != "cpu":
            return "xla"
        return "onednn" if onednn.available() else "fast"
    if impl == "onednn":
        backend = jax.default_backend()
        available = backend == "cpu" and onednn.available()
        if not available:
            raise ValueError(
                f"conv impl 'onednn' needs the CPU backend and gan_jax's oneDNN library (backend: {backend}, "
                f"library available: {available}; see gan_jax/layers/onednn.py)"
            )
    return impl


# ----------------------------------------------------------------------------------------------------------------------
# Plain formulations: one lax.conv_general_dilated each.


def _conv(x: Array, kernel: Array, stride: int, padding: Sequence[Padding1D], lhs_dilation: int = 1) -> Array:
    return conv_nhwc(x, kernel, stride, padding, lhs_dilation)


def _conv_stride1(x: Array, kernel: Array, padding: Sequence[Padding1D]) -> Array:
    """Stride-1 convolution; negative padding crops the input first, which keeps the convolution a common shape."""
    crop = [(max(-lo, 0), max(-hi, 0)) for lo, hi in padding]
    if any(c != (0, 0) for c in crop):
        n, h, w, c = x.shape
        (t, b), (left, right) = crop
        x = lax.slice(x, (0, t, left, 0), (n, h - b, w - right, c))
    return _conv(x, kernel, 1, [(max(lo, 0), max(hi, 0)) for lo, hi in padding])


def _transposed_padding(kernel_size: int, padding: int, output_padding: int) -> Padding1D:
    """Padding of the dilated input that makes a stride-1 convolution with the flipped kernel the transpose."""
    return kernel_size - 1 - padding, kernel_size - 1 - padding + output_padding


def _transposed_hw(x: Array, kernel: Array, stride: int, padding: int, output_padding: int) -> tuple[int, int]:
    """(height, width) of a transposed convolution's output (PyTorch's ConvTranspose2d formula, dilation 1)."""
    size = lambda n, k: (n - 1) * stride - 2 * padding + k + output_padding  # noqa: E731
    return size(x.shape[1], kernel.shape[0]), size(x.shape[2], kernel.shape[1])


def _conv_transpose_xla(x: Array, kernel: Array, stride: int, padding: int, output_padding: int) -> Array:
    """Transposed convolution as a convolution of the input dilated by `stride` (slow on XLA:CPU for stride > 1)."""
    kh, kw = kernel.shape[:2]
    pads = [_transposed_padding(kh, padding, output_padding), _transposed_padding(kw, padding, output_padding)]
    return _conv(x, jnp.flip(kernel, (0, 1)), 1, pads, lhs_dilation=stride)


# ----------------------------------------------------------------------------------------------------------------------
# Phase (space-to-depth / depth-to-space) formulations. Each op has two: "split", s*s stride-1 convolutions with
# exactly the needed taps, and "merged", one stride-1 convolution with s*s times the channels on one side (the kernel
# zero-padded to a multiple of s). Merged is faster when that side has few channels (an RGB image), split otherwise.

# At most this many channels on the phase side (input of a convolution, output of a transposed one) -> merged form.
_MERGE_MAX_CHANNELS = 16


def _phase_taps(phase: int, kernel_size: int, stride: int, padding: int) -> tuple[int, int, int]:
    """(first tap a0, tap count, offset c) of the kernel taps a = a0 + stride*j linking input and output phases.

    Tap a connects input row i and output row o when i = stride*o + a - padding, so it touches input rows of phase
    i mod stride = r exactly when a = (r + padding) mod stride, and then i // stride = o + j - c. The same taps serve
    the transposed convolution, where r is the phase of the *output* row.
    """
    a0 = (phase + padding) % stride
    taps = max(0, -(-(kernel_size - a0) // stride))
    return a0, taps, (phase + padding - a0) // stride


def _conv_split(x: Array, kernel: Array, stride: int, padding: int) -> Array:
    """Strided convolution as the sum over input phases x[r::s, q::s] of stride-1 convolutions with K[a0::s, b0::s].

    Its transpose is `_conv_transpose_split` (stride-1 convolutions whose outputs are no larger than their inputs,
    the shapes XLA:CPU's fast kernels take).
    """
    n, h, w, c = x.shape
    kh, kw = kernel.shape[:2]
    ho, wo = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    hs, ws = -(-h // stride), -(-w // stride)
    x = jnp.pad(x, ((0, 0), (0, hs * stride - h), (0, ws * stride - w), (0, 0)))
    x = x.reshape(n, hs, stride, ws, stride, c)
    out = None
    for r in range(stride):
        a0, ja, ca = _phase_taps(r, kh, stride, padding)
        for q in range(stride):
            b0, jb, cb = _phase_taps(q, kw, stride, padding)
            if ja == 0 or jb == 0:
                continue
            pads = [(ca, ho + ja - 1 - ca - hs), (cb, wo + jb - 1 - cb - ws)]
            y = _conv_stride1(x[:, :, r, :, q, :], kernel[a0::stride, b0::stride], pads)
            out = y if out is None else out + y
    if out is None:  # every tap misses the input (a kernel smaller than the stride, offset past it)
        out = jnp.zeros((n, ho, wo, kernel.shape[3]), jnp.result_type(x, kernel))
    return out


def _conv_transpose_split(x: Array, kernel: Array, stride: int, padding: int, output_padding: int) -> Array:
    """Transposed convolution as stride*stride stride-1 convolutions, one per output phase, interleaved.

    Output row o = stride*m + r receives x[m + c - j] * K[a0 + stride*j]; flipping the sub-kernel turns that into
    a correlation with padding (taps - 1 - c) in front. Every phase is computed on ceil(out/stride) rows so the
    phases stack into (m, r) and reshape to the interleaved output, cropped to the requested size.
    """
    n, h, w, _ = x.shape
    kh, kw, _, cout = kernel.shape
    ho, wo = _transposed_hw(x, kernel, stride, padding, output_padding)
    mh, mw = -(-ho // stride), -(-wo // stride)
    rows = []
    for r in range(stride):
        a0, ja, ca = _phase_taps(r, kh, stride, padding)
        cols = []
        for q in range(stride):
            b0, jb, cb = _phase_taps(q, kw, stride, padding)
            if ja == 0 or jb == 0:
                cols.append(jnp.zeros((n, mh, mw, cout), jnp.result_type(x, kernel)))
                continue
            sub = jnp.flip(kernel[a0::stride, b0::stride], (0, 1))
            pads = [(ja - 1 - ca, mh - h + ca), (jb - 1 - cb, mw - w + cb)]
            cols.append(_conv_stride1(x, sub, pads))
        rows.append(jnp.stack(cols, axis=3))  # (n, mh, mw, q, cout)
    y = jnp.stack(rows, axis=2).reshape(n, mh * stride, mw * stride, cout)  # (n, mh, r, mw, q, cout) interleaved
    return y[:, :ho, :wo, :]


def _merged_kernel(kernel: Array, stride: int, phases_in: bool) -> Array:
    """Kernel zero-padded to (s*A, s*B) taps and folded to (A, B, s*s*in, out), or (A, B, in, s*s*out)."""
    kh, kw, cin, cout = kernel.shape
    ka, kb = -(-kh // stride), -(-kw // stride)
    k = jnp.pad(kernel, ((0, ka * stride - kh), (0, kb * stride - kw), (0, 0), (0, 0)))
    k = k.reshape(ka, stride, kb, stride, cin, cout)
    if phases_in:
        return k.transpose(0, 2, 1, 3, 4, 5).reshape(ka, kb, stride * stride * cin, cout)
    return k.transpose(0, 2, 4, 1, 3, 5).reshape(ka, kb, cin, stride * stride * cout)


def _conv_merged(x: Array, kernel: Array, stride: int, padding: int) -> Array:
    """Strided convolution as one stride-1 convolution of the padded input folded to s*s times the channels."""
    n, h, w, c = x.shape
    kh, kw = kernel.shape[:2]
    ka, kb = -(-kh // stride), -(-kw // stride)
    ho, wo = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    hp, wp = stride * (ho + ka - 1), stride * (wo + kb - 1)  # padded extent the output needs; crops any excess
    pads = [(0, 0, 0), (padding, hp - h - padding, 0), (padding, wp - w - padding, 0), (0, 0, 0)]
    x = lax.pad(x, jnp.zeros((), x.dtype), pads)
    x = x.reshape(n, hp // stride, stride, wp // stride, stride, c).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(n, hp // stride, wp // stride, stride * stride * c)
    return _conv(x, _merged_kernel(kernel, stride, phases_in=True), 1, [(0, 0), (0, 0)])


def _conv_transpose_merged(x: Array, kernel: Array, stride: int, padding: int, output_padding: int) -> Array:
    """Transposed convolution as one stride-1 convolution to s*s times the channels, unfolded (depth-to-space)."""
    n, h, w, _ = x.shape
    kh, kw, _, cout = kernel.shape
    ka, kb = -(-kh // stride), -(-kw // stride)
    ho, wo = _transposed_hw(x, kernel, stride, padding, output_padding)
    uh, uw = -(-(ho + padding) // stride), -(-(wo + padding) // stride)  # rows of the uncropped output / stride
    k = jnp.flip(_merged_kernel(kernel, stride, phases_in=False), (0, 1))
    y = _conv_stride1(x, k, [(ka - 1, uh - h), (kb - 1, uw - w)])
    y = y.reshape(n, uh, uw, stride, stride, cout).transpose(0, 1, 3, 2, 4, 5)
    y = y.reshape(n, uh * stride, uw * stride, cout)
    return y[:, padding : padding + ho, padding : padding + wo, :]


def _conv_phase_form(x: Array, kernel: Array, stride: int, padding: int) -> Array:
    merged = x.shape[3] <= _MERGE_MAX_CHANNELS
    return (_conv_merged if merged else _conv_split)(x, kernel, stride, padding)


def _conv_transpose_phase_form(x: Array, kernel: Array, stride: int, padding: int, output_padding: int) -> Array:
    merged = kernel.shape[3] <= _MERGE_MAX_CHANNELS
    return (_conv_transpose_merged if merged else _conv_transpose_split)(x, kernel, stride, padding, output_padding)


def _sum_tangents(y: Array, terms: list[Array]) -> Array:
    return functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(y)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _conv_fast(x: Array, kernel: Array, stride: int, padding: int) -> Array:
    """Plain strided convolution whose input tangent (hence input gradient) goes through a phase form."""
    return _conv(x, kernel, stride, [(padding, padding)] * 2)


def _conv_fast_jvp(stride: int, padding: int, primals: tuple[Array, Array], tangents: tuple[Any, Any]):
    x, kernel = primals
    x_dot, kernel_dot = tangents
    y = _conv_fast(x, kernel, stride, padding)
    terms = []
    if not isinstance(x_dot, SymbolicZero):
        terms.append(_conv_phase_form(x_dot, kernel, stride, padding))
    if not isinstance(kernel_dot, SymbolicZero):
        # The weight gradient of a strided convolution dilates the kernel-shaped operand, not the input: fast as is.
        terms.append(_conv(x, kernel_dot, stride, [(padding, padding)] * 2))
    return y, _sum_tangents(y, terms)


_conv_fast.defjvp(_conv_fast_jvp, symbolic_zeros=True)


def _conv_transpose_kernel_tangent(x: Array, kernel: Array, stride: int, padding: int, output_padding: int) -> Array:
    """The transposed convolution as a function of its kernel, written so that its transpose is a fast weight gradient.

    It is a convolution of the kernel, treated as an image with batch `out` and features `in`, with the input
    (spatially reversed) as the filter, dilated by the stride, giving an output with batch `n` in the feature slot.
    Its transpose with respect to the kernel, which is what reverse mode runs, is then
    conv(cotangent, input, rhs_dilation=stride): the weight gradient of a strided convolution, the form that
    XLA:CPU runs fast (it dilates the filter operand, not the input).
    """
    _, h, w, _ = x.shape
    pad_h, pad_w = stride * (h - 1) - padding, stride * (w - 1) - padding
    return lax.conv_general_dilated(
        kernel,
        jnp.flip(x, (1, 2)),
        window_strides=(1, 1),
        padding=((pad_h, pad_h + output_padding), (pad_w, pad_w + output_padding)),
        rhs_dilation=(stride, stride),
        dimension_numbers=("HWCN", "OHWI", "CHWN"),
    )


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _conv_transpose_fast(x: Array, kernel: Array, stride: int, padding: int, output_padding: int) -> Array:
    """Strided transposed convolution in a phase form, with its weight gradient from `_conv_transpose_kernel_tangent`.

    (The merged form's own weight gradient is a convolution XLA:CPU runs slowly, and the split form's is s*s
    convolutions with few output channels where the output is an image; one dilated-filter convolution beats both.)
    """
    return _conv_transpose_phase_form(x, kernel, stride, padding, output_padding)


def _conv_transpose_fast_jvp(
    stride: int, padding: int, output_padding: int, primals: tuple[Array, Array], tangents: tuple[Any, Any]
):
    x, kernel = primals
    x_dot, kernel_dot = tangents
    y = _conv_transpose_fast(x, kernel, stride, padding, output_padding)
    terms = []
    if not isinstance(x_dot, SymbolicZero):
        terms.append(_conv_transpose_phase_form(x_dot, kernel, stride, padding, output_padding))
    if not isinstance(kernel_dot, SymbolicZero):
        terms.append(_conv_transpose_kernel_tangent(x, kernel_dot, stride, padding, output_padding))
    return y, _sum_tangents(y, terms)


_conv_transpose_fast.defjvp(_conv_transpose_fast_jvp, symbolic_zeros=True)


def _conv_transpose_from_1x1(x: Array, kernel: Array, padding: int, output_padding: int) -> Array:
    """Transposed convolution of a 1x1 map (DCGAN's first layer): an outer product, i.e. one matrix product."""
    y = jnp.einsum("ni,abio->nabo", x[:, 0, 0, :], kernel)
    crop = (-padding, output_padding - padding, 0)  # negative edge padding crops
    return lax.pad(y, jnp.zeros((), y.dtype), [(0, 0, 0), crop, crop, (0, 0, 0)])


# ----------------------------------------------------------------------------------------------------------------------
# Public functions.


def _check_args(x: Array, kernel: Array, stride: int, padding: int) -> None:
    if x.ndim != 4 or kernel.ndim != 4:
        raise ValueError(f"expected NHWC input and HWIO kernel, got shapes {x.shape} and {kernel.shape}")
    if x.shape[3] != kernel.shape[2]:
        raise ValueError(f"input has {x.shape[3]} channels but the kernel expects {kernel.shape[2]}: {kernel.shape}")
    if stride < 1 or padding < 0:
        raise ValueError(f"need stride >= 1 and padding >= 0, got stride={stride}, padding={padding}")


def _promote(x: Array, kernel: Array) -> tuple[Array, Array]:
    dtype = jnp.result_type(x, kernel)
    return x.astype(dtype), kernel.astype(dtype)


def conv2d(x: Array, kernel: Array, stride: int = 1, padding: int = 0, impl: str = "auto") -> Array:
    """PyTorch `Conv2d` (cross-correlation) on NHWC `x` with HWIO `kernel` of shape (kh, kw, in, out).

    Zero padding of `padding` on every side, output size (H + 2*padding - kh) // stride + 1:
    y[n, o1, o2, c_out] = sum over (a, b, c) of x[n, s*o1 - p + a, s*o2 - p + b, c] * kernel[a, b, c, c_out].

    PyTorch correspondence (x_nchw = x.permute(0, 3, 1, 2)): equal to `torch.nn.functional.conv2d(x_nchw, w,
    stride=stride, padding=padding)` with `w = kernel.permute(3, 2, 0, 1)`, PyTorch's Conv2d weight being
    (out, in, kh, kw); to copy a PyTorch weight use `kernel = w.permute(2, 3, 1, 0)`. No bias here.
    `impl`: "xla", "fast", "onednn" or "auto" (see the module docstring).
    """
    _check_args(x, kernel, stride, padding)
    x, kernel = _promote(x, kernel)
    impl = resolve_conv_impl(impl)
    if impl == "xla":
        return _conv(x, kernel, stride, [(padding, padding)] * 2)
    if impl == "onednn" and x.dtype == jnp.float32 and x.shape[3] > _MERGE_MAX_CHANNELS:
        # An image input (few channels) stays on the XLA path, whose merged form is faster there (DCGAN's first
        # layer, forward and both gradients at batch 128: 9.7 ms against 15.2 with oneDNN; benchmarks/conv_speed.py).
        return onednn.conv(x, kernel, stride, padding)
    x = materialize(x)
    if stride == 1:
        # Stride 1 needs nothing else: its input gradient is a stride-1 convolution too.
        return _conv(x, kernel, stride, [(padding, padding)] * 2)
    return _conv_fast(x, kernel, stride, padding)


def conv_transpose2d(
    x: Array, kernel: Array, stride: int = 1, padding: int = 0, output_padding: int = 0, impl: str = "auto"
) -> Array:
    """PyTorch `ConvTranspose2d` on NHWC `x` with HWIO `kernel` of shape (kh, kw, in, out).

    Output size (H - 1)*stride - 2*padding + kh + output_padding. It is the adjoint (the input gradient) of
    `conv2d(., kernel.swapaxes(2, 3), stride, padding)`, i.e. of the convolution from `out` back to `in` channels
    with the same taps: y[n, s*i - p + a, s*j - p + b, o] += x[n, i, j, c] * kernel[a, b, c, o].

    PyTorch correspondence (x_nchw = x.permute(0, 3, 1, 2)): equal to `torch.nn.functional.conv_transpose2d(
    x_nchw, w, stride=stride, padding=padding, output_padding=output_padding)` with `w = kernel.permute(2, 3, 0, 1)`,
    PyTorch's ConvTranspose2d weight being (in, out, kh, kw); to copy a PyTorch weight use
    `kernel = w.permute(2, 3, 0, 1)` as well (the permutation is its own inverse). Neither side flips the kernel.
    `output_padding` adds rows/columns at the bottom/right and must be smaller than `stride`, as in PyTorch.
    `impl`: "xla", "fast", "onednn" or "auto" (see the module docstring).
    """
    _check_args(x, kernel, stride, padding)
    if not 0 <= output_padding < stride:
        raise ValueError(f"output_padding must be in [0, stride), got {output_padding} with stride {stride}")
    x, kernel = _promote(x, kernel)
    impl = resolve_conv_impl(impl)
    if impl == "xla":
        return _conv_transpose_xla(x, kernel, stride, padding, output_padding)
    if x.shape[1] == 1 and x.shape[2] == 1:
        return _conv_transpose_from_1x1(materialize(x), kernel, padding, output_padding)
    if impl == "onednn" and x.dtype == jnp.float32:
        out_shape = (x.shape[0], *_transposed_hw(x, kernel, stride, padding, output_padding), kernel.shape[3])
        return onednn.conv_backward_data(x, kernel.swapaxes(2, 3), stride, padding, out_shape)
    x = materialize(x)
    if stride == 1:
        # A stride-1 transposed convolution is a plain convolution with the flipped kernel: no dilation anywhere.
        return _conv_transpose_xla(x, kernel, 1, padding, output_padding)
    return _conv_transpose_fast(x, kernel, stride, padding, output_padding)


# ----------------------------------------------------------------------------------------------------------------------
# Flax modules.


def _kernel_shape(kernel_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(kernel_size, int):
        return kernel_size, kernel_size
    kh, kw = kernel_size
    return int(kh), int(kw)


class Conv2D(nn.Module):
    """`conv2d` plus bias, with params `kernel` (kh, kw, in, out) and `bias` (out,) whatever the `impl`.

    The parameter tree does not depend on `impl`, so checkpoints move between the CPU ("fast") and accelerator
    ("xla") formulations. `dtype` is the computation dtype (None: promote input and params); params are stored in
    `param_dtype`. The default kernel init is LeCun normal (variance scaling by fan-in); DCGAN passes N(0, 0.02).
    """

    features: int
    kernel_size: int | Sequence[int]
    stride: int = 1
    padding: int = 0
    use_bias: bool = True
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
    dtype: Any = None
    param_dtype: Any = jnp.float32
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kh, kw = _kernel_shape(self.kernel_size)
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = conv2d(x, kernel, self.stride, self.padding, impl=self.impl)
        return y if bias is None else y + bias


class ConvTranspose2D(nn.Module):
    """`conv_transpose2d` plus bias, with params `kernel` (kh, kw, in, out) and `bias` (out,) whatever the `impl`.

    See `conv_transpose2d` for how the kernel maps to PyTorch's ConvTranspose2d weight (in, out, kh, kw):
    `kernel = weight.permute(2, 3, 0, 1)`. `output_padding` adds rows/columns at the bottom/right, as in PyTorch.
    """

    features: int
    kernel_size: int | Sequence[int]
    stride: int = 1
    padding: int = 0
    output_padding: int = 0
    use_bias: bool = True
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
    dtype: Any = None
    param_dtype: Any = jnp.float32
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kh, kw = _kernel_shape(self.kernel_size)
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = conv_transpose2d(x, kernel, self.stride, self.padding, self.output_padding, impl=self.impl)
        return y if bias is None else y + bias
