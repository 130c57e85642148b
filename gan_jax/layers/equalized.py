"""Equalized-learning-rate layers and StyleGAN2's modulated convolution.

Equalized learning rate (Karras et al. 2018): parameters are stored with unit variance and scaled by He's constant
1/sqrt(fan_in) at run time, so Adam, which normalises update sizes per parameter, moves every layer at the same
relative speed whatever its fan-in. `lr_mul` additionally slows a layer down (StyleGAN's mapping network uses 0.01):
weights are stored divided by it and multiplied back at run time, so their effective learning rate is lr * lr_mul.

The modulated convolution (Karras et al. 2020, eq. 1-3) scales the kernel's input channels by a per-sample style s,
then divides each output channel by the norm of its modulated kernel ("demodulation"), which keeps activations at
unit scale without instance normalisation (and so without its droplet artifacts). It is computed in the form the
official code uses when not fusing: scale the input by s, run one ordinary convolution shared by the whole batch,
scale the output by the demodulation coefficients. This is the same math as a per-sample kernel, and on a CPU it is
far faster than a grouped convolution with a kernel per sample.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.layers.conv import conv2d, conv_transpose2d
from gan_jax.layers.resample import blur2d, blur2d_cropped, downsample2d

Array = jax.Array
SQRT2 = math.sqrt(2.0)


def lrelu_gain(x: Array) -> Array:
    """LeakyReLU(0.2) times sqrt(2), StyleGAN's activation: the gain keeps the signal's magnitude through the layer."""
    return nn.leaky_relu(x, 0.2) * SQRT2


def _maybe_clamp(x: Array, clamp: float | None) -> Array:
    return x if clamp is None else jnp.clip(x, -clamp, clamp)


class EqualizedDense(nn.Module):
    """y = x @ (W * lr_mul / sqrt(fan_in)) + b * lr_mul, with W ~ N(0, 1) / lr_mul stored; optional lrelu."""

    features: int
    lr_mul: float = 1.0
    bias_init: float = 0.0
    activation: bool = False
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        fan_in = x.shape[-1]
        init = lambda key, shape: jax.random.normal(key, shape) / self.lr_mul  # noqa: E731
        w = self.param("kernel", init, (fan_in, self.features))
        y = x @ (w * (self.lr_mul / math.sqrt(fan_in))).astype(x.dtype)
        if self.use_bias:
            b = self.param(
                "bias", lambda key, shape: jnp.full(shape, self.bias_init / self.lr_mul, jnp.float32), (self.features,)
            )
            y = y + (b * self.lr_mul).astype(x.dtype)
        return lrelu_gain(y) if self.activation else y


class EqualizedConv(nn.Module):
    """A square convolution with equalized learning rate; `down=2` gives StyleGAN2's filtered downsampling
    (blur, then stride-2 taps). Optional lrelu with gain, a linear `gain`, a clamp, and a compute dtype."""

    features: int
    kernel_size: int = 3
    down: int = 1
    use_bias: bool = True
    activation: bool = True
    gain: float = 1.0
    clamp: float | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k, fan_in = self.kernel_size, x.shape[-1] * self.kernel_size**2
        w = self.param("kernel", nn.initializers.normal(1.0), (k, k, x.shape[-1], self.features))
        w = (w / math.sqrt(fan_in)).astype(self.dtype)
        x = x.astype(self.dtype)
        if self.down == 2 and k == 1:
            y = conv2d(downsample2d(x), w)
        elif self.down == 2:
            y = conv2d(blur2d(x), w, stride=2, padding=k // 2)
        else:
            y = conv2d(x, w, padding=k // 2)
        y = y.astype(jnp.float32)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,))
        if self.activation:
            y = lrelu_gain(y)
        return _maybe_clamp(y * self.gain, self.clamp)


def upsample_conv(x: Array, kernel: Array) -> Array:
    """StyleGAN2's upsampling convolution: a stride-2 transposed convolution with the flipped kernel, then the
    [1, 3, 3, 1] blur with gain 4, as the official conv2d_resample(up=2) does. Away from the border it equals
    conv2d(upsample2d(x), kernel, padding=k // 2) exactly (the two filters commute); at the outermost pixel it sees the
    filtered image continue past the edge instead of zero padding. It does a quarter of the multiplies, since the
    transposed convolution never multiplies the inserted zeros."""
    h, w = x.shape[1], x.shape[2]
    k = kernel.shape[0]
    y = conv_transpose2d(x, kernel[::-1, ::-1], stride=2, padding=k // 2 - 1)
    return blur2d_cropped(y, 2 * h, 2 * w, gain=4.0)


def demodulation(weight: Array, styles: Array, eps: float = 1e-8) -> Array:
    """(N, out): 1 / ||W_modulated|| per sample and output channel, for HWIO `weight` and (N, in) `styles`.

    sum over (kh, kw, in) of (W[kh, kw, in, out] * s[n, in])^2 = (s^2) @ sum_{kh, kw} W^2.
    """
    return jax.lax.rsqrt(jnp.square(styles) @ jnp.sum(jnp.square(weight), axis=(0, 1)) + eps)


class ModulatedConv(nn.Module):
    """StyleGAN2's modulated (and, unless `demodulate=False`, demodulated) square convolution; `up=2` first
    upsamples the input with the [1, 3, 3, 1] filter. Takes (x, styles) with styles (N, in_channels)."""

    features: int
    kernel_size: int = 3
    demodulate: bool = True
    up: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, styles: Array) -> Array:
        k, cin = self.kernel_size, x.shape[-1]
        w = self.param("kernel", nn.initializers.normal(1.0), (k, k, cin, self.features))
        w = w / math.sqrt(cin * k * k)
        x = (x * styles[:, None, None, :].astype(x.dtype)).astype(self.dtype)
        if self.up == 2:
            y = upsample_conv(x, w.astype(self.dtype)).astype(jnp.float32)
        else:
            y = conv2d(x, w.astype(self.dtype), padding=k // 2).astype(jnp.float32)
        if self.demodulate:
            y = y * demodulation(w, styles)[:, None, None, :]
        return y
