"""SNGAN's ResNet networks: exact parameter counts of the CIFAR-10 models, shapes, conditioning, state handling.

Kept fast (XLA:CPU compiles slowly): the networks are traced with `jax.eval_shape`, and the one test that computes
uses 8 channels, host-drawn variables and one compiled training-mode program per network.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gan_jax.config import ConfigError
from gan_jax.models import build_networks, sngan

SMALL = dict(g_ch=8, d_ch=8)


def count(tree):
    return sum(x.size for x in jax.tree.leaves(tree))


def abstract(data_shape, z_dim=128, batch=2, **fields):
    """(G variables, images, D variables, logits) as shapes, without computing anything."""
    g, d = sngan.build(data_shape, **fields)
    z = jax.ShapeDtypeStruct((batch, z_dim), jnp.float32)
    y = jax.ShapeDtypeStruct((batch,), jnp.int32) if fields.get("num_classes") else None
    x, g_vars = jax.eval_shape(lambda z, y: g.init_with_output(jax.random.PRNGKey(0), z, y, train=False), z, y)
    logits, d_vars = jax.eval_shape(lambda x, y: d.init_with_output(jax.random.PRNGKey(1), x, y, train=False), x, y)
    return g_vars, x, d_vars, logits


@pytest.mark.parametrize("num_classes", [0, 10])
def test_cifar_parameter_counts(num_classes):
    """Hand count of sngan_projection's resnet_32 G (ch 256) and snresnet_32 D (ch 128, `l5` without bias)."""
    g_vars, x, d_vars, logits = abstract((32, 32, 3), num_classes=num_classes)
    assert x.shape == (2, 32, 32, 3) and logits.shape == (2,)
    conv = lambda cin, cout, k: k * k * cin * cout + cout  # noqa: E731
    bn = lambda c: 2 * c * (num_classes or 1)  # noqa: E731  gain and bias (per class when conditional)
    g_block = conv(256, 256, 3) * 2 + conv(256, 256, 1) + 2 * bn(256)
    g_expected = (128 * 16 * 256 + 16 * 256) + 3 * g_block + 2 * 256 + conv(256, 3, 3)
    d_expected = (
        conv(3, 128, 3) + conv(128, 128, 3) + conv(3, 128, 1)  # optimized block
        + 2 * conv(128, 128, 3) + conv(128, 128, 1)  # ResBlock down
        + 2 * 2 * conv(128, 128, 3)  # 2 ResBlocks, identity shortcuts
        + 128  # SN Dense to one logit, no bias
        + num_classes * 128  # projection embedding
    )  # fmt: skip
    assert count(g_vars["params"]) == g_expected
    assert count(d_vars["params"]) == d_expected
    if num_classes == 0:  # the unconditional CIFAR-10 pair: 4.28M / 1.05M
        assert (g_expected, d_expected) == (4_276_739, 1_053_824)
    # G has no spectral norm, D no batch norm.
    assert set(g_vars) == {"params", "batch_stats"} and set(d_vars) == {"params", "spectral"}
    assert count(d_vars["spectral"]) == 6 * 128 + 2 * 2 * 128 + 1 + (128 if num_classes else 0)


