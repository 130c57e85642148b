"""The `Dataset` the trainer sees: deterministic batches by step, and a background prefetcher.

Batch `step` is a pure function of (dataset, seed, step, batch_size): global example position p = step * B + r
(r = 0..B-1) lies in epoch e = p // N at offset p % N, and maps to example `perm_e[p % N]` where
`perm_e = np.random.default_rng([seed, e]).permutation(N)`. So every epoch visits each example exactly once (also
when a batch straddles two epochs), nothing depends on what was read before, and the only data position a
checkpoint needs is the step. Determinism holds for a fixed NumPy version (NumPy does not promise identical
`Generator.permutation` streams across releases).

Multi-host: all processes compute the same global batch; process i of P gets the *contiguous* block of rows
[i * B/P, (i + 1) * B/P), which is the layout `jax.make_array_from_process_local_data` expects for a batch
sharded along its leading axis over processes in order. Only that block is read and converted.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Self

import numpy as np

from gan_jax.data import transforms
from gan_jax.data.base import ImageOptions, Source
from gan_jax.data.sources import LoadRequest, load_source

log = logging.getLogger(__name__)

Batch = dict[str, np.ndarray]


@functools.lru_cache(maxsize=4)
def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of epoch `epoch` (read-only int64). Cached: consecutive batches reuse it, and a batch straddling
    an epoch boundary needs two."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    perm.flags.writeable = False
    return perm


def process_rows(batch_size: int, process_index: int, process_count: int) -> tuple[int, int]:
    """Rows [lo, hi) of the global batch that belong to `process_index` (contiguous blocks)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size={batch_size}: must be positive")
    if process_count <= 0 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index}, process_count={process_count}: need 0 <= index < count")
    if batch_size % process_count:
        raise ValueError(f"batch_size={batch_size} (global) must be divisible by process_count={process_count}")
    local = batch_size // process_count
    return process_index * local, (process_index + 1) * local


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A loaded dataset with deterministic, resumable batching.

    name, kind ("image" | "points"), shape (per example: (H, W, C) or (2,)), num_examples, num_classes (0 without
    labels), plus the seed and split it was built with. `metadata` holds extras: for mixtures "means" (K, 2) and
    "std"; for folders "class_names" and "files".
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    num_examples: int
    num_classes: int
    seed: int = 0
    split: str = "train"
    source: Source | None = dataclasses.field(default=None, repr=False, compare=False)
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def steps_per_epoch(self, batch_size: int) -> float:
        """Batches per pass over the data (fractional: epochs are not padded or truncated)."""
        return self.num_examples / batch_size

    def example_indices(
        self, step: int, batch_size: int, *, process_index: int = 0, process_count: int = 1
    ) -> np.ndarray:
        """Example indices of this process's rows of global batch `step` (see the module docstring)."""
        if step < 0:
            raise ValueError(f"step={step}: must be >= 0")
        lo, hi = process_rows(batch_size, process_index, process_count)
        pos = np.int64(step) * batch_size + np.arange(lo, hi, dtype=np.int64)
        epochs, offsets = np.divmod(pos, self.num_examples)
        if epochs[0] == epochs[-1]:
            return epoch_permutation(self.seed, int(epochs[0]), self.num_examples)[offsets]
        out = np.empty_like(pos)
        for e in np.unique(epochs):
            mask = epochs == e
            out[mask] = epoch_permutation(self.seed, int(e), self.num_examples)[offsets[mask]]
        return out

    def get(self, indices: np.ndarray | list[int]) -> Batch:
        """Examples by index, unshuffled (e.g. a fixed reference set for FID), in the same format as `batch`."""
        indices = np.asarray(indices, np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_examples):
            raise IndexError(f"indices must lie in [0, {self.num_examples})")
        assert self.source is not None, "Dataset has no source; build it with get_dataset"
        x, labels = self.source.get(indices)
        if self.kind == "image":
            x = transforms.to_float(transforms.expand_channels(x, self.shape[-1]))
        else:
            x = np.array(x, np.float32)
        out = {"x": x}
        if labels is not None:
            out["label"] = np.asarray(labels, np.int32)
        return out

    def batch(self, step: int, batch_size: int, *, process_index: int = 0, process_count: int = 1) -> Batch:
        """This process's contiguous block of global batch `step`: {'x': float32, 'label': int32 (if labelled)}.

        Images are NHWC in [-1, 1]; points are (B, 2). Deterministic in (seed, step, batch_size) alone.
        """
        idx = self.example_indices(step, batch_size, process_index=process_index, process_count=process_count)
        return self.get(idx)

    def iterate(
        self,
        start_step: int,
        batch_size: int,
        *,
        prefetch: int = 2,
        process_index: int = 0,
        process_count: int = 1,
        num_threads: int | None = None,
    ) -> BatchIterator:
        """Batches start_step, start_step + 1, ... (identical to `batch(step)`), made ahead by daemon threads.

        `prefetch` bounds the batches held ready (0 = compute in the caller's thread, for debugging);
        `num_threads` defaults to the source's choice (1 for in-memory data, 2 for lazily decoded TFDS). Close the
        iterator (or use it as a context manager) to stop the threads; they are daemons, so a forgotten iterator
        never keeps a process alive.
        """
        process_rows(batch_size, process_index, process_count)  # validate now, not in a thread
        threads = num_threads or getattr(self.source, "default_threads", 1)
        make = functools.partial(
            self.batch, batch_size=batch_size, process_index=process_index, process_count=process_count
        )
        return BatchIterator(make, start_step, prefetch=prefetch, num_threads=threads)


