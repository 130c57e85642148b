"""BatchNorm and ConditionalBatchNorm against numpy, standing statistics, and synchronized batch statistics: a batch
sharded over 8 simulated CPU devices gives the statistics of the whole batch on one device."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax.layers import BatchNorm, ConditionalBatchNorm, spectral_normalize, standing_statistics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EPS = 1e-5


def data(shape, seed=0, offset=0.0):
    return (np.random.default_rng(seed).standard_normal(shape) * 2.0 + offset).astype(np.float32)


def normalized(x: np.ndarray) -> np.ndarray:
    """Batch normalization without affine, biased variance over every axis but the last, in float64."""
    x = x.astype(np.float64)
    axes = tuple(range(x.ndim - 1))
    return (x - x.mean(axes)) / np.sqrt(x.var(axes) + EPS)


def test_batch_norm_train_and_eval():
    x = data((4, 3, 3, 5), offset=1.0)
    bn = BatchNorm(momentum=0.9)
    variables = bn.init(jax.random.PRNGKey(0), x, train=True)
    assert jax.tree.map(jnp.shape, dict(variables)) == {
        "params": {"scale": (5,), "bias": (5,)},
        "batch_stats": {"mean": (5,), "var": (5,)},
    }  # init sows nothing and leaves the running statistics at (0, 1)
    np.testing.assert_array_equal(variables["batch_stats"]["var"], np.ones(5))
    params = {"scale": jnp.arange(1.0, 6.0), "bias": -jnp.arange(5.0)}
    out, updates = bn.apply(
        {"params": params, "batch_stats": variables["batch_stats"]}, x, train=True, mutable=["batch_stats"]
    )
    np.testing.assert_allclose(out, normalized(x) * np.arange(1.0, 6.0) - np.arange(5.0), rtol=1e-5, atol=1e-5)
    mean, var = x.mean((0, 1, 2)), x.astype(np.float64).var((0, 1, 2))  # biased variance
    np.testing.assert_allclose(updates["batch_stats"]["mean"], 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(updates["batch_stats"]["var"], 0.9 + 0.1 * var, rtol=1e-5)
    # Evaluation normalizes with the running statistics.
    stats = {"mean": jnp.asarray(mean), "var": jnp.asarray(var)}
    out_eval = bn.apply({"params": params, "batch_stats": stats}, x, train=False)
    np.testing.assert_allclose(out_eval, out, rtol=1e-5, atol=1e-5)


def test_conditional_batch_norm_selects_per_class_parameters():
    x = data((6, 2, 2, 4), seed=1)
    labels = jnp.array([2, 0, 1, 2, 1, 0])
    cbn = ConditionalBatchNorm(num_classes=3)
    variables = cbn.init(jax.random.PRNGKey(0), x, labels, train=False)
    assert jax.tree.map(jnp.shape, dict(variables)) == {
        "params": {"gain": {"embedding": (3, 4)}, "bias": {"embedding": (3, 4)}},
        "batch_stats": {"bn": {"mean": (4,), "var": (4,)}},
    }
    np.testing.assert_array_equal(variables["params"]["gain"]["embedding"], np.ones((3, 4)))
    np.testing.assert_array_equal(variables["params"]["bias"]["embedding"], np.zeros((3, 4)))
    # Distinct per-class values: class k has gain 10k + 1 + c/10 and bias -(10k + c) on channel c.
    gain = 10.0 * np.arange(3)[:, None] + 1.0 + np.arange(4) / 10.0
    bias = -(10.0 * np.arange(3)[:, None] + np.arange(4))
    params = {"gain": {"embedding": jnp.asarray(gain)}, "bias": {"embedding": jnp.asarray(bias)}}
    out, _ = cbn.apply(
        {"params": params, "batch_stats": variables["batch_stats"]}, x, labels, train=True, mutable=["batch_stats"]
    )
    h = normalized(x)
    for i, k in enumerate(np.asarray(labels)):
        np.testing.assert_allclose(out[i], h[i] * gain[k] + bias[k], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spectral", [False, True])
def test_biggan_conditional_batch_norm(spectral):
    x = data((4, 2, 2, 3), seed=2)
    cond = data((4, 5), seed=3)
    cbn = ConditionalBatchNorm(spectral=spectral)
    variables = cbn.init(jax.random.PRNGKey(1), x, cond, train=False)
    shapes = jax.tree.map(jnp.shape, dict(variables))
    assert shapes["params"] == {"gain": {"kernel": (5, 3)}, "bias": {"kernel": (5, 3)}}  # no biases, as ccbn's
    if spectral:
        assert shapes["spectral"] == {"gain_sn": {"u": (3,)}, "bias_sn": {"u": (3,)}}
    out, updates = cbn.apply(variables, x, cond, train=True, mutable=["batch_stats", "spectral"])
    wg, wb = (np.asarray(variables["params"][k]["kernel"]) for k in ("gain", "bias"))
    if spectral:
        wg, wb = (
            np.asarray(spectral_normalize(jnp.asarray(w), variables["spectral"][f"{k}_sn"]["u"])[0])
            for w, k in ((wg, "gain"), (wb, "bias"))
        )
        assert not np.allclose(updates["spectral"]["gain_sn"]["u"], variables["spectral"]["gain_sn"]["u"])
    expected = normalized(x) * (1.0 + cond @ wg)[:, None, None, :] + (cond @ wb)[:, None, None, :]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_standing_statistics_average_passes():
    cbn = ConditionalBatchNorm(num_classes=2)
    batches = [data((4, 2, 2, 3), seed=s, offset=float(s)) for s in range(3)]
    labels = jnp.array([0, 1, 1, 0])
    variables = cbn.init(jax.random.PRNGKey(0), batches[0], labels, train=False)
    moments = []
    for x in batches:
        _, updates = cbn.apply(variables, x, labels, train=True, mutable=["moments"])
        assert set(updates) == {"moments"}  # batch_stats is not mutable here and is left alone
        moments.append(updates["moments"])
    stats = standing_statistics(moments)
    assert jax.tree.structure(stats) == jax.tree.structure(dict(variables["batch_stats"]))
    np.testing.assert_allclose(stats["bn"]["mean"], np.mean([x.mean((0, 1, 2)) for x in batches], 0), rtol=1e-5)
    np.testing.assert_allclose(stats["bn"]["var"], np.mean([x.var((0, 1, 2)) for x in batches], 0), rtol=1e-5)
    # Drop-in replacement for the running statistics at sampling time.
    out = cbn.apply({**variables, "batch_stats": stats}, batches[0], labels, train=False)
    assert out.shape == batches[0].shape and np.isfinite(out).all()
    # With the current batch_stats given, the result is a copy of it with the averaged leaves replaced.
    merged = standing_statistics(moments, batch_stats={"bn": variables["batch_stats"]["bn"], "other": {"mean": 1.0}})
    assert merged["other"] == {"mean": 1.0}
    np.testing.assert_array_equal(merged["bn"]["var"], stats["bn"]["var"])


SCRIPT = r"""
import jax, jax.numpy as jnp, numpy as np
import flax.linen as nn
from gan_jax.layers import BatchNorm, ConditionalBatchNorm
from gan_jax.train.parallel import batch_sharding, make_mesh, replicated

