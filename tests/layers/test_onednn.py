"""gan_jax.layers.onednn: oneDNN's convolutions as JAX primitives, exact against lax's in every kind of derivative.

conv2d / conv_transpose2d with impl="onednn" are compared with the other formulations in test_conv.py; here the
three primitives themselves: values, reverse and forward mode, second order, vmap, eager calls, several threads, the
library's build, and the fallback when it cannot be had.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from gan_jax.layers import conv, conv2d, conv_transpose2d, onednn, resolve_conv_impl

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="oneDNN runs on the CPU backend only")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CASES = [  # (batch, height, in, out, kernel, stride, padding)
    (4, 16, 8, 16, 4, 2, 1),  # DCGAN down
    (3, 9, 5, 7, 3, 1, 1),  # odd size, stride 1
    (2, 8, 16, 32, 4, 1, 0),  # DCGAN logit
    (2, 7, 3, 4, 3, 2, 1),  # odd size, stride 2
    (2, 6, 4, 3, 1, 1, 0),  # 1x1
]


def _lax_conv(x: jax.Array, w: jax.Array, s: int, p: int) -> jax.Array:
    return lax.conv_general_dilated(x, w, (s, s), [(p, p)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _case(i: int) -> tuple[jax.Array, jax.Array, int, int]:
    n, h, c, o, k, s, p = CASES[i]
    rng = np.random.default_rng(i)
    x = jnp.asarray(rng.standard_normal((n, h, h, c), np.float32))
    w = jnp.asarray(rng.standard_normal((k, k, c, o), np.float32) / (k * np.sqrt(c)))
    return x, w, s, p


def _close(got: jax.Array, want: jax.Array, rtol: float = 1e-5) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=rtol, atol=rtol * float(jnp.abs(want).max()))


def test_library_is_built_and_available() -> None:
    """Every CPU install has the oneDNN wheel and a C++ compiler (install.sh), so the library must be there: a
    failure here means the models silently run the slower XLA formulation."""
    assert onednn.available()
    assert os.path.exists(onednn.library_path())
    assert resolve_conv_impl() == "onednn"


@pytest.mark.parametrize("case", range(len(CASES)))
def test_values_and_derivatives_match_lax(case: int) -> None:
    x, w, s, p = _case(case)
    mine, ref = (lambda x, w: onednn.conv(x, w, s, p)), (lambda x, w: _lax_conv(x, w, s, p))
    _close(jax.jit(mine)(x, w), ref(x, w))
    _close(mine(x, w), ref(x, w))  # eager, outside jit
    g = jnp.asarray(np.random.default_rng(99).standard_normal(ref(x, w).shape, np.float32))
    for got, want in zip(jax.jit(lambda x, w: jax.vjp(mine, x, w)[1](g))(x, w), jax.vjp(ref, x, w)[1](g)):
        _close(got, want)
    x_dot, w_dot = jnp.flip(x, 1), 2 * jnp.flip(w, 0)
    _close(
        jax.jit(lambda *a: jax.jvp(mine, a[:2], a[2:])[1])(x, w, x_dot, w_dot), jax.jvp(ref, (x, w), (x_dot, w_dot))[1]
    )

    def penalty(f):  # a gradient penalty: the derivatives of the input gradient, with respect to both operands
        return lambda x, w: jnp.sum(jax.grad(lambda x: jnp.sum(jnp.tanh(f(x, w))))(x) ** 2)

    for got, want in zip(jax.jit(jax.grad(penalty(mine), (0, 1)))(x, w), jax.grad(penalty(ref), (0, 1))(x, w)):
        _close(got, want, rtol=1e-4)


def test_backward_primitives_are_the_gradients() -> None:
    x, w, s, p = _case(0)
    g = jnp.asarray(np.random.default_rng(5).standard_normal(_lax_conv(x, w, s, p).shape, np.float32))
    dx, dw = jax.vjp(lambda x, w: _lax_conv(x, w, s, p), x, w)[1](g)
    _close(jax.jit(onednn.conv_backward_data, static_argnums=(2, 3, 4))(g, w, s, p, x.shape), dx)
    _close(jax.jit(onednn.conv_backward_weights, static_argnums=(2, 3, 4))(x, g, s, p, w.shape), dw)


def test_vmap_over_inputs_and_kernels() -> None:
    x, w, s, p = _case(1)
    xs, ws = jnp.stack([x, -2 * x]), jnp.stack([w, 0.5 * w])
    mine, ref = (lambda x, w: onednn.conv(x, w, s, p)), (lambda x, w: _lax_conv(x, w, s, p))
    _close(jax.vmap(mine, (0, None))(xs, w), jax.vmap(ref, (0, None))(xs, w))
    _close(jax.vmap(mine)(xs, ws), jax.vmap(ref)(xs, ws))
    _close(
        jax.grad(lambda ws: jnp.sum(jax.vmap(mine)(xs, ws) ** 2))(ws),
        jax.grad(lambda ws: jnp.sum(jax.vmap(ref)(xs, ws) ** 2))(ws),
    )


@pytest.mark.parametrize("batch", [8, 6, 5])
def test_on_xla_threads_the_same_convolution(batch: int) -> None:
    """With onednn.threads("xla") the batch is split into equal chunks run on XLA's threads (8 -> 4 chunks of 2, 6 ->
    3, 5 -> 1 at two threads; the kernel gradient sums one partial per thread): the values and every derivative are
    still the convolution's, and the mode reaches the compiled call as its attribute."""
    assert onednn.available()  # registers the handlers (conv2d does it through resolve_conv_impl)
    _, _, s, p = _case(0)
    rng = np.random.default_rng(batch)
    x = jnp.asarray(rng.standard_normal((batch, 16, 16, 24), np.float32))
    w = jnp.asarray(rng.standard_normal((4, 4, 24, 32), np.float32) / 20)
    ref = lambda x, w: _lax_conv(x, w, s, p)  # noqa: E731
    g = jnp.asarray(rng.standard_normal(ref(x, w).shape, np.float32))

    def everything(x, w):  # the value, both gradients, and a gradient penalty's derivatives (second order)
        conv_fn = lambda x, w: onednn.conv(x, w, s, p) if mine else ref(x, w)  # noqa: E731
        y, vjp = jax.vjp(conv_fn, x, w)
        pen = lambda x, w: jnp.sum(jax.grad(lambda x: jnp.sum(jnp.tanh(conv_fn(x, w))))(x) ** 2)  # noqa: E731
        return (y, *vjp(g), *jax.grad(pen, (0, 1))(x, w))

    mine = False
    want = everything(x, w)
    mine = True
    with onednn.threads("xla"):
        lowered = jax.jit(everything).lower(x, w)
    assert "xla_threads = 1" in lowered.as_text()
    for got, expected in zip(lowered.compile()(x, w), want):
        _close(got, expected, rtol=1e-4)
    with pytest.raises(ValueError, match="openmp"):
        with onednn.threads("tbb"):
            pass


