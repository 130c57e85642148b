"""BigGAN (Brock, Donahue & Simonyan 2019, "Large Scale GAN Training for High Fidelity Natural Image Synthesis").

The networks of ajbrock/BigGAN-PyTorch `BigGAN.py` (`G_arch`, `D_arch`, `Generator`, `Discriminator`) with the
blocks of its `layers.py` (`GBlock`, `DBlock`, `ccbn`, `Attention`), for 32, 64, 128 and 256 pixels; the paper's
architecture is its appendix B (Table 4 and Figure 15):

G: a class embedding `shared` (nn.Embed, not spectrally normalised: "SN on G's embedding seems to randomly cripple
   G") maps labels to `shared_dim` vectors. With hierarchical latents (`hier`, section 3 and appendix B) z is split
   into num_blocks + 1 equal chunks: the first goes through an SN Dense to a 4x4 map, and block i's conditional batch
   norms get concat(shared(y), chunk i+1); without `hier`, z goes whole to the Dense and every block gets shared(y).
   Blocks (GBlock): CBN-ReLU-upsample-conv3x3-CBN-ReLU-conv3x3, shortcut upsample-conv1x1; CBN gain = 1 + SN
   Linear(cond), bias = SN Linear(cond), both without bias (`ccbn` with `which_linear=SNLinear(bias=False)`).
   Self-attention (SAGAN) after the block at resolution `g_attn`. Output: BatchNorm (unconditional) - ReLU - SN
   conv3x3 - tanh. Every weight of G is spectrally normalised except the shared embedding (BigGAN uses SN in G too).
D: blocks (DBlock, "wide": the first conv goes straight to the output width) ReLU-conv3x3-ReLU-conv3x3-avgpool,
   pre-activation except the first block (no ReLU on the image); shortcut conv1x1 (+ avgpool) when the block
   downsamples or changes width, identity otherwise. Self-attention after every block whose output has resolution
   `d_attn`. Then ReLU, global sum pooling, SN Dense -> 1 plus the projection <SN Embed(y), h> (Miyato & Koyama 2018).

Channel multipliers per resolution (x `g_ch` / `d_ch`), as `G_arch` / `D_arch`:
  G 32: 4,4,4 -> 4,4,4 | 64: 16,16,8,4 -> 16,8,4,2 | 128: 16,16,8,4,2 -> 16,8,4,2,1 | 256: 16,16,8,8,4,2 -> 16,8,8,4,2,1
  D 32: C,4,4,4 -> 4,4,4,4 (down T,T,F,F) | 64: C,1,2,4,8 -> 1,2,4,8,16 | 128: C,1,2,4,8,16 -> 1,2,4,8,16,16 |
    256: C,1,2,4,8,8,16 -> 1,2,4,8,8,16,16 (every D block but the last downsamples above 32x32).
`g_attn` / `d_attn` name a resolution (0 = no attention). As in BigGAN-PyTorch, a resolution at which the arch has
no block gives no attention layer (e.g. the default 64 on 32x32 data; its CIFAR script passes 0 anyway).

Defaults are the paper's 128x128 ImageNet model (ch 96, shared_dim 128, hierarchical z, attention at 64, BN eps 1e-5,
SN eps 1e-6, orthogonal init; its launch script's z_dim is 120 = 6 chunks of 20). Its parameter counts are exactly
BigGAN-PyTorch's (G 70,433,988, D 87,982,370; also asserted by google/compare_gan's `resnet_biggan_test.py`).

Deliberate differences from BigGAN-PyTorch, none changing a parameter shape:
- The 32x32 D's `D_arch` labels all four blocks as resolution 16 although the second one downsamples to 8; here
  `d_attn` refers to the real output resolution of each block (16, 8, 8, 8).
- 1x1 shortcut convolutions run before the nearest upsampling in G, and after the average pooling in D, whatever
  the block: a 1x1 convolution (bias included) commutes with both, so the result is the same at 1/4 of the cost.
- The conditional BNs' linear layers and the attention convolutions keep their gan_jax layers' default init (LeCun
  normal) instead of `init`; they are spectrally normalised, so only the directions of their initial weights count.
  Biases start at 0 (torch's default is uniform in +-1/sqrt(fan_in)). The final (unconditional) BN uses `bn_eps`
  too, where BigGAN-PyTorch's output `bn` keeps its default 1e-5 (the same value at the default `bn_eps`).
- z_dim is not an argument: it is read from z at call time, and with `hier` it must split exactly into
  num_blocks + 1 chunks (BigGAN-PyTorch silently drops the remainder).

Variables: "params"; "batch_stats" (G's BN running averages; batch moments are sown into "moments" in training);
"spectral" (power-iteration vectors, G and D). `train=True` updates batch_stats and spectral (pass them as mutable);
`train=False` needs no rng and changes nothing. The shared embedding is `params["shared"]["embedding"]`, a direct
child of G, so the orthogonal regularizer can leave it out by path. All convolutions are gan_jax.layers.conv's.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.layers.attention import SelfAttention
from gan_jax.layers.conv import Conv2D
from gan_jax.layers.normalization import BatchNorm, ConditionalBatchNorm
from gan_jax.layers.spectral import SpectralNorm
from gan_jax.models.sngan import avg_pool2, upsample_nearest

Array = jax.Array

RESOLUTIONS = (32, 64, 128, 256)
BOTTOM_WIDTH = 4
INITS = ("ortho", "N02", "glorot", "xavier")

# (in multipliers, out multipliers) per resolution: BigGAN-PyTorch's G_arch.
_G_ARCH = {
    32: ((4, 4, 4), (4, 4, 4)),
    64: ((16, 16, 8, 4), (16, 8, 4, 2)),
    128: ((16, 16, 8, 4, 2), (16, 8, 4, 2, 1)),
    256: ((16, 16, 8, 8, 4, 2), (16, 8, 8, 4, 2, 1)),
}
# (out multipliers, downsample flags) per resolution: D_arch (inputs: the image's channels, then the previous out).
_D_ARCH = {
    32: ((4, 4, 4, 4), (True, True, False, False)),
    64: ((1, 2, 4, 8, 16), (True,) * 4 + (False,)),
    128: ((1, 2, 4, 8, 16, 16), (True,) * 5 + (False,)),
    256: ((1, 2, 4, 8, 8, 16, 16), (True,) * 6 + (False,)),
}


def _check_resolution(resolution: int) -> None:
    if resolution not in RESOLUTIONS:
        raise ValueError(f"BigGAN has architectures for {', '.join(map(str, RESOLUTIONS))} pixels, not {resolution}")


def g_arch(ch: int, resolution: int) -> list[tuple[int, int, int]]:
    """G's blocks as (in channels, out channels, output resolution), from BigGAN-PyTorch's `G_arch`."""
    _check_resolution(resolution)
    ins, outs = _G_ARCH[resolution]
    return [(ch * i, ch * o, BOTTOM_WIDTH * 2 ** (k + 1)) for k, (i, o) in enumerate(zip(ins, outs))]


def d_arch(ch: int, resolution: int, in_channels: int = 3) -> list[tuple[int, int, bool, int]]:
    """D's blocks as (in channels, out channels, downsample, output resolution), from `D_arch`."""
    _check_resolution(resolution)
    outs, downs = _D_ARCH[resolution]
    blocks, cin, res = [], in_channels, resolution
    for o, down in zip(outs, downs):
        res = res // 2 if down else res
        blocks.append((cin, ch * o, down, res))
        cin = ch * o
    return blocks