class Net(nn.Module):
    @nn.compact
    def __call__(self, x, labels, cond, train):
        h = BatchNorm()(x, train)
        h = ConditionalBatchNorm(num_classes=3)(h * h, labels, train)
        return ConditionalBatchNorm(spectral=True)(h, cond, train)

assert jax.device_count() == 8, jax.device_count()
rng = np.random.default_rng(0)
x = (rng.standard_normal((16, 2, 2, 4)) * 3.0 + 1.0).astype(np.float32)
labels = rng.integers(0, 3, 16).astype(np.int32)
cond = rng.standard_normal((16, 6)).astype(np.float32)
net = Net()
variables = net.init(jax.random.PRNGKey(0), x[:2], labels[:2], cond[:2], train=False)

@jax.jit
def step(variables, x, labels, cond):
    return net.apply(variables, x, labels, cond, train=True, mutable=["batch_stats", "spectral"])

one = jax.devices()[0]
single = step(*jax.device_put((variables, x, labels, cond), one))
mesh = make_mesh()
sharded_inputs = jax.device_put((x, labels, cond), batch_sharding(mesh))
sharded = step(jax.device_put(variables, replicated(mesh)), *sharded_inputs)
assert len(sharded_inputs[0].sharding.device_set) == 8 and len(single[0].sharding.device_set) == 1
for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(sharded)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
mean = single[1]["batch_stats"]["BatchNorm_0"]["mean"]
np.testing.assert_allclose(np.asarray(mean), 0.1 * x.mean((0, 1, 2)), rtol=1e-5)  # whole-batch statistics
print("OK", len(jax.tree.leaves(single)))
"""


def test_synchronized_statistics_on_eight_devices_equal_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("OK")