def test_independent_calls_of_one_shape_in_one_program() -> None:
    """XLA:CPU may run independent convolutions at once on its threads; each call has its own scratch memory, so
    sixteen same-shape convolutions in one program each give their own result."""
    x, w, s, p = _case(0)
    xs = [x * (i + 1) + i for i in range(16)]
    got = jax.jit(lambda xs, w: [onednn.conv(x, w, s, p) for x in xs])(xs, w)
    for g, x in zip(got, xs):
        _close(g, _lax_conv(x, w, s, p))


def test_compiled_gradients_run_no_xla_convolution() -> None:
    """Neither the layers nor any of their gradients leave an XLA convolution (inputs of more than 16 channels: an
    image input keeps conv2d on the XLA path, see conv.py)."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, 8, 8, 24), np.float32))
    w = jnp.asarray(rng.standard_normal((4, 4, 24, 32), np.float32))

    def loss(x, w, w_t):
        y = conv_transpose2d(conv2d(x, w, 2, 1, impl="onednn"), w_t, 2, 1, impl="onednn")
        return jnp.sum(y**2)

    hlo = jax.jit(jax.grad(loss, (0, 1, 2))).lower(x, w, w.swapaxes(2, 3)).compile().as_text()
    assert " convolution(" not in hlo
    assert hlo.count('custom_call_target="GanJaxOnednnConv') >= 4


def test_unavailable_library_falls_back_or_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the library "auto" is the XLA "fast" formulation; an explicit "onednn" is a clear error."""
    monkeypatch.setattr(onednn, "available", lambda: False)
    assert resolve_conv_impl() == "fast"
    with pytest.raises(ValueError, match="oneDNN library"):
        conv.conv2d(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2)), 1, 1, impl="onednn")


