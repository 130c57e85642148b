"""StyleGAN2's objective: R1 and path length against hand-computed cases, ADA's p, phases, resume, config checks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gan_jax.config import ConfigError, load_config
from gan_jax.models import build_networks
from gan_jax.objectives.regularizers import path_length_penalty, path_lengths
from gan_jax.objectives.stylegan2 import StyleGAN2Game
from gan_jax.train.experiment import setup
from gan_jax.train.loop import train
from gan_jax.train.optim import ema_decay_schedule

N, RES = 8, 16


class QuadraticD(nn.Module):
    """D(x) = c * |x|^2 per example, so grad_x D = 2 c x and R1 = mean(4 c^2 |x|^2)."""

    c: float = 0.5

    @nn.compact
    def __call__(self, x, labels=None, train=False):
        scale = self.param("scale", lambda key: jnp.asarray(self.c))
        return scale * jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=1)


class ConstantD(nn.Module):
    """A discriminator that always says `value` (positive: it always wins on the reals)."""

    value: float = 5.0

    @nn.compact
    def __call__(self, x, labels=None, train=False):
        bias = self.param("bias", lambda key: jnp.asarray(self.value))
        return jnp.zeros(x.shape[0]) + bias


def small_generator():
    fields = dict(name="stylegan2", z_dim=16, w_dim=16, mapping_layers=2, channel_base=128, channel_max=8)
    g, _ = build_networks(ml_collections.ConfigDict(fields), (RES, RES, 1))
    return g


def make_game(discriminator, **kw):
    kw = {"augment": "none", "style_mixing_prob": 0.0, "pl_weight": 0.0, **kw}
    game = StyleGAN2Game(generator=small_generator(), discriminator=discriminator, z_dim=16, **kw)
    params, state = game.init(jax.random.PRNGKey(0), jnp.zeros((N, RES, RES, 1)))
    batch = {"x": jax.random.uniform(jax.random.PRNGKey(1), (N, RES, RES, 1), minval=-1, maxval=1)}
    return game, params, state, batch


def test_r1_against_the_hand_computed_gradient():
    game, params, state, batch = make_game(QuadraticD(0.5), r1_gamma=2.0, r1_interval=4)
    rng = jax.random.PRNGKey(2)
    with_r1, (_, m_with) = game.d_loss(params, state, batch, rng, do_r1=True)
    without, (_, m_without) = game.d_loss(params, state, batch, rng, do_r1=False)
    x = np.asarray(batch["x"], np.float64).reshape(N, -1)
    r1 = np.mean(np.sum((2 * 0.5 * x) ** 2, axis=1))  # |2 c x|^2
    np.testing.assert_allclose(m_with["r1_penalty"], r1, rtol=1e-5)
    assert float(m_without["r1_penalty"]) == 0.0
    # Lazy: gamma / 2 times the interval, added to the same loss.
    np.testing.assert_allclose(with_r1 - without, 0.5 * 2.0 * 4 * r1, rtol=1e-5)
    np.testing.assert_allclose(m_with["d_loss"], m_without["d_loss"], rtol=1e-6)


def test_static_phases_equal_the_in_graph_decision():
    """phase=None decides from the game's counters with lax.cond; it must agree with the static phases."""
    game, params, state, batch = make_game(QuadraticD(0.5), r1_gamma=2.0, r1_interval=2)
    rng = jax.random.PRNGKey(3)
    for d_steps, due in ((0, True), (1, False), (2, True)):
        st = {**state, "game": {**state["game"], "d_steps": jnp.int32(d_steps)}}
        dynamic = game.d_loss(params, st, batch, rng, do_r1=None)[0]
        static = game.d_loss(params, st, batch, rng, do_r1=due)[0]
        np.testing.assert_allclose(dynamic, static, rtol=1e-6)
    assert [game.phase(s) for s in range(3)] == [(True, False), (False, False), (True, False)]


