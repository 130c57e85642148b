"""Checks that benchmarks/torch_refs/biggan.py computes gan_jax's BigGAN train step: same outputs, losses, gradients,
updated weights and state.

  python benchmarks/torch_refs/check_biggan.py [--config=configs/biggan.py] [--batch=16] [--steps=2] [--compile]
      [--set model.hier=false ...]

(benchmarks/torch_refs/check_sngan.py runs the same checks on SNGAN.) gan_jax's state is built from the config (its
batch size replaced by `--batch`); every parameter that starts constant (attention's gamma = 0, biases, BN scales,
SNGAN's conditional-BN tables) gets N(0, `--perturb`) noise added, so that every path of the networks, attention and
class conditioning included, carries signal from the first step. The latents and fake labels are fed explicitly to
both sides (a game whose `sample_latents` / `sample_labels` return the batch's `z_d`, `y_d` in D steps and `z_g`,
`y_g` in the G step). The parameter counts of both networks must be identical. Then:

1. Forward: G in train mode on fixed z and labels (images, and G's state after the call: u's and running
   statistics), and D in train mode on concat(real, gan_jax's fake) (logits and D's u's), each relative to the
   largest value.
2. `--steps` train steps of gan_jax's own jitted `make_train_step` (n_critic, EMA, lr schedule as the config says),
   and of each D step separately (gan_jax's `_update_player`, whose chain must give the full step's D). Before each
   step the torch reference is loaded with gan_jax's state (weights, model state, Adam moments and counts, EMA, step)
   and takes the same step on the same inputs:
   * after D step i: D's gradient (relative to each tensor's largest entry, `--grad_rtol`), D's weights (absolute
     `--atol`) and u's; then D (weights, u's, Adam moments) is set to gan_jax's, so every step starts from identical
     state and float32 differences do not compound;
   * after the G step: the losses, mean logits, gradient and parameter norms and the orthogonal penalty (relative
     `--rtol`), G's gradient, weights, running statistics and u's, and G's EMA (params and state).

Adam moves each weight by up to about lr whatever the size of its gradient, so a weight whose gradient is rounding
noise (a conv bias followed by BatchNorm, whose gradient is zero in exact arithmetic) or sits on a ReLU kink that
rounding puts on one side or the other can move either way: weights whose two gradients differ by more than
`--elem_rtol` of themselves need only agree to twice Adam's largest possible move, and at most `--max_exempt` of a
network's weights may (not counting those whose gradients are both below `--zero` of the largest entry, i.e. zero).
For the same reasons each gradient tensor is compared relative to the larger of its largest entry and `--noise` of
the network's, and a kink can change a gradient beyond rounding (one position's contribution switched on or off):
`--grad_rtol` is 1e-2 (most runs agree to 1e-4), far below what a wrong loss, layer or update
rule gives. In tiny networks (the `smoke` variants, 4 channels per block at 8x8) one position is a larger share of each
sum, so a kink weighs more: pass e.g. `--grad_rtol 3e-2 --max_exempt 3e-3` there. PyTorch updates BatchNorm running
variances with the unbiased batch variance and Flax with the biased one, so torch's buffers (and their EMA) are
compared with the value the torch rule gives from gan_jax's. Runs the NCHW and channels-last layouts (and
torch.compile with `--compile`). Exits non-zero on any mismatch.
"""

from __future__ import annotations

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, _ROOT)

from gan_jax.env import configure_xla  # noqa: E402

configure_xla()

import argparse  # noqa: E402
import copy  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import importlib  # noqa: E402
import math  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.torch_refs import conditional_common as cc  # noqa: E402
from benchmarks.torch_refs.checking import compare  # noqa: E402
from gan_jax.config import ConfigError, add_set_flag, load_config  # noqa: E402
from gan_jax.objectives.conditional import ConditionalGAN  # noqa: E402
from gan_jax.objectives.game import apply_network  # noqa: E402
from gan_jax.train.experiment import build_game  # noqa: E402
from gan_jax.train.optim import ema_decay_schedule, lr_decay_factor, make_optimizers  # noqa: E402
from gan_jax.train.state import create_train_state  # noqa: E402
from gan_jax.train.step import _update_player, make_train_step  # noqa: E402

_NETS = (("generator", "g"), ("discriminator", "d"))
_MOMENTUM = 0.9  # Flax's BatchNorm momentum in both models (PyTorch's 0.1)


