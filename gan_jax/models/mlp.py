"""Goodfellow et al. (2014) fully connected GAN: ReLU generator, maxout discriminator.

Used for the 2014 paper's MNIST model and for the 2-D mixture-of-Gaussians protocol of PacGAN/VEEGAN, whose networks
are the same shape with other widths (400-unit ReLU generator, 200-unit maxout(5) discriminator). `d_minibatch_std`
> 0 appends a minibatch standard deviation feature (Karras et al. 2018) before D's last layer; 0 (default) does not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.layers import MinibatchStd
from gan_jax.layers.normalization import BatchNorm


class MLPGenerator(nn.Module):
    """z -> hidden ReLU layers (optionally batch-normalised) -> an example of `out_shape`."""

    out_shape: tuple[int, ...]
    hidden: Sequence[int] = (1200, 1200)
    batch_norm: bool = False
    output: str = "tanh"  # "tanh" for images in [-1, 1], "linear" for points

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
        h = z
        for width in self.hidden:
            # No bias before batch norm: BN subtracts it again, so its gradient is rounding noise that Adam would
            # blow up into lr-sized random steps (PacGAN's generator has none either).
            h = nn.Dense(width, use_bias=not self.batch_norm)(h)
            if self.batch_norm:  # gan_jax's BatchNorm sows its moments, for standing statistics
                h = BatchNorm(momentum=0.9, eps=1e-5, fast_variance=True)(h, train)
            h = nn.relu(h)
        x = nn.Dense(math.prod(self.out_shape))(h)
        if self.output == "tanh":
            x = jnp.tanh(x)
        return x.reshape((z.shape[0],) + tuple(self.out_shape))


class MLPDiscriminator(nn.Module):
    """x -> maxout layers (Goodfellow et al. 2013) with optional dropout -> one logit per example."""

    hidden: Sequence[int] = (240, 240)
    pieces: int = 5
    dropout: float = 0.0
    minibatch_std: int = 0  # group size of the minibatch std feature before the last layer; 0 = none

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        h = x.reshape(x.shape[0], -1)
        for width in self.hidden:
            h = nn.Dense(width * self.pieces)(h)
            h = jnp.max(h.reshape(h.shape[0], width, self.pieces), axis=-1)
            if self.dropout > 0:
                h = nn.Dropout(self.dropout, deterministic=not train)(h)
        if self.minibatch_std > 0:
            h = MinibatchStd(self.minibatch_std)(h)
        return nn.Dense(1)(h)[:, 0]


def build(
    data_shape: tuple[int, ...],
    *,
    g_hidden: Sequence[int] = (1200, 1200),
    g_batch_norm: bool = False,
    d_hidden: Sequence[int] = (240, 240),
    d_pieces: int = 5,
    d_dropout: float = 0.0,
    d_minibatch_std: int = 0,
) -> tuple[nn.Module, nn.Module]:
    if d_minibatch_std < 0:
        raise ValueError(f"d_minibatch_std is a group size (0 = off), not {d_minibatch_std}")
    output = "linear" if len(data_shape) == 1 else "tanh"
    g = MLPGenerator(tuple(data_shape), tuple(g_hidden), g_batch_norm, output)
    d = MLPDiscriminator(tuple(d_hidden), d_pieces, d_dropout, d_minibatch_std)
    return g, d