class _Failure:
    """An exception raised in a worker, handed to the consumer in step order."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _worker(
    make_batch: Callable[[int], Batch], step: int, stride: int, out: queue.Queue, stop: threading.Event
) -> None:
    """Makes steps step, step + stride, ... into `out`. Module-level, so it holds no reference to the iterator and
    dropping the iterator lets `__del__` stop it."""
    while not stop.is_set():
        try:
            item: Any = make_batch(step)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            item = _Failure(e)
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                break
            except queue.Full:
                continue
        if isinstance(item, _Failure):
            return
        step += stride


class BatchIterator(Iterator[Batch]):
    """Ordered prefetching over `make_batch(step)` with `num_threads` daemon threads.

    Thread w makes steps start + w, start + w + T, ... into its own bounded queue and the consumer reads the
    queues round-robin, so batches come out in step order without a reorder buffer, and at most about `prefetch`
    batches are held. The heavy work (gathers, dtype conversion, PIL decoding) releases the GIL, so the threads
    overlap with the train step.
    """

    def __init__(self, make_batch: Callable[[int], Batch], start_step: int, *, prefetch: int, num_threads: int) -> None:
        if start_step < 0:
            raise ValueError(f"start_step={start_step}: must be >= 0")
        self.next_step = start_step  # step of the batch the next `next()` returns
        self._make = make_batch
        self._start = start_step
        self._closed = False
        self._stop = threading.Event()
        self._queues: list[queue.Queue] = []
        self._threads: list[threading.Thread] = []
        if prefetch <= 0:
            return
        n = max(1, num_threads)
        per_queue = max(1, -(-prefetch // n))
        for w in range(n):
            q: queue.Queue = queue.Queue(maxsize=per_queue)
            t = threading.Thread(
                target=_worker,
                args=(make_batch, start_step + w, n, q, self._stop),
                name=f"gan_jax-data-{w}",
                daemon=True,
            )
            self._queues.append(q)
            self._threads.append(t)
            t.start()

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> Batch:
        if self._closed:
            raise StopIteration
        if not self._threads:
            batch = self._make(self.next_step)
        else:
            w = (self.next_step - self._start) % len(self._queues)
            while True:
                try:
                    item = self._queues[w].get(timeout=1.0)
                    break
                except queue.Empty:
                    if not self._threads[w].is_alive():
                        self.close()
                        raise RuntimeError(f"data worker {w} died without reporting an error") from None
            if isinstance(item, _Failure):
                self.close()
                raise item.exc
            batch = item
        self.next_step += 1
        return batch

    def close(self, timeout: float = 5.0) -> None:
        """Stops and joins the threads (idempotent). Later `next()` calls raise StopIteration."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for q in self._queues:  # free memory held by ready batches, and unblock producers at once
            while True:
                try:
                    q.get_nowait()
                except queue.Empty:
                    break
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._stop.set()  # no join from a finalizer: the daemon threads exit within ~0.1 s on their own
            self._closed = True
        except AttributeError:  # __init__ failed before the attributes existed
            pass


