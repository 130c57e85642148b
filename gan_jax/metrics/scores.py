"""Scores of image sets and 2-D point sets, each with its protocol: the one place FID, KID, precision/recall, IS and
mode coverage are computed from samples.

The standalone evaluator (`python -m gan_jax.evaluate`) and the training-time evaluators
(`gan_jax.metrics.evaluators`) both call these functions, so a number means the same thing wherever it was computed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

IMAGE_METRICS = ("fid", "kid", "pr", "is")
POINT_METRICS = ("modes",)


class EvaluationError(ValueError):
    """The input cannot be evaluated (a missing or empty set, mixed image sizes, an unknown metric, ...)."""


def parse_metrics(metrics: str | Sequence[str]) -> list[str]:
    """Metric names ("fid,kid" or ["fid", "kid"]) -> the known names in the given order, without repeats."""
    names = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    out: list[str] = []
    for name in (n.strip().lower() for n in names):
        if not name:
            continue
        if name not in IMAGE_METRICS + POINT_METRICS:
            raise EvaluationError(
                f"unknown metric {name!r}; choose from {', '.join(IMAGE_METRICS + POINT_METRICS)} (comma-separated)"
            )
        if name not in out:
            out.append(name)
    if not out:
        raise EvaluationError("no metric given; choose from " + ", ".join(IMAGE_METRICS + POINT_METRICS))
    if "modes" in out and len(out) > 1:
        raise EvaluationError("'modes' scores 2-D points and cannot be combined with image metrics")
    return out


def check_counts(metrics: Sequence[str], num_real: int, num_fake: int, *, pr_k: int = 3, is_splits: int = 10) -> None:
    """Raises EvaluationError when a set is too small for a metric (before any feature is extracted)."""
    needs = {"fid": (2, 2), "kid": (2, 2), "pr": (pr_k + 1, pr_k + 1), "is": (0, is_splits)}
    for m in metrics:
        real_min, fake_min = needs.get(m, (0, 0))
        if num_real < real_min or num_fake < fake_min:
            raise EvaluationError(
                f"{m} needs at least {real_min} real and {fake_min} fake images, got {num_real} real and "
                f"{num_fake} fake"
            )


def logits_layer(inception_logits: str | None):
    """(path, (weight, bias)) of the Inception Score's logits layer; InceptionScoreUnavailable says what to supply."""
    from gan_jax.metrics import inception_score

    path = inception_score.logits_file(inception_logits)
    return path, inception_score.load_logits_layer(path)