def test_path_lengths_of_a_linear_generator_by_hand():
    rng = np.random.default_rng(0)
    n, layers, dim, h, w, c = 3, 4, 6, 5, 5, 2
    a = rng.normal(size=(layers, dim, h * w * c))
    ws = jnp.asarray(rng.normal(size=(n, layers, dim)), jnp.float32)
    synth = lambda v: jnp.einsum("nld,ldp->np", v, jnp.asarray(a, jnp.float32)).reshape(n, h, w, c)  # noqa: E731
    key = jax.random.PRNGKey(7)
    lengths, images = path_lengths(synth, ws, key)
    assert images.shape == (n, h, w, c)
    y = np.asarray(jax.random.normal(key, (n, h, w, c)), np.float64).reshape(n, -1) / np.sqrt(h * w)
    grads = np.einsum("ldp,np->nld", a, y)  # J^T y
    expected = np.sqrt(np.mean(np.sum(grads**2, axis=2), axis=1))
    np.testing.assert_allclose(lengths, expected, rtol=1e-4)
    penalty, new_mean = path_length_penalty(jnp.asarray([1.0, 2.0, 3.0]), jnp.asarray(1.0), 0.01)
    np.testing.assert_allclose(new_mean, 1.0 + 0.01 * (2.0 - 1.0))
    np.testing.assert_allclose(penalty, np.mean((np.array([1.0, 2.0, 3.0]) - 1.01) ** 2), rtol=1e-6)


def test_path_length_term_in_the_generator_loss():
    game, params, state, batch = make_game(QuadraticD(0.5), pl_weight=2.0, pl_interval=4)
    rng = jax.random.PRNGKey(4)
    with_pl, (new_state, m) = game.g_loss(params, state, batch, rng, do_pl=True)
    without, (skipped_state, m0) = game.g_loss(params, state, batch, rng, do_pl=False)
    assert float(m["pl_length"]) > 0 and float(m0["pl_penalty"]) == 0.0
    np.testing.assert_allclose(with_pl - without, 2.0 * 4 * m["pl_penalty"], rtol=1e-5)
    # The running mean starts at 0 and moves 1% of the way to the batch's mean length; untouched on other steps.
    np.testing.assert_allclose(new_state["game"]["pl_mean"], 0.01 * m["pl_length"], rtol=1e-5)
    assert float(skipped_state["game"]["pl_mean"]) == 0.0


@pytest.mark.parametrize("value, p_init, direction", [(5.0, 0.0, 1), (-5.0, 0.5, -1)])
def test_ada_p_follows_the_sign_of_d_on_reals(value, p_init, direction):
    """A D that always wins (D(real) > 0, r_t = 1 > 0.6) raises p by N * interval / (ada_kimg * 1000) per interval;
    one that always loses lowers it."""
    game, params, state, batch = make_game(
        ConstantD(value), augment="ada", ada_interval=4, ada_kimg=1.0, ada_p_init=p_init
    )
    step = jax.jit(lambda s, k: game.d_loss(params, s, batch, k)[1][0]["game"])
    game_state = state["game"]
    ps = []
    for i in range(8):
        game_state = step({**state, "game": game_state}, jax.random.PRNGKey(i))
        ps.append(float(game_state["ada_p"]))
    delta = N * 4 / 1000.0
    expected = [p_init] * 3 + [p_init + direction * delta] * 4 + [p_init + 2 * direction * delta]
    np.testing.assert_allclose(ps, expected, atol=1e-6)


def test_ema_half_life_schedule():
    config = load_config("configs/stylegan.py:smoke")
    config.update_from_flattened_dict({"ema_kimg": 10.0, "ema_rampup": 0.05, "batch_size": 32})
    decay = ema_decay_schedule(config)
    assert float(decay(jnp.int32(0))) == 0.0  # a copy at the start
    # After 1000 steps: min(10,000, 32,000 * 0.05 = 1,600) images of half-life.
    np.testing.assert_allclose(decay(jnp.int32(1000)), 0.5 ** (32 / 1600), rtol=1e-6)
    np.testing.assert_allclose(decay(jnp.int32(100_000)), 0.5 ** (32 / 10_000), rtol=1e-6)
    config.ema_kimg = 0.0
    assert ema_decay_schedule(config) == config.ema_decay


