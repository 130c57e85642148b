"""`--mode=sample` and `--mode=eval`: read a workdir's newest checkpoint and generate from its (EMA) generator."""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np

from gan_jax.train import parallel
from gan_jax.train.checkpoint import CheckpointError
from gan_jax.train.evaluation import Evaluations
from gan_jax.train.experiment import Experiment, setup
from gan_jax.train.loop import draw_samples
from gan_jax.train.state import TrainState


def restore(config: ml_collections.ConfigDict, workdir: str) -> tuple[Experiment, TrainState]:
    exp = setup(config, workdir)
    state = exp.checkpoints.restore_latest(exp.abstract_state)
    if state is None:
        raise CheckpointError(f"no checkpoint in {exp.checkpoints.directory}: train first with --mode=train")
    return exp, state


def sample(config: ml_collections.ConfigDict, workdir: str, num_samples: int, out: str, seed: int = 0) -> str:
    exp, state = restore(config, workdir)
    x = exp.generate(state, num_samples, seed)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    np.savez_compressed(out, x=x, step=int(state.step), model=config.model.name)
    return out


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Losses of both players on real batches, a sample grid (with mode coverage for the 2-D mixtures), and every
    evaluator of `config.evals` (whatever its `every`), with their protocols."""
    exp, state = restore(config, workdir)
    game = exp.game

    losses = jax.jit(lambda state, batch, rng: game.eval_losses(state.params, state.model_state, batch, rng))

    rows = []
    for i in range(config.eval_batches):
        batch = parallel.global_batch(exp.dataset.batch(i, config.batch_size), exp.mesh)
        rows.append(jax.device_get(losses(state, batch, jax.random.PRNGKey(i))))
    result: dict = {"step": int(state.step), "model": config.model.name, "dataset": config.data.name}
    result.update({k: float(np.mean([r[k] for r in rows])) for k in rows[0]})
    grid = os.path.join(workdir, "eval", f"samples_step_{int(state.step):07d}.png")
    scores = draw_samples(exp, state, grid)
    result.update(scores)
    result["sample_grid"] = grid
    result["evals"] = Evaluations(exp, record=False).run(state)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "eval", f"eval_step_{int(state.step):07d}.json"), "w") as f:
            json.dump(result, f, indent=2)
    return result
