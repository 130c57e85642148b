"""The PyTorch references of benchmarks/step_speed.py still compute gan_jax's train step.

The speed ratios of issue #7 compare gan_jax's step with a PyTorch re-implementation of it; they mean something only
while the two do the same work. Each checker under benchmarks/torch_refs loads gan_jax's state into the reference,
takes the same step on the same inputs in both layouts (NCHW and channels-last) and exits non-zero on any mismatch of
losses, gradients, weights, batch statistics or EMA, so a change to a gan_jax model or game that the reference does
not follow fails here rather than silently skewing the benchmark. Only DCGAN's checker runs in the suite (14 s): at
one step SNGAN's took 45 s and BigGAN's 79 s, and StyleGAN2's checks several steps and a smoke run, so those are run
by hand (`python benchmarks/torch_refs/check_<model>.py`) after a change to their models.
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_dcgan_reference_takes_gan_jax_step():
    # The default config's widths (G 512-256-128, D 128-256-512), one step at batch 32: tiny networks are no good here,
    # because there one LeakyReLU input that rounding puts on the other side of the kink moves a whole gradient
    # tensor by more than the checker's 2% (the smoke config fails that way in channels-last at batch 8).
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "torch_refs", "check_dcgan.py"), "--batch=32", "--steps=1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ok = "OK: the torch reference takes gan_jax's DCGAN train step (nchw, channels_last; 1 steps, batch 32)"
    assert ok in r.stdout
