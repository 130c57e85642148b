"""`materialize` is the identity, bit for bit, in value and in derivatives of every order."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax.layers.materialize import materialize
from gan_jax.layers.resample import blur2d

BOTH = [
    materialize,
    functools.partial(materialize, backward=True),
    functools.partial(materialize, forward=False, backward=True),
]
IDS = ["forward", "both", "cotangent_only"]


@pytest.mark.parametrize("materialize", BOTH, ids=IDS)
def test_values_are_unchanged_bit_for_bit(materialize):
    # Normal numbers only: XLA:CPU flushes subnormals in all arithmetic, a ReLU's included.
    tiny = float(jnp.finfo(jnp.float32).tiny)
    x = jnp.array([0.0, -0.0, 1.5, -3.25, tiny, -tiny, 3e38, -jnp.inf, jnp.inf, jnp.nan], jnp.float32)
    y = jax.jit(materialize)(x)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))  # NaN matches NaN here
    assert np.array_equal(np.signbit(y), np.signbit(x))
    b = x[:7].astype(jnp.bfloat16)
    assert jnp.array_equal(jax.jit(materialize)(b), b) and jax.jit(materialize)(b).dtype == jnp.bfloat16


@pytest.mark.parametrize("materialize", BOTH, ids=IDS)
def test_derivatives_are_the_identitys(materialize):
    v = jnp.array([0.5, -2.0, 0.0, 3.0])
    f = lambda v: jnp.sum(materialize(v) ** 3)  # noqa: E731
    np.testing.assert_array_equal(jax.jit(jax.grad(f))(v), 3 * v**2)
    np.testing.assert_array_equal(jax.jit(jax.hessian(f))(v), jnp.diag(6 * v))
    _, tangent = jax.jvp(materialize, (v,), (jnp.array([1.0, -1.0, 2.0, 0.25]),))
    np.testing.assert_array_equal(tangent, [1.0, -1.0, 2.0, 0.25])


def test_the_blur_and_its_gradient_are_those_of_the_plain_shifted_sums():
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    f = np.array([1, 3, 3, 1]) / 8

    def reference(x):  # the same shifted sums with nothing stored between the axes
        p = jnp.pad(x, ((0, 0), (1, 2), (1, 2), (0, 0)))
        return sum(f[i] * f[j] * p[:, i : i + 8, j : j + 8] for i in range(4) for j in range(4))

    np.testing.assert_allclose(blur2d(x), reference(x), rtol=1e-6, atol=1e-7)
    w = jax.random.normal(jax.random.key(1), x.shape)
    np.testing.assert_allclose(
        jax.grad(lambda x: jnp.sum(blur2d(x) * w))(x), jax.grad(lambda x: jnp.sum(reference(x) * w))(x), atol=1e-6
    )


def test_batch_norm_storing_its_input_cotangent_has_the_same_values_and_gradients():
    from gan_jax.layers.normalization import BatchNorm

    x = jax.random.normal(jax.random.key(0), (4, 5, 5, 3))
    w = jax.random.normal(jax.random.key(1), x.shape)
    outs = []
    for store in (False, True):
        bn = BatchNorm(store_input_cotangent=store)
        variables = bn.init(jax.random.key(2), x, train=True)

        def loss(params, x, bn=bn, variables=variables):
            y, _ = bn.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats", "moments"])
            return jnp.sum(jnp.tanh(y) * w)

        outs.append(jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(variables["params"], x))
    for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1]), strict=True):
        np.testing.assert_array_equal(a, b)
