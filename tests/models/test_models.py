"""Model shapes and exact parameter counts (worked out by hand from the papers' layer lists)."""

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from gan_jax.config import ConfigError
from gan_jax.models import build_networks


def count(tree):
    return sum(x.size for x in jax.tree.leaves(tree))


def model_config(**fields):
    return ml_collections.ConfigDict(dict(z_dim=100, z_dist="normal", **fields))


def init_both(g, d, data_shape, z_dim=100, batch=4):
    z = jnp.zeros((batch, z_dim))
    g_vars = g.init(jax.random.PRNGKey(0), z, train=False)
    x = g.apply(g_vars, z, train=False)
    d_vars = d.init(jax.random.PRNGKey(1), x, train=False)
    logits = d.apply(d_vars, x, train=False)
    return g_vars, d_vars, x, logits


def test_dcgan_32_paper_width():
    g, d = build_networks(model_config(name="dcgan", g_width=128, d_width=128), (32, 32, 1))
    g_vars, d_vars, x, logits = init_both(g, d, (32, 32, 1))
    assert x.shape == (4, 32, 32, 1) and logits.shape == (4,)
    # G: ConvT 100->512 (4x4, no bias) + BN, 512->256 + BN, 256->128 + BN, 128->1 (with bias).
    g_expected = 100 * 512 * 16 + 2 * 512 + 512 * 256 * 16 + 2 * 256 + 256 * 128 * 16 + 2 * 128 + 128 * 16 + 1
    # D: Conv 1->128 (bias), 128->256 + BN, 256->512 + BN, 512->1 (4x4 valid, bias).
    d_expected = 16 * 128 + 128 + 128 * 256 * 16 + 2 * 256 + 256 * 512 * 16 + 2 * 512 + 512 * 16 + 1
    assert count(g_vars["params"]) == g_expected == 3_444_481
    assert count(d_vars["params"]) == d_expected == 2_633_345
    assert jnp.all(jnp.abs(x) <= 1.0)


def test_dcgan_64_rgb():
    g, d = build_networks(model_config(name="dcgan", g_width=64, d_width=64), (64, 64, 3))
    _, _, x, logits = init_both(g, d, (64, 64, 3))
    assert x.shape == (4, 64, 64, 3) and logits.shape == (4,)


def test_goodfellow_mnist_mlp():
    cfg = model_config(name="mlp", g_hidden=(1200, 1200), d_hidden=(240, 240), d_pieces=5, d_dropout=0.5)
    g, d = build_networks(cfg, (28, 28, 1))
    g_vars, d_vars, x, logits = init_both(g, d, (28, 28, 1))
    assert x.shape == (4, 28, 28, 1) and logits.shape == (4,)
    assert count(g_vars["params"]) == (100 * 1200 + 1200) + (1200 * 1200 + 1200) + (1200 * 784 + 784) == 2_503_984
    assert count(d_vars["params"]) == (784 * 1200 + 1200) + (240 * 1200 + 1200) + (240 + 1) == 1_231_441


def test_mog_mlp_outputs_points():
    cfg = model_config(name="mlp", g_hidden=(400,) * 4, g_batch_norm=True, d_hidden=(200,) * 3, d_pieces=5)
    cfg.z_dim = 2
    g, d = build_networks(cfg, (2,))
    g_vars, _, x, logits = init_both(g, d, (2,), z_dim=2)
    assert x.shape == (4, 2) and logits.shape == (4,)
    assert "batch_stats" in g_vars


def test_unknown_model_field_is_named():
    with pytest.raises(ConfigError, match="config.model.g_widht"):
        build_networks(model_config(name="dcgan", g_widht=64), (32, 32, 1))


def test_unknown_model_name():
    with pytest.raises(ConfigError, match="unknown model"):
        build_networks(model_config(name="nope"), (32, 32, 1))


def test_dcgan_rejects_impossible_resolution():
    with pytest.raises(ConfigError, match="resolutions"):
        build_networks(model_config(name="dcgan"), (28, 28, 1))


def test_dcgan_minibatch_std_adds_one_channel_before_the_last_conv():
    g, d = build_networks(model_config(name="dcgan", g_width=128, d_width=128, d_minibatch_std=4), (32, 32, 1))
    _, d_vars, _, logits = init_both(g, d, (32, 32, 1))
    assert logits.shape == (4,)
    # The paper's D (2,633,345) plus the last 4x4 conv's weights for the extra channel.
    assert d_vars["params"]["Conv2D_3"]["kernel"].shape == (4, 4, 512 + 1, 1)
    assert count(d_vars["params"]) == 2_633_345 + 16 == 2_633_361


def test_mlp_minibatch_std_adds_one_feature_before_the_last_layer():
    cfg = model_config(name="mlp", g_hidden=(1200, 1200), d_hidden=(240, 240), d_pieces=5, d_minibatch_std=2)
    g, d = build_networks(cfg, (28, 28, 1))
    _, d_vars, _, logits = init_both(g, d, (28, 28, 1))
    assert logits.shape == (4,)
    assert d_vars["params"]["Dense_2"]["kernel"].shape == (240 + 1, 1)
    assert count(d_vars["params"]) == 1_231_441 + 1


def test_negative_minibatch_std_is_named():
    with pytest.raises(ConfigError, match="d_minibatch_std is a group size"):
        build_networks(model_config(name="mlp", d_minibatch_std=-1), (2,))


def test_minibatch_std_group_must_divide_the_discriminators_batch():
    from gan_jax.config import base_config, validate

    config = base_config()
    config.batch_size, config.pack = 64, 2
    config.model.d_minibatch_std = 4
    validate(config)
    config.model.d_minibatch_std = 64  # larger than D's batch of 32: the whole batch is one group
    validate(config)
    config.model.d_minibatch_std = 3
    with pytest.raises(ConfigError, match=r"^config\.model\.d_minibatch_std=3: the group size must divide D's batch"):
        validate(config)
