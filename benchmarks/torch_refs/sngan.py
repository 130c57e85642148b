"""A PyTorch reference of gan_jax's SNGAN (projection discriminator) and of its train step, for like-for-like speed
comparisons (benchmarks only; gan_jax never imports torch).

The networks are those of gan_jax/models/sngan.py, layer for layer (the same parameter tensors under gan_jax's names;
benchmarks/torch_refs/check_sngan.py checks outputs, losses, gradients and updates against gan_jax), for both archs:

G: Linear(z) -> (bottom_width, bottom_width, C) map (gan_jax's NHWC order of the output units) -> ResBlocks
   BN-ReLU-upsample-conv3x3-BN-ReLU-conv3x3 plus conv1x1-upsample shortcut (the 1x1 conv before the nearest upsampling,
   as gan_jax: they commute); the block BNs are categorical conditional BNs (per-class gain and bias tables) when
   `num_classes` > 0; BN-ReLU-conv3x3-tanh. No spectral normalization in G. BN momentum 0.1 (chainer's decay 0.9),
   eps 2e-5.
D: OptimizedBlock SNconv3x3-ReLU-SNconv3x3-avgpool with avgpool-SNconv1x1 shortcut, then pre-activation blocks
   ReLU-SNconv3x3(hidden = in channels)-ReLU-SNconv3x3(-avgpool), shortcut (avgpool-)SNconv1x1 when the block
   downsamples or changes width; ReLU, global sum pooling, SN Linear -> 1 (bias only in the "imagenet" arch) plus the
   projection <SN Embedding(y), h> when class-conditional. Every SN layer runs one power-iteration step per training
   forward (eps 1e-12), its u kept as a buffer.

The train step (n_critic D steps on slices of the real batch, D on concat(real, fake) in one call, the loss, Adam with
the config's lr schedule, EMA of G's params and BN statistics, the metrics) is conditional_common.ConditionalStep;
its docstring lists what is not reproduced. Initialisation as gan_jax's (GlorotUniform(sqrt 2) for residual convs,
Glorot uniform for shortcuts, the dense layers, the last conv and the embedding); only used when no gan_jax weights
are loaded (benchmarks/step_speed.py always loads gan_jax's).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.torch_refs.conditional_common import (
    BatchNorm,
    ClassConditionalBN,
    ConditionalStep,
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

__all__ = ["SNGANStep", "Step", "load_gan_jax_params", "load_gan_jax_state", "reference_problem"]

_BN_EPS = 2e-5  # chainer's BatchNormalization eps (gan_jax's _BN_EPS)


def reference_problem(config: Any) -> str | None:
    """Why `SNGANStep` cannot reproduce the train step of the SNGAN config `config`, or None when it can."""
    problem = common_reference_problem(config, "sngan")
    if problem:
        return problem
    if config.model.get("arch", "cifar") not in ("cifar", "imagenet"):
        return f"unknown arch {config.model.arch!r}"
    return None


def _num_upsamplings(resolution: int, bottom_width: int) -> int:
    ratio = resolution // bottom_width
    k = int(math.log2(ratio)) if ratio > 1 else 0
    if resolution % bottom_width or ratio < 2 or 2**k != ratio:
        raise ValueError(f"resolution {resolution} is not bottom_width {bottom_width} times a power of two >= 2")
    return k


class GBlock(nn.Module):
    def __init__(self, cin: int, cout: int, num_classes: int):
        super().__init__()
        self.conditional = num_classes > 0
        if self.conditional:
            self.bn1: nn.Module = ClassConditionalBN(cin, num_classes, _BN_EPS)
            self.bn2: nn.Module = ClassConditionalBN(cout, num_classes, _BN_EPS)
        else:
            self.bn1, self.bn2 = BatchNorm(cin, _BN_EPS), BatchNorm(cout, _BN_EPS)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.shortcut = nn.Conv2d(cin, cout, 1)

    def _bn(self, bn: nn.Module, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return bn(x, labels) if self.conditional else bn(x)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(upsample(F.relu(self._bn(self.bn1, x, labels), inplace=True)))
        h = self.conv2(F.relu(self._bn(self.bn2, h, labels), inplace=True))
        return h + upsample(self.shortcut(x))


class Generator(nn.Module):
    def __init__(
        self, out_shape: tuple[int, int, int], num_classes: int, z_dim: int, ch: int, bottom_width: int, arch: str
    ):
        super().__init__()
        height, _, channels = out_shape
        n_up = _num_upsamplings(height, bottom_width)
        widths = [ch] * n_up if arch == "cifar" else [ch * min(16, 2 ** (n_up - 1 - i)) for i in range(n_up)]
        self.first = ch if arch == "cifar" else 16 * ch
        self.bottom_width = bottom_width
        self.channels_last = False  # set by the step: the memory format of the map after the dense layer
        self.dense = nn.Linear(z_dim, bottom_width * bottom_width * self.first)
        self.num_blocks = n_up
        cin = self.first
        for i, width in enumerate(widths):
            self.add_module(f"block{i + 1}", GBlock(cin, width, num_classes))
            cin = width
        self.bn_out = BatchNorm(cin, _BN_EPS)
        self.conv_out = nn.Conv2d(cin, channels, 3, padding=1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = to_map(self.dense(z), self.bottom_width, self.first, self.channels_last)
        for i in range(1, self.num_blocks + 1):
            h = getattr(self, f"block{i}")(h, labels)
        h = F.relu(self.bn_out(h), inplace=True)
        return torch.tanh(self.conv_out(h))


class OptimizedDBlock(nn.Module):
    """D's first block: SNconv3x3-ReLU-SNconv3x3-avgpool, shortcut avgpool-SNconv1x1 (no ReLU on the image)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = SNConv2d(cin, cout, 3, padding=1)
        self.conv2 = SNConv2d(cout, cout, 3, padding=1)
        self.shortcut = SNConv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool2d(self.conv2(F.relu(self.conv1(x), inplace=True)), 2)
        return h + self.shortcut(F.avg_pool2d(x, 2))


