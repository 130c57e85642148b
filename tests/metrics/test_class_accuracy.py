"""The `class_accuracy` evaluator: intra-class accuracy of a class-conditional model by gan_jax's MNIST classifier.

A stand-in "generator" returns real MNIST test digits of the requested classes (accuracy near the classifier's own),
or digits of the wrong classes (accuracy 0), so the score is seen to follow the samples' classes.
"""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from gan_jax.data.sources import _mnist_splits
from gan_jax.metrics.evaluators import EvalContext, evaluator_spec, run_evaluator


def _context(shift: int, name: str = "mnist") -> EvalContext:
    x, y = _mnist_splits()["test"]
    by_class = [x[y == c] for c in range(10)]

    def labelled(labels: np.ndarray, seed: int) -> np.ndarray:
        counts = np.zeros(10, int)
        out = []
        for c in labels:
            c = (int(c) + shift) % 10
            out.append(by_class[c][counts[c]])
            counts[c] += 1
        return np.stack(out)

    data = ml_collections.ConfigDict({"name": name})
    return EvalContext(
        generate=lambda n, seed: labelled(np.arange(n) % 10, seed), data=data, generate_labelled=labelled
    )


def test_class_accuracy_follows_the_samples_classes() -> None:
    spec = evaluator_spec("class_accuracy", num_samples=1000)
    right = run_evaluator(spec, _context(shift=0))
    wrong = run_evaluator(spec, _context(shift=3))
    assert right.scores["accuracy"] >= 0.98 and right.scores["worst_class_accuracy"] >= 0.9
    assert wrong.scores["accuracy"] <= 0.02
    assert right.protocol["evaluator"] == "class_accuracy" and right.protocol["num_fake"] == 1000


def test_class_accuracy_refuses_unconditional_models_and_other_data() -> None:
    spec = evaluator_spec("class_accuracy", num_samples=10)
    ctx = _context(0)
    with pytest.raises(ValueError, match="class-conditional"):
        run_evaluator(spec, EvalContext(generate=ctx.generate, data=ctx.data))
    with pytest.raises(ValueError, match="MNIST digit classifier"):
        run_evaluator(spec, _context(0, name="fashion_mnist"))
