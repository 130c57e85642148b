"""gan_jax.metrics.precision_recall: hand-computed answers on integer grids, and a brute-force double loop.

On the integer line 0..n-1 with k = 3 the distances from an inner point i are 0 (itself), 1, 1, 2, 2, 3, 3, ...,
so its k-th neighbour (itself excluded) lies at 2; point 0 sees 1, 2, 3 (radius 3) and point 1 sees 1, 1, 2
(radius 2). Integer coordinates make every float32 distance exact, so points on a sphere are decided exactly.

Run: .venv/bin/python -m pytest tests/metrics/test_precision_recall.py -q
"""

from __future__ import annotations

import numpy as np
import pytest

from gan_jax.metrics.precision_recall import manifold_radii, precision_recall


def line(lo: int, hi: int) -> np.ndarray:
    return np.arange(lo, hi, dtype=np.float32)[:, None]


def brute_force(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """The definition, with every pairwise distance in float64."""

    def radii(x):
        d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    def share(probes, centres, r):
        d = np.sqrt(((probes[:, None, :] - centres[None, :, :]) ** 2).sum(-1))
        return float(np.mean((d <= r[None, :]).any(axis=1)))

    real, fake = real.astype(np.float64), fake.astype(np.float64)
    return {"precision": share(fake, real, radii(real)), "recall": share(real, fake, radii(fake))}


def test_radii_on_the_integer_line():
    r2 = manifold_radii(line(0, 10), k=3, batch_size=4)  # 3 blocks, the last one padded
    assert r2.tolist() == [9, 4] + [4] * 6 + [4, 9]


def test_identical_sets():
    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    assert precision_recall(x, x, k=3, batch_size=16) == {"precision": 1.0, "recall": 1.0}


def test_far_away_fake_points():
    real = np.random.default_rng(1).normal(size=(40, 4))
    assert precision_recall(real, real + 1000.0, k=3) == {"precision": 0.0, "recall": 0.0}


def test_collapse_onto_part_of_the_support_1d():
    # Real: 0..99. Fake: 0..9, all inside real spheres (precision 1). Fake radii: 3 at 0 and 9, 2 inside, so the
    # fake manifold is [0, 12]: it holds real points 0..12, 13 of 100.
    assert precision_recall(line(0, 100), line(0, 10), k=3, batch_size=32) == {"precision": 1.0, "recall": 0.13}


def test_collapse_2d_grid():
    # Real: the 20x20 integer grid. Fake: its 4x4 corner block {0..3}^2. With k = 1 a real inner point's nearest
    # neighbour is at 1, so every fake point is inside (precision 1). In the 4x4 block every point also has a
    # neighbour at 1, so the fake manifold is the union of unit discs: it holds the block (16 points) and the
    # 4 + 4 points of the next column and row, 24 of 400 real points.
    g = np.stack(np.meshgrid(np.arange(20), np.arange(20), indexing="ij"), -1).reshape(-1, 2).astype(np.float32)
    fake = g[(g[:, 0] < 4) & (g[:, 1] < 4)]
    assert precision_recall(g, fake, k=1, batch_size=64) == {"precision": 1.0, "recall": 24 / 400}


def test_fake_half_off_the_support():
    # Real: 0..49 (radii 2, 3 at the ends). Fake: 40..59 (ends at 40 and 59 have radius 3). Fake points 40..52 lie
    # within 3 of real point 49 or within 2 of some real point: 13 of 20. Real points inside [37, 62]: 37..49, 13.
    got = precision_recall(line(0, 50), line(40, 60), k=3, batch_size=7)
    assert got == {"precision": 13 / 20, "recall": 13 / 50}


@pytest.mark.parametrize("batch_size", [5, 64, 10000])
def test_matches_brute_force_on_random_sets(batch_size):
    rng = np.random.default_rng(2)
    real = rng.normal(size=(37, 6)).astype(np.float32)
    fake = (rng.normal(size=(29, 6)) + 1.0).astype(np.float32)
    got = precision_recall(real, fake, k=3, batch_size=batch_size)
    want = brute_force(real, fake, 3)
    assert got == pytest.approx(want, abs=1e-12)
    assert 0 < got["precision"] < 1 and 0 < got["recall"] < 1  # a case where both shares are informative


def test_bad_input():
    with pytest.raises(ValueError, match="one D"):
        precision_recall(np.zeros((10, 2)), np.zeros((10, 3)))
    with pytest.raises(ValueError, match="more than 3 samples"):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)))
