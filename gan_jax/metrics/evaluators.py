"""The evaluator registry: what `config.evals` can name, run during training and by `run.py --mode=eval`.

As in big_vision, a config lists its evaluators by name, each a ConfigDict with a `type` from `EVALUATORS` and the
fields that type reads (built, with their defaults, by `evaluator_spec`):

    c.evals.fid = evaluator_spec("inception", every=0, metrics="fid,kid,pr", num_samples=10_000, split="test")

An evaluator sees samples only, through `EvalContext.generate` (num_samples, seed) -> uint8 NHWC images or float32
2-D points, never the training state, so the same evaluator serves training, `--mode=eval` and any other sampler.
It returns flat float scores (logged to TensorBoard as `<name>/<score>`) and the protocol that produced them (stored
beside every score in `evals.jsonl`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np

Scores = dict[str, float]


@dataclasses.dataclass(frozen=True)
class EvalContext:
    """What an evaluator may use: a sampler and the run's data config (for the reference split)."""

    generate: Callable[[int, int], np.ndarray]  # (num_samples, seed) -> samples
    data: ml_collections.ConfigDict
    # Class-conditional models only: (labels, seed) -> samples of those classes; None for unconditional ones.
    generate_labelled: Callable[[np.ndarray, int], np.ndarray] | None = None


@dataclasses.dataclass(frozen=True)
class EvalResult:
    scores: Scores
    protocol: dict[str, Any]


Evaluator = Callable[[ml_collections.ConfigDict, EvalContext], EvalResult]

INCEPTION_METRICS = ("fid", "kid", "pr", "is")

# Fields every evaluator spec has, then each type's own fields and defaults (which override the common ones).
_COMMON = {"type": "", "every": 0, "num_samples": 1000, "seed": 0}
_FIELDS: dict[str, dict[str, Any]] = {
    # Inception-feature metrics against a real split of the run's dataset (or `dataset` if set).
    "inception": {
        "num_samples": 10_000,  # the FID protocol of Lucic et al. 2018 (10,000 samples against the test split)
        "metrics": "fid,kid,pr",
        "dataset": "",
        "split": "test",
        "num_real": 10_000,
        "batch_size": 50,
        "inception_logits": "",  # weight file of the 2048 -> 1008 logits layer, needed by "is"
    },
    # The 2-D mixtures (PacGAN / VEEGAN protocol): modes, high-quality share, reverse KL of 2,500 samples.
    "modes": {"num_samples": 2_500},
    # Stacked MNIST (1,000 modes) through gan_jax's MNIST classifier: modes and KL to uniform of 26,000 samples.
    "stacked_mnist": {"num_samples": 26_000},
    # Class-conditional MNIST models: the share of samples generated for class c that gan_jax's MNIST classifier
    # labels c (intra-class accuracy), overall and for the worst class; samples are drawn class-balanced.
    "class_accuracy": {"num_samples": 10_000},
}


def evaluator_spec(type_: str, **fields: Any) -> ml_collections.ConfigDict:
    """A complete spec for `config.evals.<name>`: the type's defaults with `fields` applied.

    Every field exists in the spec, so `--config.evals.<name>.<field>=` can override any of them and a misspelt
    field is rejected by ml_collections.
    """
    if type_ not in _FIELDS:
        raise ValueError(f"unknown evaluator type {type_!r}; choose one of {', '.join(_FIELDS)}")
    spec = {**_COMMON, **_FIELDS[type_], "type": type_}
    unknown = sorted(set(fields) - set(spec))
    if unknown:
        raise ValueError(f"evaluator {type_!r} has no field {unknown[0]!r}; its fields: {', '.join(sorted(spec))}")
    spec.update(fields)
    return ml_collections.ConfigDict(spec)


def validate_spec(name: str, spec: ml_collections.ConfigDict) -> str | None:
    """The first problem of `config.evals.<name>`, as 'field: message', or None."""
    if spec.get("type") not in _FIELDS:
        return f"type: unknown evaluator type {spec.get('type')!r}; choose one of {', '.join(_FIELDS)}"
    expected = {**_COMMON, **_FIELDS[spec.type]}
    missing = sorted(set(expected) - set(spec))
    if missing:
        return f"{missing[0]}: missing; build the spec with gan_jax.metrics.evaluators.evaluator_spec"
    if spec.every < 0:
        return "every: must be >= 0 (0 runs it only in --mode=eval)"
    if spec.num_samples < 2:
        return "num_samples: must be >= 2"
    if spec.type == "inception":
        metrics = [m.strip() for m in spec.metrics.split(",") if m.strip()]
        bad = [m for m in metrics if m not in INCEPTION_METRICS]
        if not metrics or bad:
            return f"metrics: choose from {', '.join(INCEPTION_METRICS)} (comma-separated)"
        if spec.num_real < 2:
            return "num_real: must be >= 2"
        if "is" in metrics:  # checked at start, so that a long run does not fail at its first evaluation
            from gan_jax.metrics.inception_score import InceptionScoreUnavailable, logits_file

            try:
                logits_file(spec.inception_logits or None)
            except InceptionScoreUnavailable as e:
                return f"inception_logits: {e}"
        if spec.batch_size < 1:
            return "batch_size: must be positive"
    return None


