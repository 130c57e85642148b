"""`--mode=synthesize`: a labelled synthetic dataset, `per_class` images of every class of a class-conditional model.

Why: a class-conditional generator is only as useful as the data it can stand in for. A labelled synthetic set is
what the classification accuracy score (CAS, Ravuri & Vinyals 2019; benchmarks/cas.py) trains a classifier on, and
what a user feeds to any other pipeline in place of (or beside) real data.

Which images: sample i has class `i % num_classes` (the classes interleaved, as `Experiment.generate` labels a
conditional batch by default) and is image `i // num_classes` of its class. Samples are made in chunks of `chunk`
images (a multiple of the batch size, about 1,024 by default) so memory stays bounded whatever `per_class` is; chunk
k (samples [k * chunk, (k + 1) * chunk)) uses `generate`'s seed `chunk_seed(seed, k)`. Because `generate` draws
latents per batch independently of how many samples it is asked for, and labels depend on the index alone, sample i
is the same whatever `per_class` is: a smaller set is the first images of each class of a larger one (same checkpoint,
seed, chunk and config).

Formats (chosen from `out`: a name ending in ".npz" gives npz, anything else a folder):

- npz: `x` uint8 (N, H, W, C) NHWC, `label` int32 (N,) in [0, num_classes), N = per_class * num_classes, in the
  sample order above; metadata as 0-d arrays: `num_classes`, `per_class`, `seed`, `step` (the checkpoint's step),
  `chunk`, `config` (the config spec, e.g. "configs/sngan.py:mnist"), `model`, `dataset`, `config_json` (the whole
  config, best effort), `class_names` (str (num_classes,), empty when the dataset has none), `format_version`.
  `np.load(path)` reads it without pickle. Written by streaming memory-mapped arrays into the zip, so writing a set
  larger than memory works.
- folder: `out/train/<class>/<j>.png` (8-bit grey "L" PNGs for 1 channel, RGB for 3), plus `out/metadata.json` with
  the npz's metadata. `<class>` is the class index zero-padded to a common width ("0".."9"; "000".."999") and `<j>`
  likewise, so the sorted order both readers use equals the numeric order: TFDS's
  `tfds.folder_dataset.ImageFolder(out)` (split "train"; it returns grey PNGs as 3 channels) and gan_jax's own
  folder dataset, `--config.data.name=folder --config.data.path=OUT/train` (class index = position of the folder
  in sorted order; it needs at least two classes to read labels).

Both are written atomically: into a temporary file or folder beside `out`, renamed into place only when complete,
so a crash never leaves a half-written dataset behind under the final name. An existing non-empty `out` is refused
unless `overwrite=True`.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
from typing import Any

import ml_collections
import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_CHUNK = 1024  # images per `generate` call (rounded to a multiple of the batch size)
SPLIT = "train"  # the folder format's only split, the one gan_jax's folder dataset and TFDS ImageFolder read


class SyntheticDataError(ValueError):
    """The synthetic dataset cannot be made as asked; the message says what to change."""


def restore(config: ml_collections.ConfigDict, workdir: str) -> tuple[Any, Any]:
    """(experiment, newest state) of `workdir`. A module-level indirection so tests can swap in a fake model."""
    from gan_jax.tools.generate import restore as restore_checkpoint

    return restore_checkpoint(config, workdir)


def output_format(out: str, fmt: str | None = None) -> str:
    """The format, "npz" or "folder": `fmt` if given, else from the suffix (".npz": npz, anything else: folder)."""
    inferred = "npz" if str(out).lower().endswith(".npz") else "folder"
    if fmt is None:
        return inferred
    if fmt not in ("npz", "folder"):
        raise SyntheticDataError(f"format {fmt!r}: choose 'npz' or 'folder'")
    if fmt == "folder" and inferred == "npz":
        raise SyntheticDataError(f"out={out!r} ends in .npz but the format asked for is a folder: rename it")
    return fmt


def chunk_seed(seed: int, k: int) -> int:
    """`generate`'s seed for chunk k: distinct per chunk (one seed for every call would repeat the latents, since
    `generate` restarts its latent stream at each call), a non-negative int32 so any PRNGKey accepts it."""
    return int(np.random.SeedSequence([int(seed), int(k)]).generate_state(1, np.uint32)[0] >> 1)


def class_labels(num_classes: int, start: int, stop: int) -> np.ndarray:
    """Labels of samples [start, stop): sample i has class i % num_classes (int32)."""
    return (np.arange(start, stop, dtype=np.int64) % num_classes).astype(np.int32)


def _digits(n: int) -> int:
    """Width that zero-pads 0..n-1 to one length, so string order equals numeric order."""
    return len(str(max(n - 1, 0)))


def _is_nonempty(path: str) -> bool:
    if os.path.isdir(path):
        return bool(os.listdir(path))
    return os.path.exists(path) and os.path.getsize(path) > 0


def _check_out(out: str, fmt: str, overwrite: bool) -> None:
    if fmt == "npz" and os.path.isdir(out):
        raise SyntheticDataError(f"out={out!r} is a directory; name a .npz file (or drop the .npz for a folder)")
    if fmt == "folder" and os.path.exists(out) and not os.path.isdir(out):
        raise SyntheticDataError(f"out={out!r} exists and is a file, not a folder")
    if _is_nonempty(out) and not overwrite:
        raise SyntheticDataError(f"out={out!r} exists and is not empty: choose another path or pass overwrite")


def _num_classes(exp: Any) -> int:
    return int(getattr(exp.game, "num_classes", 0) or 0)


def _class_names(exp: Any, num_classes: int) -> list[str]:
    names = list((getattr(exp.dataset, "metadata", None) or {}).get("class_names", []) or [])
    return [str(n) for n in names] if len(names) == num_classes else []


def _config_json(config: ml_collections.ConfigDict) -> str:
    try:
        return config.to_json_best_effort()
    except Exception:  # noqa: BLE001 - metadata only; a config that cannot be serialized still gets its images
        return ""


def _chunk_size(batch_size: int, chunk: int | None) -> int:
    """A multiple of the batch size (generate computes whole batches anyway), at least one batch."""
    want = DEFAULT_CHUNK if chunk is None else int(chunk)
    if want < 1:
        raise SyntheticDataError(f"chunk={chunk}: must be positive")
    return max(1, want // batch_size) * batch_size


def write_synthetic(
    config: ml_collections.ConfigDict,
    workdir: str,
    per_class: int,
    out: str,
    seed: int = 0,
    fmt: str | None = None,
    *,
    overwrite: bool = False,
    chunk: int | None = None,
    config_name: str = "",
) -> str:
    """Writes `per_class` images of every class of `workdir`'s newest checkpoint to `out` (npz or folder; see the
    module docstring) and returns `out`. Deterministic in (checkpoint, config, seed, chunk).

    Raises SyntheticDataError for an unconditional model, per_class < 1, a non-image model, or a non-empty `out`
    (without `overwrite`); the checkpoint layer's CheckpointError when the workdir has no checkpoint.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int | np.integer) or per_class < 1:
        raise SyntheticDataError(f"per_class={per_class!r}: must be a positive number of images per class")
    fmt = output_format(out, fmt)
    _check_out(out, fmt, overwrite)

    exp, state = restore(config, workdir)
    num_classes = _num_classes(exp)
    model = str(config.model.name)
    if num_classes < 1:
        raise SyntheticDataError(
            f"per-class synthesis needs a class-conditional model, but this {model!r} model has num_classes 0 "
            f"(unconditional); train a conditional one (config.model.num_classes > 0, e.g. configs/sngan.py or "
            f"configs/biggan.py), or use --mode=sample for unlabelled samples"
        )
    if getattr(exp.dataset, "kind", "image") != "image":
        raise SyntheticDataError(f"a synthetic image dataset needs an image model; {model!r} makes 2-D points")

    n = int(per_class) * num_classes
    size = _chunk_size(int(config.batch_size), chunk)
    meta: dict[str, Any] = {
        "num_classes": num_classes,
        "per_class": int(per_class),
        "seed": int(seed),
        "step": int(state.step),
        "chunk": size,
        "config": config_name,
        "model": model,
        "dataset": str(config.data.name),
        "config_json": _config_json(config),
        "class_names": _class_names(exp, num_classes),
        "format_version": FORMAT_VERSION,
    }
    chunks = _generate_chunks(exp, state, n, num_classes, int(seed), size)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    if fmt == "npz":
        _write_npz(chunks, n, meta, out, parent)
    else:
        _write_folder(chunks, num_classes, int(per_class), meta, out, parent, overwrite)
    log.info("synthesize: wrote %d images (%d classes x %d) to %s", n, num_classes, per_class, out)
    return out


