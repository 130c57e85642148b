"""The update step: each player's step lowers its own loss, G learns a simple target, NaNs leave the state alone."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gan_jax.models.mlp import MLPDiscriminator, MLPGenerator
from gan_jax.objectives import get_loss
from gan_jax.objectives.game import UnconditionalGAN
from gan_jax.train.state import create_train_state
from gan_jax.train.step import _update_player, make_train_step

TARGET = np.array([2.0, -1.0], np.float32)


def make_game(loss="non_saturating", **kw):
    g = MLPGenerator((2,), hidden=(32, 32), output="linear")
    d = MLPDiscriminator(hidden=(32,), pieces=2)
    return UnconditionalGAN(g, d, get_loss(loss), z_dim=2, **kw)


def real_batch(step, n=64):
    rng = np.random.default_rng(step)
    return {"x": jnp.asarray(TARGET + 0.1 * rng.standard_normal((n, 2)), jnp.float32)}


@pytest.mark.parametrize("player", ["d", "g"])
@pytest.mark.parametrize("loss", ["non_saturating", "hinge", "least_squares", "wasserstein"])
def test_one_player_step_lowers_its_loss(player, loss):
    game = make_game(loss)
    txs = {"d": optax.sgd(1e-3), "g": optax.sgd(1e-3)}
    state = create_train_state(game, txs, jax.random.PRNGKey(0), real_batch(0)["x"])
    nets = dict(game.players)[player]
    batch, rng = real_batch(1), jax.random.PRNGKey(1)
    before = game.player_loss(player, state.params, state.model_state, batch, rng)[0]
    params, *_ = _update_player(
        game, txs[player], player, nets, state.params, state.model_state, state.opt_state[player], batch, rng
    )
    after = game.player_loss(player, params, state.model_state, batch, rng)[0]
    assert float(after) < float(before)


def test_generator_learns_a_gaussian():
    game = make_game()
    txs = {"d": optax.adam(2e-3, b1=0.5), "g": optax.adam(2e-3, b1=0.5)}
    state = create_train_state(game, txs, jax.random.PRNGKey(0), real_batch(0)["x"])
    step = jax.jit(make_train_step(game, txs, ema_decay=0.0))
    z = game.sample_latents(jax.random.PRNGKey(9), 512)
    start = np.asarray(game.generate(state.params["generator"], {}, z)[0]).mean(0)
    for i in range(400):
        state, metrics = step(state, real_batch(i))
    end = np.asarray(game.generate(state.params["generator"], {}, z)[0]).mean(0)
    assert np.linalg.norm(start - TARGET) > 1.5
    assert np.linalg.norm(end - TARGET) < 0.3, end
    assert float(metrics["nonfinite"]) == 0.0


def test_nonfinite_step_changes_nothing():
    game = make_game()
    txs = {"d": optax.adam(1e-3), "g": optax.adam(1e-3)}
    state = create_train_state(game, txs, jax.random.PRNGKey(0), real_batch(0)["x"])
    step = jax.jit(make_train_step(game, txs, inject_nan_at_step=0))
    new_state, metrics = step(state, real_batch(0))
    assert float(metrics["nonfinite"]) == 1.0
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(new_state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The state is untouched (its step too), so a clean step from it proceeds normally.
    newer, metrics = jax.jit(make_train_step(game, txs))(new_state, real_batch(1))
    assert float(metrics["nonfinite"]) == 0.0 and int(newer.step) == 1


def test_n_critic_uses_each_slice_and_counts_one_step():
    game = make_game(loss="wasserstein", gp_weight=10.0)
    txs = {"d": optax.adam(1e-4), "g": optax.adam(1e-4)}
    batch = real_batch(0, n=5 * 16)
    state = create_train_state(game, txs, jax.random.PRNGKey(0), batch["x"][:16])
    state, metrics = jax.jit(make_train_step(game, txs, n_critic=5))(state, batch)
    assert int(state.step) == 1
    assert int(state.opt_state["d"][0].count) == 5 and int(state.opt_state["g"][0].count) == 1
    assert float(metrics["gradient_penalty"]) >= 0.0
