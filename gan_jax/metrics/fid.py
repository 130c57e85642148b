"""The Fréchet distance between two Gaussians, the FID of Inception features (Heusel et al. 2017).

    d^2 = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 @ sigma2))

computed in float64. By default `tr(sqrtm(sigma1 @ sigma2))` comes from symmetric eigen-decompositions: sigma1 @ sigma2
is similar to the symmetric PSD matrix sqrt(sigma1) @ sigma2 @ sqrt(sigma1), so the trace is the sum of the square
roots of its eigenvalues. That is exact, and 6x faster than `scipy.linalg.sqrtm` of the product (1.6 s against 10 s
for 2048 features on 2 CPU cores), which pytorch-fid and the TensorFlow reference use and `method="scipy"` selects;
the two agree to about 1e-12 relative on full-rank covariances (tests/metrics/test_fid.py).
"""

from __future__ import annotations

import warnings

import numpy as np

from gan_jax.metrics.inception import fid_features


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, rowvar=False) covariance of (N, D) features, in float64."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"feature_statistics needs (N >= 2, D) features, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def image_statistics(images, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """FID statistics (mu (2048,), sigma (2048, 2048)) of NHWC uint8 images (needs 2 images at least)."""
    return feature_statistics(fid_features(images, batch_size=batch_size))


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    m = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def _trace_sqrt_product_scipy(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    import scipy.linalg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sqrtm warns on (near-)singular products; checked below
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(sigma1)) * eps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        diag = np.diagonal(covmean)
        if not np.allclose(diag.imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm(sigma1 @ sigma2) has an imaginary component {np.max(np.abs(diag.imag)):.3g}")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6, method: str = "auto") -> float:
    """The squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    method: "eigh" (symmetric eigen-decompositions, numpy only), "scipy" (scipy.linalg.sqrtm of the product, the
    reference implementations' computation), or "auto" (= "eigh"). With "scipy", `eps` is added to the diagonals when
    sqrtm of a singular product is not finite.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(
            f"frechet_distance: shapes do not match: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / "
            f"{sigma2.shape}"
        )
    if method == "auto":
        method = "eigh"
    if method == "scipy":
        tr_covmean = _trace_sqrt_product_scipy(sigma1, sigma2, eps)
    elif method == "eigh":
        tr_covmean = _trace_sqrt_product_eigh(sigma1, sigma2)
    else:
        raise ValueError(f"frechet_distance: method must be 'auto', 'scipy' or 'eigh', got {method!r}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
