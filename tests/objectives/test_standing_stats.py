"""Standing statistics for the unconditional game (DCGAN, the MLP GAN): G's batch norms sample with the moments of
its own training-mode passes instead of running averages."""

import jax
import numpy as np
import pytest

from gan_jax.config import ConfigError, load_config
from gan_jax.train.experiment import setup


@pytest.mark.parametrize("spec", ["configs/dcgan.py:smoke", "configs/gan_mog.py:smoke"])
def test_one_batch_of_standing_statistics_reproduces_that_batch_in_training_mode(spec):
    config = load_config(spec)
    config.standing_stats = 1
    exp = setup(config, None)
    game, state = exp.game, exp.init_state()
    params, g_state = state.params["generator"], state.model_state["generator"]
    rng, n = jax.random.PRNGKey(3), 16
    z = game.sample_latents(jax.random.split(rng, 1)[0], n)  # the latents of the one standing pass

    standing = game.sampling_state(params, g_state, rng, n)
    assert jax.tree.structure(standing) == jax.tree.structure(g_state)
    in_training = game.generate(params, g_state, z, train=True)[0]
    # Normalized with that batch's own moments, inference mode gives exactly the training-mode output ...
    np.testing.assert_allclose(game.generate(params, standing, z)[0], in_training, atol=2e-5)
    # ... which the fresh running averages (mean 0, var 1) do not.
    assert np.max(np.abs(game.generate(params, g_state, z)[0] - in_training)) > 1e-2


def test_sampling_uses_them_only_when_asked():
    config = load_config("configs/dcgan.py:smoke")
    exp = setup(config, None)
    state = exp.init_state()
    plain = exp.generate(state, 8, seed=0)
    assert exp.game.sampling_state(state.ema_params, state.ema_state, jax.random.PRNGKey(0), 8) is state.ema_state
    config.standing_stats = 2
    standing = setup(config, None).generate(state, 8, seed=0)
    assert plain.shape == standing.shape and not np.array_equal(plain, standing)


def test_a_generator_without_batch_norm_refuses_them():
    config = load_config("configs/stylegan.py:smoke")
    config.standing_stats = 4
    with pytest.raises(ConfigError, match="standing_stats=4: the stylegan2 generator has no batch norm$"):
        setup(config, None)
    config = load_config("configs/gan_mnist.py:smoke")
    config.standing_stats = 4
    with pytest.raises(ConfigError, match="has no batch norm .set model.g_batch_norm=True"):
        setup(config, None)
    config = load_config("configs/dcgan.py:smoke")
    config.standing_stats = -1
    with pytest.raises(ConfigError, match="standing_stats"):
        setup(config, None)
