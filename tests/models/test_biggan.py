"""BigGAN's networks: BigGAN-PyTorch's parameter counts, the arch tables, attention placement, hierarchical z,
the shared embedding, conditioning and state handling.

Kept fast (XLA:CPU compiles slowly): the networks are traced with `jax.eval_shape` (the 128x128 ch=96 ones hold
70M + 88M parameters), and the one test that computes uses 8 channels, host-drawn variables and one compiled
training-mode program per network.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gan_jax.config import ConfigError
from gan_jax.models import biggan, build_networks

SMALL = dict(g_ch=8, d_ch=8)


def count(tree):
    return sum(x.size for x in jax.tree.leaves(tree))


def init_g(data_shape, z_dim, batch=2, **fields):
    """(G's variables, G's output) as shapes, without computing anything."""
    g, _ = biggan.build(data_shape, **{"num_classes": 10, **fields})
    z = jax.ShapeDtypeStruct((batch, z_dim), jnp.float32)
    y = jax.ShapeDtypeStruct((batch,), jnp.int32)
    x, g_vars = jax.eval_shape(lambda z, y: g.init_with_output(jax.random.PRNGKey(0), z, y, train=False), z, y)
    return g_vars, x


def init_d(data_shape, batch=2, **fields):
    """(D's variables, D's logits) as shapes, without computing anything."""
    _, d = biggan.build(data_shape, **{"num_classes": 10, **fields})
    x = jax.ShapeDtypeStruct((batch,) + tuple(data_shape), jnp.float32)
    y = jax.ShapeDtypeStruct((batch,), jnp.int32)
    logits, d_vars = jax.eval_shape(lambda x, y: d.init_with_output(jax.random.PRNGKey(1), x, y, train=False), x, y)
    return d_vars, logits


def test_128_parameter_counts_match_biggan_pytorch():
    """ImageNet 128x128, ch 96, 1000 classes, z 120 in 6 chunks, shared dim 128, attention at 64.

    google/compare_gan's `resnet_biggan_test.py` asserts these totals for its port of the model, and BigGAN-PyTorch's
    development notes record "ch 96, all tricks: G: 70305988, D: 87982370", G printed there without the shared
    embedding (1000 x 128 = 128,000). Every trainable tensor counts: the shared embedding, the bias-free
    conditional-BN linears (148 -> C), the final BN's gain and bias and the attention gammas included.
    """
    g_vars, x = init_g((128, 128, 3), 120, num_classes=1000)
    d_vars, logits = init_d((128, 128, 3), num_classes=1000)
    assert count(g_vars["params"]) == 70_433_988
    assert count(d_vars["params"]) == 87_982_370
    # By hand for G: shared + linear + 5 blocks (convs, 1x1 shortcut, 2 CBNs of two 148 -> C linears) + attention at
    # 64 (C = 192: theta/phi C -> C/8, g C -> C/2, o C/2 -> C, gamma) + final BN + conv to RGB.
    conv = lambda cin, cout, k: k * k * cin * cout + cout  # noqa: E731
    blocks = [(1536, 1536), (1536, 768), (768, 384), (384, 192), (192, 96)]
    g_hand = 1000 * 128 + (20 * 16 * 1536 + 16 * 1536)
    g_hand += sum(conv(i, o, 3) + conv(o, o, 3) + conv(i, o, 1) + 2 * 148 * (i + o) for i, o in blocks)
    g_hand += 192 * 24 * 2 + 192 * 96 * 2 + 1 + 2 * 96 + conv(96, 3, 3)
    assert g_hand == 70_433_988
    assert x.shape == (2, 128, 128, 3) and logits.shape == (2,)
    # The shared class embedding is a direct child of G named "shared", outside spectral normalization; the
    # conditional BNs read concat(shared(y), a 20-dim z chunk).
    assert g_vars["params"]["shared"]["embedding"].shape == (1000, 128)
    assert not any("shared" in k for k in g_vars["spectral"])
    assert g_vars["params"]["block0"]["bn1"]["gain"]["kernel"].shape == (148, 1536)
    assert g_vars["params"]["linear"]["kernel"].shape == (20, 16 * 1536)
    # Everything else in G and D is spectrally normalised: one u per conv, linear, embedding (D) and CBN linear.
    assert count(g_vars["spectral"]) == 3 + 16 * 1536 + sum(3 * o + 2 * (i + o) for i, o in blocks) + (
        24 * 2 + 96 + 192
    )


def test_arch_tables():
    """BigGAN-PyTorch's G_arch / D_arch at ch=1 (multipliers), with the output resolution of every block."""
    assert biggan.g_arch(1, 32) == [(4, 4, 8), (4, 4, 16), (4, 4, 32)]
    assert biggan.g_arch(1, 64) == [(16, 16, 8), (16, 8, 16), (8, 4, 32), (4, 2, 64)]
    assert biggan.g_arch(1, 256) == [(16, 16, 8), (16, 8, 16), (8, 8, 32), (8, 4, 64), (4, 2, 128), (2, 1, 256)]
    assert biggan.d_arch(1, 32, 3) == [(3, 4, True, 16), (4, 4, True, 8), (4, 4, False, 8), (4, 4, False, 8)]
    assert biggan.d_arch(1, 64, 1) == [(1, 1, True, 32), (1, 2, True, 16), (2, 4, True, 8), (4, 8, True, 4),
                                       (8, 16, False, 4)]  # fmt: skip
    assert [b[:2] for b in biggan.d_arch(1, 256)] == [(3, 1), (1, 2), (2, 4), (4, 8), (8, 8), (8, 16), (16, 16)]


