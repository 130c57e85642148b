"""Neural-network layers shared by gan_jax's models."""

from gan_jax.layers.attention import SelfAttention
from gan_jax.layers.conv import (
    Conv2D,
    ConvTranspose2D,
    conv2d,
    conv_impl,
    conv_transpose2d,
    get_conv_impl,
    resolve_conv_impl,
    set_conv_impl,
)
from gan_jax.layers.minibatch_std import MinibatchStd, minibatch_std
from gan_jax.layers.normalization import BatchNorm, ConditionalBatchNorm, standing_statistics
from gan_jax.layers.spectral import SpectralNorm, spectral_normalize

__all__ = [
    "BatchNorm",
    "ConditionalBatchNorm",
    "Conv2D",
    "ConvTranspose2D",
    "MinibatchStd",
    "SelfAttention",
    "SpectralNorm",
    "conv2d",
    "conv_impl",
    "conv_transpose2d",
    "get_conv_impl",
    "minibatch_std",
    "resolve_conv_impl",
    "set_conv_impl",
    "spectral_normalize",
    "standing_statistics",
]