# ----------------------------------------------------------------------------------------------------- the config


def _field(config: Any, key: str, default: Any) -> Any:
    try:
        return config.get(key, default)
    except AttributeError:
        raise TypeError(
            f"config must be the config.data ConfigDict (or a mapping), got {type(config).__name__}"
        ) from None


def _int_field(config: Any, key: str, default: int, *, allowed: tuple[int, ...] | None = None) -> int:
    value = _field(config, key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"config.data.{key}={value!r}: must be an integer")
    if allowed is not None and value not in allowed:
        raise ValueError(f"config.data.{key}={value!r}: must be one of {', '.join(map(str, allowed))}")
    if value < 0:
        raise ValueError(f"config.data.{key}={value!r}: must be >= 0")
    return int(value)


def parse_config(config: Any, seed: int) -> LoadRequest:
    """Validates `config.data` (optional fields take their defaults) into a `LoadRequest`; errors name the field."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed={seed!r}: must be a non-negative integer (it seeds numpy's SeedSequence)")
    name = _field(config, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"config.data.name={name!r}: must be a non-empty dataset name")
    split = _field(config, "split", "train") or "train"
    if not isinstance(split, str):
        raise ValueError(f"config.data.split={split!r}: must be a string")
    resize = _field(config, "resize", "pad") or "pad"
    if resize not in ("pad", "resize"):
        raise ValueError(f"config.data.resize={resize!r}: choose 'pad' or 'resize'")
    image = ImageOptions(
        resolution=_int_field(config, "resolution", 0),
        channels=_int_field(config, "channels", 0, allowed=(0, 1, 3)),
        resize=resize,
    )
    data_dir = _field(config, "data_dir", None) or None
    path = _field(config, "path", "") or ""
    for key, value in (("data_dir", data_dir), ("path", path)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"config.data.{key}={value!r}: must be a string")
    std = _field(config, "std", None)
    if std is not None and (isinstance(std, bool) or not isinstance(std, int | float) or not std > 0):
        raise ValueError(f"config.data.std={std!r}: must be a positive number or None (the protocol default)")
    return LoadRequest(
        name=name,
        split=split,
        image=image,
        data_dir=data_dir,
        path=path,
        num_examples=_int_field(config, "num_examples", 0),
        std=None if std is None else float(std),
        seed=int(seed),
    )


def get_dataset(config: Any, *, seed: int) -> Dataset:
    """Loads the dataset described by `config` (the `config.data` sub-ConfigDict) offline.

    Raises DatasetNotFoundError (a ValueError) when the data is not on this machine, with instructions to get it,
    and ValueError naming the field for bad values.
    """
    req = parse_config(config, seed)
    t0 = time.perf_counter()
    source = load_source(req)
    if source.num_examples <= 0:
        raise ValueError(f"dataset {req.name!r} split {req.split!r} has no examples")
    if source.kind == "image":
        shape: tuple[int, ...] = (*source.shape[:2], req.image.channels or source.shape[2])
    else:
        shape = tuple(source.shape)
    ds = Dataset(
        name=req.name,
        kind=source.kind,
        shape=shape,
        num_examples=source.num_examples,
        num_classes=source.num_classes,
        seed=req.seed,
        split=req.split,
        source=source,
        metadata=dict(getattr(source, "metadata", {})),
    )
    log.info("dataset %s loaded in %.2fs: %s", req.name, time.perf_counter() - t0, ds)
    return ds
