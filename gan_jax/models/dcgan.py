"""DCGAN (Radford, Metz & Chintala 2016) at 32x32 or 64x64.

G: z as a 1x1 map -> 4x4 transposed conv -> stride-2 transposed convs halving the channels -> tanh image.
D: the mirror image with stride-2 convs, LeakyReLU(0.2), no batch norm on its first layer, a 4x4 valid conv to one
logit. `width` is the channel count next to the image (128 in the paper's 32x32 CIFAR models: G 512-256-128).
`minibatch_std` > 0 appends a minibatch standard deviation channel (group size `minibatch_std`, Karras et al. 2018)
before D's last conv, against mode collapse; 0 (the default) leaves D as in the paper.
Weights are drawn from N(0, 0.02) and batch-norm scales from N(1, 0.02), as in the paper's reference code.
The convolutions are gan_jax's layers, which take a fast formulation on CPU with the same parameters.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.layers import Conv2D, ConvTranspose2D, MinibatchStd
from gan_jax.layers.normalization import BatchNorm

_init = nn.initializers.normal(0.02)


def _bn_scale_init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def _bn(h: jax.Array, train: bool) -> jax.Array:
    # gan_jax's BatchNorm (not flax's): it sows its batch moments, so sampling can use standing statistics.
    return BatchNorm(momentum=0.9, eps=1e-5, scale_init=_bn_scale_init, fast_variance=True, store_input_cotangent=True)(
        h, train
    )


def _num_upsamplings(resolution: int) -> int:
    n = int(math.log2(resolution)) - 2
    if resolution not in (16, 32, 64, 128) or 2 ** (n + 2) != resolution:
        raise ValueError(f"DCGAN supports resolutions 16, 32, 64 and 128, not {resolution}")
    return n


class DCGANGenerator(nn.Module):
    out_shape: tuple[int, int, int]
    width: int = 128

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
        height, _, channels = self.out_shape
        n_up = _num_upsamplings(height)
        ch = self.width * 2 ** (n_up - 1)
        h = z.reshape(z.shape[0], 1, 1, z.shape[-1])
        h = ConvTranspose2D(ch, 4, stride=1, padding=0, use_bias=False, kernel_init=_init)(h)  # 1x1 -> 4x4
        h = nn.relu(_bn(h, train))
        for _ in range(n_up - 1):
            ch //= 2
            h = ConvTranspose2D(ch, 4, stride=2, padding=1, use_bias=False, kernel_init=_init)(h)
            h = nn.relu(_bn(h, train))
        h = ConvTranspose2D(channels, 4, stride=2, padding=1, kernel_init=_init)(h)
        return jnp.tanh(h)


class DCGANDiscriminator(nn.Module):
    width: int = 128
    minibatch_std: int = 0  # group size of the minibatch std channel before the last conv; 0 = none

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        n_down = _num_upsamplings(x.shape[1])
        ch = self.width
        h = Conv2D(ch, 4, stride=2, padding=1, kernel_init=_init)(x)
        h = nn.leaky_relu(h, 0.2)
        for _ in range(n_down - 1):
            ch *= 2
            h = Conv2D(ch, 4, stride=2, padding=1, use_bias=False, kernel_init=_init)(h)
            h = nn.leaky_relu(_bn(h, train), 0.2)
        if self.minibatch_std > 0:
            h = MinibatchStd(self.minibatch_std)(h)
        h = Conv2D(1, 4, stride=1, padding=0, kernel_init=_init)(h)  # 4x4 -> 1x1
        return h.reshape(x.shape[0])


def build(
    data_shape: tuple[int, ...], *, g_width: int = 128, d_width: int = 128, d_minibatch_std: int = 0
) -> tuple[nn.Module, nn.Module]:
    if len(data_shape) != 3 or data_shape[0] != data_shape[1]:
        raise ValueError(f"DCGAN needs square images (H, W, C), got data of shape {tuple(data_shape)}")
    if d_minibatch_std < 0:
        raise ValueError(f"d_minibatch_std is a group size (0 = off), not {d_minibatch_std}")
    _num_upsamplings(data_shape[0])
    return DCGANGenerator(tuple(data_shape), g_width), DCGANDiscriminator(d_width, d_minibatch_std)
