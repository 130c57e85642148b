"""Running `config.evals` for a training run: when each is due, where its scores go, and the best checkpoint.

Scores go to the metric writer (TensorBoard, console) as `<eval>/<score>` and, with their protocol, to
`workdir/evals.jsonl`. With `config.best_metric = "<eval>/<score>"` the state with the best score so far is kept under
`workdir/checkpoints_best/` (one checkpoint, same integrity checks as the others) and described in `best.json`.
An evaluator reads samples of the EMA generator only, so evaluating never changes the course of training: a run that
evaluates ends with the same parameters as one that does not.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import ml_collections

from gan_jax import fileio
from gan_jax.metrics.evaluators import EvalContext, run_evaluator
from gan_jax.train.checkpoint import Checkpoints
from gan_jax.train.experiment import Experiment
from gan_jax.train.jsonl import trim_after
from gan_jax.train.state import TrainState

log = logging.getLogger(__name__)

EVALS_LOG = "evals.jsonl"
BEST_RECORD = "best.json"


class Evaluations:
    """The run's evaluators, and the best checkpoint by `config.best_metric`."""

    def __init__(self, exp: Experiment, *, writer=None, is_main: bool = True, record: bool = True) -> None:
        """`record=False` (--mode=eval) only returns scores: nothing is logged and no best checkpoint is kept."""
        self.exp = exp
        self.config: ml_collections.ConfigDict = exp.config
        self.writer = writer
        self.is_main = is_main
        self.record = record
        self.log_path = os.path.join(exp.workdir, EVALS_LOG)
        self._best: Checkpoints | None = None
        self.best_record: dict[str, Any] | None = None
        if self.config.best_metric and record:
            self._best = Checkpoints(
                os.path.join(exp.workdir, "checkpoints_best"), exp.checkpoints.signature, keep=1, async_save=False
            )
            path = os.path.join(exp.workdir, BEST_RECORD)
            if os.path.exists(path):
                with open(path) as f:
                    self.best_record = json.load(f)

    def due(self, step: int, total: int) -> list[str]:
        """The evaluators that run after `step`: every `every` steps, and at the last step."""
        return [
            name
            for name, spec in self.config.evals.items()
            if spec.every > 0 and (step % spec.every == 0 or step == total)
        ]

    def run(self, state: TrainState, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """Runs `names` (default: all) on `state`; returns {name: {"scores": ..., "protocol": ..., "seconds": ...}}."""
        step = int(state.step)
        labelled = None
        if self.exp.num_classes:
            labelled = lambda labels, seed: self.exp.generate(state, len(labels), seed, labels)  # noqa: E731
        ctx = EvalContext(
            generate=lambda n, seed: self.exp.generate(state, n, seed),
            data=self.config.data,
            generate_labelled=labelled,
        )
        results: dict[str, dict[str, Any]] = {}
        for name in names if names is not None else list(self.config.evals):
            start = time.perf_counter()
            result = run_evaluator(self.config.evals[name], ctx)
            seconds = time.perf_counter() - start
            results[name] = {"scores": result.scores, "protocol": result.protocol, "seconds": round(seconds, 2)}
            if self.exp.last_rejection is not None:  # discriminator rejection sampling: its last call's acceptance
                results[name]["rejection"] = dict(self.exp.last_rejection)
            shown = ", ".join(f"{k}={v:.4g}" for k, v in result.scores.items())
            log.info("Eval %s at step %d (%.1f s): %s", name, step, seconds, shown)
        if results and self.record:
            self._record(step, results)
            self._keep_best(state, step, results)
        return results

    def trim(self, upto_step: int) -> None:
        """Drops eval rows logged after the checkpoint a resumed run starts from, so the log matches the state."""
        if self.is_main:
            trim_after(self.log_path, upto_step)

    def close(self) -> None:
        if self._best is not None:
            self._best.close()

    def _record(self, step: int, results: dict[str, dict[str, Any]]) -> None:
        if self.writer is not None:
            scalars = {f"{name}/{k}": v for name, r in results.items() for k, v in r["scores"].items()}
            self.writer.write_scalars(step, scalars)
        if self.is_main:
            with open(self.log_path, "a") as f:
                for name, r in results.items():
                    f.write(json.dumps({"step": step, "eval": name, **r}) + "\n")

    def _keep_best(self, state: TrainState, step: int, results: dict[str, dict[str, Any]]) -> None:
        if self._best is None:
            return
        name, _, score = self.config.best_metric.partition("/")
        if name not in results:
            return
        if score not in results[name]["scores"]:
            log.warning("best_metric %s: eval %s gave no score %r", self.config.best_metric, name, score)
            return
        value = results[name]["scores"][score]
        if self.best_record is not None:
            best = self.best_record["value"]
            better = value < best if self.config.best_mode == "min" else value > best
            if not better or self.best_record["step"] == step:
                return
        self._best.save(step, state)
        self._best.wait()
        self.best_record = {
            "metric": self.config.best_metric,
            "mode": self.config.best_mode,
            "value": value,
            "step": step,
            "checkpoint": os.path.join(self._best.directory, str(step)),
        }
        if self.is_main:
            fileio.write_json(os.path.join(self.exp.workdir, BEST_RECORD), self.best_record, indent=2)
        log.info(
            "New best %s = %.4g at step %d, kept in %s", self.config.best_metric, value, step, self._best.directory
        )
