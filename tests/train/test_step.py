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


@pytest.mark.parametrize("decay", ["linear", "cosine"])
def test_lr_decay_scales_every_players_update_by_the_schedule(decay):
    import ml_collections

    from gan_jax.train.optim import lr_decay_factor

    config = ml_collections.ConfigDict({"lr_decay": decay, "lr_decay_final": 0.1, "num_train_steps": 100})
    factor = lr_decay_factor(config)
    values = [float(factor(jnp.asarray(s))) for s in (0, 50, 100, 150)]
    mid = 0.1 + 0.9 * 0.5  # linear and cosine agree half way
    np.testing.assert_allclose(values, [1.0, mid, 0.1, 0.1], rtol=1e-6)
    assert float(factor(jnp.asarray(25))) == pytest.approx(
        0.1 + 0.9 * (0.75 if decay == "linear" else 0.5 + 0.5 / 2**0.5)
    )
    # Starting at step 60 (sngan_projection's iteration_decay_start): flat until then, the same curve over the rest.
    config.lr_decay_start = 60
    late = lr_decay_factor(config)
    values = [float(late(jnp.asarray(s))) for s in (0, 60, 70, 80, 100, 150)]
    np.testing.assert_allclose(values, [1.0, 1.0, values[2], mid, 0.1, 0.1], rtol=1e-6)
    assert values[2] == pytest.approx(0.1 + 0.9 * (0.75 if decay == "linear" else 0.5 + 0.5 / 2**0.5))
    config.lr_decay = "constant"
    assert lr_decay_factor(config) is None

    # Adam's first update has size lr whatever the gradient: at step 50 every parameter of both players moves by
    # `mid` * lr. D steps first, from the same state, so its update is exactly `mid` times the constant one.
    game = make_game()
    txs = {"d": optax.adam(1e-3), "g": optax.adam(1e-3)}
    state = create_train_state(game, txs, jax.random.PRNGKey(0), real_batch(0)["x"]).replace(step=jnp.asarray(50))
    plain = make_train_step(game, txs, ema_decay=0.0)(state, real_batch(1))[0]
    decayed = make_train_step(game, txs, ema_decay=0.0, lr_factor=factor)(state, real_batch(1))[0]
    delta = lambda new, name: jax.tree.leaves(
        jax.tree.map(lambda a, b: np.asarray(a - b), new.params[name], state.params[name])
    )  # noqa: E731
    for a, b in zip(delta(plain, "discriminator"), delta(decayed, "discriminator"), strict=True):
        np.testing.assert_allclose(b, mid * a, rtol=1e-4, atol=2e-7)
    moved = np.concatenate([np.abs(b).ravel() for b in delta(decayed, "generator")])
    moved = moved[moved > 0]  # dead ReLU units get no gradient
    assert moved.size > 0.8 * sum(p.size for p in jax.tree.leaves(state.params["generator"]))
    # |Adam update| = lr |g| / (|g| + eps): lr itself except for gradients near eps.
    assert np.median(moved) == pytest.approx(mid * 1e-3, rel=1e-3) and moved.max() < mid * 1e-3 * 1.001


class _MeanSquareGame:
    """A one-player game whose loss is a mean over its batch (no randomness), counting its calls in model state."""

    players = (("d", ("w",)),)

    def player_loss(self, player, params, state, batch, rng, phase=None):
        loss = jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)
        return loss, ({"calls": {"n": state["calls"]["n"] + 1}}, {"loss": loss})


@pytest.mark.parametrize("accum", [2, 4])
def test_gradient_accumulation_equals_the_full_batch_step(accum):
    game, tx = _MeanSquareGame(), optax.sgd(0.1)
    rng = np.random.default_rng(0)
    batch = {"x": jnp.asarray(rng.standard_normal((8, 3)), jnp.float32), "y": jnp.asarray(rng.standard_normal(8))}
    params = {"w": jnp.asarray(rng.standard_normal(3), jnp.float32)}
    state = {"calls": {"n": jnp.zeros((), jnp.int32)}}
    args = (game, tx, "d", ("w",), params, state, tx.init(params), batch, jax.random.PRNGKey(0))
    full_params, full_state, _, full_metrics = _update_player(*args)
    acc_params, acc_state, _, acc_metrics = _update_player(*args, accum=accum)
    np.testing.assert_allclose(np.asarray(acc_params["w"]), np.asarray(full_params["w"]), rtol=1e-6, atol=1e-7)
    # A mean of per-micro-batch means equals the full mean for equal slices; the state advanced once per slice.
    np.testing.assert_allclose(float(acc_metrics["loss"]), float(full_metrics["loss"]), rtol=1e-6)
    assert int(full_state["calls"]["n"]) == 1 and int(acc_state["calls"]["n"]) == accum


def test_ema_is_a_copy_until_ema_start():
    game = make_game()
    txs = {"d": optax.adam(1e-2), "g": optax.adam(1e-2)}
    state = create_train_state(game, txs, jax.random.PRNGKey(0), real_batch(0)["x"])
    step = jax.jit(make_train_step(game, txs, ema_decay=0.9, ema_start=2))
    for i in range(3):
        state, _ = step(state, real_batch(i))
        same = all(
            np.array_equal(np.asarray(a), np.asarray(b))
            for a, b in zip(jax.tree.leaves(state.ema_params), jax.tree.leaves(state.params["generator"]))
        )
        assert same == (i < 2), i  # steps 0 and 1 copy; step 2 (the first at ema_start) averages
