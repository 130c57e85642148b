"""gan_jax.metrics.classifier: the cached MNIST classifier is accurate on the real test split, and its cache is safe.

The session fixture uses the real cache (`${GAN_JAX_CACHE:-~/.cache/gan_jax}`), so on a fresh machine it trains the
classifier once (about 1.5 minutes on two cores) and later sessions load it; the cache mechanics are tested on a
temporary cache with a stand-in for training.

Run: .venv/bin/python -m pytest tests/metrics/test_classifier.py -q
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import zipfile

import numpy as np
import pytest

from gan_jax.data.sources import _mnist_splits
from gan_jax.metrics import classifier as clf_mod
from gan_jax.metrics.classifier import MnistClassifier, mnist_classifier


@pytest.fixture(scope="session")
def mnist_clf() -> MnistClassifier:
    return mnist_classifier()


@pytest.fixture(scope="module")
def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    x, y = _mnist_splits()["test"]
    return x, y


def test_test_accuracy_is_at_least_99_percent(mnist_clf: MnistClassifier, mnist_test) -> None:
    x, y = mnist_test
    assert len(x) == 10_000
    accuracy = float(np.mean(mnist_clf.predict(x) == y))
    assert accuracy >= 0.99, accuracy
    assert abs(accuracy - mnist_clf.test_accuracy) <= 2e-4  # the stored number is the one measured here
    assert mnist_clf.recipe_sha256 == clf_mod.recipe_hash()


def test_input_rule(mnist_clf: MnistClassifier, mnist_test) -> None:
    x, _ = mnist_test
    x = x[:300]
    ref = mnist_clf.predict(x)
    as_float = x.astype(np.float32) / 127.5 - 1.0
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    np.testing.assert_array_equal(mnist_clf.predict(as_float), ref)
    np.testing.assert_array_equal(mnist_clf.predict(x[..., 0]), ref)  # (N, 28, 28)
    np.testing.assert_array_equal(mnist_clf.predict(padded), ref)  # 32x32, centre-cropped
    np.testing.assert_array_equal(
        mnist_clf.predict(np.pad(as_float, ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=-1)), ref
    )
    np.testing.assert_array_equal(mnist_clf.predict(x, batch_size=7), ref)  # a padded last batch changes nothing
    assert mnist_clf.predict(x).dtype == np.int32 and mnist_clf.predict(x[:0]).shape == (0,)
    np.testing.assert_array_equal(clf_mod.prepare_digits(x[:2] * 0 + 255), np.ones((2, 28, 28, 1), np.float32))
    np.testing.assert_array_equal(clf_mod.prepare_digits(np.full((1, 28, 28), 3.0)), np.ones((1, 28, 28, 1)))
    for bad in (np.zeros((2, 28, 28, 3), np.uint8), np.zeros((2, 30, 30), np.uint8), np.zeros((28, 28), np.uint8)):
        with pytest.raises(ValueError, match="MNIST classifier input"):
            mnist_clf.predict(bad)


# ------------------------------------------------------------------------------------------------ the cache file


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch: pytest.MonkeyPatch, mnist_clf: MnistClassifier):
    """A temporary cache dir and an empty in-memory cache; training replaced by a counter returning `mnist_clf`."""
    monkeypatch.setenv("GAN_JAX_CACHE", str(tmp_path))
    monkeypatch.setattr(clf_mod, "_LOADED", {})
    calls = []

    def fake_train(recipe=None) -> MnistClassifier:
        calls.append(recipe)
        return mnist_clf

    monkeypatch.setattr(clf_mod, "train_classifier", fake_train)
    return calls


def _same_params(a: MnistClassifier, b: MnistClassifier) -> bool:
    fa, fb = clf_mod._flatten(a.variables), clf_mod._flatten(b.variables)
    return fa.keys() == fb.keys() and all(np.array_equal(fa[k], fb[k]) for k in fa)


def test_trains_once_then_reuses_the_cache(tmp_cache: list, mnist_clf: MnistClassifier) -> None:
    path = clf_mod.cache_path()
    assert not os.path.exists(path)
    first = mnist_classifier()
    assert len(tmp_cache) == 1 and os.path.isfile(path)
    mtime = os.stat(path).st_mtime_ns
    assert [n for n in os.listdir(os.path.dirname(path)) if n != clf_mod.CACHE_NAME] == []  # no temp or lock file
    assert mnist_classifier() is first  # in memory
    clf_mod._LOADED.clear()
    loaded = mnist_classifier()  # from the file, as in a new process
    assert len(tmp_cache) == 1 and os.stat(path).st_mtime_ns == mtime
    assert loaded is not first and _same_params(loaded, mnist_clf)
    assert loaded.test_accuracy == mnist_clf.test_accuracy
    mnist_classifier(retrain=True)
    assert len(tmp_cache) == 2


def test_callers_that_start_together_train_once(tmp_cache: list, mnist_clf, monkeypatch) -> None:
    """A second caller that finds no cache while the first is training (pytest workers, two evaluations started side
    by side) waits for the first's lock, then loads its file instead of training again."""
    training = threading.Event()

    def slow_train(recipe=None) -> MnistClassifier:
        tmp_cache.append(recipe)
        training.set()
        time.sleep(0.5)  # the second caller looks for the cache meanwhile
        return mnist_clf

    monkeypatch.setattr(clf_mod, "train_classifier", slow_train)
    got = {}
    first = threading.Thread(target=lambda: got.setdefault("first", mnist_classifier()))
    first.start()
    assert training.wait(30)
    second = mnist_classifier()
    first.join()
    assert len(tmp_cache) == 1
    assert second is not got["first"] and _same_params(second, mnist_clf)  # read from the first one's file


