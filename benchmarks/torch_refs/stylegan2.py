"""A PyTorch reference of gan_jax's StyleGAN2(+ADA) and of its train step, for like-for-like speed comparisons
(benchmarks only; nothing in gan_jax imports this module, and torch is a benchmark-only dependency).

The networks are those of gan_jax/models/stylegan2.py, layer for layer, with the same parameters (the same count and,
up to layout, the same values; `load_gan_jax_params` copies them) and the same math, written the way PyTorch runs it:

* Equalized learning rate: weights are stored as gan_jax stores them (unit variance, divided by `lr_mul`) and scaled
  by lr_mul / sqrt(fan_in) at every call, so Adam sees the same parameters and gradients.
* Mapping: z normalised to unit second moment, `mapping_layers` dense layers with lrelu * sqrt(2); the tracked mean w
  (`w_avg`, decay 0.995) is updated in the G step's forward pass only, as gan_jax keeps it only from G's loss.
* Synthesis ("skip"): the 4x4 constant, two modulated 3x3 convolutions per resolution (the first upsampling), each
  followed by per-pixel noise, bias and lrelu * sqrt(2), and a modulated, non-demodulated 1x1 toRGB per resolution.
  The modulated convolution is gan_jax's non-fused form: scale the input channels by the styles, one ordinary
  convolution shared by the batch, scale the output channels by the demodulation coefficients. The upsampling one is
  a stride-2 transposed convolution with the flipped kernel followed by the [1, 3, 3, 1] blur with gain 4, cropped,
  exactly as gan_jax.layers.equalized.upsample_conv. The skip images are upsampled with the same filter (one depthwise
  stride-2 transposed convolution).
* Discriminator ("resnet"): fromRGB, per resolution a 3x3 conv and a blurred stride-2 3x3 conv with a blurred,
  subsampled 1x1 skip, both scaled by sqrt(1/2); minibatch std, a 3x3 conv and two dense layers at 4x4. The blur and
  the filtered downsampling are depthwise 4x4 convolutions with gan_jax's alignment (gan_jax.layers.resample, whose
  shifted sums are the same filter).

`StyleGAN2Step.step` is one gan_jax train step (gan_jax.train.step.make_train_step with StyleGAN2Game at the phase
`StyleGAN2Game.phase(t)` of its own step counter t):

1. D step: fakes from G (no gradient, random noise, style mixing), both batches augmented by the ADA pipeline with
   the current p (drawn independently for reals and fakes), loss softplus(D(fake)) + softplus(-D(real)); on the
   steps where R1 is due (t % r1_interval == 0) the R1 term 0.5 * gamma * r1_interval * E|dD/dx|^2, taken with
   respect to the un-augmented reals through the augmentation (create_graph=True), is added to the same loss and
   backward pass (the regularizer is joined to the main update, as gan_jax does, not a separate optimizer step).
   Then the ADA statistics: sign(D(real)) accumulated, and every `ada_interval` D steps p moves by
   sign(E[sign] - target) * images / (ada_kimg * 1000), clipped to [0, 1].
2. G step (D's parameters frozen): fakes with style mixing, augmented with the updated p, loss softplus(-D(fake));
   on the steps where path-length regularization is due (t % pl_interval == 0) the term pl_weight * pl_interval *
   mean((|J_w^T y| - a)^2) on batch / pl_batch_shrink fresh latents, y ~ N(0, 1/(H W)), a the running mean moved by
   pl_decay towards the batch's mean length (not detached inside the penalty, stored detached), same backward pass.
3. Adam (fused by default), then G's EMA (parameters and w_avg) with gan_jax's decay: StyleGAN's half-life
   0.5 ** (batch / min(ema_kimg * 1000, t * batch * ema_rampup)) when ema_kimg > 0, else min(decay, (1+t)/(10+t)).
4. The metrics gan_jax reports (as tensors; nothing synchronises): d_loss, d_real, d_fake, r1_penalty, ada_p (the p
   the step used), d_real_sign, d_grad_norm, g_loss, pl_penalty, pl_mean, pl_length, g_grad_norm and both networks'
   parameter global norms.

The ADA pipeline ('bgc' or any subset, gan_jax/objectives/ada.py) draws the same random numbers in the same order
(one uniform block per pipeline, normals by the inverse CDF), composes the blit and geometric transforms into one 3x3
matrix per image and the colour transforms into one 4x4 matrix, and always runs (p is a tensor, as gan_jax's p is
traced): the geometric resampling is one F.affine_grid + F.grid_sample (bilinear, reflection, align_corners=True),
the same bilinear sampling of the reflect-extended image as gan_jax's gather form; images with no transform fired
keep their pixels exactly (torch.where), as in gan_jax.

Every random draw goes through `step.draws` (`TorchDraws`: torch's RNG, so the values differ from gan_jax's threefry
draws but follow the same distributions, one draw per use as in gan_jax); the checker substitutes fixed draws.

Not reproduced, deliberately: gan_jax's guard that keeps the old state when a loss or gradient is not finite (a
select over the whole state in XLA; no "nonfinite" metric); the truncation w_avg + 1 * (w - w_avg) gan_jax applies
in training with psi = 1 (a no-op up to rounding); the w_avg update gan_jax computes in the D step's forward pass and
then discards. Decided on the host instead of in the graph, with the same outcome: whether the ADA adjustment is due
(from the D-step counter) and the EMA decay (in float32, from the step count). With `compile=True` the mapping,
synthesis and D forwards are torch.compile'd, except the passes that need a double backward (D on the reals on R1
steps, the path-length synthesis), which run eagerly: torch.compile does not support double backward.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)
_W_AVG_BETA = 0.995
_GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
_GROUPS = {"b": _GEOMETRIC[:3], "g": _GEOMETRIC[3:], "c": ("brightness", "contrast", "lumaflip", "hue", "saturation")}
# Rows of each pipeline's uniform block (fire decisions, uniforms, normals), as gan_jax's _Draws hands them out.
GEOMETRIC_ROWS = 8 + 6 + 4
COLOR_ROWS = 5 + 2 + 3


def reference_problem(config: Any) -> str | None:
    """Why `StyleGAN2Step` cannot reproduce the train step of the StyleGAN2 config `config`, or None when it can."""
    m, s = config.model, config.get("stylegan")
    if m.name != "stylegan2" or s is None:
        return "the torch reference implements model 'stylegan2' with a config.stylegan section"
    if m.get("num_classes", 0):
        return "the torch reference implements unconditional StyleGAN2 only (no labels, no projection D)"
    if m.get("num_bf16_res", 0):
        return "the torch reference runs float32 only (no bfloat16 layers, hence no conv_clamp)"
    if m.get("d_architecture", "resnet") != "resnet":
        return "the torch reference implements the resnet discriminator only"
    if s.augment not in ("ada", "none") or config.diffaugment:
        return "the torch reference implements ADA or no augmentation (not DiffAugment)"
    if config.loss != "non_saturating" or config.gp_weight or config.n_critic != 1 or config.pack != 1:
        return "the torch reference implements the non-saturating loss with n_critic=1, no gradient penalty, no pack"
    if config.unroll_steps or config.grad_accum != 1 or config.lr_decay != "constant":
        return "the torch reference has no unrolling, gradient accumulation or learning-rate decay"
    if m.z_dist != "normal" or any(config.optim[p].name != "adam" for p in ("g", "d")):
        return "the torch reference uses z ~ N(0, 1) and Adam"
    if s.augment == "ada" and "c" in s.ada_groups and config.data.channels not in (0, 1, 3):
        return "ADA's colour transforms need 1 or 3 channels"
    if config.debug.inject_nan_at_step >= 0:
        return "the torch reference does not inject NaNs"
    return None


# ----------------------------------------------------------------------------------------------------------------------
# Layers.


def lrelu_gain(x: torch.Tensor, gain: float = SQRT2) -> torch.Tensor:
    """LeakyReLU(0.2) times sqrt(2) (times any extra linear gain): StyleGAN's activation keeps the signal's scale."""
    return F.leaky_relu(x, 0.2) * gain


def _blur_filter(channels: int, gain: float = 1.0) -> torch.Tensor:
    """The separable [1, 3, 3, 1] filter (unit gain, times `gain`) as a depthwise (C, 1, 4, 4) conv weight."""
    f = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8.0
    return (torch.outer(f, f) * gain).expand(channels, 1, 4, 4).contiguous()


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=-1, keepdim=True) + eps).rsqrt()


class EqualizedLinear(nn.Module):
    """y = x @ (W * lr_mul / sqrt(fan_in))^T + b * lr_mul, W stored ~ N(0, 1) / lr_mul; optional lrelu * sqrt(2)."""

    def __init__(
        self, in_features: int, out_features: int, lr_mul: float = 1.0, bias_init: float = 0.0, activation: bool = False
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), bias_init / lr_mul))
        self.weight_gain, self.bias_gain = lr_mul / math.sqrt(in_features), lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return lrelu_gain(y) if self.activation else y


class EqualizedConv2d(nn.Module):
    """gan_jax's EqualizedConv: weight / sqrt(fan_in) at run time; `down=2` blurs, then takes stride-2 taps (3x3) or
    every second pixel of the blurred map (1x1); bias, lrelu * sqrt(2) and a linear `gain` after."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        down: int = 1,
        bias: bool = True,
        activation: bool = True,
        gain: float = 1.0,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.kernel_size, self.down, self.in_channels = kernel_size, down, in_channels
        self.activation, self.gain = activation, gain
        if down == 2:
            self.register_buffer("blur", _blur_filter(in_channels), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        k = self.kernel_size
        if self.down == 2 and k == 1:  # gan_jax's downsample2d: the blur at even pixels
            x = F.conv2d(x, self.blur, stride=2, padding=1, groups=self.in_channels)
            y = F.conv2d(x, w, self.bias)
        elif self.down == 2:  # the blur at every pixel (taps -1..+2), then the stride-2 convolution
            x = F.conv2d(F.pad(x, (1, 2, 1, 2)), self.blur, groups=self.in_channels)
            y = F.conv2d(x, w, self.bias, stride=2, padding=k // 2)
        else:
            y = F.conv2d(x, w, self.bias, padding=k // 2)
        if self.activation:
            return lrelu_gain(y, SQRT2 * self.gain)
        return y * self.gain if self.gain != 1.0 else y


def upsample_conv(x: torch.Tensor, weight: torch.Tensor, blur: torch.Tensor) -> torch.Tensor:
    """gan_jax's upsample_conv: a stride-2 transposed convolution with the flipped kernel (`weight` in conv layout
    (out, in, k, k)), then the [1, 3, 3, 1] blur with gain 4 (`blur`, depthwise over the output), cropped to 2x."""
    k = weight.shape[-1]
    y = F.conv_transpose2d(x, weight.transpose(0, 1).flip([2, 3]), stride=2, padding=k // 2 - 1)
    return F.conv2d(y, blur, padding=1, groups=y.shape[1])  # (2H + 1) + 2 - 4 + 1 = 2H: gan_jax's crop


class SynthesisLayer(nn.Module):
    """Modulated, demodulated 3x3 convolution (upsampling with `up=2`), then noise, bias and lrelu * sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, up: int = 1):
        super().__init__()
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels * 9)
        self.up = up
        if up == 2:
            self.register_buffer("blur", _blur_filter(out_channels, 4.0), persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        styles = self.affine(w)
        weight = self.weight * self.weight_gain
        x = x * styles[:, :, None, None]
        x = upsample_conv(x, weight, self.blur) if self.up == 2 else F.conv2d(x, weight, padding=1)
        # Demodulation: 1 / ||W * s|| per sample and output channel = rsqrt(s^2 @ sum_{kh,kw} W^2).
        dcoefs = (styles.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8).rsqrt()
        x = x * dcoefs[:, :, None, None]
        if noise is not None:
            x = x + noise * self.noise_strength
        return lrelu_gain(x + self.bias[None, :, None, None])


class ToRGB(nn.Module):
    """Modulated (not demodulated) 1x1 convolution to the image channels, plus bias."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int):
        super().__init__()
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)
        return F.conv2d(x * styles[:, :, None, None], self.weight * self.weight_gain, self.bias)


def channels(resolution: int, channel_base: int, channel_max: int) -> int:
    return min(channel_base // resolution, channel_max)


class MappingNetwork(nn.Module):
    """z -> w (N, w_dim); `update_w_avg` moves the tracked mean w (a buffer) towards the batch's mean w."""

    def __init__(self, z_dim: int, w_dim: int, num_layers: int, lr_mul: float):
        super().__init__()
        self.num_layers = num_layers
        for i in range(num_layers):
            self.add_module(f"fc{i}", EqualizedLinear(z_dim if i == 0 else w_dim, w_dim, lr_mul, activation=True))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, update_w_avg: bool = False) -> torch.Tensor:
        x = normalize_2nd_moment(z)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, _W_AVG_BETA))
        return x


class SynthesisNetwork(nn.Module):
    """ws (N, num_ws, w_dim) and one noise tensor (or None) per SynthesisLayer -> NCHW images ("skip" architecture)."""

    def __init__(self, out_shape: tuple[int, int, int], w_dim: int, channel_base: int, channel_max: int):
        super().__init__()
        top, _, img_channels = out_shape
        ch = lambda r: channels(r, channel_base, channel_max)
        self.const = nn.Parameter(torch.randn(ch(4), 4, 4))
        self.resolutions = [2**i for i in range(2, int(math.log2(top)) + 1)]
        for res in self.resolutions:
            if res > 4:
                self.add_module(f"b{res}_conv0", SynthesisLayer(ch(res // 2), ch(res), w_dim, up=2))
            self.add_module(f"b{res}_conv1", SynthesisLayer(ch(res), ch(res), w_dim))
            self.add_module(f"b{res}_torgb", ToRGB(ch(res), img_channels, w_dim))
        self.register_buffer("up_filter", _blur_filter(img_channels, 4.0), persistent=False)
        self.num_ws = 2 * len(self.resolutions)
        self.img_channels = img_channels

    def noise_shapes(self, n: int) -> list[tuple[int, int, int, int]]:
        """The (N, 1, H, W) shape of each SynthesisLayer's noise, in gan_jax's noise_index order."""
        out = []
        for res in self.resolutions:
            out += [(n, 1, res, res)] * (1 if res == 4 else 2)
        return out

    def forward(self, ws: torch.Tensor, noises: list[torch.Tensor | None]) -> torch.Tensor:
        x = self.const[None]  # broadcast against the batch by the first modulation
        img, w_idx, noise_idx = None, 0, 0
        for res in self.resolutions:
            if res > 4:
                x = getattr(self, f"b{res}_conv0")(x, ws[:, w_idx], noises[noise_idx])
                w_idx, noise_idx = w_idx + 1, noise_idx + 1
            x = getattr(self, f"b{res}_conv1")(x, ws[:, w_idx], noises[noise_idx])
            w_idx, noise_idx = w_idx + 1, noise_idx + 1
            # toRGB shares its w with the next block's first convolution, as in gan_jax and the official code.
            y = getattr(self, f"b{res}_torgb")(x, ws[:, w_idx])
            if img is None:
                img = y
            else:  # zero insertion + [1, 3, 3, 1] with gain 4: gan_jax's upsample2d
                up = F.conv_transpose2d(img, self.up_filter, stride=2, padding=1, groups=self.img_channels)
                img = up + y
        return img


class Generator(nn.Module):
    def __init__(
        self,
        out_shape: tuple[int, int, int],
        z_dim: int,
        w_dim: int,
        mapping_layers: int,
        mapping_lr_mul: float,
        channel_base: int,
        channel_max: int,
    ):
        super().__init__()
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers, mapping_lr_mul)
        self.synthesis = SynthesisNetwork(out_shape, w_dim, channel_base, channel_max)


def minibatch_std(x: torch.Tensor, group_size: int, num_features: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """gan_jax's minibatch_std for NCHW: sample i is in group i mod (B / G); the group's std over samples, averaged
    over pixels and each feature's channels, appended as `num_features` channels."""
    b, c, h, w = x.shape
    g = min(group_size, b)
    y = x.reshape(g, b // g, num_features, c // num_features, h, w)
    y = y - y.mean(dim=0)
    y = (y.square().mean(dim=0) + eps).sqrt().mean(dim=(2, 3, 4))  # (B / G, num_features)
    y = y.repeat(g, 1).reshape(b, num_features, 1, 1).expand(b, num_features, h, w)
    return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """NCHW images -> logits (N,), gan_jax's resnet StyleGAN2Discriminator (unconditional)."""

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        channel_base: int,
        channel_max: int,
        mbstd_group: int = 4,
        mbstd_features: int = 1,
    ):
        super().__init__()
        top, _, img_channels = in_shape
        ch = lambda r: channels(r, channel_base, channel_max)
        half = math.sqrt(0.5)
        self.fromrgb = EqualizedConv2d(img_channels, ch(top), 1)
        self.resolutions = [top >> i for i in range(int(math.log2(top)) - 2)]  # top, ..., 8
        for res in self.resolutions:
            self.add_module(
                f"b{res}_skip",
                EqualizedConv2d(ch(res), ch(res // 2), 1, down=2, bias=False, activation=False, gain=half),
            )
            self.add_module(f"b{res}_conv0", EqualizedConv2d(ch(res), ch(res), 3))
            self.add_module(f"b{res}_conv1", EqualizedConv2d(ch(res), ch(res // 2), 3, down=2, gain=half))
        self.mbstd_group, self.mbstd_features = mbstd_group, mbstd_features
        extra = mbstd_features if mbstd_group > 0 else 0
        self.b4_conv = EqualizedConv2d(ch(4) + extra, ch(4), 3)
        self.b4_fc = EqualizedLinear(ch(4) * 16, ch(4), activation=True)  # input flattened in NCHW (C, H, W) order
        self.b4_out = EqualizedLinear(ch(4), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fromrgb(x)
        for res in self.resolutions:
            skip = getattr(self, f"b{res}_skip")(h)
            h = getattr(self, f"b{res}_conv1")(getattr(self, f"b{res}_conv0")(h))
            h = skip + h
        if self.mbstd_group > 0:
            h = minibatch_std(h, self.mbstd_group, self.mbstd_features)
        h = self.b4_fc(self.b4_conv(h).flatten(1))
        return self.b4_out(h)[:, 0]


# ----------------------------------------------------------------------------------------------------------------------
# ADA: the 'bgc' pipeline of gan_jax/objectives/ada.py, from the same uniform draws.


def _normals(u: torch.Tensor) -> torch.Tensor:
    """Standard normals by the inverse CDF of uniforms, kept off -1 where erfinv is infinite (as gan_jax's _Draws)."""
    tiny = float(np.nextafter(np.float32(-1.0), np.float32(0.0)))
    return SQRT2 * torch.erfinv((2.0 * u - 1.0).clamp_min(tiny))


def _matrix(rows: list[list[torch.Tensor | float]], batch: int) -> torch.Tensor:
    """(B, n, n) from rows of scalars and (B,) tensors."""
    cols = [torch.stack([torch.as_tensor(e).expand(batch) for e in row], -1) for row in rows]
    return torch.stack(cols, -2)


def _translate2d(tx, ty, b: int) -> torch.Tensor:
    return _matrix([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]], b)


def _scale2d(sx, sy, b: int) -> torch.Tensor:
    return _matrix([[sx, 0.0, 0.0], [0.0, sy, 0.0], [0.0, 0.0, 1.0]], b)


def _rotate2d(cos, sin, b: int) -> torch.Tensor:
    return _matrix([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]], b)


def geometric_matrix(
    u: torch.Tensor, p: torch.Tensor, height: int, width: int, transforms: tuple[str, ...] = _GEOMETRIC
) -> tuple[torch.Tensor, torch.Tensor]:
    """gan_jax's geometric_matrix from its uniform block `u` (GEOMETRIC_ROWS, B): the (B, 3, 3) matrices mapping
    centred output pixel coordinates (column, row) to input ones, and whether any transform fired (B,)."""
    b = u.shape[1]
    fire = dict(zip(("xflip", "rotate90", "xint", "scale", "aniso", "xfrac"), u[:6] < p))
    p_rot = 1.0 - torch.sqrt((1.0 - p).clamp(0.0, 1.0))  # one of the two rotations fires with probability p
    fire_rot = (u[6] < p_rot, u[7] < p_rot)
    coin, quarter, tx, ty = u[8], u[9], u[10] * 2.0 - 1.0, u[11] * 2.0 - 1.0
    thetas = ((u[12] * 2.0 - 1.0) * math.pi, (u[13] * 2.0 - 1.0) * math.pi)
    z_scale, z_aniso, z_x, z_y = _normals(u[14:18])
    g = torch.eye(3).expand(b, 3, 3)
    fired = torch.zeros(b, dtype=torch.bool)
    one = torch.ones(())

    def rotation(i: int) -> None:
        nonlocal g, fired
        theta = torch.where(fire_rot[i], thetas[i], 0.0)
        g = g @ _rotate2d(torch.cos(theta), torch.sin(theta), b)
        fired = fired | fire_rot[i]

    if "xflip" in transforms:
        g = g @ _scale2d(torch.where((coin < 0.5) & fire["xflip"], -one, one), 1.0, b)
        fired = fired | fire["xflip"]
    if "rotate90" in transforms:
        k = torch.where(fire["rotate90"], torch.floor(quarter * 4).long().clamp(0, 3), 0)
        cos, sin = torch.tensor([1.0, 0.0, -1.0, 0.0])[k], torch.tensor([0.0, 1.0, 0.0, -1.0])[k]  # exact quarters
        g = g @ _rotate2d(cos, sin, b)
        fired = fired | fire["rotate90"]
    if "xint" in transforms:
        f = fire["xint"]
        sx = torch.where(f, torch.round(tx * 0.125 * width), 0.0)
        sy = torch.where(f, torch.round(ty * 0.125 * height), 0.0)
        g = g @ _translate2d(-sx, -sy, b)
        fired = fired | f
    if "scale" in transforms:
        s = torch.where(fire["scale"], torch.exp2(z_scale * 0.2), 1.0)
        g = g @ _scale2d(1.0 / s, 1.0 / s, b)
        fired = fired | fire["scale"]
    if "rotate" in transforms:
        rotation(0)
    if "aniso" in transforms:
        s = torch.where(fire["aniso"], torch.exp2(z_aniso * 0.2), 1.0)
        g = g @ _scale2d(1.0 / s, s, b)
        fired = fired | fire["aniso"]
    if "rotate" in transforms:
        rotation(1)
    if "xfrac" in transforms:
        f = fire["xfrac"]
        sx, sy = torch.where(f, z_x * 0.125 * width, 0.0), torch.where(f, z_y * 0.125 * height, 0.0)
        g = g @ _translate2d(-sx, -sy, b)
        fired = fired | f
    return g, fired


def _luma_outer() -> torch.Tensor:
    v = torch.tensor([1.0, 1.0, 1.0, 0.0]) / math.sqrt(3.0)
    return torch.outer(v, v)


def color_matrix(u: torch.Tensor, p: torch.Tensor, num_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """gan_jax's color_matrix from its uniform block `u` (COLOR_ROWS, B): the (B, 4, 4) matrices on (R, G, B, 1) and
    whether any transform fired (B,); hue and saturation are skipped for single-channel images."""
    b = u.shape[1]
    fire = dict(zip(_GROUPS["c"], u[:5] < p))
    coin, theta = u[5], (u[6] * 2.0 - 1.0) * math.pi
    z_brightness, z_contrast, z_saturation = _normals(u[7:10])
    eye, vv = torch.eye(4), _luma_outer()
    bright = torch.where(fire["brightness"], z_brightness * 0.2, 0.0)
    c = _matrix([[1.0, 0.0, 0.0, bright], [0.0, 1.0, 0.0, bright], [0.0, 0.0, 1.0, bright], [0.0, 0.0, 0.0, 1.0]], b)
    fired = fire["brightness"]
    s = torch.where(fire["contrast"], torch.exp2(z_contrast * 0.5), 1.0)
    c = _matrix([[s, 0.0, 0.0, 0.0], [0.0, s, 0.0, 0.0], [0.0, 0.0, s, 0.0], [0.0, 0.0, 0.0, 1.0]], b) @ c
    fired = fired | fire["contrast"]
    flip = ((coin < 0.5) & fire["lumaflip"]).float()
    c = (eye - 2.0 * vv * flip[:, None, None]) @ c  # Householder reflection: negates the luma component
    fired = fired | fire["lumaflip"]
    if num_channels > 1:
        t = torch.where(fire["hue"], theta, 0.0)
        v = 1.0 / math.sqrt(3.0)
        cs, sn = torch.cos(t), torch.sin(t)
        d, o1, o2 = v * v * (1 - cs) + cs, v * v * (1 - cs) - v * sn, v * v * (1 - cs) + v * sn
        c = _matrix([[d, o1, o2, 0.0], [o2, d, o1, 0.0], [o1, o2, d, 0.0], [0.0, 0.0, 0.0, 1.0]], b) @ c
        fired = fired | fire["hue"]
        s = torch.where(fire["saturation"], torch.exp2(z_saturation * 1.0), 1.0)
        chroma = eye - vv
        chroma[3, 3] = 0.0
        c = (eye + chroma * (s - 1.0)[:, None, None]) @ c
        fired = fired | fire["saturation"]
    return c, fired


def apply_geometric(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """out[b] at pixel q = x[b] at g[b] @ q (centred (column, row) pixel coordinates), bilinear with reflection: the
    matrices in F.affine_grid's normalised coordinates (align_corners=True: -1 and 1 are the edge pixels' centres)."""
    _, _, h, w = x.shape
    cx, cy = (w - 1) / 2, (h - 1) / 2
    theta = torch.stack(
        [
            torch.stack([g[:, 0, 0], g[:, 0, 1] * (cy / cx), g[:, 0, 2] / cx], -1),
            torch.stack([g[:, 1, 0] * (cx / cy), g[:, 1, 1], g[:, 1, 2] / cy], -1),
        ],
        -2,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def apply_color(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(B, 4, 4) colour matrices on NCHW images of 3 channels, or 1 channel with the official luma-average rule."""
    if x.shape[1] == 3:
        return torch.einsum("bij,bjhw->bihw", c[:, :3, :3], x) + c[:, :3, 3, None, None]
    avg = c[:, :3, :].mean(dim=1)  # (B, 4)
    return x * avg[:, :3].sum(dim=-1)[:, None, None, None] + avg[:, 3, None, None, None]


def parse_groups(groups: str) -> tuple[tuple[str, ...], bool]:
    """(the blit and geometric transforms of `groups`, whether it has the colour group)."""
    letters = groups.strip()
    for letter in letters:
        if letter not in _GROUPS:
            raise ValueError(f"unknown ADA augmentation group {letter!r}")
    return tuple(t for name in "bg" if name in letters for t in _GROUPS[name]), "c" in letters


def augment(
    x: torch.Tensor, p: torch.Tensor, u_geometric: torch.Tensor | None, u_color: torch.Tensor | None, groups: str
) -> torch.Tensor:
    """gan_jax's ada.augment on NCHW images, from the two uniform blocks it draws (None for a group not in
    `groups`). Always resamples and recolours the whole batch; images with nothing fired keep their exact pixels."""
    geometric, color = parse_groups(groups)
    _, c, h, w = x.shape
    if geometric:
        g, fired = geometric_matrix(u_geometric, p, h, w, geometric)
        x = torch.where(fired[:, None, None, None], apply_geometric(x, g), x)
    if color:
        cm, fired = color_matrix(u_color, p, c)
        x = torch.where(fired[:, None, None, None], apply_color(x, cm), x)
    return x


# ----------------------------------------------------------------------------------------------------------------------
# The train step.


class TorchDraws:
    """Every random number a step draws, from torch's RNG. The checker substitutes fixed draws (same methods)."""

    def latents(self, role: str, n: int, dim: int) -> torch.Tensor:
        """z for `role`: "d" (the D step's fakes), "g" (the G step's), "pl" (path length), or "<role>_mix" (the
        second latents of style mixing)."""
        return torch.randn(n, dim)

    def mixing_cutoff(self, role: str, num_ws: int, prob: float) -> torch.Tensor:
        """The layer from which the second latent's ws are used (num_ws: no mixing), one for the whole batch."""
        cutoff = torch.randint(1, num_ws, ())
        return torch.where(torch.rand(()) < prob, cutoff, num_ws)

    def noise(self, role: str, index: int, shape: tuple[int, int, int, int]) -> torch.Tensor:
        """Per-pixel noise of SynthesisLayer `index` (gan_jax's noise_index order)."""
        return torch.randn(shape)

    def pl_noise(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Standard normal y for the path length, before its 1/sqrt(H W) scale."""
        return torch.randn(shape)

    def augment(self, role: str, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The uniform blocks of the geometric and colour pipelines for the images of `role` ("real", "fake" (D
        step), "g_fake")."""
        return torch.rand(GEOMETRIC_ROWS, batch), torch.rand(COLOR_ROWS, batch)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything of a gan_jax StyleGAN2 config the train step depends on."""

    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    mapping_lr_mul: float = 0.01
    channel_base: int = 16384
    channel_max: int = 512
    mbstd_group: int = 4
    mbstd_features: int = 1
    r1_gamma: float = 10.0
    r1_interval: int = 16
    pl_weight: float = 2.0
    pl_interval: int = 4
    pl_decay: float = 0.01
    pl_batch_shrink: int = 2
    style_mixing_prob: float = 0.9
    augment: str = "ada"
    ada_groups: str = "bgc"
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 500.0
    ada_p_init: float = 0.0
    lr_g: float = 0.0025
    lr_d: float = 0.0025
    betas_g: tuple[float, float] = (0.0, 0.99)
    betas_d: tuple[float, float] = (0.0, 0.99)
    eps_g: float = 1e-8
    eps_d: float = 1e-8
    batch_size: int = 32
    ema_kimg: float = 0.0
    ema_rampup: float = 0.0
    ema_decay: float = 0.999
    ema_start: int = 0
    seed: int = 0

    @classmethod
    def from_config(cls, config: Any) -> Settings:
        m, s, o = config.model, config.stylegan, config.optim
        return cls(
            z_dim=m.z_dim,
            w_dim=m.w_dim,
            mapping_layers=m.mapping_layers,
            mapping_lr_mul=m.mapping_lr_mul,
            channel_base=m.channel_base,
            channel_max=m.channel_max,
            mbstd_group=m.d_mbstd_group,
            mbstd_features=m.d_mbstd_features,
            r1_gamma=config.r1_gamma,
            r1_interval=s.r1_interval,
            pl_weight=s.pl_weight,
            pl_interval=s.pl_interval,
            pl_decay=s.pl_decay,
            pl_batch_shrink=s.pl_batch_shrink,
            style_mixing_prob=s.style_mixing_prob,
            augment=s.augment,
            ada_groups=s.ada_groups,
            ada_target=s.ada_target,
            ada_interval=s.ada_interval,
            ada_kimg=s.ada_kimg,
            ada_p_init=s.ada_p_init,
            lr_g=o.g.lr,
            lr_d=o.d.lr,
            betas_g=(o.g.b1, o.g.b2),
            betas_d=(o.d.b1, o.d.b2),
            eps_g=o.g.eps,
            eps_d=o.d.eps,
            batch_size=config.batch_size,
            ema_kimg=config.ema_kimg,
            ema_rampup=config.ema_rampup,
            ema_decay=config.ema_decay,
            ema_start=config.ema_start,
            seed=config.seed,
        )


def _global_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


class StyleGAN2Step:
    """G, D, their Adam optimizers, G's EMA and the game state (pl_mean, ADA p and its accumulators, counters);
    `step(real)` runs one gan_jax train step (see the module docstring).

    `real` is an NCHW batch in [-1, 1]. `channels_last` stores weights and activations NHWC; `compile` wraps the
    mapping, synthesis and D forwards in torch.compile (the double-backward passes stay eager); `optimizer_impl` is
    torch Adam's implementation: "fused", "foreach" or "for_loop". `t` is the step count, which sets the phase (R1 and
    path-length due) and the EMA decay exactly as gan_jax's `state.step` does.
    """

    def __init__(
        self,
        settings: Settings,
        data_shape: tuple[int, int, int],
        *,
        channels_last: bool = False,
        compile: bool = False,
        optimizer_impl: str = "fused",
    ):
        s = self.s = settings
        height, width, img_channels = data_shape
        if height != width or height < 8 or height & (height - 1):
            raise ValueError(f"StyleGAN2 needs square power-of-two images from 8 pixels, got {tuple(data_shape)}")
        if s.augment == "ada" and parse_groups(s.ada_groups)[1] and img_channels not in (1, 3):
            raise ValueError(f"ADA's colour transforms need 1 or 3 channels, got {img_channels}")
        torch.manual_seed(s.seed)
        self.data_shape = tuple(data_shape)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.compile, self.optimizer_impl = compile, optimizer_impl
        self.G = Generator(
            self.data_shape, s.z_dim, s.w_dim, s.mapping_layers, s.mapping_lr_mul, s.channel_base, s.channel_max
        )
        self.D = Discriminator(self.data_shape, s.channel_base, s.channel_max, s.mbstd_group, s.mbstd_features)
        self.num_ws = self.G.synthesis.num_ws
        self.draws: Any = TorchDraws()
        self.reset_state(ada_p=s.ada_p_init)
        self._finish_setup()

    @classmethod
    def from_config(
        cls,
        config: Any,
        data_shape: tuple[int, int, int],
        *,
        channels_last: bool = False,
        compile: bool = False,
        optimizer_impl: str = "fused",
    ) -> StyleGAN2Step:
        """The reference of a gan_jax StyleGAN2 config (an ml_collections ConfigDict); refuses what it cannot do."""
        problem = reference_problem(config)
        if problem:
            raise ValueError(problem)
        return cls(
            Settings.from_config(config),
            tuple(data_shape),
            channels_last=channels_last,
            compile=compile,
            optimizer_impl=optimizer_impl,
        )

    def reset_state(
        self,
        *,
        t: int = 0,
        d_steps: int = 0,
        g_steps: int = 0,
        pl_mean: float = 0.0,
        ada_p: float = 0.0,
        ada_sign_sum: float = 0.0,
        ada_count: float = 0.0,
    ) -> None:
        """Sets the step count and the game state (gan_jax's model_state["game"]). The counters that decide what a
        step does are host integers (as gan_jax's phase is static); everything a step computes is a tensor."""
        self.t, self.d_steps, self.g_steps = int(t), int(d_steps), int(g_steps)
        self.pl_mean = torch.tensor(float(pl_mean))
        self.ada_p = torch.tensor(float(ada_p))
        self.ada_sign_sum = torch.tensor(float(ada_sign_sum))
        self.ada_count = float(ada_count)  # images seen since the last adjustment: known on the host

    def _finish_setup(self) -> None:
        """(Re)creates the memory layout, EMA copy, optimizers and compiled callables from the current weights."""
        s = self.s
        self.G.to(memory_format=self.memory_format).train()
        self.D.to(memory_format=self.memory_format).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        impl = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for_loop": {"foreach": False}}[
            self.optimizer_impl
        ]
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=s.lr_g, betas=s.betas_g, eps=s.eps_g, **impl)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=s.lr_d, betas=s.betas_d, eps=s.eps_d, **impl)
        maybe = torch.compile if self.compile else (lambda f: f)
        self.map_fn = maybe(self.G.mapping)
        self.synth_fn = maybe(self.G.synthesis)
        self.d_fn = maybe(self.D)
        self.g_params = list(self.G.parameters())
        self.d_params = list(self.D.parameters())
        self.ema_tensors = list(self.G_ema.parameters()) + [self.G_ema.mapping.w_avg]
        self.live_tensors = self.g_params + [self.G.mapping.w_avg]

    # ------------------------------------------------------------------------------------------------------------
    # Pieces of the losses.

    def phase(self, t: int) -> tuple[bool, bool]:
        """(R1 due, path length due) at step t: gan_jax's StyleGAN2Game.phase."""
        s = self.s
        return s.r1_gamma > 0 and t % s.r1_interval == 0, s.pl_weight > 0 and t % s.pl_interval == 0

    def mixed_ws(self, z: torch.Tensor, role: str, update_w_avg: bool) -> torch.Tensor:
        """ws (N, num_ws, w_dim) of z; with style mixing, the ws from a random cutoff layer on come from a second
        latent (always mapped, as gan_jax and the official code do, so the step's work does not vary)."""
        n = z.shape[0]
        w = self.map_fn(z, update_w_avg)
        if self.s.style_mixing_prob <= 0:
            return w[:, None].expand(n, self.num_ws, w.shape[1])
        cutoff = self.draws.mixing_cutoff(role, self.num_ws, self.s.style_mixing_prob)
        w2 = self.map_fn(self.draws.latents(f"{role}_mix", n, self.s.z_dim), False)
        first = (torch.arange(self.num_ws) < cutoff)[None, :, None]
        return torch.where(first, w[:, None], w2[:, None])

    def noises(self, role: str, n: int) -> list[torch.Tensor]:
        return [self.draws.noise(role, i, shape) for i, shape in enumerate(self.G.synthesis.noise_shapes(n))]

    def run_g(self, z: torch.Tensor, role: str, update_w_avg: bool) -> torch.Tensor:
        ws = self.mixed_ws(z, role, update_w_avg)
        return self.synth_fn(ws, self.noises(role, z.shape[0]))

    def d_input(self, x: torch.Tensor, role: str, p: torch.Tensor) -> torch.Tensor:
        """The images D judges: augmented by the ADA pipeline with probability p (or as they are)."""
        if self.s.augment == "none":
            return x
        u_geometric, u_color = self.draws.augment(role, x.shape[0])
        return augment(x, p, u_geometric, u_color, self.s.ada_groups)

    def path_length(self, m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(penalty, new running mean (detached), mean length) on m fresh latents: |J_w^T y|, y ~ N(0, 1/(H W)),
        pulled towards the running mean moved by pl_decay (not detached inside the penalty, as in gan_jax)."""
        z = self.draws.latents("pl", m, self.s.z_dim)
        ws = self.mixed_ws(z, "pl", update_w_avg=False)
        images = self.G.synthesis(ws, self.noises("pl", m))  # eager: the penalty needs a double backward
        h, w = images.shape[2], images.shape[3]
        y = self.draws.pl_noise(tuple(images.shape)) / math.sqrt(h * w)
        (grads,) = torch.autograd.grad((images * y).sum(), ws, create_graph=True)
        lengths = grads.square().sum(dim=2).mean(dim=1).sqrt()
        new_mean = self.pl_mean + self.s.pl_decay * (lengths.mean() - self.pl_mean)
        penalty = (lengths - new_mean).square().mean()
        return penalty, new_mean.detach(), lengths.detach().mean()

    # ------------------------------------------------------------------------------------------------------------
    # The players' steps.

    def d_step(self, real: torch.Tensor, do_r1: bool) -> dict[str, torch.Tensor]:
        s, n, p = self.s, real.shape[0], self.ada_p
        with torch.no_grad():  # gan_jax's D step discards the w_avg its forward pass computes
            fake = self.run_g(self.draws.latents("d", n, s.z_dim), "d", update_w_avg=False)
        self.opt_d.zero_grad(set_to_none=True)
        fake_logits = self.d_fn(self.d_input(fake, "fake", p))
        if do_r1:
            real = real.detach().requires_grad_(True)
            real_logits = self.D(self.d_input(real, "real", p))  # eager: R1 needs a double backward
            (grads,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            r1 = grads.square().sum(dim=(1, 2, 3)).mean()
        else:
            real_logits = self.d_fn(self.d_input(real, "real", p))
            r1 = torch.zeros(())
        loss = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
        total = loss + (0.5 * s.r1_gamma * s.r1_interval) * r1 if do_r1 else loss
        total.backward()
        grad_norm = _global_norm([q.grad for q in self.d_params])
        self.opt_d.step()

        with torch.no_grad():  # ADA: accumulate sign(D(real)); adjust p every ada_interval D steps
            signs = real_logits.detach().sign()
            sign_sum = self.ada_sign_sum + signs.sum()
            count = self.ada_count + n
            self.d_steps += 1
            if self.d_steps % s.ada_interval == 0:
                if s.augment == "ada":
                    adjust = torch.sign(sign_sum / max(count, 1.0) - s.ada_target) * (count / (s.ada_kimg * 1000.0))
                    self.ada_p = (p + adjust).clamp(0.0, 1.0)
                self.ada_sign_sum, self.ada_count = torch.zeros(()), 0.0
            else:
                self.ada_sign_sum, self.ada_count = sign_sum, count
        return {
            "d_loss": loss.detach(),
            "d_real": real_logits.detach().mean(),
            "d_fake": fake_logits.detach().mean(),
            "r1_penalty": r1.detach(),
            "ada_p": p,
            "d_real_sign": signs.mean(),
            "d_grad_norm": grad_norm,
        }

    def g_step(self, n: int, do_pl: bool) -> dict[str, torch.Tensor]:
        s = self.s
        self.opt_g.zero_grad(set_to_none=True)
        for q in self.d_params:  # gan_jax differentiates the G step with respect to G's parameters only
            q.requires_grad_(False)
        try:
            fake = self.run_g(self.draws.latents("g", n, s.z_dim), "g", update_w_avg=True)
            fake_logits = self.d_fn(self.d_input(fake, "g_fake", self.ada_p))
            loss = F.softplus(-fake_logits).mean()
            metrics = {"g_loss": loss.detach()}
            total = loss
            if s.pl_weight > 0:
                if do_pl:
                    penalty, new_mean, length = self.path_length(max(n // s.pl_batch_shrink, 1))
                    total = loss + (s.pl_weight * s.pl_interval) * penalty
                    self.pl_mean = new_mean
                else:
                    penalty, length = torch.zeros(()), torch.zeros(())
                metrics.update(pl_penalty=penalty.detach(), pl_mean=self.pl_mean, pl_length=length)
            total.backward()
        finally:
            for q in self.d_params:
                q.requires_grad_(True)
        metrics["g_grad_norm"] = _global_norm([q.grad for q in self.g_params])
        self.opt_g.step()
        self.g_steps += 1
        return metrics

    def ema_decay(self, t: int) -> float:
        """gan_jax's EMA decay at state step t (ema_decay_schedule, or the warmed-up constant), in float32."""
        s, f32 = self.s, np.float32
        if s.ema_kimg > 0:
            nimg = f32(s.ema_kimg * 1000.0)
            if s.ema_rampup > 0:
                nimg = min(nimg, f32(t) * f32(s.batch_size) * f32(s.ema_rampup))
            return float(f32(0.5) ** (f32(s.batch_size) / max(nimg, f32(1e-8))))
        t = t - s.ema_start
        return 0.0 if t < 0 else min(s.ema_decay, (1.0 + t) / (10.0 + t))

    @torch.no_grad()
    def update_ema(self) -> None:
        decay = self.ema_decay(self.t)
        torch._foreach_mul_(self.ema_tensors, decay)
        torch._foreach_add_(self.ema_tensors, self.live_tensors, alpha=1.0 - decay)

    def step(
        self, real: torch.Tensor, labels: torch.Tensor | None = None, *, after_d: Callable[[], None] | None = None
    ) -> dict[str, torch.Tensor]:
        """One train step on the NCHW batch `real`; `after_d` (for the correctness check) runs between the D step
        and the G step. `labels` must be None (the reference is unconditional)."""
        if labels is not None:
            raise ValueError("the StyleGAN2 reference is unconditional: labels must be None")
        do_r1, do_pl = self.phase(self.t)
        metrics = self.d_step(real, do_r1)
        if after_d is not None:
            after_d()
        metrics.update(self.g_step(real.shape[0], do_pl))
        self.update_ema()
        self.t += 1
        with torch.no_grad():
            metrics["generator_param_norm"] = _global_norm(self.g_params)
            metrics["discriminator_param_norm"] = _global_norm(self.d_params)
        return metrics

    def to_input(self, x_nhwc: np.ndarray | torch.Tensor) -> torch.Tensor:
        """An NHWC batch (gan_jax's layout) as the NCHW tensor the models take, in this step's memory format."""
        x = torch.as_tensor(np.asarray(x_nhwc, dtype=np.float32)).permute(0, 3, 1, 2)
        return x.contiguous(memory_format=self.memory_format)

    def to_labels(self, labels: np.ndarray | None) -> None:
        """None: the reference is unconditional (conditional configs are refused), so labels are not used."""
        return None


Step = StyleGAN2Step  # the name benchmarks/step_speed.py looks up in every reference module


# ----------------------------------------------------------------------------------------------------------------------
# Weights from gan_jax.


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested gan_jax tree as {"a/b/c": leaf}."""
    out = {}
    for k, v in tree.items():
        if hasattr(v, "items"):
            out.update(flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def torch_name(path: str) -> str:
    """The torch parameter name of gan_jax's parameter `path` ("synthesis/b8_conv0/ModulatedConv_0/kernel" ->
    "synthesis.b8_conv0.weight")."""
    return path.replace("/ModulatedConv_0/kernel", "/weight").replace("/kernel", "/weight").replace("/", ".")


def to_torch_layout(path: str, value: Any) -> torch.Tensor:
    """gan_jax's value of parameter `path` (or its gradient) in the layout of the torch parameter."""
    v = torch.from_numpy(np.array(value, dtype=np.float32))
    if path.endswith("const"):  # (4, 4, C) -> (C, 4, 4)
        return v.permute(2, 0, 1).contiguous()
    if path.endswith("kernel") and v.ndim == 4:  # HWIO -> (out, in, kh, kw)
        return v.permute(3, 2, 0, 1).contiguous()
    if path == "b4_fc/kernel":  # rows in NHWC flatten order (h, w, c) -> torch's (c, h, w)
        c = v.shape[0] // 16
        return v.reshape(4, 4, c, -1).permute(3, 2, 0, 1).reshape(v.shape[1], -1).contiguous()
    if path.endswith("kernel") and v.ndim == 2:  # (in, out) -> (out, in)
        return v.t().contiguous()
    return v


def param_pairs(model: nn.Module, params: Mapping[str, Any]) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(gan_jax path, torch parameter, the gan_jax leaf in torch's layout) for every parameter of `model`; `params`
    is a gan_jax tree of the same network (its parameters, or e.g. their gradients)."""
    named = dict(model.named_parameters())
    flat = flatten(params)
    names = {torch_name(k): k for k in flat}
    if set(names) != set(named):
        only_torch, only_jax = sorted(set(named) - set(names)), sorted(set(names) - set(named))
        raise ValueError(f"parameters differ: torch only {only_torch}, gan_jax only {only_jax}")
    out = []
    for name, param in named.items():
        value = to_torch_layout(names[name], flat[names[name]])
        if value.shape != param.shape:
            raise ValueError(f"{names[name]}: gan_jax shape {tuple(value.shape)} for torch {name} {tuple(param.shape)}")
        out.append((names[name], param, value))
    return out


@torch.no_grad()
def copy_gan_jax_weights(model: nn.Module, params: Mapping[str, Any]) -> None:
    """Copies a gan_jax network's parameters into `model` (its torch counterpart) in place."""
    for _, param, value in param_pairs(model, params):
        param.copy_(value)


def load_gan_jax_params(step: StyleGAN2Step, params: Mapping[str, Any], model_state: Mapping[str, Any]) -> None:
    """Copies gan_jax StyleGAN2 params ({"generator", "discriminator"}) and model state (G's w_avg; the game's pl_mean,
    ADA p, its accumulators and the player counters) into `step`.

    Resets the optimizers, the EMA (to a copy of the new G, w_avg included) and the step count t to 0, as for a fresh
    gan_jax state; the game's counters are copied as they are (a fresh state's are 0).
    """
    step.G.to(memory_format=torch.contiguous_format)
    step.D.to(memory_format=torch.contiguous_format)
    copy_gan_jax_weights(step.G, params["generator"])
    copy_gan_jax_weights(step.D, params["discriminator"])
    w_avg = model_state.get("generator", {}).get("stats", {}).get("mapping", {}).get("w_avg")
    if w_avg is not None:
        step.G.mapping.w_avg.copy_(torch.from_numpy(np.array(w_avg, dtype=np.float32)))
    game = {k: np.asarray(v) for k, v in model_state.get("game", {}).items()}
    step.reset_state(
        t=0,
        d_steps=int(game.get("d_steps", 0)),
        g_steps=int(game.get("g_steps", 0)),
        pl_mean=float(game.get("pl_mean", 0.0)),
        ada_p=float(game.get("ada_p", step.s.ada_p_init)),
        ada_sign_sum=float(game.get("ada_sign_sum", 0.0)),
        ada_count=float(game.get("ada_count", 0.0)),
    )
    step._finish_setup()
