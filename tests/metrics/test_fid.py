"""gan_jax.metrics.fid: the Fréchet distance against closed forms.

For commuting covariances (here: diagonal, or sharing one eigenbasis) sqrtm(S1 S2) = Q sqrt(L1 L2) Q^T, so
d^2 = ||mu1 - mu2||^2 + sum_i (sqrt(l1_i) - sqrt(l2_i))^2.

Run: .venv/bin/python -m pytest tests/metrics/test_fid.py -q
"""

from __future__ import annotations

import numpy as np
import pytest

from gan_jax.metrics.fid import feature_statistics, frechet_distance

METHODS = ["scipy", "eigh"]


def closed_form(mu1, l1, mu2, l2) -> float:
    return float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(l1) - np.sqrt(l2)) ** 2))


@pytest.mark.parametrize("method", METHODS)
def test_diagonal_gaussians(method):
    rng = np.random.default_rng(0)
    d = 64
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    l1, l2 = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    got = frechet_distance(mu1, np.diag(l1), mu2, np.diag(l2), method=method)
    assert got == pytest.approx(closed_form(mu1, l1, mu2, l2), rel=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_commuting_full_covariances(method):
    rng = np.random.default_rng(1)
    d = 128
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    l1, l2 = rng.uniform(0.01, 2.0, d), rng.uniform(0.01, 2.0, d)
    s1, s2 = (q * l1) @ q.T, (q * l2) @ q.T
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    got = frechet_distance(mu1, s1, mu2, s2, method=method)
    assert got == pytest.approx(closed_form(mu1, l1, mu2, l2), rel=1e-8)


@pytest.mark.parametrize("method", METHODS)
def test_identical_and_symmetric(method):
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(300, 32)), rng.normal(size=(300, 32)) * 1.5 + 0.3
    (mu_a, s_a), (mu_b, s_b) = feature_statistics(a), feature_statistics(b)
    assert abs(frechet_distance(mu_a, s_a, mu_a, s_a, method=method)) < 1e-8
    ab = frechet_distance(mu_a, s_a, mu_b, s_b, method=method)
    ba = frechet_distance(mu_b, s_b, mu_a, s_a, method=method)
    assert ab > 0 and ab == pytest.approx(ba, rel=1e-8)


def test_methods_agree_on_singular_covariances():
    # Fewer samples than dimensions: rank-deficient covariances, as with small FID sample sets.
    rng = np.random.default_rng(3)
    (mu_a, s_a), (mu_b, s_b) = (
        feature_statistics(rng.normal(size=(20, 64))),
        feature_statistics(rng.normal(size=(20, 64))),
    )
    scipy_d = frechet_distance(mu_a, s_a, mu_b, s_b, method="scipy")
    eigh_d = frechet_distance(mu_a, s_a, mu_b, s_b, method="eigh")
    assert np.isfinite(scipy_d) and scipy_d == pytest.approx(eigh_d, rel=1e-4)


def test_float32_inputs_are_computed_in_float64():
    l1, l2 = np.full(4, 1.0 + 1e-7, np.float32), np.ones(4, np.float32)
    got = frechet_distance(np.zeros(4, np.float32), np.diag(l1), np.zeros(4, np.float32), np.diag(l2))
    assert got == pytest.approx(closed_form(0, l1.astype(np.float64), 0, l2.astype(np.float64)), abs=1e-15)


def test_bad_shapes_and_method():
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="method"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3), method="magic")
