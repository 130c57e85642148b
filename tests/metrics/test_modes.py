"""gan_jax.metrics.modes: the VEEGAN / PacGAN mode-coverage protocol on constructed sample sets with known answers."""

import math

import numpy as np
import pytest

from gan_jax.data.mixtures import mixture_params
from gan_jax.metrics.modes import mode_coverage


def test_every_mode_hit_exactly():
    means, std = mixture_params("grid")
    samples = np.repeat(means, 100, axis=0)  # 100 samples on each of the 25 means
    out = mode_coverage(samples, means, std)
    assert out == {
        "modes": 25,
        "num_modes": 25,
        "high_quality_pct": 100.0,
        "reverse_kl": pytest.approx(0.0, abs=1e-12),
        "num_samples": 2500,
    }


def test_one_mode():
    means, std = mixture_params("ring")
    samples = np.repeat(means[3:4], 2500, axis=0) + 0.5 * std  # within 3 std of mean 3
    out = mode_coverage(samples, means, std)
    assert out["modes"] == 1 and out["high_quality_pct"] == 100.0
    assert out["reverse_kl"] == pytest.approx(math.log(8), rel=1e-12)


def test_off_mode_points_are_low_quality_but_still_assigned():
    means, std = mixture_params("ring")
    on = np.repeat(means, 10, axis=0)  # 80 on the means
    off = np.repeat(means, 10, axis=0) * (1.0 + 10 * std)  # 80 at 10 std outwards from each mean
    out = mode_coverage(np.concatenate([on, off]), means, std)
    assert out["high_quality_pct"] == 50.0 and out["modes"] == 8
    assert out["reverse_kl"] == pytest.approx(0.0, abs=1e-12)  # every mode still gets 1/8 of the samples
    only_off = mode_coverage(off, means, std)
    assert only_off["modes"] == 0 and only_off["high_quality_pct"] == 0.0


def test_uneven_split_gives_the_hand_computed_kl():
    means, std = mixture_params("ring")
    samples = np.concatenate([np.repeat(means[:1], 300, axis=0), np.repeat(means[1:2], 100, axis=0)])
    q = np.array([0.75, 0.25])
    out = mode_coverage(samples, means, std)
    assert out["modes"] == 2
    assert out["reverse_kl"] == pytest.approx(float(np.sum(q * np.log(q * 8))), rel=1e-12)
