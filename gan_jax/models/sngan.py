"""SNGAN's ResNet networks (Miyato et al. 2018) with the projection discriminator (Miyato & Koyama 2018).

Architecture of the CIFAR-10 models (Miyato et al. 2018, appendix B, Table 4; the same networks as
pfnet-research/sngan_projection `gen_models/resnet_32.py` and `dis_models/snresnet_32.py`, whose layers and
initialisation this module follows):

G: z -> Dense(bottom_width^2 * g_ch) -> reshape to (bottom_width, bottom_width, g_ch) -> n_up ResBlock-up
   (BN-ReLU-upsample-conv3x3-BN-ReLU-conv3x3, shortcut upsample-conv1x1; `gen_models/resblocks.py` Block)
   -> BN -> ReLU -> conv3x3 -> tanh. Upsampling is nearest-neighbour 2x (chainer's `unpooling_2d`). With
   `num_classes` > 0 the block BNs are categorical conditional batch norms (per-class gain and bias tables, the
   projection paper's G); the final BN stays unconditional. G has no spectral normalization (SNGAN normalises D only).
D: OptimizedBlock (conv3x3-ReLU-conv3x3-avgpool, shortcut avgpool-conv1x1) -> ResBlock-down -> 2 x ResBlock
   (pre-activation ReLU-conv3x3-ReLU-conv3x3 [-avgpool], shortcut conv1x1 [-avgpool] when the block downsamples or
   changes width, identity otherwise; `dis_models/resblocks.py`) -> ReLU -> global SUM pooling -> SN Dense -> 1
   (no bias, as `snresnet_32.py`'s `l5`), plus the projection <SN Embed(y), h> when `num_classes` > 0. Every D layer
   is spectrally normalised (one power-iteration step per training call). D is this CIFAR network at every
   resolution: its global sum pooling makes it size-agnostic, and it needs H and W divisible by 4.

`arch="imagenet"` gives instead the projection paper's ImageNet networks (pfnet-research/sngan_projection
`gen_models/resnet.py` and `dis_models/snresnet.py`, the 128x128 model of `configs/sn_projection.yml`), whose widths
change with depth: G's Dense gives 16 * g_ch channels and its up blocks have min(16, 2**(n_up-1-i)) * g_ch outputs
(16, 8, 4, 2, 1 times g_ch at 128x128); D's OptimizedBlock has d_ch channels, then one downsampling block per halving
down to 4x4 with 2, 4, 8, 16 (capped at 16) times d_ch, then a block at the last width without pooling, and its
linear output has a bias (`l7`). Blocks and initialisation are the same as the CIFAR ones'.

Initialisation, as sngan_projection (chainer `GlorotUniform(scale)` draws from U(-a, a), a = scale*sqrt(6/(fan_in +
fan_out))): residual-branch convolutions GlorotUniform(sqrt(2)), i.e. variance scaling 2 on the fan average;
shortcut convolutions, G's first Dense and last conv, D's Dense and embedding plain Glorot (Xavier) uniform; biases
0; batch-norm (and conditional-BN) gains 1 and biases 0. Batch norm: decay 0.9, eps 2e-5 (chainer's defaults).

The 1x1 shortcut convolutions run before G's upsampling and after D's average pooling: a 1x1 convolution (bias
included) commutes with both, so the result is the reference's at 1/4 of the cost.

Layout is NHWC; G's Dense output is reshaped to (bottom_width, bottom_width, g_ch), a fixed permutation of chainer's
(g_ch, bottom_width, bottom_width) view that changes nothing but the order of the Dense's output units. All
convolutions are gan_jax.layers.conv's (fast on XLA:CPU).

Variables: G has "params" and "batch_stats" (BN running averages; batch moments are also sown to "moments" in
training); D has "params" and "spectral" (the power-iteration vectors). `train=True` updates the running averages and
the power-iteration vectors (pass them as mutable); `train=False` needs no rng and changes nothing.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.layers.conv import Conv2D
from gan_jax.layers.normalization import BatchNorm, ConditionalBatchNorm
from gan_jax.layers.spectral import SpectralNorm

Array = jax.Array

ARCHS = ("cifar", "imagenet")
_BN_MOMENTUM, _BN_EPS = 0.9, 2e-5  # chainer.links.BatchNormalization's decay and eps (sngan_projection's BNs)
_glorot = nn.initializers.xavier_uniform()
_glorot_sqrt2 = nn.initializers.variance_scaling(2.0, "fan_avg", "uniform")  # GlorotUniform(sqrt(2))


def upsample_nearest(x: Array) -> Array:
    """NHWC -> (N, 2H, 2W, C), every pixel copied to a 2x2 square (nearest-neighbour, chainer's `unpooling_2d`)."""
    n, h, w, c = x.shape
    return jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c)).reshape(n, 2 * h, 2 * w, c)


def avg_pool2(x: Array) -> Array:
    """2x2 average pooling with stride 2 of NHWC x with even H and W (chainer's `average_pooling_2d(x, 2)`)."""
    n, h, w, c = x.shape
    return jnp.mean(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))


