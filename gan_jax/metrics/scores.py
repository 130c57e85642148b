"""Inception-feature scores from two feature sets: the one place FID, KID, precision/recall and IS are combined.

Both the training-time evaluators and `python -m gan_jax.evaluate` call `scores_from_features`, so a number means the
same thing wherever it was computed, and carries the same protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def scores_from_features(
    real: np.ndarray,
    fake: np.ndarray,
    metrics: Sequence[str],
    *,
    inception_logits: str | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    pr_k: int = 3,
) -> tuple[dict[str, float], dict[str, Any]]:
    """(scores, protocol) for `metrics` among fid, kid, pr, is, from (N, 2048) pool3 features of real and fake images.

    "is" scores the fake set alone and needs the 2048 -> 1008 logits layer (`inception_logits`, a weight file).
    """
    scores: dict[str, float] = {}
    protocol: dict[str, Any] = {"metrics": list(metrics), "num_real": int(len(real)), "num_fake": int(len(fake))}
    if "fid" in metrics:
        from gan_jax.metrics.fid import feature_statistics, frechet_distance

        scores["fid"] = frechet_distance(*feature_statistics(real), *feature_statistics(fake))
        protocol["fid"] = "Frechet distance of pool3 Gaussians, float64, scipy.linalg.sqrtm"
    if "kid" in metrics:
        from gan_jax.metrics.kid import kernel_inception_distance

        size = min(kid_subset_size, len(real), len(fake))
        scores.update(kernel_inception_distance(real, fake, num_subsets=kid_subsets, subset_size=size))
        protocol["kid"] = f"unbiased MMD^2, kernel (x.y/2048 + 1)^3, {kid_subsets} subsets of {size}"
    if "pr" in metrics:
        from gan_jax.metrics.precision_recall import precision_recall

        scores.update(precision_recall(real, fake, k=pr_k))
        protocol["pr"] = f"improved precision and recall (Kynkaanniemi et al. 2019), k={pr_k}"
    if "is" in metrics:
        from gan_jax.metrics import inception_score as is_lib

        weights = is_lib.load_logits_layer(inception_logits)
        scores.update(is_lib.inception_score(is_lib.inception_logits(fake, weights), splits=10))
        protocol["is"] = f"Inception Score over 1008 classes, 10 splits; logits layer from {inception_logits}"
    return {k: float(v) for k, v in scores.items()}, protocol