def _attention(variables):
    return sorted(k for k in variables["params"] if k.startswith("attn"))


@pytest.mark.parametrize("g_attn, expected", [(0, []), (32, ["attn2"])])
def test_generator_attention_at_its_resolution(g_attn, expected):
    """64x64 G blocks end at 8, 16, 32, 64; attention follows the block at g_attn (none where there is none)."""
    g_vars, _ = init_g((64, 64, 3), 20, g_attn=g_attn, **SMALL)
    assert _attention(g_vars) == expected
    if expected:  # it attends over that block's channels (64x64 G: 16, 8, 4, 2 x ch)
        assert g_vars["params"]["attn2"]["o"]["kernel"].shape == (1, 1, 16, 32)


@pytest.mark.parametrize("d_attn, expected", [(32, ["attn0"]), (4, ["attn3", "attn4"])])
def test_discriminator_attention_at_its_resolution(d_attn, expected):
    """64x64 D blocks end at 32, 16, 8, 4, 4: attention after each block at d_attn, as BigGAN-PyTorch."""
    d_vars, _ = init_d((64, 64, 3), d_attn=d_attn, **SMALL)
    assert _attention(d_vars) == expected


@pytest.mark.parametrize("channels", [1])  # 3 runs in test_runs_and_state
def test_32_shapes(channels):
    """CIFAR-sized networks (4 z chunks), no attention at the default 64 on 32x32."""
    g_vars, x = init_g((32, 32, channels), 32, batch=3, **SMALL)
    d_vars, logits = init_d((32, 32, channels), batch=3, **SMALL)
    assert x.shape == (3, 32, 32, channels) and logits.shape == (3,)
    assert _attention(g_vars) == [] and _attention(d_vars) == []
    assert set(g_vars) == {"params", "batch_stats", "spectral"} and set(d_vars) == {"params", "spectral"}


def test_hierarchical_z():
    # 32x32: 3 blocks -> 4 chunks; each CBN reads shared_dim + chunk.
    g_vars, _ = init_g((32, 32, 3), 40, shared_dim=16, **SMALL)
    assert g_vars["params"]["linear"]["kernel"].shape == (10, 16 * 32)
    assert g_vars["params"]["block2"]["bn2"]["bias"]["kernel"].shape == (16 + 10, 32)
    with pytest.raises(ValueError, match="multiple of 4"):
        init_g((32, 32, 3), 42, **SMALL)
    with pytest.raises(ValueError, match="multiple of 4"):
        init_g((32, 32, 3), 3, **SMALL)
    # Without hier, z goes whole to the linear layer and every block's CBNs read shared(y) only.
    g_vars, _ = init_g((32, 32, 3), 42, shared_dim=16, hier=False, **SMALL)
    assert g_vars["params"]["linear"]["kernel"].shape == (42, 16 * 32)
    assert g_vars["params"]["block0"]["bn1"]["gain"]["kernel"].shape == (16, 32)


