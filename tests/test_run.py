"""run.py end to end in real subprocesses: train, resume, sample, eval, and clear errors for bad input."""

import glob
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, timeout=300):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "run.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def mog_workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mog")
    r = run("--config=configs/gan_mog.py:smoke", f"--workdir={workdir}")
    assert r.returncode == 0, r.stderr[-3000:]
    return workdir


def test_train_writes_everything(mog_workdir):
    assert sorted(os.listdir(mog_workdir / "checkpoints")) == ["10", "20"]
    assert json.load(open(mog_workdir / "config.json"))["model"]["name"] == "mlp"
    assert glob.glob(str(mog_workdir / "events.out.tfevents.*"))
    assert (mog_workdir / "samples" / "step_0000020.png").exists()
    assert (mog_workdir / "loss_curves.png").exists()
    rows = [json.loads(line) for line in open(mog_workdir / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    assert {"d_loss", "g_loss", "d_grad_norm", "g_grad_norm", "generator_param_norm"} <= set(rows[0])


def test_rerun_resumes_and_extends(mog_workdir, tmp_path):
    r = run("--config=configs/gan_mog.py:smoke", f"--workdir={mog_workdir}", "--config.num_train_steps=30")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Resuming at step 20 of 30" in r.stderr
    assert "30" in os.listdir(mog_workdir / "checkpoints")


def test_sample_points(mog_workdir, tmp_path):
    out = tmp_path / "s.npz"
    r = run(
        "--config=configs/gan_mog.py:smoke",
        f"--workdir={mog_workdir}",
        "--mode=sample",
        "--num_samples=250",
        f"--out={out}",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    x = np.load(out)["x"]
    assert x.shape == (250, 2) and x.dtype == np.float32 and np.isfinite(x).all()


def test_eval_points(mog_workdir):
    r = run("--config=configs/gan_mog.py:smoke", f"--workdir={mog_workdir}", "--mode=eval")
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["num_modes"] == 8 and 0 <= result["modes"] <= 8 and np.isfinite(result["d_loss"])
    assert os.path.exists(result["sample_grid"])


def test_dcgan_smoke_train_and_sample_images(tmp_path):
    workdir = tmp_path / "dcgan"
    r = run("--config=configs/dcgan.py:smoke", f"--workdir={workdir}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (workdir / "samples" / "step_0000006.png").exists()
    out = tmp_path / "img.npz"
    r = run(
        "--config=configs/dcgan.py:smoke", f"--workdir={workdir}", "--mode=sample", "--num_samples=20", f"--out={out}"
    )
    assert r.returncode == 0, r.stderr[-3000:]
    x = np.load(out)["x"]
    assert x.shape == (20, 32, 32, 1) and x.dtype == np.uint8


def test_unknown_config_key_is_a_clear_error(tmp_path):
    r = run("--config=configs/gan_mog.py:smoke", f"--workdir={tmp_path}", "--config.no_such_key=1")
    assert r.returncode != 0
    assert "no_such_key" in r.stderr and "Traceback" not in r.stderr


def test_bad_value_names_the_field(tmp_path):
    r = run("--config=configs/gan_mog.py:smoke", f"--workdir={tmp_path}", "--config.loss=bogus")
    assert r.returncode == 1
    assert "config.loss='bogus'" in r.stderr and "Traceback" not in r.stderr


def test_missing_dataset_fails_fast(tmp_path):
    start = time.time()
    r = run(
        "--config=configs/dcgan.py:cifar10",
        f"--workdir={tmp_path / 'w'}",
        f"--config.data.data_dir={tmp_path / 'no_data'}",
    )
    assert r.returncode == 1
    assert "cifar10" in r.stderr and "Traceback" not in r.stderr
    assert time.time() - start < 60


def test_workdir_of_another_model_is_refused(mog_workdir):
    before = sorted(os.listdir(mog_workdir / "checkpoints"))
    r = run("--config=configs/dcgan.py:smoke", f"--workdir={mog_workdir}")
    assert r.returncode == 1
    assert "holds checkpoints of another model" in r.stderr and "Traceback" not in r.stderr
    assert sorted(os.listdir(mog_workdir / "checkpoints")) == before


def _corrupt(step_dir):
    """Flips bytes in every data file of a checkpoint's state."""
    files = [f for f in glob.glob(f"{step_dir}/state/**/*", recursive=True) if os.path.isfile(f)]
    data_files = [f for f in files if "/d/" in f]
    assert data_files, files
    for f in data_files:
        blob = bytearray(open(f, "rb").read())
        for i in range(0, len(blob), 7):
            blob[i] ^= 0xFF
        open(f, "wb").write(bytes(blob))


def test_corrupt_checkpoint_falls_back_then_fails_clearly(tmp_path):
    workdir = tmp_path / "w"
    r = run("--config=configs/gan_mog.py:smoke", f"--workdir={workdir}")
    assert r.returncode == 0, r.stderr[-3000:]
    _corrupt(workdir / "checkpoints" / "20")
    r = run("--config=configs/gan_mog.py:smoke", f"--workdir={workdir}", "--mode=eval")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["step"] == 10
    assert "step 20" in r.stderr
    _corrupt(workdir / "checkpoints" / "10")
    r = run("--config=configs/gan_mog.py:smoke", f"--workdir={workdir}", "--mode=eval")
    assert r.returncode == 1
    assert "no usable checkpoint" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("spec", ["configs/no_such_config.py", "configs/dcgan.py:no_such_variant"])
def test_bad_config_file_or_variant(spec, tmp_path):
    r = run(f"--config={spec}", f"--workdir={tmp_path}")
    assert r.returncode == 2
    assert spec.split(":")[-1].split("/")[-1] in r.stderr and "Traceback" not in r.stderr


def test_nan_loss_stops_with_the_step_and_keeps_last_checkpoint(tmp_path):
    workdir = tmp_path / "nan"
    # state.step == 12 is the 13th update; checkpoints come every 10 steps in the smoke config.
    r = run("--config=configs/gan_mog.py:smoke", f"--workdir={workdir}", "--config.debug.inject_nan_at_step=12")
    assert r.returncode == 1
    assert "non-finite loss or gradient at step 13" in r.stderr
    assert "the last checkpoint (step 10) is intact" in r.stderr and "Traceback" not in r.stderr
    assert sorted(os.listdir(workdir / "checkpoints")) == ["10"]
    r = run("--config=configs/gan_mog.py:smoke", f"--workdir={workdir}", "--mode=eval")
    assert r.returncode == 0 and json.loads(r.stdout.strip().splitlines()[-1])["step"] == 10
