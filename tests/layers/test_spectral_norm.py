"""Spectral normalization: power iteration converges to the known top singular value, and the SpectralNorm wrapper
keeps the wrapped layer's parameters, stores u in the "spectral" collection and updates it only when asked."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax.layers import Conv2D, SpectralNorm, conv2d, spectral_normalize

SINGULAR_VALUES = np.array([3.0, 1.0, 0.5, 0.25])


def known_matrix(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """A (rows, cols) matrix with singular values SINGULAR_VALUES[:min(rows, cols)] and random singular vectors."""
    rng = np.random.default_rng(seed)
    k = min(rows, cols)
    left, _ = np.linalg.qr(rng.standard_normal((rows, k)))
    right, _ = np.linalg.qr(rng.standard_normal((cols, k)))
    return (left * SINGULAR_VALUES[:k]) @ right.T


def top_singular_value(w) -> float:
    w = np.asarray(w, np.float64)
    return float(np.linalg.svd(w.reshape(-1, w.shape[-1]), compute_uv=False)[0])


def test_power_iteration_converges_on_known_matrix():
    w = jnp.asarray(known_matrix(6, 4), jnp.float32)
    u = jnp.ones(4) / 2.0
    for _ in range(6):
        w_sn, u, sigma = spectral_normalize(w, u)
    np.testing.assert_allclose(float(sigma), 3.0, rtol=1e-5)
    np.testing.assert_allclose(top_singular_value(w_sn), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(w_sn), np.asarray(w) / float(sigma), rtol=1e-6)
    assert u.shape == (4,) and abs(float(jnp.linalg.norm(u)) - 1.0) < 1e-6


def test_one_step_matches_definition_and_gradient_flows_through_w_only():
    rng = np.random.default_rng(1)
    w = jnp.asarray(rng.standard_normal((3, 3, 2, 5)), jnp.float32)
    u0 = jnp.asarray(rng.standard_normal(5), jnp.float32)
    mat = np.asarray(w, np.float64).reshape(-1, 5)
    v = mat @ np.asarray(u0)
    v /= np.linalg.norm(v)
    u1 = mat.T @ v
    u1 /= np.linalg.norm(u1)
    sigma_ref = v @ mat @ u1
    w_sn, u_new, sigma = spectral_normalize(w, u0)
    np.testing.assert_allclose(np.asarray(u_new), u1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(sigma), sigma_ref, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(w_sn), np.asarray(w) / sigma_ref, rtol=1e-5)
    # u and v are constants for autodiff: d sigma / d W = v u^T.
    grad = jax.grad(lambda k: spectral_normalize(k, u0)[2])(w)
    np.testing.assert_allclose(np.asarray(grad).reshape(-1, 5), np.outer(v, u1), rtol=1e-4, atol=1e-6)
    # n_steps=0 keeps u and gives sigma = ||W u||.
    _, u_same, sigma0 = spectral_normalize(w, u0 / jnp.linalg.norm(u0), n_steps=0)
    np.testing.assert_allclose(np.asarray(u_same), np.asarray(u0 / jnp.linalg.norm(u0)), rtol=1e-6)
    np.testing.assert_allclose(float(sigma0), np.linalg.norm(mat @ np.asarray(u_same)), rtol=1e-5)


class Wrapped(nn.Module):
    """One spectrally normalised layer of the given kind, built inline as the models do."""

    kind: str

    @nn.compact
    def __call__(self, x, train: bool):
        layer = {
            "dense": lambda: nn.Dense(4),
            "conv": lambda: Conv2D(4, 3, padding=1),
            "embed": lambda: nn.Embed(6, 4),
        }[self.kind]()
        return SpectralNorm(layer)(x, update_stats=train)


class Plain(nn.Module):
    """The same layer without the wrapper, to check the parameter tree and the init are the wrapped layer's own."""

    kind: str

    @nn.compact
    def __call__(self, x, train: bool):
        if self.kind == "dense":
            return nn.Dense(4)(x)
        if self.kind == "conv":
            return Conv2D(4, 3, padding=1)(x)
        return nn.Embed(6, 4)(x)