def _generate_chunks(exp: Any, state: Any, n: int, num_classes: int, seed: int, size: int):
    """Yields (start, uint8 images, labels) for samples [0, n) in chunks of `size`, logging progress."""
    t0 = time.perf_counter()
    for k, start in enumerate(range(0, n, size)):
        stop = min(start + size, n)
        labels = class_labels(num_classes, start, stop)
        x = np.asarray(exp.generate(state, stop - start, chunk_seed(seed, k), labels=labels))
        if x.dtype != np.uint8 or x.ndim != 4 or len(x) != stop - start:
            raise SyntheticDataError(
                f"the model generated {x.dtype} of shape {x.shape}; a synthetic dataset needs uint8 NHWC images"
            )
        yield start, x, labels
        elapsed = time.perf_counter() - t0
        rate = stop / max(elapsed, 1e-9)
        log.info(
            "synthesize: %d/%d images (%.0f%%), %.0f images/s, ETA %.1f min",
            stop,
            n,
            100 * stop / n,
            rate,
            (n - stop) / rate / 60,
        )


def _write_npz(chunks, n: int, meta: dict[str, Any], out: str, parent: str) -> None:
    """Chunks go into memory-mapped .npy files in a temporary folder, which are then streamed into a deflated zip
    (the layout np.savez_compressed writes) and renamed onto `out`: no step holds all images in memory."""
    tmp_dir = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out)}.tmp-")
    try:
        x_mm = y_mm = None
        for start, x, labels in chunks:
            if x_mm is None:
                x_mm = np.lib.format.open_memmap(os.path.join(tmp_dir, "x.npy"), "w+", np.uint8, (n, *x.shape[1:]))
                y_mm = np.lib.format.open_memmap(os.path.join(tmp_dir, "label.npy"), "w+", np.int32, (n,))
            x_mm[start : start + len(x)] = x
            y_mm[start : start + len(x)] = labels
        assert x_mm is not None and y_mm is not None  # n >= 1
        x_mm.flush()
        y_mm.flush()
        del x_mm, y_mm
        for key, value in meta.items():
            array = np.asarray(value, dtype=np.str_) if key == "class_names" else np.asarray(value)
            np.save(os.path.join(tmp_dir, f"{key}.npy"), array, allow_pickle=False)
        tmp_zip = os.path.join(tmp_dir, "out.npz")
        with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            for key in ("x", "label", *meta):
                zf.write(os.path.join(tmp_dir, f"{key}.npy"), arcname=f"{key}.npy")
        os.chmod(tmp_zip, 0o644)
        os.replace(tmp_zip, out)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _save_png(path: str, image: np.ndarray) -> None:
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path, compress_level=6)