@dataclasses.dataclass(frozen=True)
class FixedInputsGAN(ConditionalGAN):
    """ConditionalGAN whose players use the latents and fake labels in the batch (`z_d`, `y_d` in D steps; `z_g`,
    `y_g` in the G step) instead of drawing them."""

    latents: Any = None
    fake_labels: Any = None

    def sample_latents(self, rng, n, truncation=0.0):
        if self.latents is None:  # init: any latents do
            return ConditionalGAN.sample_latents(self, rng, n, truncation)
        assert self.latents.shape == (n, self.z_dim), f"latents of shape {self.latents.shape}, need {(n, self.z_dim)}"
        return self.latents

    def sample_labels(self, rng, n):
        if self.fake_labels is None:
            return ConditionalGAN.sample_labels(self, rng, n)
        assert self.fake_labels.shape == (n,), f"labels of shape {self.fake_labels.shape}, need {(n,)}"
        return self.fake_labels

    def player_loss(self, player, params, state, batch, rng, phase=None):
        fixed = dataclasses.replace(self, latents=batch[f"z_{player}"], fake_labels=batch.get(f"y_{player}"))
        return ConditionalGAN.player_loss(fixed, player, params, state, batch, rng, phase)


@dataclasses.dataclass
class Tolerances:
    rtol: float = 1e-4  # losses, mean logits, norms, penalty: relative (to at least 0.01)
    out_rtol: float = 1e-4  # forward outputs: relative to the largest value
    atol: float = 1e-5  # weights, u's, statistics, EMA: absolute
    grad_rtol: float = 1e-2  # gradients: relative to each tensor's largest entry (ReLU kinks: module docstring)
    elem_rtol: float = 1e-2  # a weight whose two gradients differ by more than this (relatively) is exempt from atol
    max_exempt: float = 1e-3  # ... and at most this fraction of a network's weights may be
    noise: float = 1e-3  # gradient tensors are compared relative to at least this fraction of the largest entry
    zero: float = 1e-6  # gradient entries below this fraction of the largest one are zero up to rounding


def _flat(tree: Any) -> dict[str, np.ndarray]:
    return {"/".join(k): np.asarray(v) for k, v in cc.flatten(tree).items()}


def _net_flat(params: Any, model_state: Any) -> dict[str, np.ndarray]:
    return {"/".join(k): np.asarray(v) for k, v in cc.network_tree(params, model_state).items()}


def _bn_counts(model: torch.nn.Module, *inputs: torch.Tensor) -> dict[str, int]:
    """Values per channel each BatchNorm of `model` normalises over, keyed by its running-var name in gan_jax."""
    counts: dict[str, int] = {}
    probe = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    names = {id(m): name for name, m in probe.named_modules()}
    hooks = [
        m.register_forward_hook(
            lambda m, args, out: counts.__setitem__(
                "batch_stats/" + names[id(m)].replace(".", "/") + "/var", args[0].numel() // args[0].shape[1]
            )
        )
        for m in probe.modules()
        if isinstance(m, cc.BatchNorm)
    ]
    with torch.no_grad():
        probe(*inputs)
    for h in hooks:
        h.remove()
    return counts


def _torch_var(old: np.ndarray, flax_new: np.ndarray, n: int) -> np.ndarray:
    """Torch's running var after one update when Flax's went from `old` to `flax_new` (both rules are linear in the
    batch variance, biased in Flax and times n / (n - 1) in torch)."""
    return _MOMENTUM * old + (flax_new - _MOMENTUM * old) * n / (n - 1)


def _perturb(state: Any, scale: float, rng: np.random.Generator) -> Any:
    """`state` with N(0, scale) noise on every parameter whose entries are all equal (see the module docstring); the
    EMA, a copy of G at init, gets G's new values."""
    if scale <= 0:
        return state

    def leaf(x: np.ndarray) -> np.ndarray:
        x = np.array(x, dtype=np.float32)
        if x.size and np.all(x == x.flat[0]):
            x = x + rng.normal(0.0, scale, x.shape).astype(np.float32)
        return x

    params = jax.tree.map(leaf, state.params)
    return state.replace(params=params, ema_params=jax.tree.map(np.array, params["generator"]))


