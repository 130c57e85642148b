"""The training loop: restore, step, log, draw, save. One loop for every GAN family.

The loop is host-side bookkeeping only; all learning happens in the jitted `train_step`. The non-finite flag of step
t is read after step t+1 has been dispatched, so checking it costs no pipeline stall.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import threading
import time

import jax
import ml_collections
import numpy as np

from gan_jax.train import parallel, visualize, writers
from gan_jax.train.checkpoint import CheckpointError
from gan_jax.train.evaluation import Evaluations
from gan_jax.train.experiment import Experiment, setup
from gan_jax.train.jsonl import trim_after
from gan_jax.train.state import TrainState

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


def _nonfinite_message(step: int, metrics: dict) -> str:
    values = {k: float(v) for k, v in metrics.items() if k != "nonfinite"}
    return f"non-finite loss or gradient at step {step} ({', '.join(f'{k}={v:.4g}' for k, v in values.items())})"


class _StopOnSignal:
    """SIGTERM/SIGINT (preemption, Ctrl-C) ask the loop to stop after the current step and save; a second one exits
    at once. Orbax writes a step into a temporary directory and renames it when complete, so exiting mid-save leaves
    nothing that a restart would take for a checkpoint."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict = {}

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:
            os.write(2, f"Second {signal.Signals(signum).name}: exiting now.\n".encode())
            os._exit(128 + signum)
        self.received = signum
        log.warning(
            "Received %s: finishing this step and saving a checkpoint (send it again to exit at once).",
            signal.Signals(signum).name,
        )

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # signal handlers live on the main thread only
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def _check_writable(workdir: str) -> None:
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write_test"):
            pass
    except OSError as e:
        raise CheckpointError(
            f"the workdir {workdir} cannot be written ({e.strerror or e}); choose another --workdir"
        ) from e


