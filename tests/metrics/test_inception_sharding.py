"""gan_jax.metrics.inception.fid_features split over 8 simulated CPU devices gives the features of one device.

Each run is a fresh process, because the device count is fixed when JAX starts
(`XLA_FLAGS=--xla_force_host_platform_device_count=N`).

Run: .venv/bin/python -m pytest tests/metrics/test_inception_sharding.py -q
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = r"""
import sys, jax, numpy as np
from gan_jax.data import get_dataset
from gan_jax.config import base_config
from gan_jax.metrics.inception import feature_mesh, fid_inception_params, fid_features
from gan_jax.train.visualize import to_uint8

n_devices, out = int(sys.argv[1]), sys.argv[2]
data = base_config().data
data.split = "test"
images = to_uint8(get_dataset(data, seed=0).get(np.arange(16))["x"])  # 16 MNIST digits, 28x28x1
assert jax.local_device_count() == n_devices and feature_mesh().devices.size == n_devices
leaf = jax.tree.leaves(fid_inception_params())[0]
assert len(leaf.sharding.device_set) == n_devices and leaf.sharding.is_fully_replicated
features = fid_features(images, batch_size=8)  # 2 batches: 1 image per device with 8 devices
features_odd = fid_features(images[:11], batch_size=3)  # rounded up to a multiple of the devices, last one padded
np.savez(out, features=features, features_odd=features_odd)
"""


def features_with_devices(n: int, tmp_path, cache: str) -> dict[str, np.ndarray]:
    out = tmp_path / f"features_{n}.npz"
    env = dict(
        os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu", GAN_JAX_CACHE=cache
    )
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(n), str(out)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


def test_eight_devices_equal_one(tmp_path):
    cache = str(tmp_path / "cache")
    one = features_with_devices(1, tmp_path, cache)
    eight = features_with_devices(8, tmp_path, cache)
    assert one["features"].shape == (16, 2048) and one["features_odd"].shape == (11, 2048)
    for key in ("features", "features_odd"):
        err = np.linalg.norm(eight[key] - one[key], axis=1) / np.linalg.norm(one[key], axis=1)
        assert err.max() < 1e-4, (key, err)
    # The same images in other batchings give the same features (padding never leaks into real rows).
    np.testing.assert_allclose(one["features_odd"], one["features"][:11], rtol=1e-4, atol=1e-4)
