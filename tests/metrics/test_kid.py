"""gan_jax.metrics.kid: the unbiased MMD^2 against a direct double sum and against its closed-form expectation.

For independent x ~ N(a, sa^2 I) and y ~ N(b, sb^2 I) in d dimensions, s = x.y / d is a sum of d independent terms
x_i y_i / d whose raw moments are products of Gaussian moments (E x = mu, E x^2 = mu^2 + sigma^2,
E x^3 = mu^3 + 3 mu sigma^2). Cumulants add over independent terms, so E (s + 1)^3, the expected kernel, has a closed
form, and so has E MMD^2_u = E k(x, x') + E k(y, y') - 2 E k(x, y) (the estimator is unbiased).

Run: .venv/bin/python -m pytest tests/metrics/test_kid.py -q
"""

from __future__ import annotations

import numpy as np
import pytest

from gan_jax.metrics.kid import kernel_inception_distance


def direct_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased estimator written term by term (Gretton et al. 2012, eq. 3)."""
    m, d = x.shape
    k = lambda u, v: (float(np.dot(u, v)) / d + 1.0) ** 3
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2.0 * xy / (m * m)


def expected_kernel(mu_x: float, var_x: float, mu_y: float, var_y: float, d: int) -> float:
    """E (x.y / d + 1)^3 for independent x ~ N(mu_x 1, var_x I), y ~ N(mu_y 1, var_y I) in d dimensions."""
    gx = [mu_x, mu_x**2 + var_x, mu_x**3 + 3 * mu_x * var_x]
    gy = [mu_y, mu_y**2 + var_y, mu_y**3 + 3 * mu_y * var_y]
    m1, m2, m3 = (gx[k] * gy[k] / d ** (k + 1) for k in range(3))  # raw moments of one term x_i y_i / d
    k1, k2, k3 = d * m1, d * (m2 - m1**2), d * (m3 - 3 * m2 * m1 + 2 * m1**3)  # cumulants of s
    e1, e2, e3 = k1, k2 + k1**2, k3 + 3 * k2 * k1 + k1**3
    return e3 + 3 * e2 + 3 * e1 + 1


def expected_mmd2(mu_p: float, mu_q: float, var: float, d: int) -> float:
    return (
        expected_kernel(mu_p, var, mu_p, var, d)
        + expected_kernel(mu_q, var, mu_q, var, d)
        - 2 * expected_kernel(mu_p, var, mu_q, var, d)
    )


def replicate_estimates(mu_q: float, d: int, m: int, replicates: int, seed: int) -> np.ndarray:
    """KID of `replicates` independent pairs of sets (one subset covering each whole set): iid unbiased estimates."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(replicates):
        real = rng.normal(size=(m, d))
        fake = rng.normal(size=(m, d)) + mu_q
        out.append(kernel_inception_distance(real, fake, num_subsets=1, subset_size=m)["kid"])
    return np.asarray(out)


def test_one_subset_covering_everything_is_the_direct_formula():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(25, 6)), rng.normal(size=(25, 6)) * 1.3 + 0.2
    got = kernel_inception_distance(real, fake, num_subsets=3, subset_size=1000)
    # Every subset is a permutation of the whole set, and the estimator does not depend on the order.
    assert got["kid"] == pytest.approx(direct_mmd2(real, fake), rel=1e-12)
    assert got["kid_std"] == pytest.approx(0.0, abs=1e-12)


def test_subset_size_is_capped_by_the_smaller_set():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(40, 3)), rng.normal(size=(12, 3)) + 1.0
    got = kernel_inception_distance(real, fake, num_subsets=50, subset_size=1000, seed=3)
    # Fake is used whole in every subset, real by random 12-point subsets: the mean of those direct estimates.
    rs = np.random.RandomState(3)
    want = []
    for _ in range(50):
        x = real[rs.choice(40, 12, replace=False)]
        rs.choice(12, 12, replace=False)
        want.append(direct_mmd2(x, fake))
    assert got["kid"] == pytest.approx(np.mean(want), rel=1e-10)
    assert got["kid_std"] == pytest.approx(np.std(want), rel=1e-8) and got["kid_std"] > 0


def test_closed_form_expectation_for_shifted_gaussians():
    d, m, replicates, mu_q = 4, 200, 40, 0.5
    estimates = replicate_estimates(mu_q, d, m, replicates, seed=10)
    want = expected_mmd2(0.0, mu_q, 1.0, d)
    se = estimates.std(ddof=1) / np.sqrt(replicates)
    assert want > 10 * se  # the shift is detectable, so the next line can fail
    assert abs(estimates.mean() - want) < 4 * se, (estimates.mean(), want, se)


def test_same_gaussian_gives_zero_in_expectation():
    d, m, replicates = 4, 200, 40
    estimates = replicate_estimates(0.0, d, m, replicates, seed=11)
    se = estimates.std(ddof=1) / np.sqrt(replicates)
    assert expected_mmd2(0.0, 0.0, 1.0, d) == pytest.approx(0.0, abs=1e-12)
    assert abs(estimates.mean()) < 4 * se
    assert (estimates < 0).any()  # unbiased: individual estimates straddle zero


def test_float32_input_is_computed_in_float64():
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(20, 8)).astype(np.float32), rng.normal(size=(20, 8)).astype(np.float32)
    got = kernel_inception_distance(real, fake, num_subsets=1, subset_size=20)["kid"]
    assert got == pytest.approx(direct_mmd2(real.astype(np.float64), fake.astype(np.float64)), rel=1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="one D"):
        kernel_inception_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="2 samples"):
        kernel_inception_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="num_subsets"):
        kernel_inception_distance(np.zeros((5, 3)), np.zeros((5, 3)), num_subsets=0)