CASES = {
    "dense": ("Dense_0", "kernel", (6, 4), lambda: jnp.asarray(np.random.default_rng(2).standard_normal((3, 6)))),
    "conv": ("Conv2D_0", "kernel", (3, 3, 2, 4), lambda: jnp.ones((1, 4, 4, 2)) * jnp.arange(4.0)[:, None, None]),
    "embed": ("Embed_0", "embedding", (6, 4), lambda: jnp.array([0, 3, 5, 3])),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_wrapper_converges_and_keeps_layer_params(kind):
    name, weight_name, shape, make_input = CASES[kind]
    x = make_input()
    model = Wrapped(kind)
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    # The tree is the layer's own (same paths and values as without the wrapper), u lives in "spectral".
    plain = Plain(kind).init(jax.random.PRNGKey(0), x, train=False)
    assert set(variables) == {"params", "spectral"}
    assert jax.tree.structure(variables["params"]) == jax.tree.structure(plain["params"])
    for a, b in zip(jax.tree.leaves(variables["params"]), jax.tree.leaves(plain["params"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the raw init is stored, not w / sigma
    u0 = variables["spectral"]["SpectralNorm_0"]["u"]
    assert u0.shape == (4,) and abs(float(jnp.linalg.norm(u0)) - 1.0) < 1e-5

    # A weight with known singular values; power iteration through the wrapper converges to its top one.
    w = jnp.asarray(known_matrix(int(np.prod(shape[:-1])), 4, seed=3).reshape(shape), jnp.float32)
    params = jax.tree.map(lambda a: a, variables["params"])
    params[name][weight_name] = w
    if "bias" in params[name]:
        params[name]["bias"] = jnp.arange(4.0)
    spectral = variables["spectral"]
    for _ in range(6):  # the error in sigma shrinks by (1/3)^4 per step
        _, updates = model.apply({"params": params, "spectral": spectral}, x, train=True, mutable=["spectral"])
        spectral = updates["spectral"]
    _, _, sigma = spectral_normalize(w, spectral["SpectralNorm_0"]["u"], n_steps=0)
    np.testing.assert_allclose(float(sigma), 3.0, rtol=1e-5)

    # The layer then runs with w / sigma: it equals the plain layer given w / 3, whose top singular value is 1.
    reference = jax.tree.map(lambda a: a, params)
    reference[name][weight_name] = w / 3.0
    np.testing.assert_allclose(top_singular_value(reference[name][weight_name]), 1.0, rtol=1e-5)
    out = model.apply({"params": params, "spectral": spectral}, x, train=False)
    expected = Plain(kind).apply({"params": reference}, x, train=False)
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_update_stats_false_does_not_mutate():
    x = jnp.ones((2, 5, 5, 2))
    model = Wrapped("conv")
    variables = model.init(jax.random.PRNGKey(1), x, train=False)
    out_eval, updates = model.apply(variables, x, train=False, mutable=["spectral"])
    np.testing.assert_array_equal(
        np.asarray(updates["spectral"]["SpectralNorm_0"]["u"]), np.asarray(variables["spectral"]["SpectralNorm_0"]["u"])
    )
    # Training mode moves u, but computes the same output from the same stored u.
    out_train, updates = model.apply(variables, x, train=True, mutable=["spectral"])
    assert not np.allclose(updates["spectral"]["SpectralNorm_0"]["u"], variables["spectral"]["SpectralNorm_0"]["u"])
    np.testing.assert_allclose(np.asarray(out_train), np.asarray(out_eval), rtol=1e-6)


def test_gradient_reaches_raw_weight():
    x = jnp.asarray(np.random.default_rng(4).standard_normal((2, 5, 5, 2)), jnp.float32)
    model = Wrapped("conv")
    variables = model.init(jax.random.PRNGKey(2), x, train=False)
    u = variables["spectral"]["SpectralNorm_0"]["u"]

    def via_module(params):
        return jnp.sum(jnp.sin(model.apply({"params": params, "spectral": variables["spectral"]}, x, train=False)))

    def by_hand(params):
        p = params["Conv2D_0"]
        kernel = spectral_normalize(p["kernel"], u)[0]
        return jnp.sum(jnp.sin(conv2d(x, kernel, padding=1) + p["bias"]))

    g_module = jax.grad(via_module)(variables["params"])
    g_hand = jax.grad(by_hand)(variables["params"])
    for a, b in zip(jax.tree.leaves(g_module), jax.tree.leaves(g_hand)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