def _adam_bound(b1: float, b2: float, t: int) -> float:
    """The largest |update| / lr Adam can make at its step t (1-based), whatever the gradients: by Cauchy-Schwarz,
    |m_hat| / sqrt(v_hat) <= (1 - b1) / (1 - b1^t) * sqrt((1 - b2^t) / (1 - b2)) * sqrt(sum_{j<t} (b1^2 / b2)^j).
    It exceeds 1 with b2 < 1 after the first step (sqrt(1.9) at SNGAN's b2 = 0.9, t = 2)."""
    ratio = sum((b1 * b1 / b2) ** j for j in range(t))
    return (1.0 - b1) / (1.0 - b1**t) * math.sqrt((1.0 - b2**t) / (1.0 - b2) * ratio)


def _grads(mu_new: dict, mu_old: dict, b1: float) -> dict[str, np.ndarray]:
    """gan_jax's gradient from Adam's first moments: mu = b1 * mu_old + (1 - b1) * gradient."""
    return {k: (mu_new[k] - b1 * mu_old[k]) / (1.0 - b1) for k in mu_new}


class Checker:
    """The jax side (states, chains of D steps) computed once, compared with each torch layout."""

    def __init__(
        self,
        model: str,
        spec: str,
        batch: int,
        steps: int,
        seed: int,
        perturb: float,
        tol: Tolerances,
        overrides: dict[str, Any] | None = None,
    ):
        self.ref_module = importlib.import_module(f"benchmarks.torch_refs.{model}")
        config = load_config(spec, overrides)
        config.batch_size = batch
        config.seed = seed
        reason = self.ref_module.reference_problem(config)
        if reason:
            raise SystemExit(f"{spec}: {reason}")
        self.config, self.batch, self.tol = config, batch, tol
        self.settings = cc.TrainSettings.from_config(config)
        self.shape = (config.data.resolution, config.data.resolution, config.data.channels)
        game = build_game(config, self.shape)
        self.game = game = FixedInputsGAN(**{f.name: getattr(game, f.name) for f in dataclasses.fields(game)})
        optimizers = make_optimizers(config)
        example = jnp.zeros((batch,) + self.shape, jnp.float32)
        state = jax.jit(lambda rng: create_train_state(game, optimizers, rng, example))(jax.random.PRNGKey(seed))
        rng = np.random.default_rng(seed)
        self.initial = _perturb(jax.tree.map(np.asarray, state), perturb, rng)
        n_critic = config.n_critic
        step_fn = jax.jit(
            make_train_step(
                game,
                optimizers,
                n_critic=n_critic,
                ema_decay=ema_decay_schedule(config),
                lr_factor=lr_decay_factor(config),
                phase=(),
                grad_accum=config.grad_accum,
                ema_start=config.ema_start,
            )
        )
        d_update = jax.jit(functools.partial(_update_player, game, optimizers["d"], "d", ("discriminator",), phase=()))
        classes = self.settings.num_classes
        self.rng = rng
        self.cases = []  # per step: inputs, state before, after, jax metrics, D chain
        self.chain_errors = []
        state = self.initial
        for _ in range(steps):
            n = n_critic * batch
            b = {
                "x": rng.uniform(-1, 1, (n,) + self.shape).astype(np.float32),
                "label": rng.integers(0, max(classes, 1), (n,)).astype(np.int32),
                "z_d": rng.standard_normal((n, config.model.z_dim)).astype(np.float32),
                "y_d": rng.integers(0, max(classes, 1), (n,)).astype(np.int32),
            }
            z_g = rng.standard_normal((batch, config.model.z_dim)).astype(np.float32)
            y_g = rng.integers(0, max(classes, 1), (batch,)).astype(np.int32)
            # The G step gets the batch's last slice: z_g and y_g go there.
            b["z_g"] = np.concatenate([np.zeros((n - batch, config.model.z_dim), np.float32), z_g])
            b["y_g"] = np.concatenate([np.zeros((n - batch,), np.int32), y_g])
            old = state
            new, m = step_fn(old, {k: jnp.asarray(v) for k, v in b.items()})
            new = jax.tree.map(np.asarray, new)
            lr_scale = float(old.lr_scale) * self.settings.lr_factor(int(old.step))
            params, ms, opt = old.params, old.model_state, old.opt_state["d"]
            chain = []
            for i in range(n_critic):
                sub = {k: jnp.asarray(v[i * batch : (i + 1) * batch]) for k, v in b.items()}
                before = opt
                params, ms, opt, _ = d_update(params, ms, opt, sub, jax.random.PRNGKey(0), lr_scale)
                params, ms, opt = (jax.tree.map(np.asarray, t) for t in (params, ms, opt))
                chain.append((params["discriminator"], ms["discriminator"], opt, before, lr_scale))
            # The chain of single D steps must be the full step's D (the same function, traced in another program).
            errs: list[str] = []
            err, _ = compare(
                "D chain vs train step",
                _net_flat(params["discriminator"], ms["discriminator"]),
                _net_flat(new.params["discriminator"], new.model_state["discriminator"]),
                tol.atol,
                errs,
            )
            self.chain_errors.append((err, errs))
            self.cases.append((b, z_g, y_g, old, new, {k: float(v) for k, v in m.items()}, chain))
            state = new

    # ------------------------------------------------------------------------------------------------------------

    def _labels(self, y: np.ndarray) -> torch.Tensor | None:
        return torch.from_numpy(y.astype(np.int64)) if self.settings.num_classes else None

    def check_counts(self, ref: cc.ConditionalStep, failures: list[str]) -> str:
        parts = []
        for net, model in (("generator", ref.G), ("discriminator", ref.D)):
            want = sum(int(np.size(v)) for v in jax.tree.leaves(self.initial.params[net]))
            got = cc.num_params(model)
            if got != want:
                failures.append(f"{net}: torch has {got} parameters, gan_jax {want}")
            parts.append(f"{net} {got:,} (gan_jax {want:,})")
        return "parameters: " + ", ".join(parts)

    def check_forward(self, ref: cc.ConditionalStep, tag: str, failures: list[str]) -> str:
        """G and D in train mode on fixed inputs (step 1 of the module docstring); leaves `ref` loaded afresh."""
        s, tol, game = self.initial, self.tol, self.game
        b, z_g, y_g = self.cases[0][0], self.cases[0][1], self.cases[0][2]
        labels = y_g if self.settings.num_classes else None
        fake, g_state = apply_network(
            game.generator, s.params["generator"], s.model_state["generator"], z_g, labels, train=True
        )
        fake = np.asarray(fake)
        x = np.concatenate([b["x"][: self.batch], fake])
        d_labels = np.concatenate([b["label"][: self.batch], y_g]) if labels is not None else None
        logits, d_state = apply_network(
            game.discriminator, s.params["discriminator"], s.model_state["discriminator"], x, d_labels, train=True
        )
        cc.load_gan_jax_state(ref, s)
        with torch.no_grad():
            t_fake = ref.G(torch.from_numpy(z_g), self._labels(y_g)).permute(0, 2, 3, 1).numpy()
            t_logits = ref.D(ref.to_input(x), None if d_labels is None else self._labels(d_labels)).numpy()
        e_img, _ = compare(f"{tag} G(z, y)", {"x": t_fake}, {"x": fake}, tol.out_rtol, failures, relative=True)
        e_log, _ = compare(
            f"{tag} D(x, y)", {"x": t_logits}, {"x": np.asarray(logits)}, tol.out_rtol, failures, relative=True
        )
        want = _net_flat({}, jax.tree.map(np.asarray, g_state))
        old = _net_flat({}, s.model_state["generator"])
        for key, n in self.bn_counts.items():
            want[key] = _torch_var(old[key], want[key], n)
        got = {k: v for k, v in cc.gan_jax_view(ref.G).items() if not k.startswith("params/")}
        e_gs, _ = compare(f"{tag} G state after G(z, y)", got, want, tol.atol, failures)
        got = {k: v for k, v in cc.gan_jax_view(ref.D).items() if not k.startswith("params/")}
        want = _net_flat({}, jax.tree.map(np.asarray, d_state))
        e_ds, _ = compare(f"{tag} D state after D(x, y)", got, want, tol.atol, failures)
        cc.load_gan_jax_state(ref, s)
        return (
            f"forward: G images max rel err {e_img:.1e}, D logits {e_log:.1e}; "
            f"state after the call: G {e_gs:.1e}, D {e_ds:.1e} (abs)"
        )

    def _check_update(
        self,
        tag: str,
        net: str,
        model: torch.nn.Module,
        grads_want: dict[str, np.ndarray],
        want: dict[str, np.ndarray],
        max_move: float,
        failures: list[str],
    ) -> tuple[float, float, int, int, dict[str, np.ndarray]]:
        """Gradient and weights/state of one player's update; returns (grad err, weight err, weights exempt for
        differing gradients, weights moved differently by noise-level gradients, exemption masks)."""
        tol = self.tol
        grads = {
            k: v for k, v in cc.gan_jax_view(model, lambda leaf: leaf.tensor.grad).items() if k.startswith("params/")
        }
        # A gradient that is zero in exact arithmetic (a conv bias followed by BatchNorm, which removes any constant
        # per channel) is rounding noise on both sides: tensors are compared relative to at least a floor.
        largest = max(float(np.max(np.abs(g))) for g in grads_want.values())
        g_err, _ = compare(
            f"{tag} {net} gradient",
            grads,
            grads_want,
            tol.grad_rtol,
            failures,
            relative=True,
            floor=tol.noise * largest,
        )
        zero = tol.zero * largest
        noise = {k: (np.abs(g) <= zero) & (np.abs(grads[k]) <= zero) for k, g in grads_want.items()}
        differ = {k: np.abs(grads[k] - g) > tol.elem_rtol * np.abs(g) for k, g in grads_want.items()}
        exempt = {k: noise[k] | differ[k] for k in grads_want}
        got = cc.gan_jax_view(model)
        w_err, _ = compare(f"{tag} {net} weights/state", got, want, tol.atol, failures, exempt, 2 * max_move + tol.atol)
        n_ex = n_noise = 0
        for k in grads_want:  # weights that moved differently, by the reason their gradients differ
            moved = np.abs(got[k].astype(np.float64) - want[k]) > tol.atol
            n_ex += int(np.sum(moved & differ[k] & ~noise[k]))
            n_noise += int(np.sum(moved & noise[k]))
        total = sum(v.size for v in grads_want.values())
        if n_ex > tol.max_exempt * total:
            failures.append(f"{tag} {net}: {n_ex} of {total} weights needed the exemption, over {tol.max_exempt:g}")
        return g_err, w_err, n_ex, n_noise, exempt

    def run_layout(self, layout: str, failures: list[str]) -> None:
        config, s = self.config, self.settings
        ref = self.ref_module.Step.from_config(
            config, self.shape, channels_last=layout == "channels_last", compile=layout == "compile"
        )
        cc.load_gan_jax_state(ref, self.initial)
        if layout == "nchw":
            print(self.check_counts(ref, failures), flush=True)
        z0 = torch.from_numpy(self.cases[0][1])
        self.bn_counts = _bn_counts(ref.G, z0, self._labels(self.cases[0][2]))
        if layout != "compile":
            print(f"{layout}: {self.check_forward(ref, layout, failures)}", flush=True)
        b1_d, b1_g = s.betas_d[0], s.betas_g[0]
        for t, (b, z_g, y_g, old, new, jm, chain) in enumerate(self.cases):
            tag = f"{layout} step {t}"
            cc.load_gan_jax_state(ref, old)
            summary: list[str] = []

            def after_d(i: int, tag: str = tag, chain: list = chain, summary: list[str] = summary) -> None:
                d_params, d_state, opt, before, lr_scale = chain[i]
                grads_want = _grads(
                    _flat({"params": opt[0].mu["discriminator"]}),
                    _flat({"params": before[0].mu["discriminator"]}),
                    b1_d,
                )
                g_err, w_err, n_ex, n_noise, _ = self._check_update(
                    f"{tag} D step {i}",
                    "discriminator",
                    ref.D,
                    grads_want,
                    _net_flat(d_params, d_state),
                    s.lr_d * lr_scale * _adam_bound(*s.betas_d, int(opt[0].count)),
                    failures,
                )
                summary.append(
                    f"D step {i}: grad max rel err {g_err:.1e}, weights/u max abs err {w_err:.1e} "
                    f"({n_ex} exempt, {n_noise} with zero gradients)"
                )
                cc.copy_network(ref.D, d_params, d_state)
                cc.set_adam_state(ref.opt_d, ref.D, opt[0], "discriminator")

            tm = ref.step(
                ref.to_input(b["x"]),
                self._labels(b["label"]),
                z_d=torch.from_numpy(b["z_d"]),
                y_d=self._labels(b["y_d"]),
                z_g=torch.from_numpy(z_g),
                y_g=self._labels(y_g),
                after_d=after_d,
            )
            # The G step.
            lr_g = s.lr_g * float(old.lr_scale) * s.lr_factor(int(old.step))
            max_move = lr_g * _adam_bound(*s.betas_g, int(new.opt_state["g"][0].count))
            grads_want = _grads(
                _flat({"params": new.opt_state["g"][0].mu["generator"]}),
                _flat({"params": old.opt_state["g"][0].mu["generator"]}),
                b1_g,
            )
            want = _net_flat(new.params["generator"], new.model_state["generator"])
            before = _net_flat({}, old.model_state["generator"])
            flax_var = {}
            for key, n in self.bn_counts.items():
                flax_var[key] = want[key]
                want[key] = _torch_var(before[key], want[key], n)
            g_err, w_err, n_ex, n_noise, exempt = self._check_update(
                tag, "generator", ref.G, grads_want, want, max_move, failures
            )
            decay = s.ema_decay_at(int(old.step))
            want_ema = _net_flat(new.ema_params, new.ema_state)
            for key, v in flax_var.items():  # the EMA of the running var follows torch's var rule
                want_ema[key] = want_ema[key] + (1.0 - decay) * (want[key] - v)
            e_err, _ = compare(
                f"{tag} generator EMA",
                cc.gan_jax_view(ref.G_ema),
                want_ema,
                self.tol.atol,
                failures,
                exempt,
                2 * max_move,
            )
            summary.append(
                f"G step: grad max rel err {g_err:.1e}, weights/stats/u max abs err {w_err:.1e} ({n_ex} exempt, "
                f"{n_noise} with zero gradients), "
                f"EMA {e_err:.1e}"
            )
            worst_rel, compared = 0.0, []
            for k, v in tm.items():
                want_m, got = jm[k], float(v)
                rel = abs(got - want_m) / max(abs(want_m), 1e-2)  # values near 0 (a loss of ~0) absolutely
                worst_rel = max(worst_rel, rel)
                compared.append(k)
                if not rel <= self.tol.rtol:
                    failures.append(f"{tag}: metric {k}: torch {got:.8g} vs gan_jax {want_m:.8g} (rel {rel:.2g})")
            missing = sorted(set(jm) - set(tm) - {"nonfinite"})
            if missing:
                failures.append(f"{tag}: gan_jax metrics the reference does not report: {missing}")
            print(
                f"{tag}: d_loss {float(tm['d_loss']):.6f} (gan_jax {jm['d_loss']:.6f}), g_loss "
                f"{float(tm['g_loss']):.6f} (gan_jax {jm['g_loss']:.6f}); metrics ({', '.join(compared)}) max rel err "
                f"{worst_rel:.1e}; " + "; ".join(summary),
                flush=True,
            )


