"""A PyTorch reference of gan_jax's DCGAN and of its train step, for like-for-like speed comparisons (benchmarks only).

Nothing in gan_jax imports this module; torch is a benchmark-only dependency (requirements-bench.txt).

The networks are those of gan_jax/models/dcgan.py: G maps z (a 1x1 map) through ConvTranspose2d k4 s1 p0 to 4x4, then
ConvTranspose2d k4 s2 p1 layers halving the channels, BatchNorm + ReLU after every layer but the last, tanh at the end;
D mirrors it with Conv2d k4 s2 p1, LeakyReLU(0.2), BatchNorm on every layer but the first, and a 4x4 valid conv to one
logit. Layers without a bias in gan_jax have `bias=False` here; BatchNorm has momentum 0.1 (Flax's 0.9) and eps 1e-5.

`DCGANStep` is gan_jax.train.step's update for UnconditionalGAN with the non-saturating loss and n_critic=1:

1. D step: fake = G(z_d) in train mode (batch statistics of the batch, G's running statistics left as they were),
   no gradient into G; D applied to the real batch, then to the fake batch (its running statistics updated by both, in
   that order); loss softplus(-D(x)) + softplus(D(G(z))) (BCE with logits); Adam.
2. G step: fake = G(z_g) in train mode (G's running statistics updated), D in train mode on it with D's running
   statistics left as they were and no gradient for D's weights; loss softplus(-D(G(z))); Adam.
3. EMA of G's parameters and BatchNorm buffers with decay min(ema_decay, (1 + t) / (10 + t)).
4. The metrics gan_jax reports: the losses, mean real/fake logits, both players' gradient global norms and both
   networks' parameter global norms (as tensors; nothing synchronises).

Not reproduced: gan_jax's guard that keeps the old state when a loss or gradient is not finite (a select over the
whole state in XLA), and BatchNorm's running variance, which PyTorch updates with the unbiased batch variance and Flax
with the biased one (it changes the buffers by a factor n/(n-1), never the training math, which uses batch statistics).

`load_gan_jax_params` copies a gan_jax state's parameters and batch statistics into the models, using the layouts of
gan_jax/layers/conv.py: Conv2d weight = kernel.permute(3, 2, 0, 1), ConvTranspose2d weight = kernel.permute(2, 3, 0, 1);
`load_gan_jax_state` also copies Adam's moments, G's EMA and the step count, to continue from any gan_jax state.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def reference_problem(config: Any) -> str | None:
    """Why `DCGANStep` cannot reproduce the train step of the DCGAN config `config`, or None when it can."""
    if config.loss != "non_saturating" or config.gp_weight or config.r1_gamma or config.n_critic != 1:
        return "the torch reference implements the non-saturating loss with n_critic=1 and no penalties"
    if config.model.z_dist != "normal" or any(config.optim[p].name != "adam" for p in ("g", "d")):
        return "the torch reference uses z ~ N(0, 1) and Adam"
    return None


def _num_upsamplings(resolution: int) -> int:
    n = int(math.log2(resolution)) - 2
    if resolution not in (16, 32, 64, 128) or 2 ** (n + 2) != resolution:
        raise ValueError(f"DCGAN supports resolutions 16, 32, 64 and 128, not {resolution}")
    return n


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=1e-5, momentum=0.1)


class Generator(nn.Module):
    def __init__(self, out_shape: tuple[int, int, int], z_dim: int = 100, width: int = 128):
        super().__init__()
        height, _, channels = out_shape
        n_up = _num_upsamplings(height)
        ch = width * 2 ** (n_up - 1)
        self.z_dim = z_dim
        layers: list[nn.Module] = [nn.ConvTranspose2d(z_dim, ch, 4, 1, 0, bias=False), _bn(ch), nn.ReLU(True)]
        for _ in range(n_up - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), _bn(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1, bias=True), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.reshape(z.shape[0], self.z_dim, 1, 1))


class Discriminator(nn.Module):
    def __init__(self, in_shape: tuple[int, int, int], width: int = 128):
        super().__init__()
        height, _, channels = in_shape
        n_down = _num_upsamplings(height)
        ch = width
        layers: list[nn.Module] = [nn.Conv2d(channels, ch, 4, 2, 1, bias=True), nn.LeakyReLU(0.2, True)]
        for _ in range(n_down - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), _bn(ch * 2), nn.LeakyReLU(0.2, True)]
            ch *= 2
        layers += [nn.Conv2d(ch, 1, 4, 1, 0, bias=True)]
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).reshape(x.shape[0])


def _bn_buffers(model: nn.Module) -> list[torch.Tensor]:
    """The BatchNorm running statistics (not num_batches_tracked, which gan_jax has no counterpart of)."""
    out = []
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            out += [m.running_mean, m.running_var]
    return out


class _FrozenStats:
    """Runs a BatchNorm model in train mode (batch statistics) while leaving its running statistics as they were.

    The buffers are tiny (two vectors per BatchNorm layer), so saving and restoring them costs next to nothing and,
    unlike changing `momentum`, does not make torch.compile specialise the graph.
    """

    def __init__(self, model: nn.Module):
        self.buffers = _bn_buffers(model)

    def __enter__(self):
        self.saved = [b.clone() for b in self.buffers]

    def __exit__(self, *exc):
        with torch.no_grad():
            torch._foreach_copy_(self.buffers, self.saved)


class DCGANStep:
    """G, D, their Adam optimizers and G's EMA; `step(real, z_d, z_g)` runs one gan_jax train step.

    `real` is an NCHW batch in [-1, 1]; `z_d`, `z_g` the latents of the D and G steps (drawn from N(0, 1) with
    torch's RNG when None). `channels_last` stores weights and activations NHWC; `compile` wraps G and D in
    torch.compile (the whole forward and, through AOTAutograd, backward of each). `optimizer_impl` is torch Adam's
    implementation: "fused" (one kernel per parameter group), "foreach" or "for_loop".
    """

    def __init__(
        self,
        data_shape: tuple[int, int, int],
        *,
        z_dim: int = 100,
        g_width: int = 128,
        d_width: int = 128,
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
        betas_g: tuple[float, float] = (0.5, 0.999),
        betas_d: tuple[float, float] = (0.5, 0.999),
        eps: float = 1e-8,
        ema_decay: float = 0.999,
        channels_last: bool = False,
        compile: bool = False,
        optimizer_impl: str = "fused",
        seed: int = 0,
    ):
        torch.manual_seed(seed)
        self.z_dim = z_dim
        self.ema_decay = ema_decay
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.G = Generator(tuple(data_shape), z_dim, g_width)
        self.D = Discriminator(tuple(data_shape), d_width)
        self.optimizer_impl = optimizer_impl
        self.compile = compile
        self.t = 0
        self._finish_setup(lr_g, lr_d, betas_g, betas_d, eps)

    @classmethod
    def from_config(cls, config: Any, data_shape: tuple[int, int, int], **kwargs) -> DCGANStep:
        """The reference of a gan_jax DCGAN config (an ml_collections ConfigDict): widths, z, Adam, EMA decay, seed."""
        o = config.optim
        return cls(
            tuple(data_shape),
            z_dim=config.model.z_dim,
            g_width=config.model.g_width,
            d_width=config.model.d_width,
            lr_g=o.g.lr,
            lr_d=o.d.lr,
            betas_g=(o.g.b1, o.g.b2),
            betas_d=(o.d.b1, o.d.b2),
            eps=o.g.eps,
            ema_decay=config.ema_decay,
            seed=config.seed,
            **kwargs,
        )

    def _finish_setup(self, lr_g, lr_d, betas_g, betas_d, eps) -> None:
        """(Re)creates the memory layout, EMA copy, optimizers and compiled callables from the current weights."""
        self.G.to(memory_format=self.memory_format).train()
        self.D.to(memory_format=self.memory_format).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        impl = {
            "fused": {"fused": True},
            "foreach": {"foreach": True},
            "for_loop": {"foreach": False},
        }[self.optimizer_impl]
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=lr_g, betas=betas_g, eps=eps, **impl)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=lr_d, betas=betas_d, eps=eps, **impl)
        self._hparams = (lr_g, lr_d, betas_g, betas_d, eps)
        self.g_fn = torch.compile(self.G) if self.compile else self.G
        self.d_fn = torch.compile(self.D) if self.compile else self.D
        self.g_params = list(self.G.parameters())
        self.d_params = list(self.D.parameters())
        self.ema_tensors = list(self.G_ema.parameters()) + _bn_buffers(self.G_ema)
        self.live_tensors = self.g_params + _bn_buffers(self.G)
        self._g_frozen, self._d_frozen = _FrozenStats(self.G), _FrozenStats(self.D)

    def sample_latents(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.z_dim)

    def d_step(self, real: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad(), self._g_frozen:
            fake = self.g_fn(z)
        self.opt_d.zero_grad(set_to_none=True)
        real_logits = self.d_fn(real)
        fake_logits = self.d_fn(fake)
        loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        loss.backward()
        grad_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm([p.grad for p in self.d_params])))
        self.opt_d.step()
        return {
            "d_loss": loss.detach(),
            "d_real": real_logits.detach().mean(),
            "d_fake": fake_logits.detach().mean(),
            "d_grad_norm": grad_norm,
        }

    def g_step(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        self.opt_g.zero_grad(set_to_none=True)
        for p in self.d_params:  # gan_jax differentiates the G step with respect to G's parameters only
            p.requires_grad_(False)
        try:
            fake = self.g_fn(z)
            # Restored after the backward pass, which checks that the buffers it saved were not modified in place.
            with self._d_frozen:
                fake_logits = self.d_fn(fake)
                loss = F.softplus(-fake_logits).mean()
                loss.backward()
        finally:
            for p in self.d_params:
                p.requires_grad_(True)
        grad_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm([p.grad for p in self.g_params])))
        self.opt_g.step()
        return {"g_loss": loss.detach(), "g_grad_norm": grad_norm}

    @torch.no_grad()
    def update_ema(self) -> None:
        decay = min(self.ema_decay, (1.0 + self.t) / (10.0 + self.t))
        torch._foreach_mul_(self.ema_tensors, decay)
        torch._foreach_add_(self.ema_tensors, self.live_tensors, alpha=1.0 - decay)

    def step(
        self,
        real: torch.Tensor,
        z_d: torch.Tensor | None = None,
        z_g: torch.Tensor | None = None,
        after_d: Callable[[], None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """One train step; `after_d` (for the correctness check) runs between the D step and the G step."""
        n = real.shape[0]
        z_d = self.sample_latents(n) if z_d is None else z_d
        z_g = self.sample_latents(n) if z_g is None else z_g
        metrics = self.d_step(real, z_d)
        if after_d is not None:
            after_d()
        metrics.update(self.g_step(z_g))
        self.update_ema()
        self.t += 1
        with torch.no_grad():
            metrics["generator_param_norm"] = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(self.g_params)))
            metrics["discriminator_param_norm"] = torch.linalg.vector_norm(
                torch.stack(torch._foreach_norm(self.d_params))
            )
        return metrics

    def to_input(self, x_nhwc: np.ndarray | torch.Tensor) -> torch.Tensor:
        """An NHWC batch (gan_jax's layout) as the NCHW tensor the models take, in this step's memory format."""
        x = torch.as_tensor(np.asarray(x_nhwc, dtype=np.float32)).permute(0, 3, 1, 2)
        return x.contiguous(memory_format=self.memory_format)

    def to_labels(self, labels: np.ndarray) -> None:
        """None: the DCGAN is unconditional, so the batch's labels are not used."""
        return None


Step = DCGANStep  # the name benchmarks/step_speed.py looks up in every reference module


# ----------------------------------------------------------------------------------------------------------------------
# Weights from gan_jax.


def _t(a: Any) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32))


