"""Unrolled D (Metz et al. 2017): G's gradient is the gradient through D's look-ahead steps; D's update is unchanged."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gan_jax.config import ConfigError, base_config, load_config, validate
from gan_jax.models.mlp import MLPDiscriminator, MLPGenerator
from gan_jax.objectives import get_loss
from gan_jax.objectives.game import UnconditionalGAN
from gan_jax.train.experiment import build_game
from gan_jax.train.optim import make_optimizer, make_optimizers
from gan_jax.train.state import create_train_state
from gan_jax.train.step import _update_player, make_train_step, unrolled

D_LR, G_LR = 0.5, 1.0


def make_game():
    g = MLPGenerator((2,), hidden=(16,), output="linear")
    d = MLPDiscriminator(hidden=(16,), pieces=2)
    return UnconditionalGAN(g, d, get_loss("non_saturating"), z_dim=2)


def real_batch(seed, n=32):
    return {"x": jnp.asarray(np.random.default_rng(seed).standard_normal((n, 2)) + [2.0, -1.0], jnp.float32)}


def setup():
    game = make_game()
    txs = {"d": optax.sgd(D_LR), "g": optax.sgd(G_LR)}
    state = create_train_state(game, txs, jax.random.PRNGKey(0), real_batch(0)["x"])
    return game, txs, state


def by_hand_g_grad(game, params, ms, batch, d_key, g_key, through_unrolling=True):
    """d/dG of G's loss against D after one SGD step of D, written out without the step module."""

    def objective(g_params):
        full = {**params, "generator": g_params}
        d_view = full if through_unrolling else {**full, "generator": jax.lax.stop_gradient(g_params)}
        d_loss = lambda dp: game.d_loss({**d_view, "discriminator": dp}, ms, batch, d_key)[0]
        d_grad = jax.grad(d_loss)(full["discriminator"])
        d_ahead = jax.tree.map(lambda p, g: p - D_LR * g, full["discriminator"], d_grad)
        return game.g_loss({**full, "discriminator": d_ahead}, ms, batch, g_key)[0]

    return jax.grad(objective)(params["generator"])


def test_generator_gradient_goes_through_one_unrolled_sgd_step():
    game, txs, state = setup()
    batch, g_key, unroll_key = real_batch(1), jax.random.PRNGKey(1), jax.random.PRNGKey(2)
    (d_key,) = jax.random.split(unroll_key, 1)  # the look-ahead's key for its only step
    look = unrolled(game, txs["d"], "d", ("discriminator",), state.opt_state["d"], batch, unroll_key, steps=1)
    params, *_ = _update_player(
        game,
        txs["g"],
        "g",
        ("generator",),
        state.params,
        state.model_state,
        state.opt_state["g"],
        batch,
        g_key,
        lookahead=look,
    )
    got = jax.tree.map(lambda new, old: (old - new) / G_LR, params["generator"], state.params["generator"])
    expected = by_hand_g_grad(game, state.params, state.model_state, batch, d_key, g_key)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    # The test can tell: the gradient that ignores how D's step depends on G, and the plain one, are both different.
    stopped = by_hand_g_grad(game, state.params, state.model_state, batch, d_key, g_key, through_unrolling=False)
    plain = jax.grad(lambda gp: game.g_loss({**state.params, "generator": gp}, state.model_state, batch, g_key)[0])(
        state.params["generator"]
    )
    norm = lambda t: float(optax.global_norm(t))
    diff = lambda a, b: norm(jax.tree.map(jnp.subtract, a, b))
    assert diff(expected, stopped) > 1e-3 * norm(expected)
    assert diff(expected, plain) > 1e-3 * norm(expected)


def test_unrolled_train_step_leaves_d_update_and_optimizer_states_alone():
    game, txs, state = setup()
    batch = real_batch(3)
    plain_state, plain_metrics = jax.jit(make_train_step(game, txs))(state, batch)
    unrolled_state, metrics = jax.jit(make_train_step(game, txs, unroll_steps=3))(state, batch)
    assert float(metrics["nonfinite"]) == 0.0 and int(unrolled_state.step) == 1
    for a, b in zip(
        jax.tree.leaves(plain_state.params["discriminator"]), jax.tree.leaves(unrolled_state.params["discriminator"])
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert float(metrics["d_loss"]) == pytest.approx(float(plain_metrics["d_loss"]), rel=1e-6)
    # G moved, and differently from the plain step.
    g_plain, g_unrolled = plain_state.params["generator"], unrolled_state.params["generator"]
    assert float(optax.global_norm(jax.tree.map(jnp.subtract, g_plain, g_unrolled))) > 1e-6
    assert float(metrics["g_grad_norm"]) != float(plain_metrics["g_grad_norm"])


def test_adam_lookahead_is_differentiated_with_a_finite_square_root():
    """A maxout D leaves some pieces without gradient, where plain Adam's sqrt(v) has an infinite derivative."""
    config = load_config("configs/gan_mog.py:smoke")
    game, txs = build_game(config, (2,)), make_optimizers(config)
    x = {"x": jnp.asarray(np.random.default_rng(0).standard_normal((100, 2)), jnp.float32)}
    state = create_train_state(game, txs, jax.random.PRNGKey(0), x["x"])
    _, plain = jax.jit(make_train_step(game, txs, unroll_steps=2))(state, x)
    assert float(plain["nonfinite"]) == 1.0 and not np.isfinite(float(plain["g_grad_norm"]))
    safe_tx = make_optimizer(config.optim.d, differentiable=True)
    new_state, safe = jax.jit(make_train_step(game, txs, unroll_steps=2, unroll_optimizer=safe_tx))(state, x)
    assert float(safe["nonfinite"]) == 0.0 and int(new_state.step) == 1
    # The differentiable Adam makes the same update wherever the gradient has no zeros, from the same state.
    params = {"w": jnp.ones((3, 4))}
    grads = {"w": jnp.asarray(np.random.default_rng(1).standard_normal((3, 4)), jnp.float32)}
    opt_state = txs["d"].init(params)
    for a, b in zip(
        jax.tree.leaves(txs["d"].update(grads, opt_state)[0]), jax.tree.leaves(safe_tx.update(grads, opt_state)[0])
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def test_negative_unroll_steps_is_named():
    config = base_config()
    config.unroll_steps = -1
    with pytest.raises(ConfigError, match=r"^config\.unroll_steps=-1: must be >= 0"):
        validate(config)
