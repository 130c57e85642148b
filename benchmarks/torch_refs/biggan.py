"""A PyTorch reference of gan_jax's BigGAN and of its train step, for like-for-like speed comparisons (benchmarks only).

Nothing in gan_jax imports this module; torch is a benchmark-only dependency (requirements-bench.txt).

The networks are those of gan_jax/models/biggan.py, layer for layer (the same parameter tensors, named as gan_jax
names them, so weights copy over by name; benchmarks/torch_refs/check_biggan.py checks outputs, losses, gradients and
updates against gan_jax):

G: shared class embedding (nn.Embedding, no SN) -> with `hier`, z split into num_blocks + 1 chunks: the first through
   an SN Linear to a 4x4 map (gan_jax's NHWC order of its output units), block i conditioned on concat(shared(y),
   chunk i+1); GBlocks ccbn-ReLU-upsample-SNconv3x3-ccbn-ReLU-SNconv3x3 plus SNconv1x1-upsample shortcut (the 1x1 conv
   before the nearest upsampling, as gan_jax: they commute); SAGAN attention after the block at `g_attn`;
   BN-ReLU-SNconv3x3-tanh.
D: DBlocks (ReLU-)SNconv3x3-ReLU-SNconv3x3(-avgpool), shortcut (avgpool-)SNconv1x1 when the block downsamples or
   changes width; attention after the block whose output has resolution `d_attn`; ReLU, global sum pooling, SN
   Linear -> 1 plus the projection <SN Embedding(y), h>.

Every SN layer runs one power-iteration step per training forward with its u kept as a buffer; BN momentum 0.1
(Flax's 0.9), eps `bn_eps`; SN eps `sn_eps`. The train step (n_critic D steps on slices of the real batch, D on
concat(real, fake) in one call, hinge loss, the G step with the orthogonal penalty on every G weight but the shared
embedding, Adam, EMA of G's params and state, the metrics) is benchmarks/torch_refs/conditional_common.py's
`ConditionalStep`; its docstring lists what is not reproduced.

Initialisation (only used when no gan_jax weights are loaded; benchmarks/step_speed.py always loads gan_jax's): the
config's `init` for the layers gan_jax gives it, LeCun normal for the ccbn linears and attention convolutions, biases 0.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.torch_refs.conditional_common import (
    BatchNorm,
    ConditionalStep,
    LinearConditionalBN,
    SNConv2d,
    SNEmbedding,
    SNLinear,
    TrainSettings,
    common_reference_problem,
    load_gan_jax_params,
    load_gan_jax_state,
    to_map,
    upsample,
)

__all__ = ["BigGANStep", "Step", "load_gan_jax_params", "load_gan_jax_state", "reference_problem"]

BOTTOM_WIDTH = 4
# gan_jax/models/biggan.py's _G_ARCH and _D_ARCH (BigGAN-PyTorch's G_arch / D_arch).
_G_ARCH = {
    32: ((4, 4, 4), (4, 4, 4)),
    64: ((16, 16, 8, 4), (16, 8, 4, 2)),
    128: ((16, 16, 8, 4, 2), (16, 8, 4, 2, 1)),
    256: ((16, 16, 8, 8, 4, 2), (16, 8, 8, 4, 2, 1)),
}
_D_ARCH = {
    32: ((4, 4, 4, 4), (True, True, False, False)),
    64: ((1, 2, 4, 8, 16), (True,) * 4 + (False,)),
    128: ((1, 2, 4, 8, 16, 16), (True,) * 5 + (False,)),
    256: ((1, 2, 4, 8, 8, 16, 16), (True,) * 6 + (False,)),
}


def reference_problem(config: Any) -> str | None:
    """Why `BigGANStep` cannot reproduce the train step of the BigGAN config `config`, or None when it can."""
    problem = common_reference_problem(config, "biggan")
    if problem:
        return problem
    if config.data.resolution not in _G_ARCH:
        return f"BigGAN has architectures for {sorted(_G_ARCH)} pixels, not {config.data.resolution}"
    return None


def g_arch(ch: int, resolution: int) -> list[tuple[int, int, int]]:
    """G's blocks as (in channels, out channels, output resolution)."""
    ins, outs = _G_ARCH[resolution]
    return [(ch * i, ch * o, BOTTOM_WIDTH * 2 ** (k + 1)) for k, (i, o) in enumerate(zip(ins, outs))]


