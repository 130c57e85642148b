"""Synthetic labelled datasets (gan_jax/tools/synthetic.py) from a fake conditional model, and CAS's table assembly.

A fake experiment stands in for a trained model: its images carry their label in pixel (0, 0) and noise drawn per
(seed, batch offset) elsewhere, which is what `Experiment.generate` promises about latents. That checks labels,
counts, layouts, determinism and the refusals in a second, without compiling a generator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import ml_collections
import numpy as np
import pytest

from benchmarks import cas  # the repository is on pytest's path (pyproject)
from gan_jax.data import get_dataset
from gan_jax.tools import synthetic as syn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHAPE = (8, 8, 1)
BATCH = 8


class FakeExperiment:
    """`Experiment`'s face as write_synthetic sees it: game.num_classes, dataset, config, generate(labels=)."""

    def __init__(self, num_classes: int, shape: tuple[int, ...] = SHAPE, kind: str = "image") -> None:
        self.game = types.SimpleNamespace(num_classes=num_classes)
        self.dataset = types.SimpleNamespace(kind=kind, shape=shape, metadata={})
        self.calls: list[int] = []

    def generate(self, state, num_samples: int, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
        self.calls.append(num_samples)
        if labels is None:
            labels = np.arange(num_samples) % self.game.num_classes
        batches = [
            np.random.default_rng([seed, i]).integers(0, 100, (BATCH, *self.dataset.shape), dtype=np.uint8)
            for i in range(0, num_samples, BATCH)
        ]
        x = np.concatenate(batches)[:num_samples]
        x[:, 0, 0, :] = 100 + np.asarray(labels)[:, None]  # the label, readable from the image
        return x


def _config(batch_size: int = BATCH) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"batch_size": batch_size, "model": {"name": "fake"}, "data": {"name": "fake"}})


@pytest.fixture
def fake(monkeypatch):
    """Installs a fake model; returns a function that sets its class count and reports restore calls."""
    holder = {"exp": FakeExperiment(3), "restores": 0}

    def restore(config, workdir):
        holder["restores"] += 1
        return holder["exp"], types.SimpleNamespace(step=np.int32(42))

    monkeypatch.setattr(syn, "restore", restore)
    return holder


def write(out, per_class: int = 5, seed: int = 0, **kw) -> str:
    return syn.write_synthetic(_config(), "unused-workdir", per_class, str(out), seed, chunk=16, **kw)


def test_npz_labels_counts_and_metadata(fake, tmp_path):
    path = write(tmp_path / "s.npz", per_class=7, config_name="configs/x.py:smoke")
    d = syn.load_npz(path)
    assert d["x"].dtype == np.uint8 and d["x"].shape == (21, *SHAPE)
    assert d["label"].dtype == np.int32 and np.bincount(d["label"]).tolist() == [7, 7, 7]
    np.testing.assert_array_equal(d["x"][:, 0, 0, 0], 100 + d["label"])  # every image has its own label
    assert d["label"][:6].tolist() == [0, 1, 2, 0, 1, 2]  # classes interleaved
    assert (d["num_classes"], d["per_class"], d["seed"], d["step"]) == (3, 7, 0, 42)
    assert d["config"] == "configs/x.py:smoke" and d["model"] == "fake" and d["chunk"] == 16
    assert d["class_names"] == []
    assert max(fake["exp"].calls) <= 16  # generated in bounded chunks
    assert os.listdir(tmp_path) == ["s.npz"]  # no temporary left behind


def test_deterministic_and_prefix_stable(fake, tmp_path):
    a = syn.load_npz(write(tmp_path / "a.npz", per_class=10, seed=3))
    b = syn.load_npz(write(tmp_path / "b.npz", per_class=10, seed=3))
    c = syn.load_npz(write(tmp_path / "c.npz", per_class=10, seed=4))
    small = syn.load_npz(write(tmp_path / "d.npz", per_class=4, seed=3))
    np.testing.assert_array_equal(a["x"], b["x"])
    assert not np.array_equal(a["x"], c["x"])
    np.testing.assert_array_equal(small["x"], a["x"][:12])  # a smaller set is a prefix of a larger one
    # Chunks get distinct seeds: generate restarts its latents per call, so one seed would repeat chunk 0.
    assert not np.array_equal(a["x"][:8, 1:], a["x"][16:24, 1:])


