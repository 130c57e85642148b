"""PacGAN packing: the exact layout, D built for packed inputs, a packed step that trains, and the config check."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from gan_jax.config import ConfigError, base_config, validate
from gan_jax.models import build_networks
from gan_jax.models.mlp import MLPDiscriminator, MLPGenerator
from gan_jax.objectives import get_loss
from gan_jax.objectives.game import UnconditionalGAN
from gan_jax.objectives.packing import pack
from gan_jax.train.state import create_train_state
from gan_jax.train.step import _update_player, make_train_step

TARGET = np.array([2.0, -1.0], np.float32)


def real_batch(step, n=64):
    rng = np.random.default_rng(step)
    return {"x": jnp.asarray(TARGET + 0.1 * rng.standard_normal((n, 2)), jnp.float32)}


def mlp_game(pack_size, loss="non_saturating", **kw):
    g = MLPGenerator((2,), hidden=(32, 32), output="linear")
    d = MLPDiscriminator(hidden=(32,), pieces=2)
    return UnconditionalGAN(g, d, get_loss(loss), z_dim=2, pack=pack_size, **kw)


def test_pack_points_layout():
    x = jnp.arange(12.0).reshape(6, 2)
    np.testing.assert_array_equal(np.asarray(pack(x, 2)), [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]])
    np.testing.assert_array_equal(np.asarray(pack(x, 3)), [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]])
    assert pack(x, 1) is x


def test_pack_images_layout():
    # Two 1x2 images with 2 channels -> one 1x2 image with 4 channels: sample 0's channels, then sample 1's.
    x = jnp.asarray([[[[0, 1], [2, 3]]], [[[10, 11], [12, 13]]]], jnp.float32)
    packed = pack(x, 2)
    assert packed.shape == (1, 1, 2, 4)
    np.testing.assert_array_equal(np.asarray(packed), [[[[0, 1, 10, 11], [2, 3, 12, 13]]]])


def test_pack_rejects_indivisible_batch():
    with pytest.raises(ValueError, match="batch of 6 into groups of 4"):
        pack(jnp.zeros((6, 2)), 4)


def test_packed_dcgan_discriminator_has_m_times_the_input_channels():
    cfg = ml_collections.ConfigDict(dict(name="dcgan", z_dim=8, z_dist="normal", g_width=8, d_width=8))
    g, d = build_networks(cfg, (16, 16, 3))
    game = UnconditionalGAN(g, d, get_loss("non_saturating"), z_dim=8, pack=4)
    params, state = game.init(jax.random.PRNGKey(0), jnp.zeros((8, 16, 16, 3)))
    assert params["discriminator"]["Conv2D_0"]["kernel"].shape == (4, 4, 4 * 3, 8)
    # The rest of D and all of G are as without packing.
    unpacked, _ = UnconditionalGAN(g, d, get_loss("non_saturating"), z_dim=8).init(
        jax.random.PRNGKey(0), jnp.zeros((8, 16, 16, 3))
    )
    assert unpacked["discriminator"]["Conv2D_0"]["kernel"].shape == (4, 4, 3, 8)
    shapes = lambda p: jax.tree.map(lambda a: a.shape, p)
    assert shapes(params["generator"]) == shapes(unpacked["generator"])
    assert shapes(params["discriminator"]["Conv2D_2"]) == shapes(unpacked["discriminator"]["Conv2D_2"])
    x = game.d_input(jnp.zeros((8, 16, 16, 3)), None)
    logits = game.discriminator.apply({"params": params["discriminator"], **state["discriminator"]}, x, train=False)
    assert logits.shape == (2,)


def test_packed_mlp_discriminator_sees_2m_features_and_one_logit_per_pack():
    game = mlp_game(4)
    params, state = game.init(jax.random.PRNGKey(0), real_batch(0)["x"])
    assert params["discriminator"]["Dense_0"]["kernel"].shape == (2 * 4, 32 * 2)
    x = game.d_input(real_batch(0)["x"], None)
    assert x.shape == (16, 8)
    logits = game.discriminator.apply({"params": params["discriminator"]}, x, train=False)
    assert logits.shape == (16,)


@pytest.mark.parametrize("loss,penalty", [("non_saturating", {}), ("wasserstein", {"gp_weight": 10.0})])
def test_packed_d_step_lowers_its_loss(loss, penalty):
    game = mlp_game(2, loss, **penalty)
    txs = {"d": optax.sgd(1e-3), "g": optax.sgd(1e-3)}
    state = create_train_state(game, txs, jax.random.PRNGKey(0), real_batch(0)["x"])
    batch, rng = real_batch(1), jax.random.PRNGKey(1)
    before = game.player_loss("d", state.params, state.model_state, batch, rng)[0]
    params, *_ = _update_player(
        game, txs["d"], "d", ("discriminator",), state.params, state.model_state, state.opt_state["d"], batch, rng
    )
    after = game.player_loss("d", params, state.model_state, batch, rng)[0]
    assert float(after) < float(before)


def test_packed_train_step_with_r1_and_n_critic():
    game = mlp_game(4, r1_gamma=1.0)
    txs = {"d": optax.adam(1e-3), "g": optax.adam(1e-3)}
    state = create_train_state(game, txs, jax.random.PRNGKey(0), real_batch(0, n=16)["x"])
    state, metrics = jax.jit(make_train_step(game, txs, n_critic=2))(state, real_batch(1, n=32))
    assert int(state.step) == 1 and float(metrics["nonfinite"]) == 0.0
    assert float(metrics["r1_penalty"]) > 0.0 and float(metrics["g_grad_norm"]) > 0.0


@pytest.mark.parametrize("value,message", [(3, "must divide the batch size"), (0, "must be >= 1")])
def test_config_rejects_bad_pack(value, message):
    config = base_config()
    config.batch_size = 64
    config.pack = value
    with pytest.raises(ConfigError, match=rf"^config\.pack={value}: {message}"):
        validate(config)


def test_config_accepts_dividing_pack():
    config = base_config()
    config.batch_size = 64
    config.pack = 4
    validate(config)