def _write_folder(
    chunks, num_classes: int, per_class: int, meta: dict[str, Any], out: str, parent: str, overwrite: bool
) -> None:
    """PNGs into a temporary folder beside `out` (encoded by a few threads: PIL's zlib releases the GIL), then one
    rename; an existing `out` is moved aside first and deleted only once the new one is in place."""
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(os.path.normpath(out))}.tmp-")
    cw, iw = _digits(num_classes), _digits(per_class)
    class_dirs = [f"{c:0{cw}d}" for c in range(num_classes)]
    try:
        for d in class_dirs:
            os.makedirs(os.path.join(tmp, SPLIT, d))
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for start, x, labels in chunks:
                paths = [
                    os.path.join(tmp, SPLIT, class_dirs[int(c)], f"{i // num_classes:0{iw}d}.png")
                    for i, c in zip(range(start, start + len(x)), labels, strict=True)
                ]
                list(pool.map(_save_png, paths, x))  # list(): re-raises a worker's error here
        info = dict(meta, layout=f"{SPLIT}/<class>/<index>.png", split=SPLIT, class_dirs=class_dirs)
        with open(os.path.join(tmp, "metadata.json"), "w") as f:
            json.dump(info, f, indent=1)
        os.chmod(tmp, 0o755)
        old = None
        if os.path.isdir(out) and os.listdir(out):
            if not overwrite:  # appeared while we were generating
                raise SyntheticDataError(f"out={out!r} exists and is not empty: choose another path or pass overwrite")
            old = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(os.path.normpath(out))}.old-")
            os.rename(out, os.path.join(old, "data"))
        os.rename(tmp, out)  # an empty existing folder is replaced by the rename
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def load_npz(path: str) -> dict[str, Any]:
    """A synthetic npz as {"x", "label", and the metadata as Python values}; used by benchmarks/cas.py."""
    with np.load(path, allow_pickle=False) as f:
        missing = {"x", "label"} - set(f.files)
        if missing:
            raise SyntheticDataError(f"{path}: not a synthetic dataset (no {', '.join(sorted(missing))})")
        out: dict[str, Any] = {"x": f["x"], "label": f["label"].astype(np.int32)}
        for key in f.files:
            if key not in out:
                value = f[key]
                out[key] = value.tolist() if value.ndim else value.item()
    return out