def evaluate_features(
    real_features: np.ndarray | None,
    fake_features: np.ndarray,
    metrics: str | Sequence[str],
    *,
    reference: str | None = None,
    reference_info: Mapping[str, Any] | None = None,
    inception_logits: str | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    kid_seed: int = 0,
    pr_k: int = 3,
    is_splits: int = 10,
) -> dict[str, dict[str, Any]]:
    """Scores of (N, 2048) pool3 features: {"fid": {"fid": .., "protocol": {..}}, "kid": {"kid": .., "kid_std": ..,
    "protocol": ..}, "pr": {"precision": .., "recall": .., "protocol": ..}, "is": {"is": .., "is_std": .., ...}}.

    `reference` names the real set in the protocols; `reference_info` (from `reference_features`) adds how it was
    selected. "is" scores the fake features alone (real_features may then be None) with the logits layer from
    `inception_logits` or $GAN_JAX_INCEPTION_LOGITS.
    """
    from gan_jax.metrics import reference as ref

    metrics = parse_metrics(metrics)
    bad = [m for m in metrics if m not in IMAGE_METRICS]
    if bad:
        raise EvaluationError(f"{bad[0]} is not an Inception-feature metric")
    needs_real = any(m != "is" for m in metrics)
    if needs_real and real_features is None:
        raise EvaluationError(f"{', '.join(m for m in metrics if m != 'is')} need a real set")
    num_real = len(real_features) if real_features is not None else 0
    num_fake = len(fake_features)
    check_counts(metrics, num_real, num_fake, pr_k=pr_k, is_splits=is_splits)
    logits = logits_layer(inception_logits) if "is" in metrics else None
    sha = ref.inception_sha256()
    extra = {k: v for k, v in (reference_info or {}).items() if k in ("resolution", "selection")}
    common = dict(num_real=num_real, num_fake=num_fake, reference=reference, weights_sha256=sha)
    out: dict[str, dict[str, Any]] = {}
    for m in metrics:
        if m == "fid":
            from gan_jax.metrics.fid import feature_statistics, frechet_distance

            value = frechet_distance(*feature_statistics(real_features), *feature_statistics(fake_features))
            out[m] = {"fid": value, "protocol": ref.protocol("fid", **common, **extra)}
        elif m == "kid":
            from gan_jax.metrics.kid import kernel_inception_distance

            scores = kernel_inception_distance(
                real_features, fake_features, num_subsets=kid_subsets, subset_size=kid_subset_size, seed=kid_seed
            )
            size = min(kid_subset_size, num_real, num_fake)
            kernel = f"(x.y/{np.shape(fake_features)[1]} + 1)^3"
            settings = {"kernel": kernel, "subsets": kid_subsets, "subset_size": size, "seed": kid_seed}
            out[m] = {**scores, "protocol": ref.protocol("kid", **common, **settings, **extra)}
        elif m == "pr":
            from gan_jax.metrics.precision_recall import precision_recall

            scores = precision_recall(real_features, fake_features, k=pr_k)
            out[m] = {**scores, "protocol": ref.protocol("precision_recall", **common, k=pr_k, **extra)}
        else:
            from gan_jax.metrics import inception_score
            from gan_jax.metrics.inception_weights import file_sha256

            path, layer = logits
            scores = inception_score.inception_score(inception_score.inception_logits(fake_features, layer), is_splits)
            settings = {
                "splits": is_splits,
                "logits": "pool3 @ fc.weight without the bias, softmax over 1008 classes (openai/improved-gan)",
                "logits_file": os.path.abspath(path),
                "logits_sha256": file_sha256(path),
            }
            protocol = ref.protocol("inception_score", num_real=0, num_fake=num_fake, weights_sha256=sha, **settings)
            out[m] = {**scores, "protocol": protocol}
    return out


def evaluate_images(
    real_images: np.ndarray | None,
    fake_images: np.ndarray,
    metrics: str | Sequence[str],
    *,
    real_features: np.ndarray | None = None,
    batch_size: int = 32,
    **options: Any,
) -> dict[str, dict[str, Any]]:
    """Scores of uint8 NHWC images (see `evaluate_features` for the result and `options`).

    Pass `real_features` instead of `real_images` when the real set's features are known (a cached reference).
    Every check that needs no network runs before feature extraction, so bad input fails in a second.
    """
    from gan_jax.metrics.inception import fid_features

    metric_list = parse_metrics(metrics)
    needs_real = any(m != "is" for m in metric_list)
    if needs_real and real_features is None and real_images is None:
        raise EvaluationError(f"{', '.join(m for m in metric_list if m != 'is')} need a real set")
    num_real = len(real_features) if real_features is not None else len(real_images) if needs_real else 0
    check_counts(
        metric_list, num_real, len(fake_images), pr_k=options.get("pr_k", 3), is_splits=options.get("is_splits", 10)
    )
    if "is" in metric_list:
        logits_layer(options.get("inception_logits"))  # fail now, not after the features
    if needs_real and real_features is None:
        real_features = fid_features(real_images, batch_size=batch_size)
    fake_features = fid_features(fake_images, batch_size=batch_size)
    return evaluate_features(real_features if needs_real else None, fake_features, metric_list, **options)


def evaluate_points(points: np.ndarray, mixture: str, *, std: float | None = None, min_count: int = 1) -> dict:
    """{"modes": {modes, num_modes, high_quality_pct, reverse_kl, num_samples, protocol}} of (N, 2) points."""
    from gan_jax.data.mixtures import mixture_params
    from gan_jax.metrics.modes import mode_coverage

    try:
        means, std = mixture_params(mixture, std)
    except ValueError:
        raise EvaluationError(f"--mixture={mixture!r}: choose ring or grid") from None
    scores = mode_coverage(points, means, std, min_count=min_count)
    protocol = {
        "metric": "modes",
        "rule": "nearest true mean; high quality within 3 std of it; a mode counts with >= min_count such samples",
        "mixture": mixture,
        "std": std,
        "num_modes": len(means),
        "min_count": min_count,
        "num_fake": len(points),
    }
    return {"modes": {**scores, "protocol": protocol}}