def host_variables(shapes, seed=0):
    """Concrete variables of the given shapes drawn with numpy, so no initializer program has to compile: params
    N(0, 0.1^2) (BN scales 1 + N(0, 0.1^2)), running means 0 and variances 1, random unit power-iteration vectors."""
    rng = np.random.default_rng(seed)

    def fill(path, s):
        keys = [str(getattr(k, "key", k)) for k in path]
        if keys[0] == "batch_stats":
            return jnp.full(s.shape, 1.0 if keys[-1] == "var" else 0.0, s.dtype)
        v = rng.normal(size=s.shape)
        if keys[0] == "spectral":
            return jnp.asarray(v / np.linalg.norm(v), s.dtype)
        return jnp.asarray((1.0 if keys[-1] == "scale" else 0.0) + 0.1 * v, s.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def test_runs_and_state():
    """32x32 RGB, 8 channels: ranges, conditioning, what train mode updates, what inference needs.

    Init is only traced (its structure is the other tests'); the values come from the host, so this test compiles
    just one training-mode program per network. (Self-attention runs in its layer's tests.)
    """
    g, d = biggan.build((32, 32, 3), num_classes=10, g_attn=0, d_attn=0, **SMALL)
    z = jnp.asarray(np.random.default_rng(1).normal(size=(4, 32)), jnp.float32)
    y, y2 = jnp.array([0, 1, 2, 3]), jnp.array([5, 6, 7, 8])
    g_vars = host_variables(jax.eval_shape(lambda: g.init(jax.random.PRNGKey(0), z, y, train=False)))
    # Inference takes no rng and mutates nothing: flax would raise while tracing otherwise.
    assert jax.eval_shape(lambda v: g.apply(v, z, y, train=False), g_vars).shape == (4, 32, 32, 3)
    g_train = jax.jit(lambda v, z, y: g.apply(v, z, y, train=True, mutable=["batch_stats", "spectral", "moments"]))
    x, g_new = g_train(g_vars, z, y)
    assert x.shape == (4, 32, 32, 3) and np.all(np.abs(np.asarray(x)) <= 1.0) and float(jnp.std(x)) > 1e-3
    # Training mode moves every BN running average and power-iteration vector of G, and sows the batch moments.
    for collection in ("batch_stats", "spectral"):
        changed = jax.tree.map(lambda a, b: not np.allclose(a, b), g_new[collection], g_vars[collection])
        assert all(jax.tree.leaves(changed)), collection
    assert "moments" in g_new
    assert not np.allclose(x, g_train(g_vars, z, y2)[0], atol=1e-4)  # labels matter to G (shared embedding, CBN)

    d_vars = host_variables(jax.eval_shape(lambda: d.init(jax.random.PRNGKey(0), x, y, train=False)), seed=2)
    assert jax.eval_shape(lambda v: d.apply(v, x, y, train=False), d_vars).shape == (4,)
    d_train = jax.jit(lambda v, x, y: d.apply(v, x, y, train=True, mutable=["spectral"]))
    logits, d_new = d_train(d_vars, x, y)
    assert logits.shape == (4,) and np.isfinite(np.asarray(logits)).all()
    # Every u moves (but the logit layer's single entry, +-1 whatever the step); labels matter to D (projection).
    changed = jax.tree.map(lambda a, b: a.size == 1 or not np.allclose(a, b), d_new["spectral"], d_vars["spectral"])
    assert all(jax.tree.leaves(changed))
    assert not np.allclose(logits, d_train(d_vars, x, y2)[0], atol=1e-4)


def test_labels_required():
    g, d = biggan.build((32, 32, 3), num_classes=10, **SMALL)
    with pytest.raises(ValueError, match="pass labels"):
        jax.eval_shape(lambda: g.init(jax.random.PRNGKey(0), jnp.zeros((2, 32)), None, train=False))
    with pytest.raises(ValueError, match="pass labels"):
        jax.eval_shape(lambda: d.init(jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3)), None, train=False))


@pytest.mark.parametrize(
    "data_shape, fields, match",
    [
        ((48, 48, 3), {}, "architectures for 32, 64, 128, 256"),
        ((512, 512, 3), {}, "architectures for"),
        ((32, 16, 3), {}, "square"),
        ((32, 32), {}, "square"),
        ((32, 32, 3), {"num_classes": 0}, "class-conditional"),
        ((32, 32, 3), {"g_attn": 48}, "power of two"),
        ((32, 32, 3), {"d_attn": -8}, "power of two"),
        ((32, 32, 3), {"g_attn": 16, "g_ch": 1}, "divisible by 8"),
        ((32, 32, 3), {"init": "kaiming"}, "init must be one of"),
        ((32, 32, 3), {"d_ch": 0}, "d_ch"),
    ],
)
def test_bad_arguments_raise(data_shape, fields, match):
    with pytest.raises(ValueError, match=match):
        biggan.build(data_shape, **{"num_classes": 10, **fields})


def test_registered():
    cfg = ml_collections.ConfigDict(dict(name="biggan", z_dim=32, z_dist="normal", num_classes=10, **SMALL))
    g, d = build_networks(cfg, (32, 32, 3))
    assert isinstance(g, biggan.BigGANGenerator) and isinstance(d, biggan.BigGANDiscriminator)
    with pytest.raises(ConfigError, match="does not fit"):
        build_networks(cfg, (28, 28, 3))
