"""Shared pieces of the data layer: the error type, the parsed image options and the in-memory source.

A *source* is what a dataset loader returns: random access to examples by index, already at the final height and
width, still uint8 for images (so a dataset costs 1 byte per pixel in memory), with at most the channels that are
stored. Everything that depends on the step (shuffling, batching, float conversion, process slicing) lives in
`pipeline.py`, so a new dataset is one loader function that returns a source.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np


class DatasetNotFoundError(ValueError):
    """The dataset is not on this machine; the message says where it was looked for and how to get it.

    A ValueError so that callers treating bad configs uniformly (`except ValueError`) also catch it.
    """


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """The image fields of `config.data`, validated once.

    resolution: output height = width; 0 keeps the native size (all examples must then share it).
    channels: 1 or 3; 0 keeps the native count. 1 -> 3 repeats the grey channel, 3 -> 1 averages R, G and B.
    resize: "pad" zero-pads symmetrically with the background value (uint8 0, i.e. -1 after scaling) and refuses
        to shrink; "resize" centre-crops non-square images to a square and resizes with PIL's bilinear filter,
        which is antialiased when shrinking.
    """

    resolution: int = 0
    channels: int = 0
    resize: str = "pad"


class Source(Protocol):
    """Random access to a dataset's examples, as stored (see the module docstring)."""

    kind: str  # "image" or "points"
    shape: tuple[int, ...]  # stored per-example shape; images may store 1 channel that is repeated to 3 per batch
    num_examples: int
    num_classes: int  # 0 when there are no labels
    default_threads: int  # background threads `Dataset.iterate` uses unless told otherwise

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Examples `indices` (int64, any order, repeats allowed): (x, labels or None)."""
        ...


@dataclasses.dataclass
class ArraySource:
    """A dataset held in memory as numpy arrays: uint8 NHWC images or float32 (N, 2) points.

    Gathering a batch is one fancy-indexing call per array, which releases the GIL, so one background thread feeds a
    train step comfortably; the arrays are made read-only because loaders cache and share them between datasets.
    """

    x: np.ndarray
    labels: np.ndarray | None
    num_classes: int
    kind: str = "image"
    default_threads: int = 1
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != len(self.x):
            raise ValueError(f"{len(self.x)} examples but {len(self.labels)} labels")
        self.x = _readonly(self.x)
        if self.labels is not None:
            self.labels = _readonly(self.labels.astype(np.int32, copy=False))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def num_examples(self) -> int:
        return len(self.x)

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        labels = None if self.labels is None else self.labels[indices]
        return self.x[indices], labels

    def take(self, n: int) -> ArraySource:
        """The first `n` examples (a view, no copy): `num_examples` in the config selects a fixed subset."""
        labels = None if self.labels is None else self.labels[:n]
        return dataclasses.replace(self, x=self.x[:n], labels=labels)


def _readonly(a: np.ndarray) -> np.ndarray:
    a = a.view()
    a.flags.writeable = False
    return a
