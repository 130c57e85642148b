"""Checks that benchmarks/torch_refs/sngan.py computes gan_jax's SNGAN train step: same outputs, losses, gradients,
updated weights and state.

  python benchmarks/torch_refs/check_sngan.py [--config=configs/sngan.py] [--batch=16] [--steps=2] [--compile]
      [--set model.num_classes=0 ...]

The checks are benchmarks/torch_refs/check_biggan.py's (see its docstring), run on the SNGAN reference: the parameter
counts, G's and D's train-mode outputs and state, and `--steps` train steps (each D step and the G step: losses,
gradients, weights, BN statistics, u's, EMA, metrics) from identical states. SNGAN's default config decays both
learning rates linearly, so the steps also check the schedule.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from benchmarks.torch_refs.check_biggan import main  # noqa: E402

if __name__ == "__main__":
    main("sngan")
