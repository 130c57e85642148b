"""Sample-quality metrics. They read samples, never training internals."""

from gan_jax.metrics.modes import mode_coverage

__all__ = ["mode_coverage"]