def test_imagenet_parameter_counts():
    """Hand count of sngan_projection's ImageNet 128x128 pair (`resnet.py` G, `snresnet.py` D; ch 64, 1000 classes)."""
    g_vars, x, d_vars, logits = abstract((128, 128, 3), num_classes=1000, g_ch=64, d_ch=64, arch="imagenet")
    assert x.shape == (2, 128, 128, 3) and logits.shape == (2,)
    conv = lambda cin, cout, k: k * k * cin * cout + cout  # noqa: E731
    ccbn = lambda c: 2 * c * 1000  # noqa: E731  per-class gain and bias tables
    # G: Block(in, out) with hidden = out, upsampling (so a 1x1 shortcut), conditional BNs of in and out channels.
    g_block = lambda cin, cout: conv(cin, cout, 3) + conv(cout, cout, 3) + conv(cin, cout, 1) + ccbn(cin) + ccbn(cout)  # noqa: E731
    g_widths = [1024, 1024, 512, 256, 128, 64]
    g_expected = (
        128 * 16 * 1024 + 16 * 1024  # l1
        + sum(g_block(a, b) for a, b in zip(g_widths, g_widths[1:]))  # block2..block6
        + 2 * 64 + conv(64, 3, 3)  # b7, l7
    )  # fmt: skip
    # D: Block(in, out) with hidden = in; a 1x1 shortcut where it downsamples or changes width.
    d_block = lambda cin, cout, sc: conv(cin, cin, 3) + conv(cin, cout, 3) + (conv(cin, cout, 1) if sc else 0)  # noqa: E731
    d_expected = (
        conv(3, 64, 3) + conv(64, 64, 3) + conv(3, 64, 1)  # block1 (OptimizedBlock)
        + d_block(64, 128, True) + d_block(128, 256, True) + d_block(256, 512, True) + d_block(512, 1024, True)
        + d_block(1024, 1024, False)  # block6, no pooling
        + 1024 + 1  # l7, with a bias
        + 1000 * 1024  # l_y
    )  # fmt: skip
    assert count(g_vars["params"]) == g_expected
    assert count(d_vars["params"]) == d_expected
    assert sorted(g_vars["params"]) == ["block1", "block2", "block3", "block4", "block5", "bn_out", "conv_out", "dense"]
    assert sorted(d_vars["params"])[:6] == ["block1", "block2", "block3", "block4", "block5", "block6"]


@pytest.mark.parametrize("channels, num_classes", [(1, 0), (1, 10), (3, 0)])  # (3, 10) runs in test_runs_and_state
def test_shapes(channels, num_classes):
    _, x, _, logits = abstract((32, 32, channels), z_dim=16, batch=3, num_classes=num_classes, **SMALL)
    assert x.shape == (3, 32, 32, channels) and logits.shape == (3,)


def test_other_bottom_width_and_depth():
    _, x, _, _ = abstract((48, 48, 3), z_dim=16, bottom_width=6, **SMALL)  # STL-10's 6x6 bottom
    assert x.shape == (2, 48, 48, 3)
    g_vars, x, _, _ = abstract((64, 64, 1), z_dim=16, **SMALL)  # four up blocks
    assert x.shape == (2, 64, 64, 1) and "block4" in g_vars["params"] and "block5" not in g_vars["params"]


