"""gan_jax.metrics.stacked_mnist: the mode and KL arithmetic on known label sets, and the metric on real images.

The real-image tests use the cached MNIST classifier (trained once on a fresh machine, about 1.5 minutes on two cores).

Run: .venv/bin/python -m pytest tests/metrics/test_stacked_mnist.py -q
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from gan_jax.data import Dataset, get_dataset
from gan_jax.metrics.classifier import MnistClassifier, mnist_classifier
from gan_jax.metrics.stacked_mnist import (
    PROTOCOL_NUM_SAMPLES,
    mode_histogram_stats,
    stacked_mnist_labels,
    stacked_mnist_modes,
)

ALL_TRIPLETS = np.array(list(itertools.product(range(10), repeat=3)))  # (1000, 3), mode i at row i


# ------------------------------------------------------------------------------------------------ the arithmetic


def test_every_mode_equally_often_gives_1000_modes_and_zero_kl() -> None:
    for copies in (1, 26):
        stats = mode_histogram_stats(np.tile(ALL_TRIPLETS, (copies, 1)))
        assert stats["modes"] == 1000 and stats["num_modes"] == 1000
        assert stats["num_samples"] == 1000 * copies
        assert abs(stats["kl_to_uniform"]) < 1e-12 and abs(stats["channel_kl"]) < 1e-12


def test_a_single_mode_gives_kl_log_1000() -> None:
    stats = mode_histogram_stats(np.tile([[4, 0, 7]], (500, 1)))
    log1000 = pytest.approx(math.log(1000))
    assert stats == {"modes": 1, "num_modes": 1000, "kl_to_uniform": log1000, "channel_kl": log1000, "num_samples": 500}


def test_mixed_case_by_hand() -> None:
    # Modes 123 (twice), 321, 999: q = (1/2, 1/4, 1/4); the channel order matters (123 != 321).
    labels = [[1, 2, 3], [3, 2, 1], [1, 2, 3], [9, 9, 9]]
    stats = mode_histogram_stats(np.array(labels))
    expected_kl = 0.5 * math.log(0.5 * 1000) + 2 * 0.25 * math.log(0.25 * 1000)  # = log(1000) - 1.5 log 2
    assert stats["modes"] == 3 and stats["num_samples"] == 4
    assert stats["kl_to_uniform"] == pytest.approx(expected_kl, rel=1e-12)
    assert stats["kl_to_uniform"] == pytest.approx(math.log(1000) - 1.5 * math.log(2), rel=1e-12)
    # Digits per channel: R and B (1/2, 1/4, 1/4), G (3/4, 1/4); what the channel KLs leave is their dependence.
    r_or_b = math.log(10) - 1.5 * math.log(2)
    g = math.log(10) + 0.75 * math.log(0.75) + 0.25 * math.log(0.25)
    assert stats["channel_kl"] == pytest.approx(2 * r_or_b + g, rel=1e-12)
    dependence = 0.5 * math.log(0.5 / (0.5 * 0.75 * 0.5)) + 0.25 * math.log(0.25 / (0.25 * 0.75 * 0.25))
    dependence += 0.25 * math.log(0.25 / 0.25**3)  # modes 123, 321 and 999 against their channels' products
    assert stats["kl_to_uniform"] - stats["channel_kl"] == pytest.approx(dependence, rel=1e-12)
    # Half the modes, each once: KL = log(1000 / 500).
    half = mode_histogram_stats(ALL_TRIPLETS[::2])
    assert half["modes"] == 500 and half["kl_to_uniform"] == pytest.approx(math.log(2), rel=1e-12)


@pytest.mark.parametrize(
    "bad", [np.zeros((5, 2), int), np.zeros((0, 3), int), np.full((2, 3), 10), np.full((2, 3), -1)]
)
def test_bad_labels_are_refused(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="labels"):
        mode_histogram_stats(bad)


# ------------------------------------------------------------------------------------------------- on real images


@pytest.fixture(scope="module")
def clf() -> MnistClassifier:
    return mnist_classifier()


@pytest.fixture(scope="module")
def stacked_test() -> Dataset:
    """The 26,000-image Stacked MNIST test set, padded to 32x32 as the DCGAN configs produce it."""
    return get_dataset({"name": "stacked_mnist", "split": "test", "resolution": 32}, seed=0)


def test_real_stacked_images_cover_almost_every_mode(clf: MnistClassifier, stacked_test: Dataset) -> None:
    assert stacked_test.num_examples == PROTOCOL_NUM_SAMPLES
    batch = stacked_test.get(np.arange(PROTOCOL_NUM_SAMPLES))  # float in [-1, 1], 32x32
    labels = stacked_mnist_labels(batch["x"], clf)
    true = np.stack([batch["label"] // 100, batch["label"] // 10 % 10, batch["label"] % 10], axis=1)
    assert np.mean(labels == true) >= 0.99  # per channel, as accurate as on plain MNIST
    stats = mode_histogram_stats(labels)  # = stacked_mnist_modes(batch["x"], clf), without labelling twice
    truth = mode_histogram_stats(true)
    # 26,000 uniform draws over 1,000 modes miss none in expectation (1000 * exp(-26)); the KL of such a sample is
    # about 999 / (2 * 26000) = 0.019.
    assert truth["modes"] == 1000 and truth["kl_to_uniform"] < 0.03
    assert stats["modes"] >= 995 and stats["kl_to_uniform"] < 0.04
    # MNIST's digits are nearly uniform (1s are 11% of them, 5s 9%): most of the real KL is the modes' sampling noise.
    assert truth["channel_kl"] < 0.01 and stats["channel_kl"] < 0.01
    assert stats["num_samples"] == PROTOCOL_NUM_SAMPLES and stats["num_modes"] == 1000
    # uint8 images at 28x28 give the same labels as the pipeline's float 32x32 ones.
    u8 = np.round((batch["x"][:500, 2:30, 2:30] + 1) * 127.5).astype(np.uint8)
    np.testing.assert_array_equal(stacked_mnist_labels(u8, clf), labels[:500])


def test_one_image_repeated_is_one_mode(clf: MnistClassifier, stacked_test: Dataset) -> None:
    image = stacked_test.get([3])["x"]
    stats = stacked_mnist_modes(np.repeat(image, 300, axis=0), clf)
    assert stats["modes"] == 1 and stats["kl_to_uniform"] == pytest.approx(math.log(1000))


def test_images_must_have_three_channels(clf: MnistClassifier) -> None:
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        stacked_mnist_modes(np.zeros((4, 28, 28, 1), np.uint8), clf)
