"""Fault-injection campaign on real training processes: kills, preemptions and corrupt checkpoints, then a resume that
must end bit-identical to a run that was never interrupted.

  python benchmarks/fault_injection.py                       # 12 interruptions of configs/gan_mog.py:smoke
  python benchmarks/fault_injection.py --interruptions=30 --seed=7

One uninterrupted run gives the reference final state. Then the same run is started over and over in one workdir; each
start is interrupted at a random moment after it has written a new checkpoint: SIGKILL (at any moment, often inside an
asynchronous save, since it saves every 4 steps), SIGTERM (preemption: save and exit 0), or a SIGKILL followed by
flipping bytes in the newest checkpoint (which the next start must detect and skip). A final start runs to the end.
Prints one JSON line: what was done at which step, how many saves were caught half-written, how many corrupt
checkpoints were detected, and whether the final parameters matched the uninterrupted run bit for bit (SHA-256 over
every leaf of the state). Exits 1 if they did not.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SPEC = "configs/gan_mog.py:smoke"
OVERRIDES = {"num_train_steps": 400, "checkpoint_every": 4, "log_every": 5, "sample_every": 100}


def _start(workdir: str) -> subprocess.Popen:
    args = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
    return subprocess.Popen(
        [sys.executable, "run.py", f"--config={SPEC}", f"--workdir={workdir}", *args],
        cwd=ROOT,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _checkpoints(workdir: str) -> list[int]:
    path = os.path.join(workdir, "checkpoints")
    return sorted(int(s) for s in os.listdir(path) if s.isdigit()) if os.path.isdir(path) else []


def _wait_for_new_checkpoint(workdir: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    before = (_checkpoints(workdir) or [0])[-1]
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and (_checkpoints(workdir) or [0])[-1] <= before:
        time.sleep(0.02)


def _corrupt_newest(workdir: str, rng: random.Random) -> int | None:
    """Flips 64 bytes in the largest file of the newest checkpoint; returns its step."""
    steps = _checkpoints(workdir)
    if not steps:
        return None
    files = [f for f in glob.glob(os.path.join(workdir, "checkpoints", str(steps[-1]), "**", "*"), recursive=True)]
    files = [f for f in files if os.path.isfile(f) and os.path.getsize(f) > 64]
    victim = max(files, key=os.path.getsize)
    with open(victim, "r+b") as f:
        offset = rng.randrange(0, os.path.getsize(victim) - 64)
        f.seek(offset)
        data = f.read(64)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))
    return steps[-1]


def _final_digest(workdir: str) -> tuple[int, str]:
    from gan_jax.config import load_config
    from gan_jax.train.checkpoint import state_digest
    from gan_jax.train.experiment import setup

    config = load_config(SPEC)
    config.update_from_flattened_dict(OVERRIDES)
    exp = setup(config, workdir)
    state = exp.checkpoints.restore_latest(exp.abstract_state)
    exp.checkpoints.close()
    return int(state.step), state_digest(state)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interruptions", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    base = tempfile.mkdtemp(prefix="gan_jax_faults_")
    t0 = time.time()

    reference = os.path.join(base, "uninterrupted")
    p = _start(reference)
    _, err = p.communicate(timeout=600)
    if p.returncode != 0:
        print(err[-3000:], file=sys.stderr)
        return 1
    ref_step, ref_digest = _final_digest(reference)

    workdir = os.path.join(base, "interrupted")
    events, partial_saves, corruptions_detected, starts = [], 0, 0, 0
    for _ in range(args.interruptions):
        kind = rng.choice(["sigkill", "sigkill", "sigterm", "sigkill+corrupt"])
        p = _start(workdir)
        starts += 1
        _wait_for_new_checkpoint(workdir, p)
        time.sleep(rng.uniform(0.0, 1.0))
        if p.poll() is not None:  # the run finished before the interruption landed
            _, err = p.communicate()
            corruptions_detected += "after skipping corrupt checkpoints" in err
            break
        p.send_signal(signal.SIGTERM if kind == "sigterm" else signal.SIGKILL)
        _, err = p.communicate(timeout=120)
        partial = bool(glob.glob(os.path.join(workdir, "checkpoints", "*.orbax-checkpoint-tmp*")))
        partial_saves += partial
        event = {"signal": kind.split("+")[0], "newest_checkpoint": (_checkpoints(workdir) or [0])[-1]}
        if kind == "sigterm":
            event["exit_code"] = p.returncode
            event["saved_and_exited_cleanly"] = p.returncode == 0 and "Re-run the same command to resume" in err
        event["mid_save"] = partial
        if kind == "sigkill+corrupt":
            event["corrupted_checkpoint"] = _corrupt_newest(workdir, rng)
        events.append(event)
        corruptions_detected += "after skipping corrupt checkpoints" in err
    p = _start(workdir)
    starts += 1
    _, err = p.communicate(timeout=600)
    corruptions_detected += "after skipping corrupt checkpoints" in err
    if p.returncode != 0:
        print(err[-3000:], file=sys.stderr)
        return 1
    step, digest = _final_digest(workdir)
    corrupted = [e["corrupted_checkpoint"] for e in events if e.get("corrupted_checkpoint")]
    result = {
        "config": SPEC,
        "overrides": OVERRIDES,
        "interruptions": len(events),
        "sigkill": sum(e["signal"] == "sigkill" for e in events),
        "sigterm": sum(e["signal"] == "sigterm" for e in events),
        "sigterm_clean_exits": sum(bool(e.get("saved_and_exited_cleanly")) for e in events),
        "kills_with_a_half_written_save": partial_saves,
        "checkpoints_corrupted": len(corrupted),
        "corruptions_detected_at_restart": corruptions_detected,
        "starts": starts,
        "resumes": starts - 1,
        "events": events,
        "final_step": step,
        "reference_step": ref_step,
        "bit_identical": digest == ref_digest and step == ref_step,
        "wall_s": round(time.time() - t0, 1),
    }
    print(json.dumps(result))
    return 0 if result["bit_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