def num_upsamplings(resolution: int, bottom_width: int) -> int:
    """k such that resolution = bottom_width * 2**k (k >= 1), else ValueError."""
    if bottom_width < 1 or resolution % bottom_width:
        raise ValueError(f"resolution {resolution} is not a multiple of bottom_width {bottom_width}")
    ratio = resolution // bottom_width
    k = int(math.log2(ratio)) if ratio > 1 else 0
    if ratio < 2 or 2**k != ratio:
        raise ValueError(
            f"resolution {resolution} must be bottom_width ({bottom_width}) times a power of two >= 2, "
            f"e.g. {bottom_width * 8} with 3 up blocks"
        )
    return k


def _check_labels(labels: Array | None, num_classes: int, batch: int) -> Array | None:
    if num_classes == 0:
        return None  # unconditional: labels, if any, are ignored
    if labels is None:
        raise ValueError(f"this network is class-conditional ({num_classes} classes): pass labels")
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},), got {labels.shape}")
    return labels


class _GBlock(nn.Module):
    """BN-ReLU-up-conv3x3-BN-ReLU-conv3x3 plus up-conv1x1 shortcut (sngan_projection `gen_models/resblocks.Block`)."""

    features: int
    num_classes: int = 0

    def _bn(self, x: Array, labels: Array | None, train: bool, name: str) -> Array:
        if self.num_classes > 0:
            return ConditionalBatchNorm(self.num_classes, momentum=_BN_MOMENTUM, eps=_BN_EPS, name=name)(
                x, labels, train
            )
        return BatchNorm(momentum=_BN_MOMENTUM, eps=_BN_EPS, name=name)(x, train)

    @nn.compact
    def __call__(self, x: Array, labels: Array | None, train: bool) -> Array:
        h = nn.relu(self._bn(x, labels, train, "bn1"))
        h = Conv2D(self.features, 3, padding=1, kernel_init=_glorot_sqrt2, name="conv1")(upsample_nearest(h))
        h = nn.relu(self._bn(h, labels, train, "bn2"))
        h = Conv2D(self.features, 3, padding=1, kernel_init=_glorot_sqrt2, name="conv2")(h)
        # Every G block upsamples, so its shortcut is always learnable. The 1x1 conv runs before the upsampling:
        # it commutes with nearest-neighbour copies (bias included), so this is upsample-then-conv at 1/4 the cost.
        return h + upsample_nearest(Conv2D(self.features, 1, kernel_init=_glorot, name="shortcut")(x))


class SNGANGenerator(nn.Module):
    """(z (N, z_dim), labels (N,) int or None, train) -> images (N, H, W, C) in [-1, 1]; see the module docstring."""

    out_shape: tuple[int, int, int]
    num_classes: int = 0
    ch: int = 256
    bottom_width: int = 4
    arch: str = "cifar"

    @nn.compact
    def __call__(self, z: Array, labels: Array | None = None, train: bool = True) -> Array:
        height, _, channels = self.out_shape
        n_up = num_upsamplings(height, self.bottom_width)
        labels = _check_labels(labels, self.num_classes, z.shape[0])
        bw = self.bottom_width
        widths = (
            [self.ch] * n_up if self.arch == "cifar" else [self.ch * min(16, 2 ** (n_up - 1 - i)) for i in range(n_up)]
        )
        first = self.ch if self.arch == "cifar" else 16 * self.ch
        h = nn.Dense(bw * bw * first, kernel_init=_glorot, name="dense")(z.reshape(z.shape[0], -1))
        h = h.reshape(z.shape[0], bw, bw, first)
        for i, width in enumerate(widths):
            h = _GBlock(width, self.num_classes, name=f"block{i + 1}")(h, labels, train)
        h = nn.relu(BatchNorm(momentum=_BN_MOMENTUM, eps=_BN_EPS, name="bn_out")(h, train))
        h = Conv2D(channels, 3, padding=1, kernel_init=_glorot, name="conv_out")(h)
        return jnp.tanh(h)


