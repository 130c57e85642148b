"""2-D mixtures of Gaussians, the standard mode-collapse benchmarks.

ring: 8 modes on the unit circle at angles 2*pi*k/8, std 0.01. grid: 25 modes at {-4, -2, 0, 2, 4}^2, std 0.05
(the VEEGAN / PacGAN protocol). Training uses a *fixed* set of `num_examples` points drawn once from the seed, like a
real dataset, so epochs and resumption behave exactly as for images. `mixture_params` is public because the
evaluation code (modes covered, high-quality fraction) must score samples against the same means and std.
"""

from __future__ import annotations

import numpy as np

from gan_jax.data.base import ArraySource

DEFAULT_NUM_EXAMPLES = 100_000
_DEFAULT_STD = {"ring": 0.01, "grid": 0.05}
# Separate random streams for the training and test sets, and apart from the epoch permutations ([seed, epoch]).
_SPLIT_STREAM = {"train": 0x6D697874, "test": 0x74657374}


def mixture_names() -> tuple[str, ...]:
    return tuple(_DEFAULT_STD)


def mixture_params(name: str, std: float | None = None) -> tuple[np.ndarray, float]:
    """(means (K, 2) float32, std) of mixture `name`; `std=None` gives the protocol default."""
    if name == "ring":
        angles = 2 * np.pi * np.arange(8) / 8
        means = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    elif name == "grid":
        ticks = np.arange(-4.0, 5.0, 2.0)
        means = np.stack(np.meshgrid(ticks, ticks, indexing="ij"), axis=-1).reshape(-1, 2)
    else:
        raise ValueError(f"config.data.name={name!r}: not a mixture; choose one of {', '.join(_DEFAULT_STD)}")
    if std is None:
        std = _DEFAULT_STD[name]
    if not std > 0:
        raise ValueError(f"config.data.std={std!r}: must be positive")
    return means.astype(np.float32), float(std)


def sample_mixture(
    name: str, n: int, rng: np.random.Generator, std: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`n` points with equal mode weights: (x (n, 2) float32, mode index (n,) int32)."""
    means, std = mixture_params(name, std)
    modes = rng.integers(0, len(means), size=n)
    x = means[modes] + std * rng.standard_normal((n, 2), dtype=np.float32)
    return x.astype(np.float32), modes.astype(np.int32)


def load_mixture(name: str, *, split: str, num_examples: int, std: float | None, seed: int) -> ArraySource:
    """The fixed set for `split` ("train", or "test": an independent draw of the same size)."""
    if split not in _SPLIT_STREAM:
        raise ValueError(f"config.data.split={split!r}: the {name} mixture has splits 'train' and 'test'")
    n = num_examples or DEFAULT_NUM_EXAMPLES
    means, std = mixture_params(name, std)
    x, modes = sample_mixture(name, n, np.random.default_rng([seed, _SPLIT_STREAM[split]]), std)
    return ArraySource(x, modes, num_classes=len(means), kind="points", metadata={"means": means, "std": std})
