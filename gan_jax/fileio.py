"""Atomic file writes: a reader (or a run resumed after a crash) sees the old file or the new one, never half of one.

Every record the library keeps beside a run (checkpoint manifests, the best-checkpoint record, benchmark rows) and
every cache it builds (Inception weights, reference features, the MNIST classifier) is written through here: the
content goes to a temporary file in the same directory, which `os.replace` then renames over the target in one step.

`exclusive` serializes the builders of one cache entry across processes, and `load_or_build` uses it so that an
entry is built once.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, Any, TypeVar

import numpy as np

T = TypeVar("T")


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w") -> Iterator[IO]:
    """Yields a file opened on a temporary name beside `path` that replaces `path` when the block exits cleanly.

    On an exception the temporary file is removed and `path` is left as it was. Missing parent directories are
    created. The file gets the usual 0644 permissions (`mkstemp` alone would give 0600, unreadable to other users
    of a shared cache).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', not {mode!r}")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def exclusive(path: str) -> Iterator[None]:
    """Holds an exclusive lock on the directory that will hold `path` (an advisory `flock`) while the block runs.

    Why: building a cache entry (the MNIST classifier: a minute or two; the oneDNN library; reference features) is
    expensive, and processes that start together (pytest workers, evaluations launched side by side) would each
    build it. A builder takes the lock, looks for the entry again and builds it only if it is still missing; the
    others wait, then find it. Threads of one process exclude each other too (each opens its own file description).
    The directory, not a lock file, is locked so that a cache holds nothing but its entries; builders of other
    entries in the same directory wait as well, which costs little as each is CPU-bound anyway. Without `fcntl`
    (Windows) the block runs unlocked, which is only slower.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    if sys.platform == "win32":
        yield
        return
    import fcntl

    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def load_or_build(path: str, load: Callable[[], T | None], build: Callable[[], T]) -> T:
    """The cache entry at `path`: `load()` if it finds it, else `build()` run once across processes.

    Why: every expensive cache (the MNIST classifier, the oneDNN library, reference features) needs the same three
    steps, and getting their order wrong either builds twice or blocks readers: look (no lock, so readers of a
    present entry never wait), take `exclusive(path)`, look again (another process may have built it while this one
    waited), and only then build. `load` returns None for a missing or unusable entry; `build` writes the entry
    (atomically) and returns it.
    """
    found = load()
    if found is not None:
        return found
    with exclusive(path):
        found = load()
        return build() if found is None else found


def write_json(path: str, obj: Any, indent: int | None = 1) -> None:
    """Writes `obj` as JSON to `path` atomically."""
    with atomic_open(path) as f:
        json.dump(obj, f, indent=indent)


def save_npz(path: str, **arrays: Any) -> None:
    """Writes `arrays` as an uncompressed .npz to `path` atomically (np.savez to an open file adds no suffix)."""
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)
