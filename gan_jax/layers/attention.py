"""SAGAN's self-attention block (Zhang et al. 2019) in the form BigGAN uses (BigGAN-PyTorch `layers.Attention`).

Why: convolutions only relate nearby pixels, so a GAN built from them struggles with structure spanning the image
(legs of one animal, symmetric faces). The block lets every position attend to every other one, at one resolution.
The attention output enters through a learned scalar `gamma` initialised to 0, so the block starts as the identity
and the network leans on non-local evidence only as training finds it useful.

BigGAN's version keeps the cost down: keys (phi) and values (g) are 2x2 max-pooled, the queries/keys have C/8
channels and the values C/2, and all four 1x1 convolutions have no bias.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.layers.conv import Conv2D
from gan_jax.layers.spectral import SpectralNorm

Array = jax.Array

__all__ = ["SelfAttention"]


def _max_pool2(x: Array) -> Array:
    """2x2 max-pool with stride 2 (F.max_pool2d(x, [2, 2])) of NHWC x with even H and W."""
    n, h, w, c = x.shape
    return jnp.max(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))


class SelfAttention(nn.Module):
    """x + gamma * o(softmax(theta(x) phi(x)^T) g(x)) for NHWC x with C channels (C divisible by 8, H and W even).

    theta: 1x1 conv to C/8; phi: 1x1 conv to C/8, then 2x2 max-pool; g: 1x1 conv to C/2, then 2x2 max-pool. Every
    position's query attends over the H*W/4 pooled positions: beta = softmax over them of theta . phi, then o is a
    1x1 conv from C/2 back to C of beta @ g. Positions are flattened row-major, as torch's view of NCHW does.

    Params: {"theta", "phi", "g", "o"}: {"kernel": (1, 1, in, out)} (no biases) and the scalar "gamma" (init 0). With
    `spectral` the four convolutions are wrapped in `SpectralNorm` named "theta_sn", ... whose u vectors live in the
    "spectral" collection and advance when `train`.
    """

    spectral: bool = True
    sn_steps: int = 1
    sn_eps: float = 1e-12

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        n, h, w, c = x.shape
        if c % 8 or h % 2 or w % 2:
            raise ValueError(f"SelfAttention needs channels divisible by 8 and even height and width, got {x.shape}")

        def conv(features: int, name: str, inputs: Array) -> Array:
            layer = Conv2D(features, 1, use_bias=False, name=name)
            if not self.spectral:
                return layer(inputs)
            sn = SpectralNorm(layer, n_steps=self.sn_steps, eps=self.sn_eps, name=f"{name}_sn")
            return sn(inputs, update_stats=train)

        theta = conv(c // 8, "theta", x).reshape(n, h * w, c // 8)
        phi = _max_pool2(conv(c // 8, "phi", x)).reshape(n, h * w // 4, c // 8)
        g = _max_pool2(conv(c // 2, "g", x)).reshape(n, h * w // 4, c // 2)
        beta = jax.nn.softmax(jnp.einsum("nqc,nkc->nqk", theta, phi), axis=-1)
        o = conv(c, "o", jnp.einsum("nqk,nkc->nqc", beta, g).reshape(n, h, w, c // 2))
        gamma = self.param("gamma", nn.initializers.zeros_init(), (), jnp.float32)
        return x + gamma.astype(o.dtype) * o
