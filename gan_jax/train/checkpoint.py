"""Orbax checkpoints under `workdir/checkpoints`, with two checks Orbax does not make on its own.

- Every checkpoint stores, beside the state, a JSON record of the model it belongs to (name, data shape, parameter
  shapes). A workdir holding another model's checkpoints is refused with a message, never half-restored.
- Once Orbax has finished a step, a manifest of the SHA-256 of each of its files is written beside the checkpoints
  (`checkpoints_manifest/<step>.json`). At restore the files are checked against it before Orbax reads them, so a
  checkpoint whose files were truncated, removed or flipped is reported with its step and path without Orbax ever
  parsing it, and the previous good one is used instead. The record also holds a SHA-256 digest of the state's
  values, recomputed after restore, which covers a step killed before its manifest was written.
Orbax writes each step into a temporary directory and renames it when complete, so a kill mid-save leaves no
checkpoint that looks complete; leftovers are cleaned up at start.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import tempfile
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from gan_jax import fileio

PyTree = Any
log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """No usable checkpoint, checkpoints that belong to another model, or a checkpoint that could not be written."""


def state_digest(state: PyTree) -> str:
    """SHA-256 over the bytes of every leaf, in tree order (this process's replica of replicated arrays)."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(state):
        if isinstance(leaf, jax.Array):
            leaf = leaf.addressable_data(0)
        arr = np.ascontiguousarray(np.asarray(leaf))
        h.update(str(arr.dtype).encode() + str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def model_signature(model_name: str, data_shape: tuple[int, ...], abstract_state: PyTree) -> dict[str, Any]:
    """What a checkpoint must match to be restored into this run: model name, data shape, parameter shapes."""
    shapes = jax.tree.map(lambda x: list(x.shape), abstract_state.params)
    shapes_text = json.dumps(shapes, sort_keys=True)
    return {
        "model": model_name,
        "data_shape": list(data_shape),
        "params_sha256": hashlib.sha256(shapes_text.encode()).hexdigest(),
    }


class Checkpoints:
    """Saves every `every` steps (and when asked), keeps the last `keep`, restores the newest good one."""

    def __init__(self, directory: str, signature: dict[str, Any], *, keep: int, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        self.signature = signature
        self.manager = ocp.CheckpointManager(
            self.directory,
            item_names=("state", "meta"),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                create=True,
                cleanup_tmp_directories=True,
                enable_async_checkpointing=async_save,
            ),
        )
        # Orbax removes an earlier run's half-written temporary directories on a background thread that only its
        # `save` awaits (orbax-checkpoint 0.12.8, pinned): a run that stops before saving (every checkpoint corrupt,
        # evaluation only) would leave that thread to die at interpreter exit with a traceback under our clear error.
        # Waiting here costs one listing of the directory, and serves every way a run ends.
        self.manager._maybe_await_cleanup_tmp_directory()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: PyTree, *, inject_failure: bool = False) -> None:
        """Starts an asynchronous save; errors of the previous one surface here or in `wait`."""
        if inject_failure:
            raise OSError(errno.ENOSPC, "No space left on device (injected by config.debug.fail_save_at_step)")
        self._write_manifests()  # for the steps whose asynchronous save has finished since the last call
        meta = dict(self.signature, step=int(step), state_sha256=state_digest(state))
        self.manager.save(
            step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        )

    def wait(self) -> None:
        self.manager.wait_until_finished()
        self._write_manifests()

    def close(self) -> None:
        self.wait()
        self.manager.close()

    def rescue(self, step: int, state: PyTree) -> str | None:
        """Writes `state` synchronously to a fresh workdir under the temp directory, when the real one failed.

        Returns that workdir (training resumes from it with `--workdir=`), or None if it could not be written either.
        """
        base = os.path.basename(os.path.dirname(self.directory)) or "run"
        rescue_dir = os.path.join(tempfile.gettempdir(), "gan_jax_rescue", f"{base}-step{step}-{os.getpid()}")
        try:
            rescue = Checkpoints(os.path.join(rescue_dir, "checkpoints"), self.signature, keep=1, async_save=False)
            rescue.save(step, state)
            rescue.close()
        except Exception:  # noqa: BLE001 - the caller reports the original failure either way
            log.exception("Could not write a rescue checkpoint to %s either.", rescue_dir)
            return None
        return rescue_dir

    # -- file manifests ------------------------------------------------------------------------------------------

    @property
    def _manifest_dir(self) -> str:
        return self.directory + "_manifest"

    def _manifest_path(self, step: int) -> str:
        return os.path.join(self._manifest_dir, f"{step}.json")

    def _file_hashes(self, step: int) -> dict[str, str]:
        root = self._step_path(step)
        hashes = {}
        for dirpath, _, files in os.walk(root):
            for name in files:
                path = os.path.join(dirpath, name)
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                        h.update(chunk)
                hashes[os.path.relpath(path, root)] = h.hexdigest()
        return hashes

    def _write_manifests(self) -> None:
        """Manifests for finished steps that lack one (primary process only); drops those of deleted steps."""
        if jax.process_index() != 0 or self.manager.is_saving_in_progress():
            return
        os.makedirs(self._manifest_dir, exist_ok=True)
        steps = set(self.manager.all_steps())
        for step in steps:
            path = self._manifest_path(step)
            if not os.path.exists(path):
                fileio.write_json(path, self._file_hashes(step), indent=None)  # a manifest is complete or absent
        for name in os.listdir(self._manifest_dir):
            stem = name.split(".")[0]
            if stem.isdigit() and int(stem) not in steps:
                os.remove(os.path.join(self._manifest_dir, name))

    def _manifest_problem(self, step: int) -> str | None:
        """Why the step's files differ from its manifest, or None (also when it has no manifest yet)."""
        path = self._manifest_path(step)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            expected = json.load(f)
        actual = self._file_hashes(step)
        missing = sorted(set(expected) - set(actual))
        changed = sorted(k for k in expected if k in actual and actual[k] != expected[k])
        if missing:
            return f"{len(missing)} file(s) missing, e.g. {missing[0]}"
        if changed:
            return f"{len(changed)} file(s) changed since they were written, e.g. {changed[0]}"
        return None

    def _step_path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def _check_signature(self, step: int, meta: dict[str, Any]) -> None:
        mine = self.signature
        theirs = {k: meta.get(k) for k in mine}
        if theirs != mine:
            raise CheckpointError(
                f"{self.directory} holds checkpoints of another model: step {step} was written by model "
                f"{theirs['model']!r} on data of shape {theirs['data_shape']}, but this run is model {mine['model']!r} "
                f"on data of shape {mine['data_shape']}"
                + (" with other parameter shapes" if theirs["model"] == mine["model"] else "")
                + ". Use another --workdir, or delete that directory to start over."
            )

    def _quarantine(self, steps: list[int]) -> None:
        """Moves unusable steps to `<directory>_corrupt/` (kept for inspection) so training can save past them."""
        target = self.directory + "_corrupt"
        os.makedirs(target, exist_ok=True)
        for step in steps:
            dest = os.path.join(target, str(step))
            suffix = 0
            while os.path.exists(dest):
                suffix += 1
                dest = os.path.join(target, f"{step}.{suffix}")
            os.replace(self._step_path(step), dest)
            if os.path.exists(self._manifest_path(step)):
                os.replace(self._manifest_path(step), dest + ".manifest.json")
            log.warning("Moved the unusable checkpoint of step %d to %s.", step, dest)
        self.manager.reload()

    def restore_latest(self, abstract_state: PyTree) -> PyTree | None:
        """The newest checkpoint that reads back intact, or None if there is none; corrupt ones are skipped."""
        steps = self.steps()
        problems = []
        for step in reversed(steps):
            path = self._step_path(step)
            problem = self._manifest_problem(step)
            if problem:
                problems.append(f"step {step} ({path}): {problem}")
                log.warning("Checkpoint at step %d (%s) is corrupt: %s; trying the previous one.", step, path, problem)
                continue
            try:
                meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            except Exception as e:  # noqa: BLE001 - any unreadable record means this step is unusable
                problems.append(f"step {step} ({path}): its record is unreadable ({type(e).__name__}: {e})")
                log.warning("Checkpoint at step %d (%s) is unreadable; trying the previous one.", step, path)
                continue
            if not isinstance(meta, dict) or "model" not in meta:
                raise CheckpointError(f"{self.directory} holds checkpoints that gan_jax did not write (step {step}).")
            self._check_signature(step, meta)
            try:
                restored = self.manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
                )["state"]
            except Exception as e:  # noqa: BLE001
                problems.append(f"step {step} ({path}): {type(e).__name__}: {str(e)[:300]}")
                log.warning("Checkpoint at step %d (%s) cannot be read; trying the previous one.", step, path)
                continue
            if state_digest(restored) != meta.get("state_sha256"):
                problems.append(f"step {step} ({path}): its contents do not match the digest written with it")
                log.warning(
                    "Checkpoint at step %d (%s) is corrupt (digest mismatch); trying the previous one.", step, path
                )
                continue
            if problems:
                log.warning("Restored step %d after skipping corrupt checkpoints: %s", step, "; ".join(problems))
                self._quarantine([s for s in steps if s > step])
            return restored
        if problems:
            raise CheckpointError(
                f"no usable checkpoint in {self.directory}; every one is corrupt:\n  "
                + "\n  ".join(problems)
                + "\nNothing was overwritten. Move the directory away to start over, or restore it from a backup."
            )
        return None
