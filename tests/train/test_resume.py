"""A run stopped and resumed ends bit-identical to one never interrupted (CPU)."""

import jax
import numpy as np
import pytest

from gan_jax.config import load_config
from gan_jax.train.loop import train


def leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(state)]


@pytest.mark.parametrize("spec", ["configs/gan_mog.py:smoke", "configs/dcgan.py:smoke"])
def test_resume_equals_uninterrupted(spec, tmp_path):
    config = load_config(spec)
    config.num_train_steps = 8
    config.checkpoint_every = 4
    config.log_every = 2
    config.sample_every = 4
    straight = train(config, str(tmp_path / "straight"))

    first = load_config(spec)
    first.update_from_flattened_dict({"num_train_steps": 3, "checkpoint_every": 4, "log_every": 2, "sample_every": 4})
    train(first, str(tmp_path / "resumed"))  # stops at step 3 (a checkpoint is written at the end)
    resumed = train(config, str(tmp_path / "resumed"))

    assert int(straight.step) == int(resumed.step) == 8
    for a, b in zip(leaves(straight), leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