def _sn_conv(features: int, kernel_size: int, init: nn.initializers.Initializer, name: str, x: Array, train: bool):
    """Spectrally normalised Conv2D ("same" padding): params under `name`, its u under `name`_sn."""
    conv = Conv2D(features, kernel_size, padding=kernel_size // 2, kernel_init=init, name=name)
    return SpectralNorm(conv, name=f"{name}_sn")(x, update_stats=train)


class _OptimizedDBlock(nn.Module):
    """D's first block: conv3x3-ReLU-conv3x3-avgpool, shortcut avgpool-conv1x1 (no ReLU on the image)."""

    features: int

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        h = nn.relu(_sn_conv(self.features, 3, _glorot_sqrt2, "conv1", x, train))
        h = avg_pool2(_sn_conv(self.features, 3, _glorot_sqrt2, "conv2", h, train))
        return h + _sn_conv(self.features, 1, _glorot, "shortcut", avg_pool2(x), train)


class _DBlock(nn.Module):
    """Pre-activation ReLU-conv3x3-ReLU-conv3x3 [-avgpool]; shortcut conv1x1 [-avgpool] if learnable, else identity."""

    features: int
    downsample: bool = False

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        hidden = x.shape[-1]  # sngan_projection's D blocks: hidden_channels = in_channels
        h = _sn_conv(hidden, 3, _glorot_sqrt2, "conv1", nn.relu(x), train)
        h = _sn_conv(self.features, 3, _glorot_sqrt2, "conv2", nn.relu(h), train)
        if self.downsample:
            # Pooling before the 1x1 conv: both are linear per pixel/channel, so they commute (bias included);
            # this equals the reference's conv-then-pool at 1/4 of the cost.
            h, x = avg_pool2(h), avg_pool2(x)
        if self.downsample or x.shape[-1] != self.features:
            x = _sn_conv(self.features, 1, _glorot, "shortcut", x, train)
        return h + x


class SNGANDiscriminator(nn.Module):
    """(x (N, H, W, C), labels (N,) int or None, train) -> logits (N,); see the module docstring."""

    num_classes: int = 0
    ch: int = 128
    arch: str = "cifar"

    def _blocks(self, height: int) -> list[tuple[int, bool]]:
        """(width, downsample) of the blocks after the OptimizedBlock, for images of `height` pixels."""
        if self.arch == "cifar":
            return [(self.ch, True), (self.ch, False), (self.ch, False)]
        n_down = int(math.log2(height // 4))  # halvings to a 4x4 map; the OptimizedBlock makes the first
        widths = [self.ch * min(16, 2**j) for j in range(1, n_down)]
        return [(w, True) for w in widths] + [(widths[-1] if widths else self.ch, False)]

    @nn.compact
    def __call__(self, x: Array, labels: Array | None = None, train: bool = True) -> Array:
        if x.ndim != 4 or x.shape[1] % 4 or x.shape[2] % 4:
            raise ValueError(f"SNGAN's discriminator needs NHWC images with H and W divisible by 4, got {x.shape}")
        labels = _check_labels(labels, self.num_classes, x.shape[0])
        h = _OptimizedDBlock(self.ch, name="block1")(x, train)
        for i, (width, down) in enumerate(self._blocks(x.shape[1]), start=2):
            h = _DBlock(width, downsample=down, name=f"block{i}")(h, train)
        h = jnp.sum(nn.relu(h), axis=(1, 2))  # global sum pooling
        # snresnet_32's `l5` has no bias, snresnet's (ImageNet) `l7` has one.
        linear = nn.Dense(1, use_bias=self.arch == "imagenet", kernel_init=_glorot, name="linear")
        out = SpectralNorm(linear, name="linear_sn")(h, update_stats=train)[:, 0]
        if labels is not None:
            embed = nn.Embed(self.num_classes, h.shape[-1], embedding_init=_glorot, name="embed")
            out = out + jnp.sum(SpectralNorm(embed, name="embed_sn")(labels, update_stats=train) * h, axis=-1)
        return out


def build(
    data_shape: tuple[int, ...],
    *,
    num_classes: int = 0,
    g_ch: int = 256,
    d_ch: int = 128,
    bottom_width: int = 4,
    arch: str = "cifar",
) -> tuple[nn.Module, nn.Module]:
    """(SNGANGenerator, SNGANDiscriminator) for square (H, H, C) images, H = bottom_width * 2**k, k >= 1.

    Defaults are the paper's CIFAR-10 widths (G 256, D 128, 4x4 bottom: three up blocks for 32x32).
    `num_classes` > 0 makes both networks class-conditional (conditional BN in G, projection in D).
    `arch`: "cifar" (the same width in every block) or "imagenet" (the projection paper's widening ImageNet
    networks; D's blocks halve the image down to 4x4, so H must be 4 * 2**k).
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}, not {arch!r}")
    if len(data_shape) != 3 or data_shape[0] != data_shape[1]:
        raise ValueError(f"SNGAN needs square images (H, W, C), got data of shape {tuple(data_shape)}")
    height, _, channels = data_shape
    if channels < 1:
        raise ValueError(f"SNGAN needs at least one image channel, got data of shape {tuple(data_shape)}")
    num_upsamplings(height, bottom_width)
    if height % 4:
        raise ValueError(f"SNGAN's discriminator pools twice by 2: the resolution must be divisible by 4, not {height}")
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0 (0 = unconditional), got {num_classes}")
    if g_ch < 1 or d_ch < 1:
        raise ValueError(f"g_ch and d_ch must be positive, got {g_ch} and {d_ch}")
    if arch == "imagenet" and (height < 8 or 2 ** int(math.log2(height // 4)) * 4 != height):
        raise ValueError(f"the imagenet arch's discriminator halves the image to 4x4: H must be 4 * 2**k, not {height}")
    generator = SNGANGenerator(tuple(data_shape), num_classes, g_ch, bottom_width, arch)
    return generator, SNGANDiscriminator(num_classes, d_ch, arch)
