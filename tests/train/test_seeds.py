"""Seeds trained at once (the step vmapped over seeds) are the runs `run.py --config.seed=s` makes."""

import jax
import numpy as np
import pytest

from gan_jax.config import load_config
from gan_jax.train.loop import train
from gan_jax.train.seeds import init_seed_runs, train_seed_runs


def smoke(seed: int = 0, steps: int = 7):
    config = load_config("configs/gan_mog.py:smoke")
    config.update_from_flattened_dict(
        {"seed": seed, "num_train_steps": steps, "log_every": 100, "sample_every": 100, "checkpoint_every": 100}
    )
    config.evals = {}
    config.best_metric = ""
    return config


def test_each_seed_matches_its_single_run(tmp_path):
    seeds = (0, 3)
    # chunk 3 over 7 steps: chunks start at 0, 3 and 6 (the last one short), both batch-index paths are taken.
    runs = train_seed_runs(init_seed_runs(smoke(), seeds), 7, chunk=3)
    assert np.asarray(runs.states.step).tolist() == [7, 7]
    for i, seed in enumerate(seeds):
        single = train(smoke(seed), str(tmp_path / f"seed{seed}"))
        mine = runs.state(i)
        for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(mine), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)
    # Different seeds are different runs (data, initialization, latents).
    a, b = (jax.tree.leaves(runs.state(i).params) for i in range(2))
    assert not np.allclose(np.asarray(a[0]), np.asarray(b[0]))


def test_samples_and_resuming_a_seed_run():
    runs = init_seed_runs(smoke(), (1, 2))
    train_seed_runs(runs, 4, chunk=4)
    calls = []
    train_seed_runs(runs, 8, chunk=2, callback=lambda step, r: calls.append(step), callback_every=4)
    assert calls == [8]  # steps 6 and 8 end chunks; only 8 is a multiple of 4 (and the end)
    samples = runs.sample(30, seed=0)
    assert [s.shape for s in samples] == [(30, 2), (30, 2)]
    assert not np.allclose(samples[0], samples[1])
    with pytest.raises(ValueError, match="chunk"):
        train_seed_runs(runs, 9, chunk=0)