def _flatten(results: dict[str, dict[str, Any]]) -> EvalResult:
    """{metric: {score: value, ..., "protocol": {...}}} -> flat scores, and the protocols by metric."""
    scores = {k: float(v) for r in results.values() for k, v in r.items() if k != "protocol"}
    return EvalResult(scores, {metric: r["protocol"] for metric, r in results.items()})


def _inception(spec: ml_collections.ConfigDict, ctx: EvalContext) -> EvalResult:
    from gan_jax.metrics.reference import reference_features
    from gan_jax.metrics.scores import evaluate_images

    dataset = spec.dataset or ctx.data.name
    real, info = reference_features(
        dataset, spec.split, spec.num_real, resolution=ctx.data.resolution, data_dir=ctx.data.data_dir
    )
    results = evaluate_images(
        None,
        ctx.generate(spec.num_samples, spec.seed),
        spec.metrics,
        real_features=real,
        batch_size=spec.batch_size,
        reference=f"{dataset}:{spec.split}",
        reference_info=info,
        inception_logits=spec.inception_logits or None,
    )
    return _flatten(results)


def _modes(spec: ml_collections.ConfigDict, ctx: EvalContext) -> EvalResult:
    from gan_jax.metrics.scores import evaluate_points

    return _flatten(evaluate_points(ctx.generate(spec.num_samples, spec.seed), ctx.data.name, std=ctx.data.std))


def _stacked_mnist(spec: ml_collections.ConfigDict, ctx: EvalContext) -> EvalResult:
    from gan_jax.metrics.classifier import mnist_classifier
    from gan_jax.metrics.stacked_mnist import stacked_mnist_modes

    classifier = mnist_classifier()
    scores = stacked_mnist_modes(ctx.generate(spec.num_samples, spec.seed), classifier)
    protocol = {
        "metric": "stacked MNIST modes (PacGAN / VEEGAN): each channel classified, 1000 modes, KL to uniform",
        "classifier_test_accuracy": classifier.test_accuracy,
        "num_fake": spec.num_samples,
    }
    return EvalResult({k: float(v) for k, v in scores.items()}, protocol)


def _class_accuracy(spec: ml_collections.ConfigDict, ctx: EvalContext) -> EvalResult:
    from gan_jax.metrics.classifier import mnist_classifier

    if ctx.generate_labelled is None:
        raise ValueError("evaluator 'class_accuracy' needs a class-conditional model (config.model.num_classes > 0)")
    if ctx.data.name != "mnist":
        raise ValueError(f"evaluator 'class_accuracy' uses an MNIST digit classifier; the data is {ctx.data.name!r}")
    labels = np.arange(spec.num_samples, dtype=np.int32) % 10
    classifier = mnist_classifier()
    predicted = classifier.predict(ctx.generate_labelled(labels, spec.seed))
    hits = predicted == labels
    per_class = np.array([hits[labels == c].mean() for c in range(10)])
    protocol = {
        "metric": "intra-class accuracy: gan_jax's MNIST classifier's agreement with the requested labels",
        "classifier_test_accuracy": classifier.test_accuracy,
        "num_fake": spec.num_samples,
    }
    scores = {"accuracy": float(hits.mean()), "worst_class_accuracy": float(per_class.min())}
    return EvalResult(scores, protocol)


EVALUATORS: dict[str, Evaluator] = {
    "inception": _inception,
    "modes": _modes,
    "stacked_mnist": _stacked_mnist,
    "class_accuracy": _class_accuracy,
}


def run_evaluator(spec: ml_collections.ConfigDict, ctx: EvalContext) -> EvalResult:
    """Runs one spec; the protocol gains the evaluator type and the seed of the fake samples."""
    result = EVALUATORS[spec.type](spec, ctx)
    return EvalResult(result.scores, {"evaluator": spec.type, "fake_seed": spec.seed, **result.protocol})
