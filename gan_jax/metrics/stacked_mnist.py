"""Mode coverage on Stacked MNIST (the VEEGAN / PacGAN protocol).

A Stacked MNIST image holds three MNIST digits as its R, G and B channels, so the data has 10^3 = 1,000 modes. The
protocol (Srivastava et al. 2017, VEEGAN; Lin et al. 2018, PacGAN, Table 2) draws 26,000 samples from the generator,
labels each channel with a pretrained MNIST classifier, takes the mode 100 * digit(R) + 10 * digit(G) + digit(B), and
reports:

- the number of modes: distinct modes among the samples (any mode hit by at least one sample counts);
- the KL divergence KL(q || p) from the samples' empirical distribution q over the 1,000 modes to the uniform
  distribution p of the real data (0 when every mode gets exactly 1/1000 of the samples; log(1000) ~ 6.91 when all
  samples share one mode).

gan_jax adds `channel_kl`, the sum over R, G and B of the KL from each channel's digit frequencies to uniform. Since the
uniform distribution over modes is the product of uniform digits, the KL splits exactly into `channel_kl` (digits made
too often or too rarely, in any channel) plus the channels' dependence (the total correlation, >= 0), which tells a
generator that favours some digits from one that pairs digits unevenly. Both parts carry sampling noise: 26,000 uniform
draws give a KL of about 999 / 52,000 = 0.019, of which about 27 / 52,000 = 0.0005 in `channel_kl`.

The classifier is gan_jax's own (`gan_jax.metrics.classifier.mnist_classifier`, trained once on the real MNIST
training set and cached), since the papers' classifiers are not distributed; its test accuracy is reported with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from gan_jax.metrics.classifier import MnistClassifier

NUM_MODES = 1000
PROTOCOL_NUM_SAMPLES = 26_000  # the papers' sample count; the functions here take any number


def mode_histogram_stats(labels_rgb: np.ndarray) -> dict[str, float]:
    """Modes and KL to uniform from per-channel digit labels (N, 3), columns R, G, B, values 0..9.

    Pure arithmetic, separate from the classifier, so the protocol's numbers can be checked on known label sets.
    """
    labels = np.asarray(labels_rgb)
    if labels.ndim != 2 or labels.shape[1] != 3:
        raise ValueError(f"labels_rgb must have shape (N, 3), got {labels.shape}")
    if len(labels) == 0:
        raise ValueError("labels_rgb is empty: the mode statistics need at least one sample")
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"digit labels must lie in 0..9, got values in [{labels.min()}, {labels.max()}]")
    modes = labels.astype(np.int64) @ np.array([100, 10, 1], np.int64)
    q = np.bincount(modes, minlength=NUM_MODES) / len(modes)
    return {
        "modes": int(np.count_nonzero(q)),
        "num_modes": NUM_MODES,
        "kl_to_uniform": _kl_to_uniform(q),
        "channel_kl": sum(_kl_to_uniform(q_c) for q_c in digit_frequencies(labels)),
        "num_samples": int(len(modes)),
    }


def digit_frequencies(labels_rgb: np.ndarray) -> np.ndarray:
    """(3, 10): each channel's share of every digit among (N, 3) labels (rows R, G, B; each row sums to 1)."""
    labels = np.asarray(labels_rgb)
    return np.stack([np.bincount(labels[:, c], minlength=10) / len(labels) for c in range(3)])


def _kl_to_uniform(q: np.ndarray) -> float:
    """KL(q || uniform) of a probability vector q, with 0 log 0 = 0."""
    seen = q > 0
    return float(np.sum(q[seen] * np.log(q[seen] * len(q))))


def stacked_mnist_labels(images: np.ndarray, classifier: MnistClassifier | None = None) -> np.ndarray:
    """(N, 3) int32 digit labels of the R, G and B channels of (N, H, W, 3) images.

    Each channel follows the classifier's input rule: uint8 0..255 or float in [-1, 1], 28x28 or 32x32 (centre-cropped).
    """
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"Stacked MNIST images must have shape (N, H, W, 3), got {x.shape}")
    if classifier is None:
        from gan_jax.metrics.classifier import mnist_classifier

        classifier = mnist_classifier()
    return np.stack([classifier.predict(x[..., c]) for c in range(3)], axis=1)


def stacked_mnist_modes(images: np.ndarray, classifier: MnistClassifier | None = None) -> dict[str, float]:
    """{"modes", "num_modes": 1000, "kl_to_uniform", "num_samples"} of (N, H, W, 3) Stacked MNIST images.

    `classifier` defaults to the cached `mnist_classifier()` (trained once when there is no cache). The papers use
    N = 26,000 (`PROTOCOL_NUM_SAMPLES`); with fewer samples fewer modes can be seen and the KL grows.
    """
    return mode_histogram_stats(stacked_mnist_labels(images, classifier))
