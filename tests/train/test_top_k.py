"""Top-k training (Sinha et al. 2020): G learns only from the samples D rates most real, a fraction that shrinks per
epoch; the loss, the schedule, the train step with and without gradient accumulation, and the refusals."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from gan_jax.config import ConfigError, load_config, validate
from gan_jax.models.mlp import MLPDiscriminator, MLPGenerator
from gan_jax.objectives import get_loss
from gan_jax.objectives.game import UnconditionalGAN
from gan_jax.objectives.losses import LOSSES, top_k_generator_loss
from gan_jax.train.experiment import build_game, top_k_schedule
from gan_jax.train.state import create_train_state
from gan_jax.train.step import make_train_step

LOGITS = jnp.array([[3.0], [-1.0], [2.0], [0.0]])


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_keeps_the_samples_d_rates_most_real(name):
    g = LOSSES[name].g
    half = top_k_generator_loss(g, LOGITS, jnp.float32(0.5))
    assert float(half) == pytest.approx(float(g(jnp.array([[3.0], [2.0]]))), rel=1e-6)
    assert float(top_k_generator_loss(g, LOGITS, jnp.float32(1.0))) == pytest.approx(float(g(LOGITS)), rel=1e-6)
    assert float(top_k_generator_loss(g, LOGITS, jnp.float32(0.01))) == pytest.approx(float(g(LOGITS[:1])), rel=1e-6)
    grads = jax.grad(lambda x: top_k_generator_loss(g, x, jnp.float32(0.5)))(LOGITS)
    assert np.all(np.asarray(grads)[[1, 3]] == 0.0) and np.all(np.asarray(grads)[[0, 2]] != 0.0)


def test_schedule_shrinks_per_epoch_to_the_floor():
    config = ml_collections.ConfigDict({"topk_keep": 0.5, "topk_decay": 0.99})
    keep = top_k_schedule(config, steps_per_epoch=1000)
    values = [float(keep(jnp.int32(s))) for s in (0, 1000, 10_000, 68_000, 69_000, 400_000)]
    assert values[:3] == pytest.approx([1.0, 0.99, 0.99**10], rel=1e-5)
    assert values[3] == pytest.approx(0.99**68, rel=1e-5) and values[3] > 0.5  # 0.99^69 < 0.5 <= 0.99^68
    assert values[4:] == [0.5, 0.5]
    assert top_k_schedule(ml_collections.ConfigDict({"topk_keep": 1.0, "topk_decay": 0.99}), 1000) is None


def setup():
    game = UnconditionalGAN(
        MLPGenerator((2,), hidden=(16,), output="linear"),
        MLPDiscriminator(hidden=(16,), pieces=2),
        get_loss("non_saturating"),
        z_dim=2,
    )
    txs = {"d": optax.sgd(0.1), "g": optax.sgd(0.1)}
    x = jnp.asarray(np.random.default_rng(0).standard_normal((32, 2)), jnp.float32)
    return game, txs, create_train_state(game, txs, jax.random.PRNGKey(0), x), {"x": x}


def test_train_step_reports_the_fraction_and_changes_only_g():
    game, txs, state, batch = setup()
    plain_state, plain = jax.jit(make_train_step(game, txs))(state, batch)
    keep = lambda step: jnp.float32(0.25)  # noqa: E731
    top_state, top = jax.jit(make_train_step(game, txs, g_keep=keep))(state, batch)
    assert float(top["g_keep"]) == 0.25 and "g_keep" not in plain
    for a, b in zip(
        jax.tree.leaves(plain_state.params["discriminator"]), jax.tree.leaves(top_state.params["discriminator"])
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    g_moved = optax.global_norm(
        jax.tree.map(jnp.subtract, plain_state.params["generator"], top_state.params["generator"])
    )
    assert float(g_moved) > 1e-6
    # With gradient accumulation the fraction is split with the batch and reaches every micro-batch.
    _, accum = jax.jit(make_train_step(game, txs, g_keep=keep, grad_accum=2))(state, batch)
    assert float(accum["g_keep"]) == 0.25 and float(accum["nonfinite"]) == 0.0


def test_config_bounds_and_games_without_it_are_refused():
    config = load_config("configs/gan_mog.py:smoke", {"topk_keep": 0.5})
    validate(config)
    assert build_game(config, (2,)) is not None
    for key, value in (("topk_keep", 0.0), ("topk_keep", 1.5), ("topk_decay", 0.0)):
        with pytest.raises(ConfigError, match=key):
            validate(load_config("configs/gan_mog.py:smoke", {key: value}))
    for spec, shape in (("configs/stylegan.py:smoke", (16, 16, 1)), ("configs/biggan.py:smoke", (32, 32, 1))):
        with pytest.raises(ConfigError, match="config.topk_keep=0.5"):
            build_game(load_config(spec, {"topk_keep": 0.5}), shape, 10)
