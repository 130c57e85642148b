"""Test-wide settings: run.py's XLA flags and JAX's persistent compilation cache, as run.py sets them.

The flags (`gan_jax.env.CPU_XLA_FLAGS`) make the tests run the compiled programs users run; they also matter for
time: without them XLA:CPU hands each convolution to YNNPACK alone, which trains the MNIST classifier about 1.7x
slower (58 against 100 ms per step, 2 cores). They must be set before JAX initializes its backend, hence here.

Many tests build the same small models and steps (the smoke configs, in-process and in run.py subprocesses); with
the cache each program is compiled once per machine instead of once per test, which keeps the suite within its time
budget. The cache lives under ${GAN_JAX_CACHE:-~/.cache/gan_jax}/xla, which CI gives a fresh directory. The
`branch_run` fixture serves resume tests the same way: one training run fewer per test.
"""

import os
import shutil
from pathlib import Path

import pytest

from gan_jax.env import configure_xla

configure_xla()


@pytest.fixture
def branch_run():
    """branch_run(workdir, new, step): a copy of a finished run's workdir at `new` as if that run had stopped right
    after its `step` checkpoint (the later checkpoints and their manifests removed), so a resume test needs one
    training run fewer than stopping a second run there."""

    def branch(workdir: Path, new: Path, step: int) -> Path:
        shutil.copytree(workdir, new)
        for name in os.listdir(new / "checkpoints"):
            if name.isdigit() and int(name) > step:
                shutil.rmtree(new / "checkpoints" / name)
                os.remove(new / "checkpoints_manifest" / f"{name}.json")
        assert str(step) in os.listdir(new / "checkpoints"), f"no checkpoint at step {step} in {workdir}"
        return new

    return branch