def train(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains until `config.num_train_steps`, resuming from the workdir's newest good checkpoint.

    Returns early (after saving) on SIGTERM/SIGINT. A non-finite loss or gradient follows `config.nonfinite_policy`.
    """
    is_main = jax.process_index() == 0
    if is_main:
        _check_writable(workdir)
    exp = setup(config, workdir)
    if is_main:
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
    writer = writers.create_writer(workdir, just_logging=not is_main)
    evaluations = Evaluations(exp, writer=writer, is_main=is_main)
    if is_main:
        trim_after(metrics_path, start)
        evaluations.trim(start)

    replicated = parallel.replicated(exp.mesh)
    progress = writers.Progress(num_train_steps=total, writer=writer, every_steps=config.log_every)

    def batches_from(step: int):
        return exp.dataset.iterate(
            step,
            config.batch_size * config.n_critic,
            prefetch=config.data.prefetch,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )

    def save(step: int, state: TrainState) -> None:
        try:
            exp.checkpoints.save(step, state, inject_failure=step == config.debug.fail_save_at_step)
        except Exception as e:  # noqa: BLE001 - a full disk, a lost mount, permissions: report it, keep the state
            _raise_save_failure(exp, step, state, e)

    batches = batches_from(start)
    saved = exp.checkpoints.steps()
    last_saved = saved[-1] if saved else None
    pending: tuple[int, dict] | None = None  # the newest step's metrics, not yet checked for non-finite values
    window: list[dict] = []
    log_t0 = time.perf_counter()  # wall time of each logged interval (compilation, evals and saves included)
    step = start

    def diverged(step_metrics: tuple[int, dict]) -> bool:
        """Applies the non-finite policy to a finished step; True when the loop must roll back."""
        at, metrics = step_metrics
        if float(metrics["nonfinite"]) == 0:
            return False
        message = _nonfinite_message(at, metrics)
        if config.nonfinite_policy == "skip":
            log.warning("%s: skipped that update (%d skipped so far).", message, int(state.skipped_steps))
            return False
        where = f"the last checkpoint (step {last_saved}) is intact" if last_saved else "no checkpoint was written yet"
        if config.nonfinite_policy == "stop":
            raise NonFiniteError(
                f"{message}; that update was not applied and {where}. Lower the learning rates, add gp_weight / "
                "r1_gamma, or set --config.nonfinite_policy=skip or rollback."
            )
        if int(state.rollbacks) >= config.max_rollbacks:
            raise NonFiniteError(f"{message} after {int(state.rollbacks)} rollbacks (max_rollbacks); {where}.")
        return True

    def roll_back(failed_step: int) -> None:
        """Restores the newest good checkpoint with lowered learning rates and restarts the data there."""
        nonlocal state, step, batches, pending, window, progress, log_t0
        state, step = _rollback(exp, state, failed_step, config, replicated)
        batches.close()
        batches = batches_from(step)
        pending, window, log_t0 = None, [], time.perf_counter()
        progress = writers.Progress(num_train_steps=total, writer=writer, every_steps=config.log_every)
        if is_main:
            trim_after(metrics_path, step)
            evaluations.trim(step)

    try:
        with _StopOnSignal() as stop:
            while step < total:
                batch = parallel.global_batch(next(batches), exp.mesh)
                state, metrics = exp.train_step(step)(state, batch)
                step += 1
                if pending is not None and diverged(pending):
                    roll_back(pending[0])
                    continue
                pending = (step, metrics)
                window.append(metrics)
                progress(step)
                due = evaluations.due(step, total) if stop.received is None else []
                if due:
                    if diverged(pending):  # never evaluate a state that went non-finite
                        roll_back(pending[0])
                        continue
                    pending = None
                    evaluations.run(state, due)
                # Decided after the evals, so that a signal received during one still logs and saves this step.
                boundary = step == total or stop.received is not None
                if step % config.log_every == 0 or boundary:
                    if pending is not None and diverged(pending):
                        roll_back(pending[0])
                        continue
                    pending = None
                    means = {k: float(np.mean([float(m[k]) for m in window])) for k in window[0] if k != "nonfinite"}
                    means["skipped_steps"] = float(state.skipped_steps)
                    means["rollbacks"] = float(state.rollbacks)
                    means["lr_scale"] = float(state.lr_scale)
                    now = time.perf_counter()
                    means["interval_s"], log_t0 = round(now - log_t0, 3), now
                    window = []
                    writer.write_scalars(step, means)
                    if is_main:
                        with open(metrics_path, "a") as f:
                            f.write(json.dumps({"step": step, **means}) + "\n")
                if step % config.sample_every == 0 or step == total:
                    # (the 2-D scatter's title shows its mode count; the scores are logged by the "modes" evaluator)
                    draw_samples(exp, state, os.path.join(workdir, "samples", f"step_{step:07d}.png"), writer)
                    if is_main and os.path.exists(metrics_path):
                        visualize.save_loss_curves(metrics_path, os.path.join(workdir, "loss_curves.png"))
                if step % config.checkpoint_every == 0 or boundary:
                    save(step, state)
                    last_saved = step
                if stop.received is not None:
                    break
            if pending is not None and diverged(pending):  # only reachable when the last step was not a boundary
                raise NonFiniteError(_nonfinite_message(*pending))
        try:
            exp.checkpoints.wait()
        except Exception as e:  # noqa: BLE001 - the last asynchronous write failed
            _raise_save_failure(exp, step, state, e)
        if stop.received is not None:
            log.warning(
                "Stopped by %s at step %d of %d; the checkpoint is saved in %s. Re-run the same command to resume.",
                signal.Signals(stop.received).name,
                step,
                total,
                exp.checkpoints.directory,
            )
        else:
            log.info("Finished at step %d; samples in %s", step, os.path.join(workdir, "samples"))
    finally:
        batches.close()
        evaluations.close()
        try:
            exp.checkpoints.close()
        except Exception:  # noqa: BLE001 - already reported above
            log.debug("checkpoint manager close failed", exc_info=True)
        writer.close()
    return state


def _rollback(exp: Experiment, state: TrainState, failed_step: int, config, replicated) -> tuple[TrainState, int]:
    """Restores the newest good checkpoint with every learning rate scaled by `rollback_lr_factor`."""
    done = int(state.rollbacks) + 1
    exp.checkpoints.wait()
    restored = exp.checkpoints.restore_latest(exp.abstract_state)
    if restored is None:
        restored = exp.init_state()  # diverged before the first checkpoint: start over, more gently
    scale = float(restored.lr_scale) * config.rollback_lr_factor
    put = lambda v, dtype: jax.device_put(np.asarray(v, dtype), replicated)  # noqa: E731
    restored = restored.replace(lr_scale=put(scale, np.float32), rollbacks=put(done, np.int32))
    log.warning(
        "Non-finite loss or gradient at step %d: rolled back to step %d with learning rates x%g (rollback %d of %d).",
        failed_step,
        int(restored.step),
        scale,
        done,
        config.max_rollbacks,
    )
    return restored, int(restored.step)


def _raise_save_failure(exp: Experiment, step: int, state: TrainState, error: Exception) -> None:
    rescue = exp.checkpoints.rescue(step, state)
    kept = exp.checkpoints.steps()
    where = (
        f"The state of step {step} was written to {rescue} instead: resume from it with --workdir={rescue}, or copy "
        f"its checkpoints into the workdir once it can be written."
        if rescue
        else f"The state of step {step} could not be written anywhere and is lost when this process exits."
    )
    raise CheckpointError(
        f"could not write the checkpoint of step {step} to {exp.checkpoints.directory}: {error}. "
        f"Earlier checkpoints are intact ({', '.join(map(str, kept)) or 'none'}). {where}"
    ) from error
