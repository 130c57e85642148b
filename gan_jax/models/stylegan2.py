"""StyleGAN2 (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN") in Flax.

Generator = mapping network (z, label) -> w, then a synthesis network w -> image:
- Mapping: z normalised to unit second moment, an embedded one-hot label concatenated (class conditioning), then
  `mapping_layers` equalized dense layers with learning-rate multiplier 0.01. The mean w is tracked in the `stats`
  collection (`w_avg`, decay 0.995, updated only in training) for the truncation trick: w' = w_avg + psi (w - w_avg).
  w is broadcast to `num_ws` copies, one per layer, so style mixing can give layers different ws.
- Synthesis ("skip" architecture): a learned 4x4 constant, then per resolution two modulated 3x3 convolutions (the
  first upsampling by 2 with the [1, 3, 3, 1] filter), each followed by scaled per-pixel noise, bias and lrelu; a
  1x1 modulated (not demodulated) toRGB at every resolution whose outputs are upsampled and summed.
- Noise: "random" (fresh per call, the `noise` rng stream; training), "const" (a fixed draw per layer; the default
  for generation, as in the official generate.py) or "none".

Discriminator ("resnet", or "orig" for the ADA paper's CIFAR-10 setting): fromRGB, then per resolution a 3x3 conv
and a filtered stride-2 3x3 conv, with a filtered 1x1 residual skip scaled by sqrt(1/2); at 4x4 the minibatch
standard deviation, a 3x3 conv and two dense layers. Class conditioning is the projection discriminator of
StyleGAN2-ADA: the last layer emits a `cmap_dim` vector that is dotted with a mapping network's embedding of the label.

Channels at resolution r are min(channel_base // r, channel_max) (the official fmaps rule). `num_bf16_res` runs the
convolutions of that many of the highest resolutions in bfloat16 (StyleGAN2-ADA's mixed precision, with bfloat16,
which needs no loss scaling), and `conv_clamp` clamps their activations, as the official code does with fp16.

Differences from the official code, all deliberate: the resampling filters are exact shifted sums instead of
upfirdn2d with padding (gan_jax/layers/resample.py; the same filter, borders zero-padded); "const" noise is drawn
from a fixed key per layer instead of a buffer saved with the weights.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.layers.equalized import EqualizedConv, EqualizedDense, ModulatedConv, lrelu_gain
from gan_jax.layers.minibatch_std import minibatch_std
from gan_jax.layers.resample import upsample2d

Array = jax.Array
NOISE_MODES = ("random", "const", "none")
_CONST_NOISE_SEED = 0x5EED


def normalize_2nd_moment(x: Array, eps: float = 1e-8) -> Array:
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)


def num_ws(resolution: int) -> int:
    """How many ws the synthesis network of `resolution` consumes: two per resolution from 8 up, two at 4x4."""
    return 2 * int(math.log2(resolution)) - 2


def channels(resolution: int, channel_base: int, channel_max: int) -> int:
    return min(channel_base // resolution, channel_max)


def _dtype(resolution: int, top_resolution: int, num_bf16_res: int):
    """bfloat16 for the `num_bf16_res` highest resolutions, float32 below."""
    return (
        jnp.bfloat16 if resolution >= top_resolution >> max(num_bf16_res - 1, 0) and num_bf16_res > 0 else jnp.float32
    )


class MappingNetwork(nn.Module):
    """(z, labels) -> w (N, w_dim), or (N, num_ws, w_dim) when `num_ws` is set; see the module docstring."""

    w_dim: int
    num_classes: int = 0
    num_layers: int = 8
    lr_mul: float = 0.01
    num_ws: int | None = None
    w_avg_beta: float | None = 0.995

    @nn.compact
    def __call__(
        self,
        z: Array | None,
        labels: Array | None = None,
        train: bool = False,
        truncation_psi: float | Array = 1.0,
        truncation_cutoff: int | None = None,
    ) -> Array:
        parts = []
        if z is not None:
            parts.append(normalize_2nd_moment(z.astype(jnp.float32)))
        if self.num_classes:
            if labels is None:
                raise ValueError(f"this network is class-conditional ({self.num_classes} classes): pass labels")
            onehot = jax.nn.one_hot(labels, self.num_classes)
            parts.append(normalize_2nd_moment(EqualizedDense(self.w_dim, name="embed")(onehot)))
        x = jnp.concatenate(parts, axis=-1)
        for i in range(self.num_layers):
            x = EqualizedDense(self.w_dim, lr_mul=self.lr_mul, activation=True, name=f"fc{i}")(x)
        if self.w_avg_beta is not None:
            w_avg = self.variable("stats", "w_avg", jnp.zeros, (self.w_dim,))
            if train and not self.is_initializing():
                batch_mean = jnp.mean(jax.lax.stop_gradient(x), axis=0)
                w_avg.value = batch_mean + self.w_avg_beta * (w_avg.value - batch_mean)
        if self.num_ws is not None:
            x = jnp.broadcast_to(x[:, None, :], (x.shape[0], self.num_ws, self.w_dim))
            if self.w_avg_beta is not None:
                cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
                layer = jnp.arange(self.num_ws)[None, :, None]
                truncated = w_avg.value + truncation_psi * (x - w_avg.value)
                x = jnp.where(layer < cutoff, truncated, x)
        return x


class SynthesisLayer(nn.Module):
    features: int
    up: int = 1
    noise_index: int = 0  # this layer's place in the network, which fixes its "const" noise
    clamp: float | None = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, w: Array, noise_mode: str) -> Array:
        styles = EqualizedDense(x.shape[-1], bias_init=1.0, name="affine")(w)
        x = ModulatedConv(self.features, 3, up=self.up, dtype=self.dtype)(x, styles)
        n, h, wd, _ = x.shape
        strength = self.param("noise_strength", nn.initializers.zeros_init(), ())
        if noise_mode == "random":
            x = x + strength * jax.random.normal(self.make_rng("noise"), (n, h, wd, 1))
        elif noise_mode == "const":
            key = jax.random.fold_in(jax.random.PRNGKey(_CONST_NOISE_SEED), self.noise_index)
            x = x + strength * jax.random.normal(key, (1, h, wd, 1))
        x = lrelu_gain(x + self.param("bias", nn.initializers.zeros_init(), (self.features,)))
        return x if self.clamp is None else jnp.clip(x, -self.clamp, self.clamp)


class ToRGB(nn.Module):
    features: int
    clamp: float | None = None

    @nn.compact
    def __call__(self, x: Array, w: Array) -> Array:
        styles = EqualizedDense(x.shape[-1], bias_init=1.0, name="affine")(w)
        y = ModulatedConv(self.features, 1, demodulate=False)(x, styles)
        y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return y if self.clamp is None else jnp.clip(y, -self.clamp, self.clamp)


class SynthesisNetwork(nn.Module):
    """ws (N, num_ws, w_dim) -> NHWC images of `out_shape`, in about [-1, 1] (no final tanh, as in StyleGAN2)."""

    out_shape: tuple[int, int, int]
    channel_base: int
    channel_max: int
    num_bf16_res: int = 0
    conv_clamp: float | None = None

    @nn.compact
    def __call__(self, ws: Array, noise_mode: str = "const") -> Array:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        top, _, img_channels = self.out_shape
        ch = lambda r: channels(r, self.channel_base, self.channel_max)  # noqa: E731
        x, img, w_idx, noise_idx = None, None, 0, 0
        res = 4
        while res <= top:
            dtype = _dtype(res, top, self.num_bf16_res)
            clamp = self.conv_clamp if dtype == jnp.bfloat16 else None
            if res == 4:
                const = self.param("const", nn.initializers.normal(1.0), (4, 4, ch(4)))
                x = jnp.broadcast_to(const, (ws.shape[0], 4, 4, ch(4)))
            else:
                x = SynthesisLayer(
                    ch(res), up=2, noise_index=noise_idx, clamp=clamp, dtype=dtype, name=f"b{res}_conv0"
                )(x, ws[:, w_idx], noise_mode)
                w_idx, noise_idx = w_idx + 1, noise_idx + 1
            x = SynthesisLayer(ch(res), noise_index=noise_idx, clamp=clamp, dtype=dtype, name=f"b{res}_conv1")(
                x, ws[:, w_idx], noise_mode
            )
            w_idx, noise_idx = w_idx + 1, noise_idx + 1
            # toRGB shares its w with the next block's first convolution, as in the official code.
            y = ToRGB(img_channels, clamp=clamp, name=f"b{res}_torgb")(x, ws[:, w_idx])
            img = y if img is None else upsample2d(img) + y
            res *= 2
        return img


class StyleGAN2Generator(nn.Module):
    """z (N, z_dim) [and labels (N,)] -> images; `map` and `synthesize` expose the two halves for the tools."""

    out_shape: tuple[int, int, int]
    w_dim: int = 512
    num_classes: int = 0
    mapping_layers: int = 8
    mapping_lr_mul: float = 0.01
    channel_base: int = 16384
    channel_max: int = 512
    num_bf16_res: int = 0
    conv_clamp: float | None = None

    def setup(self) -> None:
        self.mapping = MappingNetwork(
            self.w_dim, self.num_classes, self.mapping_layers, self.mapping_lr_mul, num_ws(self.out_shape[0])
        )
        self.synthesis = SynthesisNetwork(
            self.out_shape, self.channel_base, self.channel_max, self.num_bf16_res, self.conv_clamp
        )

    def map(
        self,
        z: Array,
        labels: Array | None = None,
        train: bool = False,
        truncation_psi: float | Array = 1.0,
        truncation_cutoff: int | None = None,
    ) -> Array:
        return self.mapping(z, labels, train, truncation_psi, truncation_cutoff)

    def synthesize(self, ws: Array, noise_mode: str = "const") -> Array:
        return self.synthesis(ws, noise_mode)

    def __call__(
        self,
        z: Array,
        labels: Array | None = None,
        train: bool = False,
        truncation_psi: float | Array = 1.0,
        noise_mode: str | None = None,
    ) -> Array:
        ws = self.map(z, labels, train, truncation_psi)
        return self.synthesize(ws, noise_mode or ("random" if train else "const"))


class StyleGAN2Discriminator(nn.Module):
    """NHWC images [and labels (N,)] -> logits (N,); see the module docstring."""

    num_classes: int = 0
    channel_base: int = 16384
    channel_max: int = 512
    architecture: str = "resnet"
    mbstd_group: int = 4
    mbstd_features: int = 1
    cmap_dim: int = 0  # the projection's width; 0 = the 4x4 channel count, as in the official code
    mapping_layers: int = 8
    num_bf16_res: int = 0
    conv_clamp: float | None = None

    @nn.compact
    def __call__(self, x: Array, labels: Array | None = None, train: bool = False) -> Array:
        del train  # no batch statistics or dropout; the argument keeps the trainer's calling convention
        top = x.shape[1]
        ch = lambda r: channels(r, self.channel_base, self.channel_max)  # noqa: E731
        half = math.sqrt(0.5)
        res = top
        dtype = _dtype(res, top, self.num_bf16_res)
        h = EqualizedConv(ch(top), 1, dtype=dtype, name="fromrgb")(x)
        while res > 4:
            dtype = _dtype(res, top, self.num_bf16_res)
            clamp = self.conv_clamp if dtype == jnp.bfloat16 else None
            resnet = self.architecture == "resnet"
            if resnet:
                skip = EqualizedConv(
                    ch(res // 2),
                    1,
                    down=2,
                    use_bias=False,
                    activation=False,
                    gain=half,
                    dtype=dtype,
                    name=f"b{res}_skip",
                )(h)
            h = EqualizedConv(ch(res), 3, clamp=clamp, dtype=dtype, name=f"b{res}_conv0")(h)
            h = EqualizedConv(
                ch(res // 2), 3, down=2, gain=half if resnet else 1.0, clamp=clamp, dtype=dtype, name=f"b{res}_conv1"
            )(h)
            if resnet:
                h = skip + h
            res //= 2
        if self.mbstd_group > 0:
            h = minibatch_std(h, self.mbstd_group, self.mbstd_features)
        h = EqualizedConv(ch(4), 3, name="b4_conv")(h)
        h = EqualizedDense(ch(4), activation=True, name="b4_fc")(h.reshape(h.shape[0], -1))
        cmap_dim = self.cmap_dim or ch(4)
        out = EqualizedDense(cmap_dim if self.num_classes else 1, name="b4_out")(h)
        if not self.num_classes:
            return out[:, 0]
        if labels is None:
            raise ValueError(f"this discriminator is class-conditional ({self.num_classes} classes): pass labels")
        cmap = MappingNetwork(cmap_dim, self.num_classes, self.mapping_layers, w_avg_beta=None, name="mapping")(
            None, labels
        )
        return jnp.sum(out * cmap, axis=-1) / math.sqrt(cmap_dim)


def build(
    data_shape: tuple[int, ...],
    *,
    w_dim: int = 512,
    num_classes: int = 0,
    mapping_layers: int = 8,
    mapping_lr_mul: float = 0.01,
    channel_base: int = 16384,
    channel_max: int = 512,
    d_architecture: str = "resnet",
    d_mbstd_group: int = 4,
    d_mbstd_features: int = 1,
    d_cmap_dim: int = 0,
    d_mapping_layers: int = 8,
    num_bf16_res: int = 0,
    conv_clamp: float = 0.0,
) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator) for square power-of-two images of 8 to 1024 pixels."""
    if len(data_shape) != 3 or data_shape[0] != data_shape[1]:
        raise ValueError(f"StyleGAN2 needs square images (H, W, C), got data of shape {tuple(data_shape)}")
    res = data_shape[0]
    if res < 8 or res > 1024 or res & (res - 1):
        raise ValueError(f"StyleGAN2 needs a power-of-two resolution from 8 to 1024, got {res}")
    if d_architecture not in ("resnet", "orig"):
        raise ValueError(f"d_architecture must be 'resnet' or 'orig', not {d_architecture!r}")
    for name, value in (("w_dim", w_dim), ("channel_base", channel_base), ("channel_max", channel_max)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if channels(res, channel_base, channel_max) < 1:
        raise ValueError(f"channel_base {channel_base} gives no channels at {res}x{res}: raise it to at least {res}")
    if num_classes < 0 or mapping_layers < 1 or d_mbstd_group < 0 or num_bf16_res < 0:
        raise ValueError("num_classes, d_mbstd_group and num_bf16_res must be >= 0 and mapping_layers >= 1")
    clamp = conv_clamp or None
    generator = StyleGAN2Generator(
        tuple(data_shape), w_dim, num_classes, mapping_layers, mapping_lr_mul, channel_base, channel_max,
        num_bf16_res, clamp,
    )  # fmt: skip
    discriminator = StyleGAN2Discriminator(
        num_classes, channel_base, channel_max, d_architecture, d_mbstd_group, d_mbstd_features, d_cmap_dim,
        d_mapping_layers, num_bf16_res, clamp,
    )  # fmt: skip
    return generator, discriminator