def test_switched_off_by_environment() -> None:
    code = "from gan_jax.layers import onednn, resolve_conv_impl; print(onednn.available(), resolve_conv_impl())"
    env = dict(os.environ, GAN_JAX_ONEDNN="0", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    assert out.stdout.split() == ["False", "fast"]


def test_build_failure_is_reported_not_raised(tmp_path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """A machine without a compiler (or the headers) gets one warning and the XLA formulation, not a traceback."""
    monkeypatch.setenv("GAN_JAX_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    onednn.available.cache_clear()
    try:
        assert not onednn.available()
    finally:
        onednn.available.cache_clear()
        monkeypatch.undo()
    assert "oneDNN convolutions unavailable" in caplog.text
    assert onednn.available()


def test_a_failing_primitive_raises_in_python() -> None:
    """oneDNN's failures come back as a JAX error with oneDNN's reason, never as an abort of the process."""
    dy = jnp.ones((1, 5, 5, 4), jnp.float32)  # a 3x3 stride-1 unpadded convolution of 8x8 gives 6x6, not 5x5
    with pytest.raises(Exception, match="oneDNN convolution"):
        jax.block_until_ready(
            jax.jit(onednn.conv_backward_data, static_argnums=(2, 3, 4))(dy, jnp.ones((3, 3, 2, 4)), 1, 0, (1, 8, 8, 2))
        )


# ------------------------------------------------------------------------------------------------ depthwise


def _lax_depthwise(x: jax.Array, taps: np.ndarray, lo: int, hi: int) -> jax.Array:
    k = jnp.broadcast_to(jnp.asarray(taps, x.dtype)[:, :, None, None], (*taps.shape, 1, x.shape[3]))
    return lax.conv_general_dilated(
        x, k, (1, 1), [(lo, hi)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[3]
    )


@pytest.mark.parametrize("k, lo, hi", [(4, 1, 2), (4, 1, 1), (3, 0, 2), (3, 2, 0)])
def test_depthwise_matches_lax_in_every_derivative(k: int, lo: int, hi: int) -> None:
    """A filter without symmetry, so that the transpose's flip and mirrored padding are checked too."""
    rng = np.random.default_rng(k + 3 * lo + 7 * hi)
    taps = rng.standard_normal((k, k)).astype(np.float32)
    x = jnp.asarray(rng.standard_normal((3, 9, 9, 12), np.float32))
    t = tuple(tuple(float(v) for v in row) for row in taps)
    mine, ref = (lambda x: onednn.depthwise(x, t, lo, hi)), (lambda x: _lax_depthwise(x, taps, lo, hi))
    _close(jax.jit(mine)(x), ref(x))
    _close(mine(x), ref(x))  # eager
    g = jnp.asarray(rng.standard_normal(ref(x).shape, np.float32))
    _close(jax.jit(lambda x: jax.vjp(mine, x)[1](g)[0])(x), jax.vjp(ref, x)[1](g)[0])
    _close(jax.jit(lambda x: jax.jvp(mine, (x,), (jnp.flip(x, 1),))[1])(x), jax.jvp(ref, (x,), (jnp.flip(x, 1),))[1])

    def penalty(f):  # second order: the gradient of a norm of the input gradient
        return lambda x: jnp.sum(jax.grad(lambda x: jnp.sum(jnp.tanh(f(x))))(x) ** 2)

    _close(jax.jit(jax.grad(penalty(mine)))(x), jax.grad(penalty(ref))(x), rtol=1e-4)
    xs = jnp.stack([x, -2 * x])
    _close(jax.vmap(mine)(xs), jax.vmap(ref)(xs))
    hlo = jax.jit(jax.grad(lambda x: jnp.sum(mine(x) ** 2))).lower(x).compile().as_text()
    assert " convolution(" not in hlo and hlo.count('custom_call_target="GanJaxOnednnDepthwise"') == 2


def test_depthwise_refuses_a_non_square_filter_or_a_padding_it_cannot_transpose() -> None:
    x = jnp.ones((1, 6, 6, 8), jnp.float32)
    with pytest.raises(ValueError, match="square"):
        onednn.depthwise(x, ((1.0, 2.0),), 0, 0)
    with pytest.raises(ValueError, match="pads"):
        onednn.depthwise(x, ((1.0, 2.0), (3.0, 4.0)), 2, 0)


@pytest.mark.parametrize("mode", onednn.THREADS)
def test_config_key_sets_the_threads_of_the_train_step(mode: str) -> None:
    """config.onednn_threads reaches every oneDNN call of the compiled train step (speed only: the math is the same)."""
    from gan_jax.config import load_config
    from gan_jax.train.experiment import setup

    assert onednn.available()
    config = load_config("configs/dcgan.py:smoke")
    config.onednn_threads = mode
    exp = setup(config, None)
    batches = exp.dataset.iterate(0, config.batch_size, prefetch=0)
    batch = next(batches)
    batches.close()
    text = jax.jit(exp.make_train_step()).lower(exp.abstract_state, batch).as_text()
    flags = [int(f) for f in re.findall(r"xla_threads = (\d)", text)]
    assert flags and set(flags) == {int(mode == "xla")}
