"""BigGAN's orthogonal regularization: zero on weights with orthogonal rows, positive otherwise, with the gradient
BigGAN-PyTorch's `utils.ortho` adds (up to its factor 2 * strength)."""

import jax
import jax.numpy as jnp
import numpy as np

from gan_jax.objectives.regularizers import orthogonal_penalty


def rows_view(leaf: np.ndarray) -> np.ndarray:
    """One row per output unit: torch's weight.view(out, -1) up to a permutation of columns."""
    return leaf.reshape(-1, leaf.shape[-1]).T


def numpy_penalty(w: np.ndarray) -> float:
    gram = w @ w.T
    return float(np.sum((gram * (1.0 - np.eye(len(gram)))) ** 2))


def orthogonal_rows(fan_in: int, out: int, seed: int) -> np.ndarray:
    """A (fan_in, out) kernel whose columns (the rows of W) are orthogonal, with unequal norms."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((fan_in, out)))
    return q * np.linspace(0.5, 2.0, out)


def test_vanishes_on_orthogonal_weights():
    params = {
        "conv": {"kernel": jnp.asarray(orthogonal_rows(18, 4, 0).reshape(3, 3, 2, 4)), "bias": jnp.ones(4)},
        "dense": {"kernel": jnp.asarray(orthogonal_rows(8, 5, 1))},
    }
    assert abs(float(orthogonal_penalty(params))) < 1e-10


def test_positive_otherwise_and_exclude():
    rng = np.random.default_rng(2)
    conv = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
    dense = rng.standard_normal((6, 5)).astype(np.float32)
    table = rng.standard_normal((7, 3)).astype(np.float32)
    params = {
        "block": {"conv": {"kernel": conv, "bias": np.ones(4, np.float32)}},
        "dense": {"kernel": dense},
        "shared": {"embedding": table},
        "gamma": np.float32(2.0),
    }
    expected = numpy_penalty(rows_view(conv)) + numpy_penalty(rows_view(dense))
    value = float(orthogonal_penalty(params, exclude=lambda path: path == ("shared", "embedding")))
    assert value > 0
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    # An nn.Embed table is used as it is (one row per entry, torch's Embedding layout).
    np.testing.assert_allclose(float(orthogonal_penalty(params)), expected + numpy_penalty(table), rtol=1e-5)
    only_dense = orthogonal_penalty(params, exclude=lambda path: path[0] != "dense")
    np.testing.assert_allclose(float(only_dense), numpy_penalty(rows_view(dense)), rtol=1e-5)


def test_gradient_is_four_times_ortho_term():
    kernel = jnp.asarray(np.random.default_rng(3).standard_normal((2, 2, 3, 4)), jnp.float32)
    grad = jax.grad(lambda k: orthogonal_penalty({"conv": {"kernel": k}}))(kernel)
    w = rows_view(np.asarray(kernel, np.float64))
    expected = 4.0 * ((w @ w.T) * (1.0 - np.eye(4))) @ w  # (strength / 2) * this = BigGAN-PyTorch's ortho gradient
    np.testing.assert_allclose(np.asarray(grad), expected.T.reshape(kernel.shape), rtol=1e-4, atol=1e-5)
