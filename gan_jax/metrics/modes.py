"""Mode coverage of 2-D mixtures (the VEEGAN / PacGAN protocol).

Each sample is assigned to its nearest true mean; it is "high quality" when within `3 * std` of it. A mode counts as
captured when at least `min_count` high-quality samples are assigned to it. The reverse KL is KL(q || p) between the
distribution q of samples over their nearest modes and the true distribution p, uniform over the modes.
"""

from __future__ import annotations

import numpy as np


def mode_coverage(samples: np.ndarray, means: np.ndarray, std: float, min_count: int = 1) -> dict[str, float]:
    samples = np.asarray(samples, np.float64)
    means = np.asarray(means, np.float64)
    d2 = ((samples[:, None, :] - means[None, :, :]) ** 2).sum(-1)
    nearest = d2.argmin(1)
    dist = np.sqrt(d2[np.arange(len(samples)), nearest])
    high = dist <= 3.0 * std
    k = len(means)
    hq_counts = np.bincount(nearest[high], minlength=k)
    q = np.bincount(nearest, minlength=k) / len(samples)
    nz = q > 0
    reverse_kl = float(np.sum(q[nz] * np.log(q[nz] * k)))
    return {
        "modes": int(np.sum(hq_counts >= min_count)),
        "num_modes": k,
        "high_quality_pct": float(100.0 * high.mean()),
        "reverse_kl": reverse_kl,
        "num_samples": int(len(samples)),
    }
