"""What the PyTorch references of gan_jax's class-conditional models (SNGAN, BigGAN) share: layers, the train step
of gan_jax's ConditionalGAN game, and the copying of gan_jax weights (benchmarks only; gan_jax never imports torch).

Layers (the semantics of gan_jax/layers, in the form a PyTorch user would write them):

* `SNConv2d`, `SNLinear`, `SNEmbedding`: spectral normalization with one power-iteration step per training forward,
  warm-started from a buffer `u` with one entry per output unit (per embedding feature), as gan_jax's SpectralNorm.
  Torch's own `nn.utils.parametrizations.spectral_norm` computes the same in training mode, but a layer of our own
  keeps `u` in gan_jax's layout for every layer type (torch's views an embedding table the other way round) and a
  plain buffer under the module, which makes copying gan_jax's state and freezing it during a forward trivial.
  sigma = u . (W v) with u, v constants, so the gradient is that of gan_jax's v^T W u.
* `BatchNorm`: F.batch_norm with momentum 0.1 (Flax's 0.9) and only the two running buffers gan_jax keeps.
* `LinearConditionalBN` (BigGAN's ccbn: gain = 1 + Linear(cond), bias = Linear(cond), no biases, spectrally
  normalised) and `ClassConditionalBN` (SNGAN's categorical conditional BN: per-class gain and bias tables).

`ConditionalStep` is gan_jax.train.step's update for ConditionalGAN (gan_jax/objectives/conditional.py):

1. n_critic D steps, step i on rows [i*B, (i+1)*B) of the real batch (and of its labels), as gan_jax reshapes the batch
   to (n_critic, B, ...). Each: fake = G(z, y_fake) in train mode with y_fake uniform over the classes, under no_grad
   and with G's state (BN running statistics, spectral u's) restored afterwards, since gan_jax discards G's state in
   D's step; D judges concat(real, fake) with concat(labels, y_fake) in ONE call (so its u's advance once per D
   step); the loss (hinge by default); Adam.
2. One G step on fresh z and fake labels: G in train mode (its running statistics and u's advance), D in train mode
   with its u's restored afterwards (gan_jax throws away D's state in G's step) and no gradient for D's weights;
   G's loss plus `ortho_weight` times BigGAN's orthogonal penalty over G's weights with >= 2 axes except the shared
   class embedding. Its gradient 4 * ortho_weight * ((W W^T) * (1 - I)) W is added to the weights' gradients after
   the backward pass, as BigGAN-PyTorch's `utils.ortho` does (the same gradient as differentiating the penalty).
3. EMA of G's parameters and buffers (running statistics and u's: gan_jax's ema_state covers its whole model state),
   decay 0 before `ema_start`, then min(ema_decay, (1 + t) / (10 + t)) with t counted from `ema_start`.
4. The learning-rate schedule (`lr_decay` constant/linear/cosine) as a factor on both Adams' learning rates, which
   for Adam is the same as gan_jax's factor on the updates.
5. The metrics gan_jax reports: losses and mean logits (averaged over the D steps), both gradient global norms
   (G's with the orthogonal term), the orthogonal penalty, both networks' parameter global norms.

Not reproduced: gan_jax's guard that keeps the old state when a loss or gradient is not finite; BatchNorm's running
variance, which PyTorch updates with the unbiased batch variance and Flax with the biased one (a factor n/(n-1) on the
buffers, never on the training math); gan_jax's `sigma > 0` guard (sigma is positive for any nonzero weight).
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

# ----------------------------------------------------------------------------------------------------------------------
# Which configs the references reproduce.

LOSS_NAMES = ("hinge", "non_saturating", "minimax", "wasserstein", "least_squares")


def common_reference_problem(config: Any, model: str) -> str | None:
    """Why `ConditionalStep` cannot reproduce the train step of `config` (any conditional model), or None."""
    if config.model.name != model:
        return f"this is the {model} reference, not one of {config.model.name!r}"
    if config.loss not in LOSS_NAMES:
        return f"the torch reference implements the losses {', '.join(LOSS_NAMES)}, not {config.loss!r}"
    if config.gp_weight or config.r1_gamma or config.pack != 1 or config.unroll_steps or config.diffaugment:
        return "the torch reference has no gradient penalty, R1, packing, unrolling or DiffAugment"
    if config.grad_accum != 1:
        return "the torch reference does not accumulate gradients (grad_accum must be 1)"
    if any(config.optim[p].name != "adam" for p in ("g", "d")):
        return "the torch reference uses Adam for both players"
    if config.model.get("z_dist", "normal") != "normal":
        return "the torch reference draws z from N(0, 1)"
    if config.get("ema_kimg", 0.0) > 0:
        return "the torch reference implements the ema_decay schedule, not StyleGAN's ema_kimg"
    if config.lr_decay not in ("constant", "linear", "cosine"):
        return f"unknown lr_decay {config.lr_decay!r}"
    if config.debug.inject_nan_at_step >= 0:
        return "the torch reference has no NaN injection"
    return None


# ----------------------------------------------------------------------------------------------------------------------
# Layers.


class SpectralNormMixin:
    """Spectral normalization of `self.weight` (Miyato et al. 2018) with gan_jax's one power-iteration step per call.

    `_sn_matrix` views the weight as a matrix whose ROWS are indexed like `u` (output units; an embedding's features),
    the transpose of gan_jax's view up to a permutation of the other axis, which changes no singular value. In
    training mode the new u is stored (gan_jax's update_stats=True); evaluation computes the same without storing.
    """

    weight: torch.Tensor
    u: torch.Tensor
    training: bool

    def _init_u(self, rows: int, eps: float) -> None:
        self.sn_eps = eps
        self.register_buffer("u", F.normalize(torch.randn(rows), dim=0, eps=1e-12))  # type: ignore[attr-defined]

    def _sn_matrix(self, w: torch.Tensor) -> torch.Tensor:
        # (out, in, kh, kw) -> (out, in*kh*kw); a channels-last kernel is flattened in its memory order (a view).
        if w.ndim == 4 and not w.is_contiguous():
            return w.permute(0, 2, 3, 1).flatten(1)
        return w.flatten(1)

    def sn_weight(self) -> torch.Tensor:
        """W / sigma from one power-iteration step from the stored u (v = normalize(W^T u), u' = normalize(W v),
        sigma = u' . W v); u' is stored in training mode. u, v are computed without a graph, so the gradient flows
        through W only, as gan_jax's stop_gradient gives."""
        w = self.weight
        mat = self._sn_matrix(w)
        with torch.no_grad():
            v = F.normalize(torch.mv(mat.t(), self.u), dim=0, eps=self.sn_eps)
            u = F.normalize(torch.mv(mat, v), dim=0, eps=self.sn_eps)
            if self.training:
                self.u.copy_(u)
        sigma = torch.dot(u, torch.mv(mat, v))  # differentiable in W only: u, v are constants, as in gan_jax
        return w / sigma


class SNConv2d(SpectralNormMixin, nn.Conv2d):
    """nn.Conv2d whose weight is divided by its spectral norm (gan_jax's SpectralNorm(Conv2D))."""

    def __init__(self, *args: Any, sn_eps: float = 1e-12, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._init_u(self.out_channels, sn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.sn_weight(), self.bias)


class SNLinear(SpectralNormMixin, nn.Linear):
    """nn.Linear whose weight is divided by its spectral norm (gan_jax's SpectralNorm(nn.Dense))."""

    def __init__(self, *args: Any, sn_eps: float = 1e-12, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._init_u(self.out_features, sn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.sn_weight(), self.bias)


class SNEmbedding(SpectralNormMixin, nn.Embedding):
    """nn.Embedding whose table (num, features) is divided by its spectral norm; u has one entry per feature, as
    gan_jax's SpectralNorm(nn.Embed) (BigGAN-PyTorch's SNEmbedding)."""

    def __init__(self, *args: Any, sn_eps: float = 1e-12, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._init_u(self.embedding_dim, sn_eps)

    def _sn_matrix(self, w: torch.Tensor) -> torch.Tensor:
        return w.t()

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return F.embedding(labels, self.sn_weight())


class BatchNorm(nn.Module):
    """F.batch_norm with gan_jax's variables: optional affine `weight`/`bias` (gan_jax's scale/bias) and the two
    running buffers (no num_batches_tracked, which gan_jax has no counterpart of and the EMA would have to skip)."""

    def __init__(self, features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(features)) if affine else None
        self.register_buffer("running_mean", torch.zeros(features))
        self.register_buffer("running_var", torch.ones(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, self.training, self.momentum, self.eps
        )


class LinearConditionalBN(nn.Module):
    """BigGAN's ccbn: BN without affine, times 1 + gain(cond), plus bias(cond); gain and bias are linear layers
    without bias, spectrally normalised when `spectral` (gan_jax's ConditionalBatchNorm with num_classes=0)."""

    def __init__(self, features: int, cond_dim: int, eps: float, sn_eps: float, spectral: bool = True):
        super().__init__()
        self.bn = BatchNorm(features, eps, affine=False)
        if spectral:
            self.gain = SNLinear(cond_dim, features, bias=False, sn_eps=sn_eps)
            self.bias = SNLinear(cond_dim, features, bias=False, sn_eps=sn_eps)
        else:
            self.gain = nn.Linear(cond_dim, features, bias=False)
            self.bias = nn.Linear(cond_dim, features, bias=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gain = (1.0 + self.gain(cond))[:, :, None, None]
        return torch.addcmul(self.bias(cond)[:, :, None, None], self.bn(x), gain)


class ClassConditionalBN(nn.Module):
    """SNGAN's categorical conditional BN: BN without affine, times gain[y], plus bias[y], per-class tables
    initialised to 1 and 0 (gan_jax's ConditionalBatchNorm with num_classes > 0)."""

    def __init__(self, features: int, num_classes: int, eps: float):
        super().__init__()
        self.bn = BatchNorm(features, eps, affine=False)
        self.gain = nn.Embedding(num_classes, features)
        self.bias = nn.Embedding(num_classes, features)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias(labels)[:, :, None, None], self.bn(x), self.gain(labels)[:, :, None, None])


def upsample(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x upsampling (gan_jax's upsample_nearest)."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def to_map(h: torch.Tensor, width: int, channels: int, channels_last: bool) -> torch.Tensor:
    """A dense layer's output (N, width*width*C) in gan_jax's NHWC order as an NCHW map: the permuted view is already
    channels-last in memory; the NCHW layout needs one copy of this small tensor."""
    h = h.view(h.shape[0], width, width, channels).permute(0, 3, 1, 2)
    return h if channels_last else h.contiguous()


# ----------------------------------------------------------------------------------------------------------------------
# Losses.


def _d_hinge(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def _d_bce(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real).mean() + F.softplus(fake).mean()


LOSSES: dict[str, tuple[Callable[..., torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]] = {
    "hinge": (_d_hinge, lambda fake: -fake.mean()),
    "non_saturating": (_d_bce, lambda fake: F.softplus(-fake).mean()),
    "minimax": (_d_bce, lambda fake: -F.softplus(fake).mean()),
    "wasserstein": (lambda real, fake: fake.mean() - real.mean(), lambda fake: -fake.mean()),
    "least_squares": (
        lambda real, fake: 0.5 * (real - 1.0).square().mean() + 0.5 * fake.square().mean(),
        lambda fake: 0.5 * (fake - 1.0).square().mean(),
    ),
}


# ----------------------------------------------------------------------------------------------------------------------
# The train step.


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """The config values the train step depends on (besides the networks)."""

    z_dim: int
    num_classes: int
    n_critic: int
    loss: str
    ortho_weight: float
    lr_g: float
    lr_d: float
    betas_g: tuple[float, float]
    betas_d: tuple[float, float]
    eps_g: float
    eps_d: float
    ema_decay: float
    ema_start: int
    lr_decay: str
    lr_decay_final: float
    lr_decay_start: int
    num_train_steps: int
    ortho_exclude: tuple[str, ...] = ("shared",)

    @classmethod
    def from_config(cls, config: Any) -> TrainSettings:
        """The settings of a gan_jax conditional config (ConfigDict), read once so the step never touches it."""
        o = config.optim
        return cls(
            z_dim=config.model.z_dim,
            num_classes=config.model.get("num_classes", 0),
            n_critic=config.n_critic,
            loss=config.loss,
            ortho_weight=float(config.conditional.ortho_weight),
            lr_g=o.g.lr,
            lr_d=o.d.lr,
            betas_g=(o.g.b1, o.g.b2),
            betas_d=(o.d.b1, o.d.b2),
            eps_g=o.g.eps,
            eps_d=o.d.eps,
            ema_decay=float(config.ema_decay),
            ema_start=int(config.ema_start),
            lr_decay=config.lr_decay,
            lr_decay_final=float(config.lr_decay_final),
            lr_decay_start=int(config.get("lr_decay_start", 0)),
            num_train_steps=int(config.num_train_steps),
        )

    def lr_factor(self, step: int) -> float:
        """gan_jax.train.optim.lr_decay_factor at `step` (1 for "constant")."""
        if self.lr_decay == "constant":
            return 1.0
        span = max(self.num_train_steps - self.lr_decay_start, 1)
        t = min(max((step - self.lr_decay_start) / span, 0.0), 1.0)
        shape = 1.0 - t if self.lr_decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * t))
        return self.lr_decay_final + (1.0 - self.lr_decay_final) * shape

    def ema_decay_at(self, step: int) -> float:
        """The EMA decay of gan_jax's step `step`: 0 before ema_start, then the warmed-up ema_decay."""
        t = step - self.ema_start
        return 0.0 if t < 0 else min(self.ema_decay, (1.0 + t) / (10.0 + t))


class _FrozenBuffers:
    """Runs a model in train mode while leaving its buffers (running statistics, u's) as they were.

    The buffers are a few small vectors per layer, so saving and restoring them costs next to nothing and, unlike
    switching layers to another mode, does not make torch.compile specialise a second graph.
    """

    def __init__(self, model: nn.Module):
        self.buffers = list(model.buffers())

    def __enter__(self) -> None:
        self.saved = [b.clone() for b in self.buffers]

    def __exit__(self, *exc: Any) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self.buffers, self.saved)


def _global_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


_ADAM_IMPL = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for_loop": {"foreach": False}}


class ConditionalStep:
    """G, D, their Adam optimizers and G's EMA; `step(real, labels)` runs one gan_jax ConditionalGAN train step.

    `real` is an NCHW batch of n_critic * B examples in [-1, 1] and `labels` its int64 labels (ignored, and may be
    None, for an unconditional model). `channels_last` stores weights and activations NHWC; `compile` wraps G and D in
    torch.compile; `optimizer_impl` is torch Adam's implementation ("fused", "foreach" or "for_loop").
    """

    def __init__(
        self,
        G: nn.Module,
        D: nn.Module,
        settings: TrainSettings,
        *,
        channels_last: bool = False,
        compile: bool = False,
        optimizer_impl: str = "fused",
    ):
        if optimizer_impl not in _ADAM_IMPL:
            raise ValueError(f"optimizer_impl must be one of {', '.join(_ADAM_IMPL)}, not {optimizer_impl!r}")
        self.G, self.D, self.s = G, D, settings
        self.channels_last = channels_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.compile, self.optimizer_impl = compile, optimizer_impl
        self.loss_d, self.loss_g = LOSSES[settings.loss]
        self.t = 0  # gan_jax's state.step: G updates done
        self.lr_scale = 1.0  # gan_jax's state.lr_scale
        self._finish_setup()

    def _finish_setup(self) -> None:
        """(Re)creates the memory layout, EMA copy, optimizers and compiled callables from the current weights."""
        for model in (self.G, self.D):
            model.to(memory_format=self.memory_format).train()
        self.G.channels_last = self.channels_last
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        impl = _ADAM_IMPL[self.optimizer_impl]
        s = self.s
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=s.lr_g, betas=s.betas_g, eps=s.eps_g, **impl)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=s.lr_d, betas=s.betas_d, eps=s.eps_d, **impl)
        self.g_fn = torch.compile(self.G) if self.compile else self.G
        self.d_fn = torch.compile(self.D) if self.compile else self.D
        self.g_params, self.d_params = list(self.G.parameters()), list(self.D.parameters())
        self.ema_tensors = list(self.G_ema.parameters()) + list(self.G_ema.buffers())
        self.live_tensors = self.g_params + list(self.G.buffers())
        self._g_frozen, self._d_frozen = _FrozenBuffers(self.G), _FrozenBuffers(self.D)
        # BigGAN's orthogonal regularization: G's weights with >= 2 axes outside the excluded top-level modules.
        self.ortho_params = [
            p for name, p in self.G.named_parameters() if p.ndim >= 2 and name.split(".")[0] not in s.ortho_exclude
        ]
        self.ortho_masks = [1.0 - torch.eye(p.shape[0]) for p in self.ortho_params]

    # ------------------------------------------------------------------------------------------------------------

    def sample_latents(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.s.z_dim)

    def sample_labels(self, n: int) -> torch.Tensor | None:
        return torch.randint(0, self.s.num_classes, (n,)) if self.s.num_classes else None

    def d_step(
        self, real: torch.Tensor, labels: torch.Tensor | None, z: torch.Tensor, fake_labels: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        n = real.shape[0]
        with torch.no_grad(), self._g_frozen:  # G's state moves in G's own step only
            fake = self.g_fn(z, fake_labels)
        self.opt_d.zero_grad(set_to_none=True)
        both = None if labels is None else torch.cat([labels, fake_labels])
        logits = self.d_fn(torch.cat([real, fake]), both)  # one call: D's u's advance once per D step
        real_logits, fake_logits = logits[:n], logits[n:]
        loss = self.loss_d(real_logits, fake_logits)
        loss.backward()
        grad_norm = _global_norm([p.grad for p in self.d_params])
        self.opt_d.step()
        return {
            "d_loss": loss.detach(),
            "d_real": real_logits.detach().mean(),
            "d_fake": fake_logits.detach().mean(),
            "d_grad_norm": grad_norm,
        }

    @torch.no_grad()
    def _add_ortho_grad(self) -> torch.Tensor:
        """Adds the orthogonal penalty's gradient to G's gradients; returns the penalty sum ||W W^T * (1 - I)||^2."""
        total = torch.zeros(())
        for p, mask in zip(self.ortho_params, self.ortho_masks):
            w = p.reshape(p.shape[0], -1)
            off = (w @ w.t()).mul_(mask)
            total += off.square().sum()
            p.grad.add_((off @ w).view(p.shape), alpha=4.0 * self.s.ortho_weight)
        return total

    def g_step(self, z: torch.Tensor, fake_labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        self.opt_g.zero_grad(set_to_none=True)
        for p in self.d_params:  # gan_jax differentiates the G step with respect to G's parameters only
            p.requires_grad_(False)
        try:
            fake = self.g_fn(z, fake_labels)
            # D's state moves in D's own step only; restored after the backward pass.
            with self._d_frozen:
                loss = self.loss_g(self.d_fn(fake, fake_labels))
                loss.backward()
        finally:
            for p in self.d_params:
                p.requires_grad_(True)
        metrics = {"g_loss": loss.detach()}
        if self.s.ortho_weight > 0:
            metrics["ortho_penalty"] = self._add_ortho_grad()
        metrics["g_grad_norm"] = _global_norm([p.grad for p in self.g_params])
        self.opt_g.step()
        return metrics

    @torch.no_grad()
    def update_ema(self) -> None:
        decay = self.s.ema_decay_at(self.t)
        torch._foreach_mul_(self.ema_tensors, decay)
        torch._foreach_add_(self.ema_tensors, self.live_tensors, alpha=1.0 - decay)

    def _set_lr(self) -> None:
        factor = self.lr_scale * self.s.lr_factor(self.t)
        for opt, lr in ((self.opt_g, self.s.lr_g), (self.opt_d, self.s.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * factor

    def step(
        self,
        real: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        z_d: torch.Tensor | None = None,
        y_d: torch.Tensor | None = None,
        z_g: torch.Tensor | None = None,
        y_g: torch.Tensor | None = None,
        after_d: Callable[[int], None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """One train step. `z_d`, `y_d` (n_critic * B rows, sliced like `real`) and `z_g`, `y_g` (B rows) replace the
        sampled latents and fake labels (for the correctness check); `after_d(i)` runs after D step i."""
        n_critic = self.s.n_critic
        if real.shape[0] % n_critic:
            raise ValueError(f"the real batch ({real.shape[0]}) must hold n_critic={n_critic} equal slices")
        n = real.shape[0] // n_critic
        if not self.s.num_classes:
            labels = None
        elif labels is None:
            raise ValueError("a class-conditional model needs the real batch's labels")
        self._set_lr()
        per_step = []
        for i in range(n_critic):
            rows = slice(i * n, (i + 1) * n)
            z = self.sample_latents(n) if z_d is None else z_d[rows]
            fake_labels = self.sample_labels(n) if y_d is None else y_d[rows]
            per_step.append(self.d_step(real[rows], None if labels is None else labels[rows], z, fake_labels))
            if after_d is not None:
                after_d(i)
        if n_critic == 1:
            metrics = per_step[0]
        else:
            metrics = {k: torch.stack([m[k] for m in per_step]).mean() for k in per_step[0]}
        z = self.sample_latents(n) if z_g is None else z_g
        fake_labels = self.sample_labels(n) if y_g is None else y_g
        metrics.update(self.g_step(z, fake_labels))
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

    def to_labels(self, labels: np.ndarray | None) -> torch.Tensor | None:
        """A batch's labels as int64 (None for an unconditional model, which takes none)."""
        if labels is None or not self.s.num_classes:
            return None
        return torch.as_tensor(np.asarray(labels, dtype=np.int64))


# ----------------------------------------------------------------------------------------------------------------------
# Weights from and to gan_jax.
#
# The torch modules are named as gan_jax's (block0.bn1.gain <-> params/block0/bn1/gain), so every torch tensor has
# one gan_jax leaf: ("params", path..., "kernel"|"bias"|"embedding"|"scale"|<param name>), ("batch_stats", path...,
# "mean"|"var"), or ("spectral", parent..., name + "_sn", "u").

Path = tuple[str, ...]
_Convert = Callable[[torch.Tensor], torch.Tensor]


def _ident(x: torch.Tensor) -> torch.Tensor:
    return x


def _conv_to_torch(k: torch.Tensor) -> torch.Tensor:
    return k.permute(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)


def _conv_to_jax(w: torch.Tensor) -> torch.Tensor:
    return w.permute(2, 3, 1, 0)


def _t_last2(x: torch.Tensor) -> torch.Tensor:
    return x.t()  # Dense kernel (in, out) <-> Linear weight (out, in)


@dataclasses.dataclass
class Leaf:
    """One torch tensor and its gan_jax counterpart: key (collection, path...), layout conversions both ways."""

    key: Path
    tensor: torch.Tensor
    to_torch: _Convert
    to_jax: _Convert

    @property
    def name(self) -> str:
        return "/".join(self.key)


def leaves(model: nn.Module) -> list[Leaf]:
    """Every parameter and buffer of `model` with its gan_jax key (see above); raises if one has none."""
    out: list[Leaf] = []
    seen: set[int] = set()

    def add(key: Path, tensor: torch.Tensor | None, to_torch: _Convert = _ident, to_jax: _Convert = _ident) -> None:
        if tensor is not None:
            out.append(Leaf(key, tensor, to_torch, to_jax))
            seen.add(id(tensor))

    for name, m in model.named_modules():
        path: Path = tuple(name.split(".")) if name else ()
        if isinstance(m, nn.Conv2d):
            add(("params",) + path + ("kernel",), m.weight, _conv_to_torch, _conv_to_jax)
            add(("params",) + path + ("bias",), m.bias)
        elif isinstance(m, nn.Linear):
            add(("params",) + path + ("kernel",), m.weight, _t_last2, _t_last2)
            add(("params",) + path + ("bias",), m.bias)
        elif isinstance(m, nn.Embedding):
            add(("params",) + path + ("embedding",), m.weight)
        elif isinstance(m, BatchNorm):
            add(("params",) + path + ("scale",), m.weight)
            add(("params",) + path + ("bias",), m.bias)
            add(("batch_stats",) + path + ("mean",), m.running_mean)
            add(("batch_stats",) + path + ("var",), m.running_var)
        else:  # a parameter of a module of our own (attention's gamma), under its own name
            for pname, p in m.named_parameters(recurse=False):
                add(("params",) + path + (pname,), p)
        if isinstance(m, SpectralNormMixin):
            add(("spectral",) + path[:-1] + (path[-1] + "_sn", "u"), m.u)
    missing = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if id(t) not in seen]
    if missing:
        raise ValueError(f"torch tensors without a gan_jax counterpart: {missing}")
    return out


def flatten(tree: Mapping[str, Any], prefix: Path = ()) -> dict[Path, Any]:
    """A nested mapping (gan_jax params / model state) as {path tuple: leaf}."""
    out: dict[Path, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping) or hasattr(v, "items"):
            out.update(flatten(v, prefix + (str(k),)))
        else:
            out[prefix + (str(k),)] = v
    return out


def network_tree(params: Mapping[str, Any], model_state: Mapping[str, Any] | None) -> dict[Path, Any]:
    """One network's gan_jax params and model state ({"batch_stats": ..., "spectral": ...}) flattened with their
    collection as the first key."""
    flat = flatten(params, ("params",))
    flat.update(flatten(model_state or {}))
    return flat


def _as_torch(value: Any) -> torch.Tensor:
    return torch.from_numpy(np.array(value, dtype=np.float32))


@torch.no_grad()
def copy_network(
    model: nn.Module, params: Mapping[str, Any], model_state: Mapping[str, Any] | None, strict: bool = True
) -> None:
    """Copies one network's gan_jax params and model state into `model` in place (any memory format).

    `strict`: the gan_jax leaves and the torch tensors must correspond one to one (else only the given leaves are
    copied, e.g. params alone).
    """
    flat = network_tree(params, model_state)
    ours = leaves(model)
    keys = {leaf.key for leaf in ours}
    if set(flat) - keys or (strict and keys - set(flat)):
        raise ValueError(
            f"gan_jax leaves without torch tensors: {sorted(set(flat) - keys)[:8]}; "
            f"torch tensors without gan_jax leaves: {sorted(keys - set(flat))[:8] if strict else []}"
        )
    for leaf in ours:
        if leaf.key not in flat:
            continue
        value = leaf.to_torch(_as_torch(flat[leaf.key]))
        if value.shape != leaf.tensor.shape:
            raise ValueError(f"{leaf.name}: gan_jax value of shape {tuple(value.shape)} for {tuple(leaf.tensor.shape)}")
        leaf.tensor.copy_(value)


def gan_jax_view(model: nn.Module, get: Callable[[Leaf], torch.Tensor | None] | None = None) -> dict[str, np.ndarray]:
    """The model's tensors (or `get(leaf)` of each, e.g. its gradient; None leaves it out) in gan_jax's layout, keyed
    "params/block0/conv1/kernel", "spectral/block0/conv1_sn/u", ..."""
    out = {}
    for leaf in leaves(model):
        t = leaf.tensor if get is None else get(leaf)
        if t is not None:
            out[leaf.name] = leaf.to_jax(t.detach()).contiguous().numpy().copy()
    return out


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_gan_jax_params(step: ConditionalStep, params: Mapping[str, Any], model_state: Mapping[str, Any]) -> None:
    """Copies a gan_jax state's params ({"generator": ..., "discriminator": ...}) and model state (batch statistics,
    spectral u's) into `step`'s networks. Resets the optimizers, the EMA (to a copy of the new G), the step count and
    the lr scale, as for a fresh gan_jax state."""
    for model in (step.G, step.D):
        model.to(memory_format=torch.contiguous_format)
    for net, model in (("generator", step.G), ("discriminator", step.D)):
        copy_network(model, params[net], model_state.get(net, {}))
    step.t, step.lr_scale = 0, 1.0
    step._finish_setup()


_PLAYERS = (("generator", "g"), ("discriminator", "d"))


@torch.no_grad()
def set_adam_state(opt: torch.optim.Optimizer, model: nn.Module, adam: Any, net: str) -> None:
    """Torch Adam's moments and step count from optax's ScaleByAdamState `adam` of network `net`."""
    count = int(adam.count)
    mu, nu = flatten(adam.mu[net], ("params",)), flatten(adam.nu[net], ("params",))
    for leaf in leaves(model):
        if leaf.key[0] != "params":
            continue
        if count == 0:
            opt.state.pop(leaf.tensor, None)
            continue
        opt.state[leaf.tensor] = {
            "step": torch.tensor(float(count), dtype=torch.float32),
            "exp_avg": torch.empty_like(leaf.tensor).copy_(leaf.to_torch(_as_torch(mu[leaf.key]))),
            "exp_avg_sq": torch.empty_like(leaf.tensor).copy_(leaf.to_torch(_as_torch(nu[leaf.key]))),
        }


@torch.no_grad()
def load_gan_jax_state(step: ConditionalStep, state: Any) -> None:
    """Makes `step` continue from a gan_jax TrainState (numpy leaves): weights, model state, Adam moments and step
    counts, G's EMA (params and state), the step number t (EMA decay, lr schedule) and the lr scale."""
    load_gan_jax_params(step, state.params, state.model_state)
    for net, player in _PLAYERS:
        model, opt = (step.G, step.opt_g) if player == "g" else (step.D, step.opt_d)
        set_adam_state(opt, model, state.opt_state[player][0], net)  # optax.adam = chain(scale_by_adam, lr)
    copy_network(step.G_ema, state.ema_params, state.ema_state)
    step.t = int(state.step)
    step.lr_scale = float(state.lr_scale)
