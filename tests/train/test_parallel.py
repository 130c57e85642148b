"""Eight simulated CPU devices give the same training result as one."""

import os
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = r"""
import sys, jax, numpy as np
from gan_jax.config import load_config
from gan_jax.train.loop import train
config = load_config(sys.argv[1])
config.num_train_steps = 4
config.batch_size = 32  # divisible by 8 devices
state = train(config, sys.argv[2])
assert jax.device_count() == int(sys.argv[3]), jax.device_count()
leaves = [np.asarray(x) for x in jax.tree.leaves(state.params)]
np.savez(sys.argv[2] + "/params.npz", *leaves)
"""


def run_with_devices(n, spec, workdir):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu")
    subprocess.run(
        [sys.executable, "-c", SCRIPT, spec, str(workdir), str(n)],
        check=True,
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        capture_output=True,
        timeout=600,
    )
    data = np.load(workdir / "params.npz")
    return [data[k] for k in sorted(data.files, key=lambda s: int(s.split("_")[1]))]


@pytest.mark.parametrize("spec", ["configs/dcgan.py:smoke", "configs/gan_mog.py:smoke"])
def test_eight_devices_equal_one(spec, tmp_path):
    one = run_with_devices(1, spec, tmp_path / "one")
    eight = run_with_devices(8, spec, tmp_path / "eight")
    assert len(one) == len(eight) > 0
    for a, b in zip(one, eight):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