def _initializer(init: str) -> nn.initializers.Initializer:
    """BigGAN-PyTorch's `init_weights` choices for conv, linear and embedding weights."""
    if init == "ortho":
        return nn.initializers.orthogonal()  # torch's orthogonal_ on (out, in*k*k); ours is its transpose
    if init == "N02":
        return nn.initializers.normal(0.02)
    if init in ("glorot", "xavier"):
        return nn.initializers.xavier_uniform()
    raise ValueError(f"init must be one of {', '.join(INITS)}, not {init!r}")


def _check_labels(labels: Array | None, batch: int) -> Array:
    if labels is None:
        raise ValueError("BigGAN is class-conditional: pass labels (N,)")
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},), got {labels.shape}")
    return labels


class _SN(nn.Module):
    """Settings shared by the spectrally normalised layers of a network."""

    sn_eps: float = 1e-6
    weight_init: str = "ortho"  # build's `init` (a Module's `init` is flax's method)

    def conv(self, features: int, kernel_size: int, name: str, x: Array, train: bool) -> Array:
        """SN Conv2D with bias and "same" padding: params under `name`, its power-iteration vector under `name`_sn."""
        init = _initializer(self.weight_init)
        layer = Conv2D(features, kernel_size, padding=kernel_size // 2, kernel_init=init, name=name)
        return SpectralNorm(layer, eps=self.sn_eps, name=f"{name}_sn")(x, update_stats=train)


class _GBlock(_SN):
    """CBN-ReLU-up-conv3x3-CBN-ReLU-conv3x3 plus a conv1x1 shortcut (BigGAN-PyTorch `layers.GBlock`)."""

    features: int = 0
    bn_eps: float = 1e-5

    def _cbn(self, x: Array, cond: Array, train: bool, name: str) -> Array:
        cbn = ConditionalBatchNorm(0, spectral=True, eps=self.bn_eps, sn_eps=self.sn_eps, name=name)
        return cbn(x, cond, train)

    @nn.compact
    def __call__(self, x: Array, cond: Array, train: bool) -> Array:
        h = nn.relu(self._cbn(x, cond, train, "bn1"))
        h = self.conv(self.features, 3, "conv1", upsample_nearest(h), train)
        h = nn.relu(self._cbn(h, cond, train, "bn2"))
        h = self.conv(self.features, 3, "conv2", h, train)
        # Always learnable (every block upsamples); 1x1 conv before the upsampling: the same, 4x cheaper.
        return h + upsample_nearest(self.conv(self.features, 1, "shortcut", x, train))


class BigGANGenerator(_SN):
    """(z (N, z_dim), labels (N,) int, train) -> images (N, H, W, C) in [-1, 1]; see the module docstring."""

    out_shape: tuple[int, int, int] = (128, 128, 3)
    num_classes: int = 1000
    ch: int = 96
    shared_dim: int = 128
    hier: bool = True
    attn: int = 64
    bn_eps: float = 1e-5

    def z_chunks(self, z_dim: int) -> tuple[int, int]:
        """(number of z chunks, chunk size) for a latent of `z_dim`; ValueError if it does not split evenly."""
        num_blocks = len(g_arch(self.ch, self.out_shape[0]))
        if not self.hier:
            return 1, z_dim
        slots = num_blocks + 1
        chunk = z_dim // slots
        if chunk < 1 or chunk * slots != z_dim:
            raise ValueError(
                f"BigGAN's hierarchical z at {self.out_shape[0]}x{self.out_shape[0]} is split into {slots} equal "
                f"chunks (one for the first layer, one per block): z_dim must be a positive multiple of {slots}, "
                f"not {z_dim} (e.g. {slots * max(chunk, 1)} or {slots * (chunk + 1)}), or set hier=False"
            )
        return slots, chunk

    @nn.compact
    def __call__(self, z: Array, labels: Array | None = None, train: bool = True) -> Array:
        height, _, channels = self.out_shape
        blocks = g_arch(self.ch, height)
        if z.ndim != 2:
            raise ValueError(f"z must have shape (N, z_dim), got {z.shape}")
        labels = _check_labels(labels, z.shape[0])
        slots, _ = self.z_chunks(z.shape[-1])
        init = _initializer(self.weight_init)
        y = nn.Embed(self.num_classes, self.shared_dim, embedding_init=init, name="shared")(labels)
        if self.hier:
            zs = jnp.split(z, slots, axis=-1)
            z, conds = zs[0], [jnp.concatenate([y, zc.astype(y.dtype)], axis=-1) for zc in zs[1:]]
        else:
            conds = [y] * len(blocks)
        first = blocks[0][0]
        linear = nn.Dense(BOTTOM_WIDTH * BOTTOM_WIDTH * first, kernel_init=init, name="linear")
        h = SpectralNorm(linear, eps=self.sn_eps, name="linear_sn")(z, update_stats=train)
        h = h.reshape(z.shape[0], BOTTOM_WIDTH, BOTTOM_WIDTH, first)
        for i, ((_, cout, res), cond) in enumerate(zip(blocks, conds)):
            block = _GBlock(
                sn_eps=self.sn_eps, weight_init=self.weight_init, features=cout, bn_eps=self.bn_eps, name=f"block{i}"
            )
            h = block(h, cond, train)
            if res == self.attn:
                h = SelfAttention(spectral=True, sn_eps=self.sn_eps, name=f"attn{i}")(h, train)
        h = nn.relu(BatchNorm(eps=self.bn_eps, name="bn_out")(h, train))
        return jnp.tanh(self.conv(channels, 3, "conv_out", h, train))


class _DBlock(_SN):
    """(ReLU-)conv3x3-ReLU-conv3x3(-avgpool) plus a conv1x1 (+ avgpool) shortcut (BigGAN-PyTorch `layers.DBlock`)."""

    features: int = 0
    downsample: bool = False
    preactivation: bool = True

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        h = nn.relu(x) if self.preactivation else x
        h = self.conv(self.features, 3, "conv1", h, train)  # "wide" D: hidden channels = out channels
        h = self.conv(self.features, 3, "conv2", nn.relu(h), train)
        if self.downsample:
            h, x = avg_pool2(h), avg_pool2(x)  # the shortcut pooled before its 1x1 conv: see the module docstring
        if self.downsample or x.shape[-1] != self.features:
            x = self.conv(self.features, 1, "shortcut", x, train)
        return h + x


class BigGANDiscriminator(_SN):
    """(x (N, H, W, C), labels (N,) int, train) -> logits (N,); see the module docstring."""

    num_classes: int = 1000
    ch: int = 96
    attn: int = 64

    @nn.compact
    def __call__(self, x: Array, labels: Array | None = None, train: bool = True) -> Array:
        if x.ndim != 4 or x.shape[1] != x.shape[2]:
            raise ValueError(f"BigGAN's discriminator needs square NHWC images, got {x.shape}")
        labels = _check_labels(labels, x.shape[0])
        h = x
        for i, (_, cout, down, res) in enumerate(d_arch(self.ch, x.shape[1], x.shape[-1])):
            block = _DBlock(
                sn_eps=self.sn_eps,
                weight_init=self.weight_init,
                features=cout,
                downsample=down,
                preactivation=i > 0,
                name=f"block{i}",
            )
            h = block(h, train)
            if res == self.attn:
                h = SelfAttention(spectral=True, sn_eps=self.sn_eps, name=f"attn{i}")(h, train)
        h = jnp.sum(nn.relu(h), axis=(1, 2))  # global sum pooling
        init = _initializer(self.weight_init)
        linear = nn.Dense(1, kernel_init=init, name="linear")
        out = SpectralNorm(linear, eps=self.sn_eps, name="linear_sn")(h, update_stats=train)[:, 0]
        embed = nn.Embed(self.num_classes, h.shape[-1], embedding_init=init, name="embed")
        w_y = SpectralNorm(embed, eps=self.sn_eps, name="embed_sn")(labels, update_stats=train)
        return out + jnp.sum(w_y * h, axis=-1)


def _check_attn(name: str, attn: int, resolutions: list[int], channels: list[int]) -> None:
    if attn < 0 or (attn and attn & (attn - 1)):
        raise ValueError(f"{name} is a resolution (a power of two) or 0 for no attention, not {attn}")
    for res, ch in zip(resolutions, channels):
        if res == attn and ch % 8:
            raise ValueError(f"{name}={attn}: self-attention needs channels divisible by 8, the block there has {ch}")


def build(
    data_shape: tuple[int, ...],
    *,
    num_classes: int,
    g_ch: int = 96,
    d_ch: int = 96,
    shared_dim: int = 128,
    hier: bool = True,
    g_attn: int = 64,
    d_attn: int = 64,
    bn_eps: float = 1e-5,
    sn_eps: float = 1e-6,
    init: str = "ortho",
) -> tuple[nn.Module, nn.Module]:
    """(BigGANGenerator, BigGANDiscriminator) for square (H, H, C) images, H in 32, 64, 128, 256.

    The defaults are the paper's 128x128 model; `g_attn`/`d_attn` are resolutions (0: no attention). z_dim is the
    trainer's: with `hier` it must be a multiple of the number of G blocks + 1 (4, 5, 6, 7 at 32, 64, 128, 256).
    """
    if len(data_shape) != 3 or data_shape[0] != data_shape[1] or data_shape[2] < 1:
        raise ValueError(f"BigGAN needs square images (H, W, C), got data of shape {tuple(data_shape)}")
    resolution = data_shape[0]
    _check_resolution(resolution)
    if num_classes < 1:
        raise ValueError(f"BigGAN is class-conditional: num_classes must be >= 1, got {num_classes}")
    for name, value in (("g_ch", g_ch), ("d_ch", d_ch), ("shared_dim", shared_dim)):
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}")
    if bn_eps <= 0 or sn_eps <= 0:
        raise ValueError(f"bn_eps and sn_eps must be positive, got {bn_eps} and {sn_eps}")
    _initializer(init)
    g_blocks, d_blocks = g_arch(g_ch, resolution), d_arch(d_ch, resolution, data_shape[2])
    _check_attn("g_attn", g_attn, [b[2] for b in g_blocks], [b[1] for b in g_blocks])
    _check_attn("d_attn", d_attn, [b[3] for b in d_blocks], [b[1] for b in d_blocks])
    generator = BigGANGenerator(
        sn_eps=sn_eps,
        weight_init=init,
        out_shape=tuple(data_shape),
        num_classes=num_classes,
        ch=g_ch,
        shared_dim=shared_dim,
        hier=hier,
        attn=g_attn,
        bn_eps=bn_eps,
    )
    discriminator = BigGANDiscriminator(sn_eps=sn_eps, weight_init=init, num_classes=num_classes, ch=d_ch, attn=d_attn)
    return generator, discriminator