def test_folder_round_trips_through_gan_jax_folder_dataset(fake, tmp_path):
    fake["exp"] = FakeExperiment(12)  # more than 10 classes: folder names must sort numerically
    out = tmp_path / "synth"
    assert write(out, per_class=3, seed=1) == str(out)
    train = out / "train"
    dirs = sorted(os.listdir(train))
    assert dirs == [f"{c:02d}" for c in range(12)]
    assert all(sorted(os.listdir(train / d)) == ["0.png", "1.png", "2.png"] for d in dirs)
    meta = json.loads((out / "metadata.json").read_text())
    assert (meta["num_classes"], meta["per_class"], meta["step"], meta["split"]) == (12, 3, 42, "train")

    ds = get_dataset({"name": "folder", "path": str(train)}, seed=0)
    assert ds.num_classes == 12 and ds.num_examples == 36 and ds.shape == SHAPE
    x, y = ds.source.get(np.arange(36))
    np.testing.assert_array_equal(x[:, 0, 0, 0], 100 + y)  # the folder's label is the image's label
    assert np.bincount(y).tolist() == [3] * 12

    # The same images as the npz of that seed: sample i is image i // 12 of class i % 12.
    d = syn.load_npz(write(tmp_path / "s.npz", per_class=3, seed=1))
    order = np.lexsort((np.arange(36) // 12, d["label"]))  # sorted by (class, index): the folder's order
    np.testing.assert_array_equal(x, d["x"][order])


def test_refusals(fake, tmp_path):
    for bad in (0, -1, True, 2.5):
        with pytest.raises(syn.SyntheticDataError, match="per_class"):
            write(tmp_path / "s.npz", per_class=bad)
    assert fake["restores"] == 0  # argument errors come before loading anything

    fake["exp"] = FakeExperiment(0)
    with pytest.raises(syn.SyntheticDataError, match="class-conditional"):
        write(tmp_path / "s.npz")
    fake["exp"] = FakeExperiment(3, shape=(2,), kind="points")
    with pytest.raises(syn.SyntheticDataError, match="image"):
        write(tmp_path / "s.npz")
    fake["exp"] = FakeExperiment(3)

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    (tmp_path / "taken.npz").write_bytes(b"x")
    with pytest.raises(syn.SyntheticDataError, match="not empty"):
        write(tmp_path / "full")
    with pytest.raises(syn.SyntheticDataError, match="not empty"):
        write(tmp_path / "taken.npz")
    with pytest.raises(syn.SyntheticDataError, match="directory"):
        write(tmp_path / "full", fmt="npz")
    with pytest.raises(syn.SyntheticDataError, match="is a folder"):
        write(tmp_path / "taken.npz", fmt="folder")
    (tmp_path / "plain").write_bytes(b"x")
    with pytest.raises(syn.SyntheticDataError, match="is a file"):
        write(tmp_path / "plain", overwrite=True)
    os.remove(tmp_path / "plain")
    assert (tmp_path / "full" / "keep.txt").exists() and (tmp_path / "taken.npz").read_bytes() == b"x"

    write(tmp_path / "full", overwrite=True)
    write(tmp_path / "taken.npz", overwrite=True)
    assert not (tmp_path / "full" / "keep.txt").exists() and len(os.listdir(tmp_path / "full" / "train")) == 3
    assert syn.load_npz(str(tmp_path / "taken.npz"))["x"].shape == (15, *SHAPE)
    (tmp_path / "empty").mkdir()
    write(tmp_path / "empty")  # an empty folder is not refused
    assert sorted(os.listdir(tmp_path)) == ["empty", "full", "taken.npz"]  # no temporaries left


def test_a_failure_leaves_nothing_behind(fake, tmp_path):
    exp = fake["exp"]
    original = exp.generate

    def failing(state, num_samples, seed, labels=None):
        if len(exp.calls) >= 1:
            raise RuntimeError("out of memory")
        return original(state, num_samples, seed, labels)

    exp.generate = failing
    for out in (tmp_path / "s.npz", tmp_path / "folder"):
        exp.calls.clear()
        with pytest.raises(RuntimeError):
            write(out, per_class=10)
    assert os.listdir(tmp_path) == []


def test_run_py_reports_bad_per_class_without_traceback(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "run.py",
            "--config=configs/dcgan.py:smoke",
            f"--workdir={tmp_path}",
            "--mode=synthesize",
            "--per_class=0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and "error: per_class=0" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------------------- CAS


def test_cas_rows_subsets_and_batches():
    assert [r.name for r in cas.plan_rows([10, 100])] == [
        "real",
        "synthetic",
        "real+synthetic",
        "real_10pc",
        "real_10pc+synthetic",
        "real_100pc",
        "real_100pc+synthetic",
    ]
    y = np.array([0, 1, 1, 0, 2, 2, 0, 1, 2])
    assert cas.first_per_class(y, 2, 3).tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="only 3"):
        cas.first_per_class(y, 4, 3)
    assert cas.summarize([0.5]) == (0.5, 0.0)
    mean, std = cas.summarize([0.9, 0.92, 0.94])
    assert mean == pytest.approx(0.92) and std == pytest.approx(0.02)

    union = list(cas.batch_indices([6, 4], 5, 4, seed=0, mix="union"))
    assert sorted(np.concatenate(union[:2]).tolist()) == list(range(10))  # each example once per epoch
    balanced = np.stack(list(cas.batch_indices([100, 10], 4, 10, seed=0, mix="balanced")))
    assert ((balanced < 100).sum(axis=1) == 2).all()  # half of every batch from each part
    assert sorted(balanced[:5][balanced[:5] >= 100].tolist()) == list(range(100, 110))
    np.testing.assert_array_equal(balanced, np.stack(list(cas.batch_indices([100, 10], 4, 10, seed=0, mix="balanced"))))


def test_cas_table_assembly():
    real = (np.zeros((40, 4, 4, 1), np.uint8), np.repeat(np.arange(4), 10).astype(np.int32))
    synthetic = (np.ones((8, 4, 4, 1), np.uint8), np.tile(np.arange(4), 2).astype(np.int32))
    seen = []

    def fake_train(parts, test, num_classes, *, seed, steps, mix):
        seen.append((sum(len(p[0]) for p in parts), seed))
        return 0.5 + 0.1 * seed + 0.001 * sum(len(p[0]) for p in parts)

    lines = []
    rows = cas.run_rows(cas.plan_rows([2]), real, synthetic, real, 4, [0, 1], 10, "union", fake_train, lines.append)
    assert [n for n, _ in seen] == [40, 40, 8, 8, 48, 48, 8, 8, 16, 16]
    by = {r["row"]: r for r in rows}
    assert (by["real_2pc+synthetic"]["real_images"], by["real_2pc+synthetic"]["synthetic_images"]) == (8, 8)
    assert by["synthetic"]["accuracy_mean"] == pytest.approx(0.558)
    assert by["synthetic"]["accuracy_std"] == pytest.approx(0.1 / np.sqrt(2), abs=1e-5)
    assert [json.loads(line)["row"] for line in lines] == [r["row"] for r in rows]
    result = {
        "synthetic": {"config": "configs/x.py", "step": 7, "per_class": 2, "seed": 0},
        "steps": 10,
        "epochs": 1.0,
        "real_train": 40,
        "batch_size": 100,
        "mix": "union",
        "real_test": 40,
        "test_split": "test",
        "seeds": [0, 1],
        "command": "benchmarks/cas.py",
        "rows": rows,
    }
    md = cas.markdown(result)
    assert "| synthetic | 0 | 8 | 55.80 ± 7.07 |" in md and "CAS / real accuracy: 0.946" in md


def test_cas_classifier_trains_deterministically():
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(2), 32).astype(np.int32)
    x = (rng.integers(0, 60, (64, 8, 8, 1)) + 180 * y[:, None, None, None]).astype(np.uint8)  # bright = class 1
    a = cas.train_and_score([(x[:32], y[:32]), (x[32:], y[32:])], (x, y), 2, seed=0, steps=30, mix="balanced")
    b = cas.train_and_score([(x[:32], y[:32]), (x[32:], y[32:])], (x, y), 2, seed=0, steps=30, mix="balanced")
    assert a == b and a > 0.9