def _sorted_layers(tree: Mapping[str, Any], prefix: str) -> list[Any]:
    names = sorted((k for k in tree if k.startswith(prefix)), key=lambda k: int(k.rsplit("_", 1)[1]))
    return [tree[k] for k in names]


def _pairs(model: nn.Module, tree: Mapping[str, Any], conv_prefix: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(torch parameter, the gan_jax leaf for it in torch's layout) for every parameter of `model`.

    `tree` is a gan_jax parameter tree of the same network (its params, or an optimizer moment of them).
    """
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    jconvs, jbns = _sorted_layers(tree, conv_prefix), _sorted_layers(tree, "BatchNorm_")
    if len(convs) != len(jconvs) or len(bns) != len(jbns):
        raise ValueError(f"layer counts differ: torch {len(convs)} convs, {len(bns)} BN; gan_jax {sorted(tree)}")
    out = []
    for m, p in zip(convs, jconvs):
        kernel = _t(p["kernel"])  # (kh, kw, in, out)
        w = kernel.permute(3, 2, 0, 1) if isinstance(m, nn.Conv2d) else kernel.permute(2, 3, 0, 1)
        out.append((m.weight, w))
        if (m.bias is not None) != ("bias" in p):
            raise ValueError(f"{m} and its gan_jax layer {sorted(p)} disagree on having a bias")
        if m.bias is not None:
            out.append((m.bias, _t(p["bias"])))
    for m, p in zip(bns, jbns):
        out += [(m.weight, _t(p["scale"])), (m.bias, _t(p["bias"]))]
    for param, value in out:
        if param.shape != value.shape:
            raise ValueError(f"gan_jax value of shape {tuple(value.shape)} for a parameter of shape {param.shape}")
    return out


@torch.no_grad()
def _copy_into(model: nn.Module, params: Mapping[str, Any], stats: Mapping[str, Any] | None, conv_prefix: str) -> None:
    for param, value in _pairs(model, params, conv_prefix):
        param.copy_(value)
    if stats:
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        for m, s in zip(bns, _sorted_layers(stats, "BatchNorm_"), strict=True):
            m.running_mean.copy_(_t(s["mean"]))
            m.running_var.copy_(_t(s["var"]))


_PREFIX = {"generator": "ConvTranspose2D_", "discriminator": "Conv2D_"}


def copy_gan_jax_weights(model: nn.Module, params: Mapping[str, Any], net: str) -> None:
    """Copies the gan_jax parameters of `net` ("generator" or "discriminator") into `model` in place (weights only)."""
    _copy_into(model, params, None, _PREFIX[net])


def load_gan_jax_params(step: DCGANStep, params: Mapping[str, Any], model_state: Mapping[str, Any]) -> None:
    """Copies gan_jax DCGAN params ({"generator": ..., "discriminator": ...}) and batch stats into `step`.

    Resets the optimizers, the EMA (to a copy of the new G) and the step count, as for a fresh gan_jax state.
    """
    step.G.to(memory_format=torch.contiguous_format)
    step.D.to(memory_format=torch.contiguous_format)
    for net, model in (("generator", step.G), ("discriminator", step.D)):
        _copy_into(model, params[net], model_state.get(net, {}).get("batch_stats"), _PREFIX[net])
    step.t = 0
    step._finish_setup(*step._hparams)


@torch.no_grad()
def load_gan_jax_state(step: DCGANStep, state: Any) -> None:
    """Makes `step` continue from a gan_jax TrainState (numpy leaves) of the DCGAN: weights, batch statistics, Adam
    moments and step count, G's EMA and the step number t (which sets the EMA decay)."""
    load_gan_jax_params(step, state.params, state.model_state)
    t = int(state.step)
    for net, player, model, opt in (("generator", "g", step.G, step.opt_g), ("discriminator", "d", step.D, step.opt_d)):
        adam = state.opt_state[player][0]  # optax.adam = chain(scale_by_adam, scale_by_learning_rate)
        if int(adam.count) != t:
            raise ValueError(f"Adam of {player} took {int(adam.count)} steps but the state is at step {t}")
        if t == 0:
            continue
        mus, nus = _pairs(model, adam.mu[net], _PREFIX[net]), _pairs(model, adam.nu[net], _PREFIX[net])
        for (param, mu), (_, nu) in zip(mus, nus):
            opt.state[param] = {
                "step": torch.tensor(float(t), dtype=torch.float32),
                "exp_avg": torch.empty_like(param).copy_(mu),
                "exp_avg_sq": torch.empty_like(param).copy_(nu),
            }
    _copy_into(step.G_ema, state.ema_params, state.ema_state.get("batch_stats"), _PREFIX["generator"])
    step.t = t
