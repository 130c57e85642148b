"""StyleGAN2's networks: shapes at every resolution, exact parameter counts, mapping, truncation, conditioning."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gan_jax.config import ConfigError
from gan_jax.models import build_networks
from gan_jax.models.stylegan2 import channels, num_ws

SMALL = dict(w_dim=16, mapping_layers=2, channel_base=256, channel_max=16, d_mapping_layers=2)


def model_config(**fields):
    return ml_collections.ConfigDict(dict(name="stylegan2", z_dim=16, z_dist="normal", **{**SMALL, **fields}))


def count(tree):
    return sum(x.size for x in jax.tree.leaves(tree))


def shapes(resolution: int, img_channels: int = 3, **fields):
    g, d = build_networks(model_config(**fields), (resolution, resolution, img_channels))
    z = jax.ShapeDtypeStruct((2, 16), jnp.float32)
    labels = jax.ShapeDtypeStruct((2,), jnp.int32) if fields.get("num_classes") else None
    g_vars = jax.eval_shape(lambda z, c: g.init({"params": jax.random.PRNGKey(0)}, z, c), z, labels)
    x = jax.eval_shape(lambda v, z, c: g.apply(v, z, c), g_vars, z, labels)
    d_vars = jax.eval_shape(lambda x, c: d.init(jax.random.PRNGKey(1), x, c), x, labels)
    logits = jax.eval_shape(lambda v, x, c: d.apply(v, x, c), d_vars, x, labels)
    return g_vars, d_vars, x, logits


@pytest.mark.parametrize("resolution", [8, 16, 32, 64, 128, 256, 512, 1024])
def test_shapes_at_every_resolution(resolution):
    g_vars, _, x, logits = shapes(resolution, channel_base=2048)
    assert x.shape == (2, resolution, resolution, 3) and logits.shape == (2,)
    ws = g_vars["params"]["mapping"]  # the mapping network exists and the synthesis uses num_ws ws
    assert "fc0" in ws and num_ws(resolution) == 2 * int(math.log2(resolution)) - 2


def test_exact_parameter_counts_by_hand():
    """32x32x1, w_dim 16, 2 mapping layers, channels min(256 / r, 16): 16 at 4..16, 8 at 32."""
    g_vars, d_vars, _, _ = shapes(32, 1)
    w, ch = 16, {r: channels(r, 256, 16) for r in (4, 8, 16, 32)}
    assert ch == {4: 16, 8: 16, 16: 16, 32: 8}
    mapping = 2 * (w * w + w)
    layer = lambda cin, cout: (w * cin + cin) + 9 * cin * cout + 1 + cout  # noqa: E731  affine, conv, noise, bias
    torgb = lambda cin: (w * cin + cin) + cin * 1 + 1  # noqa: E731
    synthesis = 4 * 4 * ch[4] + layer(ch[4], ch[4]) + torgb(ch[4])
    for r in (8, 16, 32):
        synthesis += layer(ch[r // 2], ch[r]) + layer(ch[r], ch[r]) + torgb(ch[r])
    assert count(g_vars["params"]) == mapping + synthesis
    conv = lambda cin, cout, k: k * k * cin * cout + cout  # noqa: E731
    disc = conv(1, ch[32], 1)  # fromRGB
    for r in (32, 16, 8):
        disc += conv(ch[r], ch[r], 3) + conv(ch[r], ch[r // 2], 3) + ch[r] * ch[r // 2]  # conv0, conv1, skip
    disc += conv(ch[4] + 1, ch[4], 3) + (16 * ch[4] * ch[4] + ch[4]) + (ch[4] + 1)  # epilogue: conv, fc, out
    assert count(d_vars["params"]) == disc


def test_orig_discriminator_has_no_skips():
    _, resnet, _, _ = shapes(32, 1)
    _, orig, _, _ = shapes(32, 1, d_architecture="orig")
    skips = sum(count(v) for k, v in resnet["params"].items() if k.endswith("_skip"))
    assert skips > 0 and count(orig["params"]) == count(resnet["params"]) - skips


def test_conditional_networks_take_labels():
    g_vars, d_vars, x, logits = shapes(16, 3, num_classes=10)
    assert "embed" in g_vars["params"]["mapping"] and "mapping" in d_vars["params"]
    assert logits.shape == (2,)


def make_small(resolution=16, **fields):
    g, d = build_networks(model_config(**fields), (resolution, resolution, 1))
    z = jax.random.normal(jax.random.PRNGKey(0), (4, 16))
    labels = jnp.arange(4) % 10 if fields.get("num_classes") else None
    g_vars = g.init({"params": jax.random.PRNGKey(1)}, z, labels)
    return g, d, g_vars, z, labels


def test_mapping_tracks_w_avg_only_in_training_and_truncation_pulls_to_it():
    g, _, g_vars, z, _ = make_small()
    np.testing.assert_array_equal(g_vars["stats"]["mapping"]["w_avg"], 0.0)
    _, new = g.apply(g_vars, z, None, True, method="map", mutable=["stats"])
    ws = g.apply(g_vars, z, method="map")
    w_avg = new["stats"]["mapping"]["w_avg"]
    # w_avg <- mean(w) + 0.995 (w_avg - mean(w)) from 0: 0.005 mean(w).
    np.testing.assert_allclose(w_avg, 0.005 * jnp.mean(ws[:, 0], axis=0), rtol=1e-5, atol=1e-7)
    variables = {**g_vars, "stats": new["stats"]}
    zero = g.apply(variables, z, None, False, 0.0, method="map")
    np.testing.assert_allclose(zero, jnp.broadcast_to(w_avg, zero.shape), atol=1e-6)
    half = g.apply(variables, z, None, False, 0.5, 2, method="map")  # psi 0.5 on the first 2 layers only
    np.testing.assert_allclose(half[:, :2], w_avg + 0.5 * (ws[:, :2] - w_avg), atol=1e-5)
    np.testing.assert_allclose(half[:, 2:], ws[:, 2:], atol=1e-6)


def test_every_w_reaches_the_image():
    """Layer i of the synthesis network reads ws[:, i]: every one of the num_ws ws changes the output."""
    g, _, g_vars, z, _ = make_small(32)
    ws = g.apply(g_vars, z, method="map")
    assert ws.shape[1] == num_ws(32) == 8
    grads = jax.grad(lambda w: jnp.sum(g.apply(g_vars, w, method="synthesize") ** 2))(ws)
    assert np.all(np.asarray(jnp.sum(jnp.abs(grads), axis=(0, 2))) > 0)


def test_noise_modes():
    g, _, g_vars, z, _ = make_small()
    ws = g.apply(g_vars, z, method="map")
    # Noise strengths start at zero: make them count.
    params = jax.tree_util.tree_map_with_path(
        lambda p, v: v + 1.0 if "noise_strength" in jax.tree_util.keystr(p) else v, g_vars["params"]
    )
    variables = {**g_vars, "params": params}
    const = g.apply(variables, ws, "const", method="synthesize")
    np.testing.assert_array_equal(const, g.apply(variables, ws, "const", method="synthesize"))
    r1 = g.apply(variables, ws, "random", method="synthesize", rngs={"noise": jax.random.PRNGKey(5)})
    r2 = g.apply(variables, ws, "random", method="synthesize", rngs={"noise": jax.random.PRNGKey(6)})
    none = g.apply(variables, ws, "none", method="synthesize")
    assert not np.allclose(r1, r2) and not np.allclose(const, none)
    with pytest.raises(ValueError, match="noise_mode"):
        g.apply(variables, ws, "loud", method="synthesize")


def test_bfloat16_layers_stay_close_to_float32():
    g, d, g_vars, z, _ = make_small(32)
    g16, d16 = build_networks(model_config(num_bf16_res=2, conv_clamp=256.0), (32, 32, 1))
    x32, x16 = g.apply(g_vars, z), g16.apply(g_vars, z)
    assert x16.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(x32 - x16))) < 0.1 * float(jnp.max(jnp.abs(x32))) + 1e-3
    d_vars = d.init(jax.random.PRNGKey(3), x32)
    l32, l16 = d.apply(d_vars, x32), d16.apply(d_vars, x32)
    np.testing.assert_allclose(l16, l32, rtol=0.1, atol=0.05)


@pytest.mark.parametrize(
    "fields, shape, match",
    [
        ({}, (24, 24, 1), "power-of-two"),
        ({}, (4, 4, 1), "power-of-two"),
        ({}, (32, 16, 1), "square"),
        ({"d_architecture": "skip"}, (32, 32, 1), "d_architecture"),
        ({"channel_base": 8}, (32, 32, 1), "channel_base"),
        ({"w_dims": 3}, (32, 32, 1), "w_dims"),
    ],
)
def test_bad_model_fields_are_config_errors(fields, shape, match):
    with pytest.raises(ConfigError, match=match):
        build_networks(model_config(**fields), shape)
