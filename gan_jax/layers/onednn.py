"""oneDNN's convolution kernels inside XLA:CPU programs, as three JAX primitives.

Why: on a CPU a GAN step is almost all convolution, and XLA:CPU's own convolution kernel (Eigen's) runs the large
strided layers about 20% slower than oneDNN, the library PyTorch uses (DCGAN's 16x16x128 -> 8x8x256 layer: 185 against
233 GFLOP/s on a 2-core AVX-512 CPU, `benchmarks/conv_speed.py`). XLA has a oneDNN convolution rewrite, but jaxlib's
wheels are built without it. So gan_jax compiles a small C++ file (`csrc/onednn_conv.cc`) against the oneDNN wheel
(`onednn-cpu-gomp`, GNU OpenMP threading) and JAX's FFI headers, once per machine into the cache directory
(`env.compilation_cache_dir`'s parent), and calls it from compiled programs with `jax.ffi`.

The three primitives are oneDNN's three convolution primitives, each bilinear in its two operands:
  conv(x, w)                  the forward convolution (PyTorch `conv2d` semantics, NHWC / HWIO)
  conv_backward_data(dy, w)   its input gradient, which is also the transposed convolution
  conv_backward_weights(x, dy) its kernel gradient
Each one's derivative with respect to either operand is one of the three again (the same pairs of bilinear identities
that `lax.conv_general_dilated` uses), so reverse and forward mode, to any order (gradient penalties), never leave
oneDNN. Under `vmap` they fall back to the plain XLA formulation.

A fourth primitive, `depthwise(x, taps, pad_lo, pad_hi)`, applies one fixed square filter to every channel alone (a
depthwise convolution, stride 1), as PyTorch's StyleGAN2 code runs its [1, 3, 3, 1] blur. It is linear in x, and
its transpose is the same primitive with the filter flipped and the paddings mirrored (k - 1 - pad).

Threads (`threads(mode)`, a trace-time setting, "openmp" outside it; the config key `onednn_threads` sets it for a
train step, "xla" by default): with "openmp" each convolution is one oneDNN call over every core, as PyTorch runs
it. XLA:CPU runs independent instructions at once, though, and a convolution's OpenMP team then shares the cores with
another's or with XLA's own fusions, and runs far slower than alone (benchmarks/onednn_time.py: BigGAN's
convolutions took 1.5 s per step in gan_jax against 1.0 s for the same calls in PyTorch). With "xla" the batch is
split into equal chunks, each a single-threaded oneDNN call, run on XLA's own intra-op threads (the FFI's thread
pool), so a convolution is ordinary work there and never oversubscribes the cores. Which is faster depends on the
step: "xla" where XLA has much else to run beside the convolutions (StyleGAN2 +18% steps/s, BigGAN +12%, SNGAN +5%),
"openmp" where a few large convolutions are the step (DCGAN, 8% faster with it). The depthwise blur keeps its OpenMP
team either way.

`available()` says whether the library could be built and loaded; `conv.py` uses these primitives on the CPU backend
when it is (impl "onednn", the CPU default), and the XLA "fast" formulation otherwise. `GAN_JAX_ONEDNN=0` turns them
off. Only float32 is supported; other dtypes take the XLA path.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from gan_jax import env, fileio
from gan_jax.layers.lax_conv import conv_nhwc

Array = jax.Array

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "onednn_conv.cc")
_TARGETS = {
    "fwd": "GanJaxOnednnConvFwd",
    "bwd_data": "GanJaxOnednnConvBwdData",
    "bwd_weights": "GanJaxOnednnConvBwdWeights",
    "depthwise": "GanJaxOnednnDepthwise",
}


# ----------------------------------------------------------------------------------------------------------------------
# Building and loading the library.


def _dirs() -> tuple[str, str, str]:
    """(oneDNN include dir, oneDNN lib dir, JAX FFI include dir) of this Python environment."""
    import jaxlib

    return (
        os.path.join(sys.prefix, "include"),
        os.path.join(sys.prefix, "lib"),
        os.path.join(os.path.dirname(jaxlib.__file__), "include"),
    )


def library_path() -> str:
    """Where the compiled library for this source, jaxlib and environment lives (built there on first use)."""
    import jaxlib.version

    with open(_SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read() + jaxlib.version.__version__.encode() + sys.prefix.encode()).hexdigest()
    root = os.path.dirname(env.compilation_cache_dir())
    return os.path.join(root, "onednn", f"onednn_conv-{digest[:16]}.so")


def _build(path: str) -> str:
    """Compiles the library into `path` (atomically) and returns `path`."""
    include, lib, ffi_include = _dirs()
    if not os.path.exists(os.path.join(include, "oneapi", "dnnl", "dnnl.hpp")):
        raise RuntimeError(f"oneDNN headers not found under {include}: pip install onednn-devel-cpu-gomp")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
    os.close(fd)
    cmd = [
        os.environ.get("CXX", "g++"),
        "-O2",
        "-std=c++17",
        "-shared",
        "-fPIC",
        "-fopenmp",
        f"-I{include}",
        f"-I{ffi_include}",
        _SOURCE,
        f"-L{lib}",
        "-ldnnl",
        f"-Wl,-rpath,{lib}",
        "-o",
        tmp,
    ]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"compiling {_SOURCE} failed:\n{' '.join(cmd)}\n{result.stderr[-2000:]}")
        os.replace(tmp, path)  # atomic: concurrent builders (test workers) each install a complete file
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


_registered: list[str] = []  # the library whose handlers JAX calls (registered once per process)


@functools.cache
def available() -> bool:
    """Whether the oneDNN primitives can be used: the library built (or found in the cache), loaded and registered
    with JAX for the CPU platform (`conv.resolve_conv_impl` also checks that the backend is the CPU).

    Failure is not an error: the reason is logged once and the XLA formulation is used instead."""
    if os.environ.get("GAN_JAX_ONEDNN", "1") == "0":
        return False
    try:
        path = library_path()
        # Test workers or runs started together: one compiles, the others wait.
        fileio.load_or_build(path, lambda: path if os.path.exists(path) else None, lambda: _build(path))
        if not _registered:
            library = ctypes.cdll.LoadLibrary(path)
            for target in _TARGETS.values():
                jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, target)), platform="cpu")
            _registered.append(path)
    except (OSError, RuntimeError, AttributeError) as e:
        logging.warning("gan_jax: oneDNN convolutions unavailable, using XLA's (%s)", e)
        return False
    return True


# ----------------------------------------------------------------------------------------------------------------------
# The primitives.


def _out_hw(h: int, k: int, stride: int, padding: int) -> int:
    return (h + 2 * padding - k) // stride + 1


conv_p = Primitive("gan_jax_onednn_conv")
conv_backward_data_p = Primitive("gan_jax_onednn_conv_backward_data")
conv_backward_weights_p = Primitive("gan_jax_onednn_conv_backward_weights")


THREADS = ("openmp", "xla")
_threads = "openmp"


@contextlib.contextmanager
def threads(mode: str) -> Iterator[None]:
    """Within the block, convolutions traced run their oneDNN calls on `mode`'s threads (see the module docstring):
    "openmp" (one OpenMP team per convolution) or "xla" (the batch in chunks over XLA's own threads)."""
    global _threads
    if mode not in THREADS:
        raise ValueError(f"oneDNN threads must be one of {THREADS}, got {mode!r}")
    saved, _threads = _threads, mode
    try:
        yield
    finally:
        _threads = saved


def conv(x: Array, w: Array, stride: int, padding: int) -> Array:
    """y = conv2d(x, w): NHWC float32 `x`, HWIO float32 `w`, the same stride and zero padding on both axes."""
    return _conv(x, w, stride, padding, _threads == "xla")


def conv_backward_data(dy: Array, w: Array, stride: int, padding: int, x_shape: tuple[int, ...]) -> Array:
    """The input gradient of `conv` for an input of `x_shape`; also the transposed convolution of `dy`."""
    return _conv_backward_data(dy, w, stride, padding, x_shape, _threads == "xla")


def conv_backward_weights(x: Array, dy: Array, stride: int, padding: int, w_shape: tuple[int, ...]) -> Array:
    """The kernel gradient of `conv` for a kernel of `w_shape`."""
    return _conv_backward_weights(x, dy, stride, padding, w_shape, _threads == "xla")


def _conv(x, w, stride, padding, xla_threads):
    return conv_p.bind(x, w, stride=stride, padding=padding, xla_threads=xla_threads)


def _conv_backward_data(dy, w, stride, padding, x_shape, xla_threads):
    return conv_backward_data_p.bind(
        dy, w, stride=stride, padding=padding, shape=tuple(x_shape), xla_threads=xla_threads
    )


def _conv_backward_weights(x, dy, stride, padding, w_shape, xla_threads):
    return conv_backward_weights_p.bind(
        x, dy, stride=stride, padding=padding, shape=tuple(w_shape), xla_threads=xla_threads
    )


def _conv_abstract(x, w, *, stride, padding, xla_threads):
    n, h, wd, _ = x.shape
    kh, kw, _, o = w.shape
    return jax.core.ShapedArray((n, _out_hw(h, kh, stride, padding), _out_hw(wd, kw, stride, padding), o), x.dtype)


def _shaped(a, b, *, shape, **_):
    return jax.core.ShapedArray(shape, a.dtype)


conv_p.def_abstract_eval(_conv_abstract)
conv_backward_data_p.def_abstract_eval(_shaped)
conv_backward_weights_p.def_abstract_eval(_shaped)


def _ffi_rule(target: str):
    lower = jax.ffi.ffi_lowering(target)

    def rule(ctx, a, b, *, stride, padding, xla_threads, shape=None):
        del shape  # the result's shape is in ctx.avals_out
        return lower(ctx, a, b, stride=np.int64(stride), pad=np.int64(padding), xla_threads=np.int64(xla_threads))

    return rule


mlir.register_lowering(conv_p, _ffi_rule(_TARGETS["fwd"]), platform="cpu")
mlir.register_lowering(conv_backward_data_p, _ffi_rule(_TARGETS["bwd_data"]), platform="cpu")
mlir.register_lowering(conv_backward_weights_p, _ffi_rule(_TARGETS["bwd_weights"]), platform="cpu")


def _xla_conv(x, w, stride, padding):
    return conv_nhwc(x, w, stride, [(padding, padding)] * 2)


def _eager(prim: Primitive):
    """Outside `jit`, run the primitive as a one-op compiled program (the lowering above)."""
    static = ("stride", "padding", "shape", "xla_threads")
    compiled = jax.jit(lambda a, b, **kw: prim.bind(a, b, **kw), static_argnames=static)
    prim.def_impl(lambda a, b, **kw: compiled(a, b, **kw))


for _p in (conv_p, conv_backward_data_p, conv_backward_weights_p):
    _eager(_p)


# Derivatives. Writing <a, b> for the sum of elementwise products, with y = conv(x, w):
#   <conv(x, w), g> = <x, conv_backward_data(g, w)> = <w, conv_backward_weights(x, g)>,
# from which each primitive's transpose with respect to either operand is another of the three.


def _aval_shape(a) -> tuple[int, ...]:
    return tuple(a.aval.shape)


def _conv_t_x(ct, x, w, *, stride, padding, xla_threads):
    return _conv_backward_data(ct, w, stride, padding, _aval_shape(x), xla_threads)


def _conv_t_w(ct, x, w, *, stride, padding, xla_threads):
    return _conv_backward_weights(x, ct, stride, padding, _aval_shape(w), xla_threads)


def _bwd_data_t_dy(ct, dy, w, *, stride, padding, shape, xla_threads):
    return _conv(ct, w, stride, padding, xla_threads)


def _bwd_data_t_w(ct, dy, w, *, stride, padding, shape, xla_threads):
    return _conv_backward_weights(ct, dy, stride, padding, _aval_shape(w), xla_threads)


def _bwd_weights_t_x(ct, x, dy, *, stride, padding, shape, xla_threads):
    return _conv_backward_data(dy, ct, stride, padding, _aval_shape(x), xla_threads)


def _bwd_weights_t_dy(ct, x, dy, *, stride, padding, shape, xla_threads):
    return _conv(x, ct, stride, padding, xla_threads)


ad.defbilinear(conv_p, _conv_t_x, _conv_t_w)
ad.defbilinear(conv_backward_data_p, _bwd_data_t_dy, _bwd_data_t_w)
ad.defbilinear(conv_backward_weights_p, _bwd_weights_t_x, _bwd_weights_t_dy)


# The depthwise convolution with a fixed filter.

depthwise_p = Primitive("gan_jax_onednn_depthwise")
Taps = tuple[tuple[float, ...], ...]


def depthwise(x: Array, taps: Taps, pad_lo: int, pad_hi: int) -> Array:
    """Each channel of NHWC float32 `x` correlated with the square filter `taps` (k rows of k), after `pad_lo` zeros
    before and `pad_hi` after it on both spatial axes: (N, H + pad_lo + pad_hi - k + 1, ...). 0 <= pads < k."""
    k = len(taps)
    if any(len(row) != k for row in taps) or not (0 <= pad_lo < k and 0 <= pad_hi < k):
        raise ValueError(f"depthwise: taps must be square and 0 <= pads < {k}, got {taps}, ({pad_lo}, {pad_hi})")
    return depthwise_p.bind(x, taps=tuple(tuple(float(t) for t in row) for row in taps), pad_lo=pad_lo, pad_hi=pad_hi)


def _depthwise_abstract(x, *, taps, pad_lo, pad_hi):
    n, h, w, c = x.shape
    grow = pad_lo + pad_hi - len(taps) + 1
    return jax.core.ShapedArray((n, h + grow, w + grow, c), x.dtype)


def _depthwise_xla(x, *, taps, pad_lo, pad_hi):
    kernel = jnp.broadcast_to(jnp.asarray(taps, x.dtype)[:, :, None, None], (len(taps), len(taps), 1, x.shape[3]))
    return conv_nhwc(x, kernel, 1, [(pad_lo, pad_hi)] * 2, feature_group_count=x.shape[3])


def _depthwise_transpose(ct, x, *, taps, pad_lo, pad_hi):
    k = len(taps)
    flipped = tuple(tuple(row[::-1]) for row in taps[::-1])
    return [depthwise(ct, flipped, k - 1 - pad_lo, k - 1 - pad_hi)]


depthwise_p.def_abstract_eval(_depthwise_abstract)
_depthwise_lower = jax.ffi.ffi_lowering(_TARGETS["depthwise"])
mlir.register_lowering(
    depthwise_p,
    lambda ctx, x, *, taps, pad_lo, pad_hi: _depthwise_lower(
        ctx, x, taps=np.asarray(taps, np.float32).ravel(), pad_lo=np.int64(pad_lo), pad_hi=np.int64(pad_hi)
    ),
    platform="cpu",
)
_depthwise_compiled = jax.jit(depthwise_p.bind, static_argnames=("taps", "pad_lo", "pad_hi"))
depthwise_p.def_impl(lambda x, **kw: _depthwise_compiled(x, **kw))
ad.deflinear2(depthwise_p, _depthwise_transpose)
batching.primitive_batchers[depthwise_p] = lambda args, dims, **kw: (
    jax.vmap(functools.partial(_depthwise_xla, **kw), in_axes=dims)(*args),
    0,
)


# vmap: the plain XLA formulation of each primitive, vmapped (correct; speed is not the point there).


def _xla_form(prim: Primitive, a, b, *, stride, padding, xla_threads, shape=None):
    del xla_threads
    if prim is conv_p:
        return _xla_conv(a, b, stride, padding)
    if prim is conv_backward_data_p:
        x0 = jnp.zeros(shape, a.dtype)
        return jax.vjp(lambda x: _xla_conv(x, b, stride, padding), x0)[1](a)[0]
    w0 = jnp.zeros(shape, a.dtype)
    return jax.vjp(lambda w: _xla_conv(a, w, stride, padding), w0)[1](b)[0]


def _batch_rule(prim: Primitive):
    def rule(args, dims, **params):
        in_axes = tuple(d if isinstance(d, int) else None for d in dims)  # an unmapped operand has no int axis
        return jax.vmap(functools.partial(_xla_form, prim, **params), in_axes=in_axes)(*args), 0

    return rule


for _p in (conv_p, conv_backward_data_p, conv_backward_weights_p):
    batching.primitive_batchers[_p] = _batch_rule(_p)