def _truncate(path: str) -> None:
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def _garbage(path: str) -> None:
    with open(path, "wb") as f:
        f.write(os.urandom(1000))


def _rewrite(path: str, change) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _drop_param(a: dict) -> None:
    del a["params/Dense_1/kernel"]


def _wrong_shape(a: dict) -> None:
    a["params/Dense_1/kernel"] = a["params/Dense_1/kernel"][:, :5]


def _nan(a: dict) -> None:
    a["params/Conv_0/kernel"] = np.full_like(a["params/Conv_0/kernel"], np.nan)


def _other_recipe(a: dict) -> None:
    a[clf_mod.RECIPE_KEY] = np.asarray("0" * 64)


@pytest.mark.parametrize(
    "corrupt",
    [
        _truncate,
        _garbage,
        lambda p: _rewrite(p, _drop_param),
        lambda p: _rewrite(p, _wrong_shape),
        lambda p: _rewrite(p, _nan),
        lambda p: _rewrite(p, _other_recipe),
    ],
    ids=["truncated", "garbage", "missing_param", "wrong_shape", "nan", "other_recipe"],
)
def test_bad_cache_is_detected_and_retrained(tmp_cache: list, mnist_clf: MnistClassifier, corrupt, caplog) -> None:
    mnist_classifier()
    path = clf_mod.cache_path()
    corrupt(path)
    clf_mod._LOADED.clear()
    with caplog.at_level("WARNING", logger=clf_mod.__name__):
        again = mnist_classifier()
    assert len(tmp_cache) == 2, "the bad cache was not detected"
    assert "retraining" in caplog.text and "training the MNIST classifier once" in caplog.text
    assert _same_params(again, mnist_clf)
    clf_mod._LOADED.clear()
    mnist_classifier()  # the rewritten file is good again
    assert len(tmp_cache) == 2
    with np.load(path) as z:
        assert str(z[clf_mod.RECIPE_KEY]) == clf_mod.recipe_hash()


def test_recipe_change_changes_the_hash() -> None:
    changed = dict(clf_mod.RECIPE, epochs=clf_mod.RECIPE["epochs"] + 1)
    assert clf_mod.recipe_hash(changed) != clf_mod.recipe_hash()
    assert clf_mod.recipe_hash(dict(clf_mod.RECIPE)) == clf_mod.recipe_hash()


def test_a_classifier_below_99_percent_is_not_cached(tmp_cache: list, monkeypatch, mnist_clf) -> None:
    bad = dataclasses.replace(mnist_clf, test_accuracy=0.95)
    monkeypatch.setattr(clf_mod, "train_classifier", lambda recipe=None: bad)
    with pytest.raises(RuntimeError, match="95.00% test accuracy"):
        mnist_classifier()
    assert not os.path.exists(clf_mod.cache_path())


def test_cache_is_a_plain_npz(tmp_cache: list) -> None:
    mnist_classifier()
    with zipfile.ZipFile(clf_mod.cache_path()) as z:
        names = {n.removesuffix(".npy") for n in z.namelist()}
    assert names == set(clf_mod._param_shapes()) | {clf_mod.RECIPE_KEY, clf_mod.ACCURACY_KEY}
