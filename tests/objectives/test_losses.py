"""Each adversarial loss and penalty against values computed by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax.objectives import get_loss, gradient_penalty, r1_penalty

REAL = jnp.array([0.0, 2.0])
FAKE = jnp.array([-1.0, 1.0])


def sp(x: float) -> float:  # softplus, by hand
    return math.log(1.0 + math.exp(x))


EXPECTED = {
    # D: mean(-log sigmoid(r)) + mean(-log(1 - sigmoid(f)))
    "minimax": ((sp(0) + sp(-2)) / 2 + (sp(-1) + sp(1)) / 2, -(sp(-1) + sp(1)) / 2),
    "non_saturating": ((sp(0) + sp(-2)) / 2 + (sp(-1) + sp(1)) / 2, (sp(1) + sp(-1)) / 2),
    "hinge": ((1.0 + 0.0) / 2 + (0.0 + 2.0) / 2, -0.0),
    "wasserstein": (0.0 - 1.0, -0.0),
    "least_squares": (0.5 * ((0 - 1) ** 2 + (2 - 1) ** 2) / 2 + 0.5 * (1 + 1) / 2, 0.5 * ((-2) ** 2 + 0) / 2),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loss_values(name):
    loss = get_loss(name)
    d_expected, g_expected = EXPECTED[name]
    np.testing.assert_allclose(float(loss.d(REAL, FAKE)), d_expected, rtol=1e-6)
    np.testing.assert_allclose(float(loss.g(FAKE)), g_expected, rtol=1e-6, atol=1e-7)


def test_literal_values():
    """Two values written out, so a change in the formula cannot hide behind the same formula in the test."""
    assert float(get_loss("non_saturating").d(jnp.zeros(3), jnp.zeros(3))) == pytest.approx(2 * math.log(2), 1e-6)
    assert float(get_loss("hinge").d(jnp.array([0.5]), jnp.array([-0.25]))) == pytest.approx(0.5 + 0.75, 1e-6)


def test_losses_finite_for_huge_logits():
    big = jnp.array([1e4, -1e4])
    for name in EXPECTED:
        loss = get_loss(name)
        assert np.isfinite(float(loss.d(big, -big))) and np.isfinite(float(loss.g(big)))


def test_unknown_loss():
    with pytest.raises(ValueError, match="unknown loss 'bogus'"):
        get_loss("bogus")


def test_gradient_penalty_linear_critic():
    # D(x) = <w, x> has gradient w everywhere: penalty = (||w|| - 1)^2 exactly.
    w = jnp.array([3.0, 4.0])
    d = lambda x: x @ w
    real, fake = jnp.ones((5, 2)), jnp.zeros((5, 2))
    assert float(gradient_penalty(d, real, fake, jax.random.PRNGKey(0))) == pytest.approx((5.0 - 1.0) ** 2, 1e-5)


def test_r1_penalty_quadratic_critic():
    # D(x) = sum(x^2) has gradient 2x: R1 = mean ||2x||^2.
    x = jnp.array([[1.0, 0.0], [1.0, 2.0]])
    d = lambda v: jnp.sum(v**2, axis=1)
    assert float(r1_penalty(d, x)) == pytest.approx((4.0 + 20.0) / 2, 1e-6)
