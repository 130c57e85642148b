"""The training loop: restore, step, log, draw, save. One loop for every GAN family.

The loop is host-side bookkeeping only; all learning happens in the jitted `train_step`. The non-finite flag of step
t is read after step t+1 has been dispatched, so checking it costs no pipeline stall.
"""

from __future__ import annotations

import json
import logging
import os

import jax
import ml_collections
import numpy as np
from clu import metric_writers, periodic_actions

from gan_jax.train import parallel, visualize
from gan_jax.train.experiment import Experiment, setup
from gan_jax.train.state import TrainState
from gan_jax.train.step import make_train_step

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """A loss or gradient became NaN or infinite; the state from before that step is intact."""


def grid_latents(exp: Experiment) -> jax.Array:
    """The fixed latents every sample grid is drawn from, so grids of one run are comparable over time."""
    rng = jax.random.fold_in(jax.random.PRNGKey(exp.config.seed), 0x5A3)
    n = exp.config.num_grid_samples if exp.dataset.kind == "image" else 2500
    return exp.game.sample_latents(rng, n)


def draw_samples(exp: Experiment, state: TrainState, path: str, writer=None) -> dict[str, float]:
    """Writes a sample grid (images) or a scatter over the true means (2-D points); returns point metrics if any."""
    z = grid_latents(exp)
    x = np.asarray(exp.sample_fn(state.ema_params, state.ema_state, z))
    step = int(state.step)
    if exp.dataset.kind == "image":
        visualize.save_image_grid(x, path)
        if writer is not None:
            writer.write_images(step, {"samples": visualize.image_grid(visualize.to_uint8(x))[None]})
        return {}
    from gan_jax.data.mixtures import mixture_params
    from gan_jax.metrics import mode_coverage

    means, std = mixture_params(exp.config.data.name, exp.config.data.std)
    scores = mode_coverage(x, means, std)
    title = (
        f"step {step}: {scores['modes']}/{scores['num_modes']} modes, {scores['high_quality_pct']:.1f}% high quality"
    )
    visualize.save_points_plot(x, path, means, title)
    return scores


def _check_finite(step: int, metrics: dict, last_saved: int | None) -> None:
    if float(metrics["nonfinite"]) > 0:
        values = {k: float(v) for k, v in metrics.items() if k != "nonfinite"}
        where = f"the last checkpoint (step {last_saved}) is intact" if last_saved else "no checkpoint was written yet"
        raise NonFiniteError(
            f"non-finite loss or gradient at step {step} ({', '.join(f'{k}={v:.4g}' for k, v in values.items())}); "
            f"that update was not applied and {where}. Lower the learning rates, or add gp_weight / r1_gamma."
        )


def _trim_metrics_log(path: str, upto_step: int) -> None:
    """Drops rows logged after the checkpoint a resumed run starts from, so the log matches the state."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        rows = [line for line in f if line.strip() and json.loads(line)["step"] <= upto_step]
    with open(path, "w") as f:
        f.writelines(rows)


def train(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains until `config.num_train_steps`, resuming from the workdir's newest good checkpoint."""
    exp = setup(config, workdir)
    is_main = jax.process_index() == 0
    if is_main:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
    state, resumed = exp.restore_or_init()
    start = int(state.step)
    total = config.num_train_steps
    log.info(
        "%s at step %d of %d in %s (%d devices)",
        "Resuming" if resumed else "Starting",
        start,
        total,
        workdir,
        jax.device_count(),
    )
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    if is_main:
        _trim_metrics_log(metrics_path, start)

    replicated = parallel.replicated(exp.mesh)
    train_step = jax.jit(
        make_train_step(
            exp.game,
            exp.optimizers,
            n_critic=config.n_critic,
            ema_decay=config.ema_decay,
            inject_nan_at_step=config.debug.inject_nan_at_step,
        ),
        in_shardings=(replicated, parallel.batch_sharding(exp.mesh)),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
    progress = periodic_actions.ReportProgress(num_train_steps=total, writer=writer, every_steps=config.log_every)
    batches = exp.dataset.iterate(
        start,
        config.batch_size * config.n_critic,
        prefetch=config.data.prefetch,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    last_saved = exp.checkpoints.steps()[-1] if exp.checkpoints.steps() else None
    pending: tuple[int, dict] | None = None
    window: list[dict] = []
    try:
        for step in range(start + 1, total + 1):
            batch = parallel.global_batch(next(batches), exp.mesh)
            state, metrics = train_step(state, batch)
            if pending is not None:
                _check_finite(*pending, last_saved)
            pending = (step, metrics)
            window.append(metrics)
            progress(step)
            if step % config.log_every == 0 or step == total:
                _check_finite(*pending, last_saved)
                pending = None
                means = {k: float(np.mean([float(m[k]) for m in window])) for k in window[0] if k != "nonfinite"}
                window = []
                writer.write_scalars(step, means)
                if is_main:
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps({"step": step, **means}) + "\n")
            if step % config.sample_every == 0 or step == total:
                scores = draw_samples(exp, state, os.path.join(workdir, "samples", f"step_{step:07d}.png"), writer)
                if scores:
                    writer.write_scalars(step, {f"modes/{k}": v for k, v in scores.items()})
                if is_main and os.path.exists(metrics_path):
                    visualize.save_loss_curves(metrics_path, os.path.join(workdir, "loss_curves.png"))
            if step % config.checkpoint_every == 0 or step == total:
                if pending is not None:
                    _check_finite(*pending, last_saved)
                    pending = None
                exp.checkpoints.save(step, state)
                last_saved = step
        if pending is not None:
            _check_finite(*pending, last_saved)
    finally:
        batches.close()
        exp.checkpoints.close()
        writer.flush()
    log.info("Finished at step %d; samples in %s", int(state.step), os.path.join(workdir, "samples"))
    return state