def d_arch(ch: int, resolution: int, in_channels: int) -> list[tuple[int, int, bool, int]]:
    """D's blocks as (in channels, out channels, downsample, output resolution)."""
    outs, downs = _D_ARCH[resolution]
    blocks, cin, res = [], in_channels, resolution
    for o, down in zip(outs, downs):
        res = res // 2 if down else res
        blocks.append((cin, ch * o, down, res))
        cin = ch * o
    return blocks


class SelfAttention(nn.Module):
    """x + gamma * o(softmax(theta(x)^T phi(x)) g(x)) with SN 1x1 convs without bias, phi and g 2x2 max-pooled
    (BigGAN-PyTorch's layers.Attention; gan_jax/layers/attention.py). Positions are flattened row-major, as there."""

    def __init__(self, ch: int, sn_eps: float):
        super().__init__()
        self.ch = ch
        self.theta = SNConv2d(ch, ch // 8, 1, bias=False, sn_eps=sn_eps)
        self.phi = SNConv2d(ch, ch // 8, 1, bias=False, sn_eps=sn_eps)
        self.g = SNConv2d(ch, ch // 2, 1, bias=False, sn_eps=sn_eps)
        self.o = SNConv2d(ch // 2, ch, 1, bias=False, sn_eps=sn_eps)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        theta = self.theta(x).reshape(n, c // 8, h * w)
        phi = F.max_pool2d(self.phi(x), 2).reshape(n, c // 8, h * w // 4)
        g = F.max_pool2d(self.g(x), 2).reshape(n, c // 2, h * w // 4)
        beta = F.softmax(torch.bmm(theta.transpose(1, 2), phi), dim=-1)  # (n, hw, hw/4)
        o = self.o(torch.bmm(g, beta.transpose(1, 2)).reshape(n, c // 2, h, w))
        return x + self.gamma * o


class GBlock(nn.Module):
    def __init__(self, cin: int, cout: int, cond_dim: int, bn_eps: float, sn_eps: float):
        super().__init__()
        self.bn1 = LinearConditionalBN(cin, cond_dim, bn_eps, sn_eps)
        self.conv1 = SNConv2d(cin, cout, 3, padding=1, sn_eps=sn_eps)
        self.bn2 = LinearConditionalBN(cout, cond_dim, bn_eps, sn_eps)
        self.conv2 = SNConv2d(cout, cout, 3, padding=1, sn_eps=sn_eps)
        self.shortcut = SNConv2d(cin, cout, 1, sn_eps=sn_eps)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(upsample(F.relu(self.bn1(x, cond), inplace=True)))
        h = self.conv2(F.relu(self.bn2(h, cond), inplace=True))
        return h + upsample(self.shortcut(x))


class Generator(nn.Module):
    def __init__(
        self,
        out_shape: tuple[int, int, int],
        num_classes: int,
        z_dim: int,
        ch: int,
        shared_dim: int,
        hier: bool,
        attn: int,
        bn_eps: float,
        sn_eps: float,
    ):
        super().__init__()
        height, _, channels = out_shape
        blocks = g_arch(ch, height)
        self.hier = hier
        self.channels_last = False  # set by the step: the memory format of the 4x4 map after the linear layer
        slots = len(blocks) + 1 if hier else 1
        self.chunk = z_dim // slots
        if self.chunk * slots != z_dim:
            raise ValueError(f"z_dim {z_dim} does not split into {slots} equal chunks")
        cond_dim = shared_dim + (self.chunk if hier else 0)
        self.first = blocks[0][0]
        self.shared = nn.Embedding(num_classes, shared_dim)
        self.linear = SNLinear(self.chunk, BOTTOM_WIDTH * BOTTOM_WIDTH * self.first, sn_eps=sn_eps)
        self.num_blocks = len(blocks)
        self.attn_after = -1
        for i, (cin, cout, res) in enumerate(blocks):
            self.add_module(f"block{i}", GBlock(cin, cout, cond_dim, bn_eps, sn_eps))
            if res == attn:
                self.add_module(f"attn{i}", SelfAttention(cout, sn_eps))
                self.attn_after = i
        last = blocks[-1][1]
        self.bn_out = BatchNorm(last, bn_eps)
        self.conv_out = SNConv2d(last, channels, 3, padding=1, sn_eps=sn_eps)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        y = self.shared(labels)
        if self.hier:
            zs = torch.split(z, self.chunk, dim=1)
            z, conds = zs[0], [torch.cat([y, zc], dim=1) for zc in zs[1:]]
        else:
            conds = [y] * self.num_blocks
        h = to_map(self.linear(z), BOTTOM_WIDTH, self.first, self.channels_last)
        for i in range(self.num_blocks):
            h = getattr(self, f"block{i}")(h, conds[i])
            if i == self.attn_after:
                h = getattr(self, f"attn{i}")(h)
        h = F.relu(self.bn_out(h), inplace=True)
        return torch.tanh(self.conv_out(h))


class DBlock(nn.Module):
    def __init__(self, cin: int, cout: int, downsample: bool, preactivation: bool, sn_eps: float):
        super().__init__()
        self.downsample, self.preactivation = downsample, preactivation
        self.conv1 = SNConv2d(cin, cout, 3, padding=1, sn_eps=sn_eps)  # "wide" D: hidden channels = out channels
        self.conv2 = SNConv2d(cout, cout, 3, padding=1, sn_eps=sn_eps)
        self.shortcut = SNConv2d(cin, cout, 1, sn_eps=sn_eps) if downsample or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x) if self.preactivation else x
        h = self.conv2(F.relu(self.conv1(h), inplace=True))
        if self.downsample:
            h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)  # the shortcut pooled before its 1x1 conv, as gan_jax
        if self.shortcut is not None:
            x = self.shortcut(x)
        return h + x


class Discriminator(nn.Module):
    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, ch: int, attn: int, sn_eps: float):
        super().__init__()
        height, _, channels = in_shape
        blocks = d_arch(ch, height, channels)
        self.num_blocks = len(blocks)
        self.attn_after: set[int] = set()
        for i, (cin, cout, down, res) in enumerate(blocks):
            self.add_module(f"block{i}", DBlock(cin, cout, down, i > 0, sn_eps))
            if res == attn:
                self.add_module(f"attn{i}", SelfAttention(cout, sn_eps))
                self.attn_after.add(i)
        last = blocks[-1][1]
        self.linear = SNLinear(last, 1, sn_eps=sn_eps)
        self.embed = SNEmbedding(num_classes, last, sn_eps=sn_eps)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = x
        for i in range(self.num_blocks):
            h = getattr(self, f"block{i}")(h)
            if i in self.attn_after:
                h = getattr(self, f"attn{i}")(h)
        h = F.relu(h).sum(dim=(2, 3))  # global sum pooling
        return self.linear(h)[:, 0] + (self.embed(labels) * h).sum(dim=1)


def _init_weights(G: Generator, D: Discriminator, init: str) -> None:
    """The config's `init` for the layers gan_jax gives it, LeCun normal for ccbn linears and attention, biases 0."""

    def chosen(w: torch.Tensor) -> None:
        if init == "ortho":
            nn.init.orthogonal_(w)
        elif init == "N02":
            nn.init.normal_(w, 0.0, 0.02)
        else:
            nn.init.xavier_uniform_(w)

    for model in (G, D):
        lecun = set()
        for m in model.modules():
            if isinstance(m, (LinearConditionalBN, SelfAttention)):
                lecun |= {id(p) for p in m.parameters()}
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
                if id(m.weight) in lecun:
                    fan_in = m.weight[0].numel()
                    nn.init.trunc_normal_(m.weight, 0.0, 1.0 / fan_in**0.5 / 0.87962566103423978)
                else:
                    chosen(m.weight)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)


class BigGANStep(ConditionalStep):
    """ConditionalStep with BigGAN's networks; see conditional_common.ConditionalStep for `step`."""

    @classmethod
    def from_config(
        cls,
        config: Any,
        data_shape: tuple[int, int, int],
        *,
        channels_last: bool = False,
        compile: bool = False,
        optimizer_impl: str = "fused",
    ) -> BigGANStep:
        """The reference of a gan_jax BigGAN config (an ml_collections ConfigDict) for data of NHWC `data_shape`."""
        problem = reference_problem(config)
        if problem:
            raise ValueError(problem)
        m = config.model
        shape = tuple(int(d) for d in data_shape)
        if len(shape) != 3 or shape[0] != shape[1] or shape[0] not in _G_ARCH:
            raise ValueError(f"BigGAN needs square images of {sorted(_G_ARCH)} pixels, got {shape}")
        torch.manual_seed(config.seed)
        G = Generator(shape, m.num_classes, m.z_dim, m.g_ch, m.shared_dim, m.hier, m.g_attn, m.bn_eps, m.sn_eps)
        D = Discriminator(shape, m.num_classes, m.d_ch, m.d_attn, m.sn_eps)
        _init_weights(G, D, m.init)
        settings = TrainSettings.from_config(config)
        return cls(G, D, settings, channels_last=channels_last, compile=compile, optimizer_impl=optimizer_impl)


Step = BigGANStep  # the name benchmarks/step_speed.py looks up in every reference module
