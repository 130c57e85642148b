"""gan_jax.metrics.inception_score: closed-form scores, and the logits layer read from torch files without torch.

Closed forms: with balanced classes in every split, p(y) is uniform over the C classes used and
IS = exp(log C - H(p(y|x))) = C exp(-H): 1 for a uniform prediction, C for one-hot predictions.

Run: .venv/bin/python -m pytest tests/metrics/test_inception_score.py -q
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from gan_jax.metrics.inception_score import (
    ENV_VAR,
    InceptionScoreUnavailable,
    inception_logits,
    inception_score,
    load_logits_layer,
)

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="writing torch files needs torch (requirements-test.txt)")


def test_uniform_prediction_scores_one():
    got = inception_score(np.full((50, 1008), 3.0), splits=10)
    assert got["is"] == pytest.approx(1.0, abs=1e-12) and got["is_std"] == pytest.approx(0.0, abs=1e-12)


def test_confident_predictions_over_n_classes_score_n():
    # 100 samples cycling through 5 classes: each split of 10 holds every class twice.
    labels = np.arange(100) % 5
    logits = np.zeros((100, 1008))
    logits[np.arange(100), labels] = 1000.0  # softmax is exactly one-hot in float64
    got = inception_score(logits, splits=10)
    assert got["is"] == pytest.approx(5.0, rel=1e-12) and got["is_std"] == pytest.approx(0.0, abs=1e-12)


def test_soft_predictions_closed_form():
    # p(y|x) = q on the sample's class, (1 - q) / (C - 1) elsewhere; classes balanced: IS = C exp(-H).
    c, q = 4, 0.7
    labels = np.arange(40) % c
    p = np.full((40, c), (1 - q) / (c - 1))
    p[np.arange(40), labels] = q
    entropy = -(q * math.log(q) + (1 - q) * math.log((1 - q) / (c - 1)))
    got = inception_score(np.log(p) + 5.0, splits=2)  # logits defined up to a constant per row
    assert got["is"] == pytest.approx(c * math.exp(-entropy), rel=1e-12)


def test_splits_are_consecutive_parts():
    # First half all class 0, second half classes 0 and 1 alternating: scores 1 and 2, mean 1.5, std 0.5.
    labels = np.concatenate([np.zeros(10, int), np.arange(10) % 2])
    logits = np.full((20, 3), -800.0)
    logits[np.arange(20), labels] = 0.0
    got = inception_score(logits, splits=2)
    assert got == pytest.approx({"is": 1.5, "is_std": 0.5}, rel=1e-12)


def test_bad_logits():
    with pytest.raises(ValueError, match="splits"):
        inception_score(np.zeros((5, 10)), splits=10)
    with pytest.raises(ValueError, match="NaN"):
        inception_score(np.full((10, 10), np.nan), splits=2)


# ------------------------------------------------------------------------------------------------ the logits layer


def layer(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(1008, 2048)).astype(np.float32), rng.normal(size=1008).astype(np.float32)


def test_npz_layer_and_logits(tmp_path):
    w, b = layer()
    path = tmp_path / "fc.npz"
    np.savez(path, **{"fc.weight": w, "fc.bias": b})
    weight, bias = load_logits_layer(str(path))
    assert weight.shape == (2048, 1008) and weight.dtype == np.float32
    np.testing.assert_array_equal(weight, w.T)
    np.testing.assert_array_equal(bias, b)
    features = np.random.default_rng(1).uniform(0, 2, (3, 2048)).astype(np.float32)
    np.testing.assert_allclose(inception_logits(features, (weight, bias)), features @ w.T, rtol=1e-6)
    np.testing.assert_allclose(inception_logits(features, (weight, bias), use_bias=True), features @ w.T + b, rtol=1e-6)


def test_environment_variable_names_the_file(tmp_path, monkeypatch):
    w, b = layer(1)
    path = tmp_path / "layer.npz"
    np.savez(path, **{"fc.weight": w, "fc.bias": b})
    monkeypatch.setenv(ENV_VAR, str(path))
    np.testing.assert_array_equal(load_logits_layer()[1], b)


def test_missing_file_says_what_to_supply_and_how(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(InceptionScoreUnavailable) as e:
        load_logits_layer()
    message = str(e.value)
    for needle in ("pt_inception-2015-12-05-6726825d.pth", "fc.weight", "--inception_logits=PATH", ENV_VAR):
        assert needle in message
    with pytest.raises(InceptionScoreUnavailable, match="does not exist"):
        load_logits_layer(str(tmp_path / "nope.pth"))
    assert issubclass(InceptionScoreUnavailable, ValueError)


def test_file_without_the_keys_or_of_the_wrong_shape(tmp_path):
    np.savez(tmp_path / "other.npz", weight=np.zeros((1008, 2048), np.float32))
    with pytest.raises(InceptionScoreUnavailable, match="no single 'fc.weight'"):
        load_logits_layer(str(tmp_path / "other.npz"))
    np.savez(tmp_path / "small.npz", **{"fc.weight": np.zeros((10, 2048)), "fc.bias": np.zeros(10)})
    with pytest.raises(InceptionScoreUnavailable, match="expected"):
        load_logits_layer(str(tmp_path / "small.npz"))
    (tmp_path / "junk.pth").write_bytes(b"not a torch file at all")
    with pytest.raises(InceptionScoreUnavailable, match="cannot read"):
        load_logits_layer(str(tmp_path / "junk.pth"))


@needs_torch
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_state_dict_is_read_identically_without_torch(tmp_path, zip_format):
    w, b = layer(2)
    # Views with an offset and a stride: the file holds the whole storages, the reader must apply both.
    big = torch.from_numpy(np.concatenate([np.ones((3, 2048), np.float32), w]))
    strided = torch.from_numpy(np.stack([b, -b], axis=1).reshape(-1))
    state = {
        "Conv2d_1a_3x3.conv.weight": torch.ones(32, 3, 3, 3),
        "Conv2d_1a_3x3.bn.num_batches_tracked": torch.tensor(7),
        "fc.weight": big[3:],
        "fc.bias": strided[::2],
    }
    path = tmp_path / "pt_inception.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    weight, bias = load_logits_layer(str(path))
    np.testing.assert_array_equal(weight, w.T)
    np.testing.assert_array_equal(bias, b)
    # In a fresh process: the same arrays, and torch never imported.
    code = (
        "import sys, numpy as np; from gan_jax.metrics.inception_score import load_logits_layer; "
        f"w, b = load_logits_layer({str(path)!r}); assert 'torch' not in sys.modules; "
        f"np.savez({str(tmp_path / 'out.npz')!r}, w=w, b=b)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_array_equal(out["w"], w.T)
        np.testing.assert_array_equal(out["b"], b)


@needs_torch
def test_module_prefixed_state_dict(tmp_path):
    w, b = layer(3)
    path = tmp_path / "wrapped.pth"
    torch.save({"module.fc.weight": torch.from_numpy(w), "module.fc.bias": torch.from_numpy(b)}, path)
    np.testing.assert_array_equal(load_logits_layer(str(path))[0], w.T)
