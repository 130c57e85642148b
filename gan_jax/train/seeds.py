"""Many seeds of one config trained at once: the train step vmapped over seeds and scanned over steps.

Why: a paper's table is a mean over seeds, and a small model (the 2-D mixtures' MLPs at batch 100) leaves a CPU
mostly idle between tiny matrix products and per-op dispatch. Stacking S seeds along a leading axis makes each op S
times larger and `lax.scan` removes the per-step dispatch, which is how `benchmarks/mixtures_table.py` trains a
10-seed table in a fraction of the time of ten runs one after another (it measures both).

Seed s here is the run `run.py --config.seed=s` makes: the same training set (drawn from the seed for synthetic data),
the same batches (`Dataset.example_indices`), the same initial state and the same step function
(`Experiment.make_train_step`). Only the order of floating-point sums inside vmapped ops may differ, so results
agree with single runs to rounding, not bit for bit (tested). There are no checkpoints or evaluators here: this is for
runs short enough to redo, scored by the caller through `sample`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gan_jax import data as data_lib
from gan_jax.train.experiment import Experiment, setup
from gan_jax.train.state import TrainState

log = logging.getLogger(__name__)

PyTree = Any


@dataclasses.dataclass
class SeedRuns:
    """S runs of one config stacked along a leading seed axis."""

    experiment: Experiment  # built for seeds[0]; the game, optimizers and step are the same for every seed
    seeds: tuple[int, ...]
    datasets: tuple[data_lib.Dataset, ...]
    states: TrainState  # every leaf has a leading axis of len(seeds)
    compile_s: float = 0.0  # compiling the chunk functions
    train_s: float = 0.0  # wall time of the steps, compilation excluded

    def state(self, i: int) -> TrainState:
        """The i-th seed's state, as a single run would hold it."""
        return jax.tree.map(lambda a: a[i], self.states)

    def sample(self, num_samples: int, seed: int = 0) -> list[np.ndarray]:
        """`num_samples` samples of each seed's generator (EMA weights), with the evaluators' latents for `seed`."""
        return [self.experiment.generate(self.state(i), num_samples, seed) for i in range(len(self.seeds))]


def mean_sem(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean over seeds (sample std / sqrt(n); 0 for a single seed)."""
    a = np.asarray(values, np.float64)
    sem = float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else 0.0
    return float(a.mean()), sem


def init_seed_runs(config: ml_collections.ConfigDict, seeds: Sequence[int]) -> SeedRuns:
    """Fresh states for `seeds` of `config` (config.seed is ignored), each as `run.py --config.seed=s` starts."""
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("need at least one seed")
    first = ml_collections.ConfigDict(config)
    first.seed = seeds[0]
    exp = setup(first, None)
    datasets = tuple(data_lib.get_dataset(config.data, seed=s) for s in seeds)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
    states = jax.jit(jax.vmap(exp.initializer))(keys)
    return SeedRuns(exp, seeds, datasets, states)


def _batches(ds: data_lib.Dataset, start: int, count: int, rows: int) -> dict[str, np.ndarray]:
    """Batches start .. start+count-1 of `ds` stacked to (count, rows, ...), exactly as `Dataset.batch` makes them."""
    if start % count == 0:
        # `count` consecutive batches of `rows` are one batch of count*rows at index start // count.
        flat = ds.example_indices(start // count, rows * count)
    else:
        flat = np.concatenate([ds.example_indices(s, rows) for s in range(start, start + count)])
    return {k: v.reshape((count, rows) + v.shape[1:]) for k, v in ds.get(flat).items()}


def train_seed_runs(
    runs: SeedRuns,
    num_steps: int,
    *,
    chunk: int = 1000,
    callback: Callable[[int, SeedRuns], None] | None = None,
    callback_every: int = 0,
) -> SeedRuns:
    """Advances every seed from its current step to `num_steps`, `chunk` steps per compiled call.

    `callback(step, runs)` runs on the host after each chunk that reaches a multiple of `callback_every` (and at the
    end), e.g. to score samples along the way; its time is not counted in `runs.train_s`.
    """
    if chunk < 1:
        raise ValueError(f"chunk={chunk}: must be >= 1")
    config = runs.experiment.config
    rows = config.batch_size * config.n_critic
    step_fn = runs.experiment.make_train_step()

    def run_chunk(states: TrainState, batches: dict[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
        one_seed = lambda state, b: jax.lax.scan(step_fn, state, b)  # noqa: E731
        return jax.vmap(one_seed)(states, batches)

    jitted = jax.jit(run_chunk, donate_argnums=0)
    compiled: dict[int, Any] = {}  # per chunk length: the last chunk may be shorter
    step = int(np.asarray(runs.states.step)[0])
    while step < num_steps:
        count = min(chunk, num_steps - step)
        per_seed = [_batches(ds, step, count, rows) for ds in runs.datasets]
        batches = {k: np.stack([b[k] for b in per_seed]) for k in per_seed[0]}
        if count not in compiled:
            t0 = time.perf_counter()
            compiled[count] = jitted.lower(runs.states, batches).compile()
            runs.compile_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        runs.states, metrics = compiled[count](runs.states, batches)
        jax.block_until_ready(runs.states)
        runs.train_s += time.perf_counter() - t0
        step += count
        nonfinite = int(np.asarray(metrics["nonfinite"]).sum())
        if nonfinite:
            log.warning("%d non-finite steps among seeds before step %d", nonfinite, step)
        if callback is not None and (step == num_steps or (callback_every and step % callback_every == 0)):
            callback(step, runs)
    return runs