def main(model: str = "biggan") -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=os.path.join(_ROOT, "configs", f"{model}.py"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--perturb", type=float, default=0.2, help="noise on parameters that start constant")
    parser.add_argument("--compile", action="store_true", help="also check the torch.compile'd step")
    parser.add_argument("--layouts", default="nchw,channels_last", help="comma-separated: nchw, channels_last")
    add_set_flag(parser, "a config change, e.g. model.hier=false")
    defaults = Tolerances()
    for field in dataclasses.fields(Tolerances):
        parser.add_argument(f"--{field.name}", type=float, default=getattr(defaults, field.name))
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    tol = Tolerances(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Tolerances)})
    layouts = [v for v in args.layouts.split(",") if v] + (["compile"] if args.compile else [])
    overrides = dict(args.set)
    try:
        load_config(args.config, overrides)  # a misspelled key is a usage error, not a traceback
    except ConfigError as e:
        parser.error(str(e))
    checker = Checker(model, args.config, args.batch, args.steps, args.seed, args.perturb, tol, overrides)
    failures: list[str] = []
    for t, (err, errs) in enumerate(checker.chain_errors):
        print(f"gan_jax step {t}: chained single D steps vs the train step's D: max abs err {err:.1e}")
        failures += errs
    for layout in layouts:
        checker.run_layout(layout, failures)
    c = checker.config
    what = f"{', '.join(layouts)}; {args.steps} steps, batch {args.batch} x n_critic {c.n_critic}, {args.config}"
    what += "".join(f" --set {key}={value}" for key, value in overrides.items())
    if failures:
        print(f"FAILED ({what}): {len(failures)} mismatches", *failures[:40], sep="\n")
        raise SystemExit(1)
    print(f"OK: the torch reference takes gan_jax's {model} train step ({what})")


if __name__ == "__main__":
    main()