class DBlock(nn.Module):
    def __init__(self, cin: int, cout: int, downsample: bool):
        super().__init__()
        self.downsample = downsample
        self.conv1 = SNConv2d(cin, cin, 3, padding=1)  # hidden channels = in channels, as sngan_projection
        self.conv2 = SNConv2d(cin, cout, 3, padding=1)
        self.shortcut = SNConv2d(cin, cout, 1) if downsample or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.relu(self.conv1(F.relu(x)), inplace=True))
        if self.downsample:
            h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)  # the shortcut pooled before its 1x1 conv, as gan_jax
        if self.shortcut is not None:
            x = self.shortcut(x)
        return h + x


class Discriminator(nn.Module):
    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, ch: int, arch: str):
        super().__init__()
        height, width, channels = in_shape
        if height % 4 or width % 4:
            raise ValueError(f"SNGAN's discriminator needs H and W divisible by 4, got {in_shape}")
        if arch == "cifar":
            blocks = [(ch, True), (ch, False), (ch, False)]
        else:
            n_down = int(math.log2(height // 4))
            widths = [ch * min(16, 2**j) for j in range(1, n_down)]
            blocks = [(w, True) for w in widths] + [(widths[-1] if widths else ch, False)]
        self.block1 = OptimizedDBlock(channels, ch)
        cin = ch
        for i, (cout, down) in enumerate(blocks, start=2):
            self.add_module(f"block{i}", DBlock(cin, cout, down))
            cin = cout
        self.num_blocks = len(blocks) + 1
        self.linear = SNLinear(cin, 1, bias=arch == "imagenet")  # snresnet_32's l5 has no bias, snresnet's l7 has
        self.embed = SNEmbedding(num_classes, cin) if num_classes > 0 else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = x
        for i in range(1, self.num_blocks + 1):
            h = getattr(self, f"block{i}")(h)
        h = F.relu(h).sum(dim=(2, 3))  # global sum pooling
        out = self.linear(h)[:, 0]
        if self.embed is not None:
            out = out + (self.embed(labels) * h).sum(dim=1)
        return out


def _init_weights(G: Generator, D: Discriminator) -> None:
    """gan_jax's init: GlorotUniform(sqrt 2) for the residual convolutions, Glorot uniform elsewhere, biases 0."""
    for model in (G, D):
        for name, m in model.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear, SNEmbedding)):
                residual = name.endswith(("conv1", "conv2")) and name.startswith("block")
                nn.init.xavier_uniform_(m.weight, gain=math.sqrt(2.0) if residual else 1.0)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)


class SNGANStep(ConditionalStep):
    """ConditionalStep with SNGAN's networks; see conditional_common.ConditionalStep for `step`."""

    @classmethod
    def from_config(
        cls,
        config: Any,
        data_shape: tuple[int, int, int],
        *,
        channels_last: bool = False,
        compile: bool = False,
        optimizer_impl: str = "fused",
    ) -> SNGANStep:
        """The reference of a gan_jax SNGAN config (an ml_collections ConfigDict) for data of NHWC `data_shape`."""
        problem = reference_problem(config)
        if problem:
            raise ValueError(problem)
        m = config.model
        shape = tuple(int(d) for d in data_shape)
        if len(shape) != 3 or shape[0] != shape[1]:
            raise ValueError(f"SNGAN needs square images (H, W, C), got {shape}")
        torch.manual_seed(config.seed)
        classes, arch = m.get("num_classes", 0), m.get("arch", "cifar")
        G = Generator(shape, classes, m.z_dim, m.get("g_ch", 256), m.get("bottom_width", 4), arch)
        D = Discriminator(shape, classes, m.get("d_ch", 128), arch)
        _init_weights(G, D)
        settings = TrainSettings.from_config(config)
        return cls(G, D, settings, channels_last=channels_last, compile=compile, optimizer_impl=optimizer_impl)


Step = SNGANStep  # the name benchmarks/step_speed.py looks up in every reference module