def host_variables(shapes, seed=0):
    """Concrete variables of the given shapes drawn with numpy, so no initializer program has to compile.

    Params N(0, 0.1^2), except gains (BN scales, conditional-BN gain tables) 1 + N(0, 0.1^2), so the class tables
    differ per class; running means 0 and variances 1; power-iteration vectors random unit vectors.
    """
    rng = np.random.default_rng(seed)

    def fill(path, s):
        keys = [str(getattr(k, "key", k)) for k in path]
        if keys[0] == "batch_stats":
            return jnp.full(s.shape, 1.0 if keys[-1] == "var" else 0.0, s.dtype)
        v = rng.normal(size=s.shape)
        if keys[0] == "spectral":
            return jnp.asarray(v / np.linalg.norm(v), s.dtype)
        return jnp.asarray((1.0 if keys[-1] == "scale" or "gain" in keys else 0.0) + 0.1 * v, s.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def test_runs_and_state():
    """32x32 RGB, 10 classes: ranges, conditioning, what train mode updates, what inference needs.

    Init is only traced (its structure is the other tests'); the values come from the host, so this test compiles
    just one training-mode program per network.
    """
    g, d = sngan.build((32, 32, 3), num_classes=10, **SMALL)
    z = jnp.asarray(np.random.default_rng(1).normal(size=(4, 16)), jnp.float32)
    y, y2 = jnp.array([0, 1, 2, 3]), jnp.array([5, 6, 7, 8])
    g_vars = host_variables(jax.eval_shape(lambda: g.init(jax.random.PRNGKey(0), z, y, train=False)))
    # Inference takes no rng and mutates nothing: flax would raise while tracing otherwise.
    assert jax.eval_shape(lambda v: g.apply(v, z, y, train=False), g_vars).shape == (4, 32, 32, 3)
    g_train = jax.jit(lambda v, z, y: g.apply(v, z, y, train=True, mutable=["batch_stats", "moments"]))
    x, g_new = g_train(g_vars, z, y)
    assert x.shape == (4, 32, 32, 3) and np.all(np.abs(np.asarray(x)) <= 1.0) and float(jnp.std(x)) > 1e-3
    # Training mode moves every BN running average and sows the batch moments.
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), g_new["batch_stats"], g_vars["batch_stats"])
    assert all(jax.tree.leaves(changed)) and "moments" in g_new
    assert not np.allclose(x, g_train(g_vars, z, y2)[0], atol=1e-4)  # labels matter to G (conditional BN)

    d_vars = host_variables(jax.eval_shape(lambda: d.init(jax.random.PRNGKey(0), x, y, train=False)), seed=2)
    assert jax.eval_shape(lambda v: d.apply(v, x, y, train=False), d_vars).shape == (4,)
    d_train = jax.jit(lambda v, x, y: d.apply(v, x, y, train=True, mutable=["spectral"]))
    logits, d_new = d_train(d_vars, x, y)
    assert logits.shape == (4,) and np.isfinite(np.asarray(logits)).all()
    # Training mode advances every power-iteration vector (a u of one entry, the logit layer's, is +-1 whatever
    # the step), and the labels matter to D (projection).
    changed = jax.tree.map(lambda a, b: a.size == 1 or not np.allclose(a, b), d_new["spectral"], d_vars["spectral"])
    assert all(jax.tree.leaves(changed))
    assert not np.allclose(logits, d_train(d_vars, x, y2)[0], atol=1e-4)


def test_conditional_networks_need_labels():
    g, d = sngan.build((32, 32, 3), num_classes=10, **SMALL)
    with pytest.raises(ValueError, match="pass labels"):
        jax.eval_shape(lambda: g.init(jax.random.PRNGKey(0), jnp.zeros((2, 16)), None, train=False))
    with pytest.raises(ValueError, match="pass labels"):
        jax.eval_shape(lambda: d.init(jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3)), None, train=False))


@pytest.mark.parametrize(
    "data_shape, fields, match",
    [
        ((30, 30, 3), {}, "bottom_width"),
        ((24, 24, 3), {}, "power of two"),
        ((4, 4, 3), {}, "power of two"),
        ((32, 16, 3), {}, "square"),
        ((32, 32), {}, "square"),
        ((32, 32, 3), {"num_classes": -1}, "num_classes"),
        ((32, 32, 3), {"g_ch": 0}, "g_ch"),
        ((6, 6, 3), {"bottom_width": 3}, "divisible by 4"),  # 3 * 2, but D pools twice
        ((32, 32, 3), {"arch": "big"}, "arch"),
        ((48, 48, 3), {"arch": "imagenet", "bottom_width": 3}, "4 \\* 2\\*\\*k"),
    ],
)
def test_bad_shapes_raise(data_shape, fields, match):
    with pytest.raises(ValueError, match=match):
        sngan.build(data_shape, **fields)


def test_registered():
    cfg = ml_collections.ConfigDict(dict(name="sngan", z_dim=128, z_dist="normal", num_classes=10, **SMALL))
    g, d = build_networks(cfg, (32, 32, 3))
    assert isinstance(g, sngan.SNGANGenerator) and isinstance(d, sngan.SNGANDiscriminator)
    with pytest.raises(ConfigError, match="does not fit"):
        build_networks(cfg, (28, 28, 1))