def test_resume_restores_ada_p_and_the_path_length_mean(tmp_path, branch_run):
    def config(steps):
        c = load_config("configs/stylegan.py:smoke")
        c.update_from_flattened_dict(
            {"num_train_steps": steps, "checkpoint_every": 3, "log_every": 2, "sample_every": 100}
        )
        c.stylegan.update(ada_kimg=0.05, ada_interval=2, ada_p_init=0.5)  # p moves by 0.32 per interval
        return c

    straight = train(config(6), str(tmp_path / "straight"))
    resumed = train(config(6), str(branch_run(tmp_path / "straight", tmp_path / "resumed", 3)))
    game = straight.model_state["game"]
    assert float(game["ada_p"]) != 0.5 and float(game["pl_mean"]) > 0 and int(game["d_steps"]) == 6
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"loss": "hinge"}, "loss"),
        ({"pack": 2}, "pack"),
        ({"gp_weight": 10.0}, "gp_weight"),
        ({"stylegan.augment": "mixup"}, "stylegan.augment"),
        ({"stylegan.ada_groups": "bgx"}, "ada_groups"),
        ({"stylegan.r1_interval": 0}, "r1_interval"),
        ({"diffaugment": "color"}, "diffaugment"),
        ({"model.d_mbstd_group": 3}, "d_mbstd_group"),
        ({"grad_accum": 2}, "grad_accum"),
    ],
)
def test_settings_stylegan2_cannot_honour_are_refused(overrides, match):
    config = load_config("configs/stylegan.py:smoke")
    config.update_from_flattened_dict(overrides)
    with pytest.raises(ConfigError, match=match):
        setup(config, None)


@pytest.mark.parametrize("variant", ["mnist", "fashion_mnist", "cifar10", "ffhq256", "afhq512", "smoke"])
def test_every_variant_validates_and_its_networks_build(variant):
    from gan_jax.config import validate
    from gan_jax.train.experiment import build_game

    config = load_config(f"configs/stylegan.py:{variant}")
    validate(config)
    shape = (config.data.resolution, config.data.resolution, config.data.channels)
    game = build_game(config, shape, config.model.num_classes or None)
    example = jax.ShapeDtypeStruct((config.batch_size,) + shape, jnp.float32)
    params, _ = jax.eval_shape(lambda x: game.init(jax.random.PRNGKey(0), x), example)
    assert sum(x.size for x in jax.tree.leaves(params["generator"])) > 0
    if variant == "cifar10":  # the ADA paper's cifar spec: 100,000 kimg at batch 64, 512 channels, mbstd 32
        assert config.num_train_steps == 100_000 * 1000 // 64
        assert (config.model.channel_base, config.model.d_mbstd_group, config.r1_gamma) == (32768, 32, 0.01)


@pytest.mark.parametrize("augment", ["ada", "diffaugment"])
def test_augmentation_changes_what_d_sees_and_keeps_g_differentiable(augment):
    game, params, state, batch = make_game(QuadraticD(0.5), augment=augment, ada_p_init=1.0)
    rng = jax.random.PRNGKey(5)
    none_game = make_game(QuadraticD(0.5))[0]
    seen = game.d_input(batch["x"], rng, jnp.asarray(1.0))
    assert seen.shape == batch["x"].shape and not np.allclose(seen, batch["x"])
    np.testing.assert_array_equal(none_game.d_input(batch["x"], rng, jnp.asarray(1.0)), batch["x"])
    np.testing.assert_array_equal(game.d_input(batch["x"], None, jnp.asarray(1.0)), batch["x"])  # evaluation
    grads = jax.grad(lambda gp: game.g_loss({**params, "generator": gp}, state, batch, rng, do_pl=False)[0])(
        params["generator"]
    )
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    assert float(sum(jnp.sum(jnp.abs(g)) for g in jax.tree.leaves(grads))) > 0
