"""gan_jax.fileio: a write replaces the file whole or leaves it as it was, and leaves no temporary file behind."""

import json
import os
import stat

import numpy as np
import pytest

from gan_jax import fileio


def test_write_json_replaces_the_file_and_creates_missing_directories(tmp_path):
    path = str(tmp_path / "a" / "b" / "record.json")
    fileio.write_json(path, {"step": 1})
    fileio.write_json(path, {"step": 2})
    with open(path) as f:
        assert json.load(f) == {"step": 2}
    assert os.listdir(os.path.dirname(path)) == ["record.json"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = str(tmp_path / "record.json")
    fileio.write_json(path, {"step": 1})
    with pytest.raises(TypeError):
        fileio.write_json(path, {"step": object()})  # not JSON: fails after the temporary file was opened
    with open(path) as f:
        assert json.load(f) == {"step": 1}
    assert os.listdir(tmp_path) == ["record.json"]


def test_save_npz_round_trips_without_adding_a_suffix(tmp_path):
    path = str(tmp_path / "cache.npz")
    fileio.save_npz(path, x=np.arange(3), key=np.asarray("k"))
    with np.load(path) as z:
        assert z["x"].tolist() == [0, 1, 2] and str(z["key"]) == "k"
    assert os.listdir(tmp_path) == ["cache.npz"]


def test_atomic_open_refuses_append_and_read_modes(tmp_path):
    with pytest.raises(ValueError, match="whole files"):
        with fileio.atomic_open(str(tmp_path / "x"), "a"):
            pass


def test_load_or_build_builds_once_when_callers_start_together(tmp_path):
    """Two builders of one missing entry: the second waits on the lock, looks again and loads the first one's file.
    The present entry is then loaded without building, and `build`'s own result is returned to the builder."""
    import threading
    import time

    path = str(tmp_path / "entry.json")
    builds: list[int] = []
    started = threading.Event()

    def load():
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def build():
        builds.append(1)
        started.set()
        time.sleep(0.3)  # the second caller looks for the entry meanwhile
        fileio.write_json(path, {"built": len(builds)})
        return {"built": len(builds), "by": "build"}

    got = {}
    first = threading.Thread(target=lambda: got.setdefault("first", fileio.load_or_build(path, load, build)))
    first.start()
    assert started.wait(10)
    second = fileio.load_or_build(path, load, build)
    first.join()
    assert builds == [1]
    assert got["first"] == {"built": 1, "by": "build"}
    assert second == {"built": 1}
    assert fileio.load_or_build(path, load, build) == {"built": 1} and builds == [1]
    assert sorted(os.listdir(tmp_path)) == ["entry.json"]  # no lock file beside the entry
