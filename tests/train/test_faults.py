"""Fault injection on real training processes: SIGTERM, SIGKILL (also mid-save), divergence policies, failed writes.

Every interrupted run is resumed and must end bit-identical to a run that was never interrupted.
"""

import glob
import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from gan_jax.config import load_config
from gan_jax.train.experiment import setup

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = "configs/gan_mog.py:smoke"
# A run long enough to be interrupted three times (each interruption lets it save a new checkpoint, then waits up to
# 1.2 s: about 30 steps), saving every 4 steps so that kills often land inside a save.
OVERRIDES = {"num_train_steps": 160, "checkpoint_every": 4, "log_every": 5, "sample_every": 100}
ARGS = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]


def start(workdir, *extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.Popen(
        [sys.executable, "run.py", f"--config={SPEC}", f"--workdir={workdir}", *ARGS, *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(workdir, *extra):
    p = start(workdir, *extra)
    out, err = p.communicate(timeout=300)
    return p.returncode, err


def final_state(workdir):
    config = load_config(SPEC)
    config.update_from_flattened_dict(OVERRIDES)
    exp = setup(config, str(workdir))
    state = exp.checkpoints.restore_latest(exp.abstract_state)
    exp.checkpoints.close()
    return state


def assert_same(a, b):
    assert int(a.step) == int(b.step)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def latest_checkpoint(workdir):
    path = os.path.join(workdir, "checkpoints")
    steps = sorted(int(s) for s in os.listdir(path) if s.isdigit()) if os.path.isdir(path) else []
    return steps[-1] if steps else 0


def wait_for_training(workdir, proc, timeout=120):
    """Blocks until this process has written a checkpoint past the one it resumed from (or it ended)."""
    resume_step = latest_checkpoint(workdir)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and latest_checkpoint(workdir) <= resume_step:
        time.sleep(0.02)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    rc, err = run(workdir)
    assert rc == 0, err[-3000:]
    return final_state(workdir)


def test_sigterm_saves_exits_zero_and_resumes_identically(uninterrupted, tmp_path):
    workdir = tmp_path / "term"
    p = start(workdir)
    wait_for_training(workdir, p)
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-3000:]
    assert "Stopped by SIGTERM at step" in err and "Re-run the same command to resume" in err
    stopped_at = int(err.split("Stopped by SIGTERM at step ")[1].split()[0])
    assert 0 < stopped_at < 160
    assert str(stopped_at) in os.listdir(workdir / "checkpoints")  # the exact step it stopped at was saved
    rc, err = run(workdir)
    assert rc == 0, err[-3000:]
    assert f"Resuming at step {stopped_at} of 160" in err
    assert_same(final_state(workdir), uninterrupted)


def test_sigkill_at_random_points_then_resume_identically(uninterrupted, tmp_path):
    workdir = tmp_path / "kill"
    rng = random.Random(1234)
    kills, mid_save = [], 0
    for _ in range(3):
        p = start(workdir)
        wait_for_training(workdir, p)
        time.sleep(rng.uniform(0.0, 1.2))
        if p.poll() is not None:
            break
        p.kill()
        p.communicate(timeout=60)
        partial = glob.glob(str(workdir / "checkpoints" / "*.orbax-checkpoint-tmp*"))
        mid_save += bool(partial)
        kills.append(latest_checkpoint(workdir))
    assert len(kills) >= 2, kills
    rc, err = run(workdir)
    assert rc == 0, err[-3000:]
    assert not glob.glob(str(workdir / "checkpoints" / "*.orbax-checkpoint-tmp*"))  # partial saves cleaned up
    assert_same(final_state(workdir), uninterrupted)
    print(f"SIGKILLs after checkpoint steps {kills}; {mid_save} of them left a partial save behind")


def test_skip_policy_counts_and_finishes(tmp_path):
    rc, err = run(
        tmp_path / "skip",
        "--config.num_train_steps=20",
        "--config.debug.inject_nan_at_step=12",
        "--config.nonfinite_policy=skip",
    )
    assert rc == 0, err[-3000:]
    assert "non-finite loss or gradient at step 13" in err and "skipped that update (1 skipped so far)" in err
    last = json.loads(open(tmp_path / "skip" / "metrics.jsonl").read().splitlines()[-1])
    assert last["step"] == 20 and last["skipped_steps"] == 1.0


def test_rollback_policy_lowers_lr_and_finishes(tmp_path):
    rc, err = run(
        tmp_path / "rb",
        "--config.num_train_steps=20",
        "--config.checkpoint_every=10",
        "--config.debug.inject_nan_at_step=12",
        "--config.nonfinite_policy=rollback",
    )
    assert rc == 0, err[-3000:]
    assert "rolled back to step 10 with learning rates x0.5 (rollback 1 of 3)" in err
    last = json.loads(open(tmp_path / "rb" / "metrics.jsonl").read().splitlines()[-1])
    assert last["step"] == 20 and last["rollbacks"] == 1.0 and last["lr_scale"] == 0.5
    steps = [json.loads(line)["step"] for line in open(tmp_path / "rb" / "metrics.jsonl")]
    assert steps == sorted(set(steps))  # rows of the abandoned steps were dropped


def test_failed_save_keeps_earlier_checkpoints_and_rescues_state(tmp_path):
    workdir = tmp_path / "full"
    rc, err = run(
        workdir, "--config.num_train_steps=20", "--config.checkpoint_every=10", "--config.debug.fail_save_at_step=20"
    )
    assert rc == 1
    assert "could not write the checkpoint of step 20" in err and "Earlier checkpoints are intact (10)" in err
    assert "Traceback" not in err
    rescue = err.split("--workdir=")[1].split(",")[0]
    assert os.listdir(os.path.join(rescue, "checkpoints")) == ["20"] or "20" in os.listdir(rescue + "/checkpoints")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    r = subprocess.run(
        [sys.executable, "run.py", f"--config={SPEC}", f"--workdir={rescue}", "--mode=eval"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0 and json.loads(r.stdout.strip().splitlines()[-1])["step"] == 20


def test_unwritable_workdir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    rc, err = run(blocker / "workdir")
    assert rc == 1
    assert "cannot be written" in err and "Traceback" not in err


def test_second_signal_exits_at_once_and_resume_is_identical(uninterrupted, tmp_path):
    workdir = tmp_path / "twice"
    p = start(workdir)
    wait_for_training(workdir, p)
    p.send_signal(signal.SIGTERM)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode in (128 + signal.SIGTERM, 0), err[-3000:]  # 0 only if the save finished between the two
    if p.returncode != 0:
        assert "Second SIGTERM: exiting now." in err
    rc, err = run(workdir)
    assert rc == 0, err[-3000:]
    assert_same(final_state(workdir), uninterrupted)


def test_checkpoint_with_a_missing_file_is_skipped(tmp_path):
    workdir = tmp_path / "missing"
    rc, err = run(workdir, "--config.num_train_steps=20", "--config.checkpoint_every=10")
    assert rc == 0, err[-3000:]
    victim = sorted(glob.glob(str(workdir / "checkpoints" / "20" / "state" / "**" / "*"), recursive=True))
    os.remove([f for f in victim if os.path.isfile(f)][-1])
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    r = subprocess.run(
        [sys.executable, "run.py", f"--config={SPEC}", f"--workdir={workdir}", *ARGS, "--mode=eval"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["step"] == 10
    assert "step 20" in r.stderr and "missing" in r.stderr
    assert os.path.isdir(str(workdir / "checkpoints_corrupt" / "20"))  # kept for inspection, not deleted
