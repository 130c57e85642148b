"""Minibatch standard deviation against a direct numpy computation of the same statistic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax.layers import MinibatchStd, minibatch_std


def reference(x: np.ndarray, group_size: int, num_features: int = 1) -> np.ndarray:
    """Sample i is grouped with the samples j = i mod (B / G) (StyleGAN's layout); the statistic of feature group f is
    the population std over the group, per pixel and channel of f, averaged over pixels and channels."""
    x = x.astype(np.float64)
    b = x.shape[0]
    g = min(group_size, b)
    m = b // g
    chunks = np.split(x, num_features, axis=-1)
    stats = np.zeros((b, num_features))
    for i in range(b):
        members = [j for j in range(b) if j % m == i % m]
        assert len(members) == g
        for f, chunk in enumerate(chunks):
            stats[i, f] = np.sqrt(chunk[members].var(axis=0) + 1e-8).mean()
    extra = np.broadcast_to(stats.reshape((b,) + (1,) * (x.ndim - 2) + (num_features,)), x.shape[:-1] + (num_features,))
    return np.concatenate([x, extra], axis=-1)


def data(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("group_size", [2, 4, 8])
def test_images_match_numpy(group_size):
    x = data((8, 3, 3, 4))
    out = np.asarray(minibatch_std(jnp.asarray(x), group_size))
    assert out.shape == (8, 3, 3, 5)
    np.testing.assert_array_equal(out[..., :4], x)
    np.testing.assert_allclose(out, reference(x, group_size), rtol=1e-5)


def test_flat_input_gets_one_extra_feature():
    x = data((6, 5), seed=1)
    out = np.asarray(minibatch_std(jnp.asarray(x), 3))
    assert out.shape == (6, 6)
    np.testing.assert_allclose(out, reference(x, 3), rtol=1e-5)


def test_two_feature_groups():
    x = data((4, 2, 2, 6), seed=2)
    out = np.asarray(minibatch_std(jnp.asarray(x), 2, num_features=2))
    assert out.shape == (4, 2, 2, 8)
    np.testing.assert_allclose(out, reference(x, 2, num_features=2), rtol=1e-5)


def test_known_value():
    # Groups {0, 2} and {1, 3}: |3 - 1| / 2 = 1 and |5 - (-3)| / 2 = 4 as population stds.
    x = jnp.asarray([[1.0], [-3.0], [3.0], [5.0]])
    np.testing.assert_allclose(np.asarray(minibatch_std(x, 2))[:, 1], [1.0, 4.0, 1.0, 4.0], rtol=1e-6)


def test_group_larger_than_the_batch_uses_the_whole_batch():
    x = jnp.asarray(data((4, 3)))
    np.testing.assert_array_equal(np.asarray(minibatch_std(x, 16)), np.asarray(minibatch_std(x, 4)))


def test_group_not_dividing_the_batch_is_an_error():
    with pytest.raises(ValueError, match="group size 3 must divide the discriminator's batch of 8"):
        minibatch_std(jnp.zeros((8, 4)), 3)


def test_layer_has_no_parameters_and_passes_gradients():
    layer = MinibatchStd(group_size=2)
    x = jnp.asarray(data((4, 2, 2, 3)))
    variables = layer.init(jax.random.PRNGKey(0), x)
    assert jax.tree.leaves(variables) == []
    grad = jax.grad(lambda v: layer.apply(variables, v)[..., -1].sum())(x)
    assert np.all(np.isfinite(grad)) and float(jnp.abs(grad).sum()) > 0.0
