"""gan_jax.layers.conv: PyTorch-equivalent semantics, "fast" == "xla" in values and gradients, no dilated inputs.

The fast formulation exists only for speed, so every combination of kernel size, stride, padding and output padding
that GAN models use is checked against the plain one, in values and in gradients for the input and the kernel, with
few channels (the merged phase form) and with more (the split form). A direct numpy implementation pins the
semantics (PyTorch's output sizes and tap positions) independently of both. The compiled gradients of the fast
path are checked for convolutions with input (lhs) dilation, the operation XLA:CPU runs slowly.
"""

from __future__ import annotations

import functools
import itertools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax.layers import (
    Conv2D,
    ConvTranspose2D,
    conv2d,
    conv_impl,
    conv_transpose2d,
    get_conv_impl,
    resolve_conv_impl,
    set_conv_impl,
)

# ----------------------------------------------------------------------------------------------------------------------
# Direct numpy references, written from PyTorch's definitions (tap a of output o reads input s*o - p + a).


def np_conv2d(x: np.ndarray, k: np.ndarray, s: int, p: int) -> np.ndarray:
    n, h, w, _ = x.shape
    kh, kw, _, cout = k.shape
    ho, wo = (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1
    y = np.zeros((n, ho, wo, cout))
    for o1, o2, a, b in itertools.product(range(ho), range(wo), range(kh), range(kw)):
        i, j = s * o1 - p + a, s * o2 - p + b
        if 0 <= i < h and 0 <= j < w:
            y[:, o1, o2] += x[:, i, j] @ k[a, b]
    return y


def np_conv_transpose2d(x: np.ndarray, k: np.ndarray, s: int, p: int, op: int) -> np.ndarray:
    n, h, w, _ = x.shape
    kh, kw, _, cout = k.shape
    ho, wo = (h - 1) * s - 2 * p + kh + op, (w - 1) * s - 2 * p + kw + op
    y = np.zeros((n, ho, wo, cout))
    for i, j, a, b in itertools.product(range(h), range(w), range(kh), range(kw)):
        o1, o2 = s * i - p + a, s * j - p + b
        if 0 <= o1 < ho and 0 <= o2 < wo:
            y[:, o1, o2] += x[:, i, j] @ k[a, b]
    return y


def _rand(seed: int, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


REFERENCE_CONV = [  # (kernel, stride, padding, H, W)
    (4, 2, 1, 8, 8),  # DCGAN / pix2pix down
    (4, 1, 0, 4, 4),  # DCGAN logit 4x4 -> 1x1
    (3, 2, 1, 7, 6),  # CycleGAN down, odd size
    (7, 1, 3, 6, 5),  # CycleGAN stem
    (5, 2, 2, 9, 8),
    (1, 2, 0, 5, 5),
]
REFERENCE_CONV_T = [  # (kernel, stride, padding, output_padding, H, W)
    (4, 2, 1, 0, 4, 3),  # DCGAN / pix2pix up
    (4, 1, 0, 0, 1, 1),  # DCGAN first layer from 1x1
    (3, 2, 1, 1, 4, 5),  # CycleGAN up
    (5, 2, 2, 1, 3, 3),
    (3, 1, 1, 0, 5, 4),
]


# The CPU formulations; "onednn" needs gan_jax's oneDNN library, which every CPU install builds (test_onednn.py
# checks that it did), so it is tested wherever the backend is the CPU.
CPU_IMPLS = ["fast", "onednn"] if jax.default_backend() == "cpu" else ["fast"]


@pytest.mark.parametrize("impl", ["xla", *CPU_IMPLS])
@pytest.mark.parametrize("k,s,p,h,w", REFERENCE_CONV)
def test_conv2d_matches_numpy(k: int, s: int, p: int, h: int, w: int, impl: str) -> None:
    x, kern = _rand(0, (2, h, w, 3)), _rand(1, (k, k, 3, 4))
    want = np_conv2d(x.astype(np.float64), kern.astype(np.float64), s, p)
    got = conv2d(jnp.asarray(x), jnp.asarray(kern), s, p, impl=impl)
    assert got.shape == want.shape == (2, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1, 4)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["xla", *CPU_IMPLS])
@pytest.mark.parametrize("k,s,p,op,h,w", REFERENCE_CONV_T)
def test_conv_transpose2d_matches_numpy(k: int, s: int, p: int, op: int, h: int, w: int, impl: str) -> None:
    x, kern = _rand(2, (2, h, w, 3)), _rand(3, (k, k, 3, 4))
    want = np_conv_transpose2d(x.astype(np.float64), kern.astype(np.float64), s, p, op)
    got = conv_transpose2d(jnp.asarray(x), jnp.asarray(kern), s, p, op, impl=impl)
    assert got.shape == want.shape == (2, (h - 1) * s - 2 * p + k + op, (w - 1) * s - 2 * p + k + op, 4)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_conv_transpose2d_is_adjoint_of_conv2d(impl: str) -> None:
    """<conv_transpose2d(y, K), x> == <y, conv2d(x, K viewed (kh, kw, out, in))>: the documented definition."""
    x, y, kern = _rand(4, (2, 9, 9, 5)), _rand(5, (2, 4, 4, 6)), _rand(6, (4, 4, 6, 5))
    lhs = jnp.vdot(conv_transpose2d(jnp.asarray(y), jnp.asarray(kern), 2, 1, 1, impl=impl), x)
    rhs = jnp.vdot(jnp.asarray(y), conv2d(jnp.asarray(x), jnp.asarray(kern).swapaxes(2, 3), 2, 1, impl=impl))
    np.testing.assert_allclose(float(lhs), float(rhs), rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# Fast == xla, values and gradients, over the combinations models use.

# (in, out) channel pairs: few input channels take conv2d's merged form and many its split form; transposed
# convolutions decide on their output channels, so each pair exercises one form of each op.
CHANNELS = [(3, 20), (20, 3)]
CONV_CASES = [  # (kernel, stride, padding)
    (k, s, p) for k, s, p in itertools.product([1, 3, 4, 5, 7], [2], [0, 1, 2, 3]) if p < k
] + [(3, 3, 1), (4, 1, 1)]
CONV_T_CASES = (  # (kernel, stride, padding, output_padding); every padding for the common 3 and 4, a few otherwise
    [(k, 2, p, op) for k, p, op in itertools.product([3, 4], [0, 1, 2, 3], [0, 1]) if p < k]
    + [(k, 2, p, op) for k, p, op in itertools.product([1, 5, 7], [0, 1, 2, 3], [0, 1]) if p in (0, k // 2)]
    + [(4, 1, 0, 0), (3, 1, 1, 0), (3, 3, 1, 2)]
)


def _value_and_grads(op, x: jax.Array, kern: jax.Array, cotangent: jax.Array, impl: str):
    def loss(x: jax.Array, kern: jax.Array) -> jax.Array:
        return jnp.vdot(op(x, kern, impl=impl), cotangent)

    return op(x, kern, impl=impl), jax.grad(loss, argnums=(0, 1))(x, kern)


def _assert_fast_matches_xla(op, x: np.ndarray, kern: np.ndarray) -> None:
    x, kern = jnp.asarray(x), jnp.asarray(kern)
    out = jax.eval_shape(lambda x, k: op(x, k, impl="xla"), x, kern)
    cotangent = jnp.asarray(_rand(99, out.shape))

    @jax.jit
    def all_impls(x: jax.Array, kern: jax.Array):
        return [_value_and_grads(op, x, kern, cotangent, impl) for impl in ("xla", *CPU_IMPLS)]

    (y_xla, g_xla), *others = all_impls(x, kern)
    for impl, (y, g) in zip(CPU_IMPLS, others):
        for name, want, got in [("output", y_xla, y), ("d/dx", g_xla[0], g[0]), ("d/dkernel", g_xla[1], g[1])]:
            assert got.shape == want.shape, (impl, name)
            scale = max(1.0, float(jnp.abs(want).max()))
            np.testing.assert_allclose(
                np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5 * scale, err_msg=f"{impl} {name}"
            )


@pytest.mark.parametrize("case", range(len(CONV_CASES)), ids=[f"k{k}s{s}p{p}" for k, s, p in CONV_CASES])
def test_conv2d_fast_matches_xla(case: int) -> None:
    k, s, p = CONV_CASES[case]
    cin, cout = CHANNELS[case % 2]
    n, h, w = 1 + case % 3, 9 + case % 2, 8
    x, kern = _rand(case, (n, h, w, cin)), _rand(case + 1, (k, k, cin, cout), 1 / (k * np.sqrt(cin)))
    _assert_fast_matches_xla(lambda x, kern, impl: conv2d(x, kern, s, p, impl=impl), x, kern)


@pytest.mark.parametrize("case", range(len(CONV_T_CASES)), ids=[f"k{k}s{s}p{p}op{op}" for k, s, p, op in CONV_T_CASES])
def test_conv_transpose2d_fast_matches_xla(case: int) -> None:
    k, s, p, op = CONV_T_CASES[case]
    cin, cout = CHANNELS[(case // 2) % 2]  # alternate over (p, op) pairs so both forms see both output paddings
    n, h, w = 1 + case % 3, 4 + case % 2, 5
    x, kern = _rand(case, (n, h, w, cin)), _rand(case + 1, (k, k, cin, cout), 1 / (k * np.sqrt(cin)))
    _assert_fast_matches_xla(lambda x, kern, impl: conv_transpose2d(x, kern, s, p, op, impl=impl), x, kern)


@pytest.mark.parametrize("cin,cout,s,p,op", [(20, 3, 1, 0, 0), (3, 20, 2, 1, 1)])
def test_conv_transpose2d_from_1x1_fast_matches_xla(cin: int, cout: int, s: int, p: int, op: int) -> None:
    x, kern = _rand(7, (3, 1, 1, cin)), _rand(8, (4, 4, cin, cout), 0.1)
    _assert_fast_matches_xla(lambda x, kern, impl: conv_transpose2d(x, kern, s, p, op, impl=impl), x, kern)


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_forward_mode_and_second_order(impl: str) -> None:
    """jax.jvp and grad-of-grad (gradient penalties) are exact, not just reverse mode: "fast" through its custom_jvp
    rules, "onednn" through its primitives' bilinear derivative rules."""
    x, kern = jnp.asarray(_rand(9, (2, 8, 8, 20))), jnp.asarray(_rand(10, (4, 4, 20, 6), 0.05))
    x_dot, kern_dot = jnp.asarray(_rand(11, x.shape)), jnp.asarray(_rand(12, kern.shape))

    @functools.partial(jax.jit, static_argnums=0)
    def jvps(impl: str) -> list[jax.Array]:
        ops = [functools.partial(conv2d, stride=2, padding=1), functools.partial(conv_transpose2d, stride=2, padding=1)]
        return [jax.jvp(functools.partial(op, impl=impl), (x, kern), (x_dot, kern_dot))[1] for op in ops]

    for want, got in zip(jvps("xla"), jvps(impl)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-4)

    @functools.partial(jax.jit, static_argnums=1)
    def penalty_grad(kern: jax.Array, impl: str) -> jax.Array:
        def penalty(kern: jax.Array) -> jax.Array:
            gx = jax.grad(lambda x: jnp.sum(jnp.tanh(conv2d(x, kern, 2, 1, impl=impl))))(x)
            return jnp.sum(gx**2)

        return jax.grad(penalty)(kern)

    want, got = penalty_grad(kern, "xla"), penalty_grad(kern, impl)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("transposed", [False, True])
def test_bfloat16(transposed: bool, impl: str) -> None:
    """bfloat16 in, bfloat16 out and gradients, within bfloat16 rounding of the float32 plain formulation ("onednn"
    takes the "fast" path for bfloat16)."""
    x, kern = _rand(13, (2, 8, 8, 20)), _rand(14, (4, 4, 20, 24), 1 / (4 * np.sqrt(20)))
    op = functools.partial(conv_transpose2d if transposed else conv2d, stride=2, padding=1)
    cotangent = jnp.asarray(_rand(15, jax.eval_shape(op, x, kern).shape))

    @functools.partial(jax.jit, static_argnums=(2, 3))
    def run(x: jax.Array, kern: jax.Array, impl: str, dtype: jnp.dtype):
        def loss(x: jax.Array, kern: jax.Array) -> jax.Array:
            return jnp.vdot(op(x, kern, impl=impl).astype(jnp.float32), cotangent)

        x, kern = x.astype(dtype), kern.astype(dtype)
        return op(x, kern, impl=impl), *jax.grad(loss, (0, 1))(x, kern)

    want = run(x, kern, "xla", jnp.float32)
    got = run(x, kern, impl, jnp.bfloat16)
    for w, g in zip(want, got):
        assert g.dtype == jnp.bfloat16
        scale = float(jnp.abs(w).max())
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w), rtol=0.02, atol=0.02 * scale)


# ----------------------------------------------------------------------------------------------------------------------
# No input-dilated convolution in the compiled fast gradients.


def _lhs_dilations(text: str) -> list[str]:
    """Non-trivial input dilations in HLO text (`lhs_dilate=2x2`) or StableHLO (`lhs_dilate = [2, 2]`)."""
    found = re.findall(r"lhs_dilate=([0-9x]+)", text)
    found += [d.replace(" ", "") for d in re.findall(r"lhs_dilate = \[([0-9, ]+)\]", text)]
    return [d for d in found if any(v != "1" for v in re.split(r"[x,]", d))]


LAYERS = {  # module, input shape; channels on both sides of the merged/split threshold
    "transposed": [
        (ConvTranspose2D(32, 4, stride=1, padding=0), (2, 1, 1, 24)),
        (ConvTranspose2D(32, 4, stride=2, padding=1), (2, 4, 4, 24)),
        (ConvTranspose2D(3, 4, stride=2, padding=1), (2, 8, 8, 32)),
        (ConvTranspose2D(8, 3, stride=2, padding=1, output_padding=1), (2, 5, 5, 24)),
    ],
    "conv": [
        (Conv2D(32, 4, stride=2, padding=1), (2, 16, 16, 3)),
        (Conv2D(32, 4, stride=2, padding=1), (2, 8, 8, 24)),
        (Conv2D(24, 3, stride=2, padding=1), (2, 9, 9, 24)),
        (Conv2D(1, 4, stride=1, padding=0), (2, 4, 4, 32)),
    ],
}


def _grad_hlo(layers: list[tuple[nn.Module, tuple[int, ...]]], impl: str) -> tuple[str, str]:
    """StableHLO and compiled HLO of value_and_grad (params and inputs) of the summed squared outputs of `layers`."""
    modules = [module.clone(impl=impl) for module, _ in layers]
    xs = [jax.ShapeDtypeStruct(shape, jnp.float32) for _, shape in layers]
    params = [jax.eval_shape(m.init, jax.random.key(0), x) for m, x in zip(modules, xs)]  # shapes only: no compute

    def loss(params, xs):
        return sum(jnp.sum(m.apply(p, x) ** 2) for m, p, x in zip(modules, params, xs))

    lowered = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(params, xs)
    return lowered.as_text(), lowered.compile().as_text()


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_fast_grad_has_no_lhs_dilation(kind: str) -> None:
    stablehlo, hlo = _grad_hlo(LAYERS[kind], "fast")
    assert _lhs_dilations(stablehlo) == [] and _lhs_dilations(hlo) == []


def test_lhs_dilation_check_detects_the_plain_formulation() -> None:
    """Control for the test above: the plain gradients of strided layers do dilate inputs."""
    for layer in (LAYERS["transposed"][1], LAYERS["conv"][1]):
        stablehlo, hlo = _grad_hlo([layer], "xla")
        assert _lhs_dilations(stablehlo) and _lhs_dilations(hlo)


def test_gradient_penalty_has_no_lhs_dilation() -> None:
    module = Conv2D(16, 4, stride=2, padding=1, impl="fast")
    x = jax.ShapeDtypeStruct((2, 8, 8, 24), jnp.float32)
    params = jax.eval_shape(module.init, jax.random.key(0), x)

    def penalty(params, x):
        gx = jax.grad(lambda x: jnp.sum(jnp.tanh(module.apply(params, x))))(x)
        return jnp.sum(gx**2)

    assert _lhs_dilations(jax.jit(jax.grad(penalty)).lower(params, x).compile().as_text()) == []


def _transposes_with_fused_activation(impl: str) -> list[str]:
    """Fused computations in the compiled weight gradient of conv(relu(x + b)) that transpose and apply the ReLU."""
    x = jnp.ones((16, 8, 8, 32))
    kernel = jnp.ones((3, 3, 32, 32))
    bias = jnp.ones((32,))

    def loss(kernel, bias):
        return jnp.sum(conv2d(jax.nn.relu(conv2d(x, kernel, padding=1) + bias), kernel, padding=1, impl=impl) ** 2)

    hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(kernel, bias).compile().as_text()
    bodies = re.findall(r"^%\S+ \([^\n]*\{\n(.*?)\n\}", hlo, re.M | re.S)
    return [body for body in bodies if " transpose(" in body and " maximum(" in body]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the transposes are XLA:CPU's")
def test_fast_conv_transposes_a_stored_input() -> None:
    """On CPU the layout transpose for the weight gradient copies the stored activation instead of recomputing the
    ReLU inside the copy, which runs 3.5x slower: the point of `materialize`. The plain formulation is the control:
    there XLA does fuse the ReLU in."""
    assert _transposes_with_fused_activation("fast") == []
    assert _transposes_with_fused_activation("xla") != []


# ----------------------------------------------------------------------------------------------------------------------
# Modules and impl selection.


@pytest.mark.parametrize("cls", [Conv2D, ConvTranspose2D])
def test_modules_have_the_same_params_whatever_the_impl(cls: type[nn.Module]) -> None:
    x = jnp.asarray(_rand(15, (2, 8, 8, 5)))
    trees = {}
    for impl in ("xla", "auto", *CPU_IMPLS):
        module = cls(7, 4, stride=2, padding=1, impl=impl)
        params = module.init(jax.random.key(0), x)
        trees[impl] = (jax.tree.map(lambda a: (a.shape, a.dtype), params), module.apply(params, x))
    assert trees["xla"][0] == {"params": {"kernel": ((4, 4, 5, 7), jnp.float32), "bias": ((7,), jnp.float32)}}
    for impl in ("auto", *CPU_IMPLS):
        assert trees[impl][0] == trees["xla"][0], impl
        np.testing.assert_allclose(np.asarray(trees[impl][1]), np.asarray(trees["xla"][1]), rtol=1e-5, atol=1e-5)


def test_module_options() -> None:
    x = jnp.ones((2, 4, 4, 3))
    module = ConvTranspose2D(6, 3, 2, 1, output_padding=1, use_bias=False, kernel_init=nn.initializers.ones)
    params = module.init(jax.random.key(0), x)
    assert set(params["params"]) == {"kernel"}
    assert module.apply(params, x).shape == (2, 8, 8, 6)
    y = Conv2D(6, 3, padding=1, dtype=jnp.bfloat16).apply(Conv2D(6, 3, padding=1).init(jax.random.key(0), x), x)
    assert y.dtype == jnp.bfloat16 and y.shape == (2, 4, 4, 6)


def test_impl_selection() -> None:
    default = "onednn" if jax.default_backend() == "cpu" else "xla"
    assert get_conv_impl() == "auto" and resolve_conv_impl() == default
    with conv_impl("xla"):
        assert get_conv_impl() == "xla"
        assert resolve_conv_impl("auto") == "xla" and resolve_conv_impl("fast") == "fast"
        with conv_impl("fast"):
            assert resolve_conv_impl() == "fast"
        assert resolve_conv_impl() == "xla"
    assert resolve_conv_impl() == default
    set_conv_impl("xla")
    try:
        assert resolve_conv_impl() == "xla"
    finally:
        set_conv_impl(None)
    assert get_conv_impl() == "auto"
    with pytest.raises(ValueError):
        conv2d(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2)), 1, 1, impl="cudnn")
    with pytest.raises(ValueError):
        conv_transpose2d(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2)), 2, 1, output_padding=2)
