"""Checks that benchmarks/torch_refs/stylegan2.py computes gan_jax's StyleGAN2(+ADA) train step.

  python benchmarks/torch_refs/check_stylegan2.py [--config=configs/stylegan.py] [--batch=8] [--steps=0,3,4]
      [--smoke=20] [--compile]

Four checks, each printing what it compares and the largest differences; exits non-zero on any mismatch:

1. Architecture: the parameter counts of G and D are identical (and every gan_jax parameter has its torch
   counterpart of the same shape: `param_pairs`); the mapping output, G's image (gan_jax's "const" noise, given to
   torch) and D's logits on a random batch match, from gan_jax's initial weights with the noise strengths, w_avg and
   the game state made nonzero so that every term is exercised.
2. ADA: gan_jax's `ada.augment` and the torch pipeline fed the same uniform draws (those gan_jax's `_Draws` takes
   from the key: one block per pipeline) give the same transform matrices and the same images, for 1 and 3 channels,
   p = 0, 0.3 and 1.
3. Train step: gan_jax's own jitted `make_train_step` (at the static phase `game.phase(t)`, as the trainer compiles
   it) and the torch step take one step from the same state at each step index t of `--steps` (default 0, 3 and 4:
   R1 and path length both due; neither, but the ADA adjustment due; path length only). Their random draws are made
   identical by a game (`FixedDrawsGame`) that takes z from the batch, runs every synthesis with gan_jax's "const"
   noise, augments with a fixed key and draws the path-length y from a fixed key, with style mixing off; torch is
   handed the same values (`FixedDraws`). Compared: every metric (losses, R1 and path-length terms, ADA p, gradient
   and parameter norms; relative `--rtol`), both players' gradients (gan_jax's through Adam's first moment of a fresh
   optimizer; relative to each tensor's largest entry, `--grad_rtol`), the updated weights, w_avg, G's EMA and the
   game state (absolute `--atol`). After torch's D step, D's weights are set to gan_jax's updated ones, so the G step
   starts from identical state. As in check_dcgan.py, Adam's first step moves a weight by about +-lr whatever its
   gradient's size, so a weight whose two gradients differ by more than `--elem_rtol` of themselves (rounding noise)
   need only agree to 2 * lr; at most `--max_exempt` of a network's weights may be such. `--grad_rtol` is 1e-2, as
   in check_dcgan.py: most tensors agree to ~1e-5, but a few of G's on path-length steps differ by up to ~5e-3
   (measured: b32_conv1/noise_strength, a scalar summed over every pixel of the top layer), and that is gan_jax's
   float32 rounding, not a different computation: against the same torch step run in float64, torch's float32
   gradient was within 1.5e-5 and gan_jax's 4.3e-3 (an activation on a LeakyReLU kink, or cancellation in the sum,
   amplified by the double backward). A wrong layer, loss or regularizer term gives errors of order 1.
4. Smoke (`--smoke` N steps, 0 to skip): the unmodified config (batch included, style mixing on, torch's RNG) from
   gan_jax's initial state built by gan_jax.train.experiment.setup, as benchmarks/step_speed.py builds it, on its
   first real batch: every phase occurs, every metric is finite; prints the mean step time per phase (rough: the
   machine may be shared; benchmarks/step_speed.py does the timing).

Runs the NCHW and channels-last layouts (and torch.compile with `--compile`).
"""

from __future__ import annotations

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, _ROOT)

from gan_jax.env import configure_xla  # noqa: E402

configure_xla()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.step_speed import torch_reference_problem  # noqa: E402
from benchmarks.torch_refs import stylegan2 as ref_lib  # noqa: E402
from gan_jax.config import load_config  # noqa: E402
from gan_jax.models.stylegan2 import _CONST_NOISE_SEED  # noqa: E402
from gan_jax.objectives import ada  # noqa: E402
from gan_jax.objectives.stylegan2 import StyleGAN2Game  # noqa: E402
from gan_jax.train.experiment import build_game, setup  # noqa: E402
from gan_jax.train.optim import ema_decay_schedule, make_optimizers  # noqa: E402
from gan_jax.train.state import create_train_state  # noqa: E402
from gan_jax.train.step import make_train_step  # noqa: E402


@dataclasses.dataclass(frozen=True)
class FixedDrawsGame(StyleGAN2Game):
    """StyleGAN2Game whose random draws come from the batch: z of the player's step (`z_d` or `z_g`) and of the path
    length (`pl_z`), "const" noise in every synthesis, one ADA key (`aug_key`) for every augmentation, and the
    path-length key (`pl_key`, whose third split gan_jax's path_lengths draws y from). Style mixing must be off."""

    draws: Any = None  # the player's fixed draws while its loss is traced; None at init

    def player_loss(self, player, params, state, batch, rng, phase=None):
        draws = {"z": batch[f"z_{player}"], "pl_z": batch["pl_z"], "aug_key": batch["aug_key"]}
        draws["pl_key"] = batch["pl_key"]
        game = dataclasses.replace(self, draws=draws)
        return StyleGAN2Game.player_loss(game, player, params, state, batch, rng, phase)

    def sample_latents(self, rng, n):
        if self.draws is None:
            return StyleGAN2Game.sample_latents(self, rng, n)
        for z in (self.draws["z"], self.draws["pl_z"]):
            if z.shape[0] == n:
                return z
        raise AssertionError(f"no fixed latents for a batch of {n}")

    def synthesize(self, params, g_state, ws, noise_mode, rng=None):
        mode = "const" if noise_mode == "random" else noise_mode
        return StyleGAN2Game.synthesize(self, params, g_state, ws, mode, None)

    def d_input(self, x, rng, p):
        key = None if rng is None or self.draws is None else self.draws["aug_key"]
        return StyleGAN2Game.d_input(self, x, key, p)

    def path_length_penalty(self, g_params, g_state, z, labels, rng, pl_mean):
        return StyleGAN2Game.path_length_penalty(self, g_params, g_state, z, labels, self.draws["pl_key"], pl_mean)


class FixedDraws:
    """The torch step's draws (the methods of stylegan2.TorchDraws), fixed to the values gan_jax's FixedDrawsGame
    uses: z per role, each layer's "const" noise (1, 1, H, W), the path-length y (NCHW) and the ADA uniform blocks."""

    def __init__(self, latents: dict[str, torch.Tensor], noises: list[torch.Tensor], pl_y, uniforms):
        self.latents_, self.noises, self.pl_y, self.uniforms = latents, noises, pl_y, uniforms

    def latents(self, role: str, n: int, dim: int) -> torch.Tensor:
        z = self.latents_[role]
        assert z.shape == (n, dim), (role, z.shape, n, dim)
        return z

    def mixing_cutoff(self, role: str, num_ws: int, prob: float) -> torch.Tensor:
        raise AssertionError("the check runs with style mixing off")

    def noise(self, role: str, index: int, shape: tuple[int, int, int, int]) -> torch.Tensor:
        return self.noises[index]

    def pl_noise(self, shape: tuple[int, ...]) -> torch.Tensor:
        assert tuple(self.pl_y.shape) == tuple(shape), (self.pl_y.shape, shape)
        return self.pl_y

    def augment(self, role: str, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.uniforms


def const_noises(num_layers: int, resolutions: list[int]) -> list[torch.Tensor]:
    """gan_jax's "const" noise of each SynthesisLayer (fold_in(PRNGKey(_CONST_NOISE_SEED), index)), as (1, 1, H, W)."""
    sizes = [r for r in resolutions for _ in range(1 if r == 4 else 2)]
    assert len(sizes) == num_layers
    out = []
    for i, r in enumerate(sizes):
        key = jax.random.fold_in(jax.random.PRNGKey(_CONST_NOISE_SEED), i)
        out.append(torch.from_numpy(np.array(jax.random.normal(key, (1, r, r, 1)))).permute(0, 3, 1, 2))
    return out


def ada_uniforms(key: jax.Array, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The uniform blocks gan_jax's ada.augment draws from `key` (split into geometric and colour keys)."""
    k_geometric, k_color = jax.random.split(key)
    u_g = jax.random.uniform(k_geometric, (ref_lib.GEOMETRIC_ROWS, batch))
    u_c = jax.random.uniform(k_color, (ref_lib.COLOR_ROWS, batch))
    return torch.from_numpy(np.array(u_g)), torch.from_numpy(np.array(u_c))


def nchw(x: Any) -> torch.Tensor:
    return torch.from_numpy(np.array(x, dtype=np.float32)).permute(0, 3, 1, 2).contiguous()


def max_rel(got: torch.Tensor | np.ndarray, want: torch.Tensor | np.ndarray) -> float:
    """max |got - want| / max |want|."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))


@dataclasses.dataclass
class Tolerances:
    rtol: float = 1e-4  # metrics: relative (to max(|value|, 1e-2))
    fwd_rtol: float = 1e-5  # mapping output, image, logits: relative to the tensor's largest entry
    ada_atol: float = 1e-4  # augmented images in [-1, 1], matrices: absolute
    grad_rtol: float = 1e-2  # gradients: relative to each tensor's largest entry (see the module docstring)
    atol: float = 1e-5  # weights, w_avg, EMA, game state: absolute
    elem_rtol: float = 1e-2  # a weight whose two gradients differ by more than this (relatively) is exempt from atol
    max_exempt: float = 1e-3  # ... and at most this fraction of a network's weights may be


class Checker:
    def __init__(self, tol: Tolerances):
        self.tol, self.failures = tol, []

    def expect(self, ok: bool, what: str) -> None:
        if not ok:
            self.failures.append(what)


def perturbed_state(game, optimizers, config, shape, batch: int, seed: int):
    """gan_jax's initial state with nonzero noise strengths, w_avg, pl_mean and ADA p, and the EMA to match."""
    example = jnp.zeros((batch,) + shape, jnp.float32)
    state = jax.jit(lambda rng: create_train_state(game, optimizers, rng, example))(jax.random.PRNGKey(seed))
    state = jax.tree.map(np.asarray, state)
    rng = np.random.default_rng(seed + 1)

    def noisy(path, leaf):
        name = jax.tree_util.keystr(path)
        return (0.3 * rng.standard_normal(leaf.shape)).astype(np.float32) if "noise_strength" in name else leaf

    params = dict(state.params, generator=jax.tree_util.tree_map_with_path(noisy, state.params["generator"]))
    g_state = {"stats": {"mapping": {"w_avg": (0.5 * rng.standard_normal(config.model.w_dim)).astype(np.float32)}}}
    game_state = dict(state.model_state["game"], pl_mean=np.float32(0.4), ada_p=np.float32(0.4))
    model_state = dict(state.model_state, generator=g_state, game=game_state)
    return state.replace(params=params, model_state=model_state, ema_params=params["generator"], ema_state=g_state)


def check_forward(c: Checker, ref, game, state, shape, batch: int, seed: int, tag: str) -> None:
    """Check 1: the networks' outputs from the same weights and inputs."""
    rng = np.random.default_rng(seed + 2)
    z = rng.standard_normal((batch, game.z_dim)).astype(np.float32)
    x = rng.uniform(-1, 1, (batch,) + shape).astype(np.float32)
    g_vars = {"params": state.params["generator"], **state.model_state["generator"]}
    ws = game.generator.apply(g_vars, z, None, False, method="map")
    img = game.generator.apply(g_vars, ws, "const", method="synthesize")
    logits = game.discriminator.apply({"params": state.params["discriminator"]}, x)
    synthesis = ref.G.synthesis
    noises = const_noises(len(synthesis.noise_shapes(1)), synthesis.resolutions)
    with torch.no_grad():
        w_t = ref.G.mapping(torch.from_numpy(z))
        ws_t = w_t[:, None].expand(batch, ref.num_ws, w_t.shape[1])
        img_t = synthesis(ws_t.contiguous(), noises)
        logits_t = ref.D(ref.to_input(x))
    errs = {
        "mapping": max_rel(ws_t, np.asarray(ws)),
        "image": max_rel(img_t.permute(0, 2, 3, 1), np.asarray(img)),
        "logits": max_rel(logits_t, np.asarray(logits)),
    }
    for k, e in errs.items():
        c.expect(e <= c.tol.fwd_rtol, f"{tag} forward {k}: max rel error {e:.3g} > {c.tol.fwd_rtol:g}")
    print(f"{tag} forward: " + ", ".join(f"{k} max rel err {e:.1e}" for k, e in errs.items()), flush=True)


def check_ada(c: Checker, res: int, seed: int) -> None:
    """Check 2: the ADA pipeline from the same draws, matrices and images, 1 and 3 channels, several p."""
    worst = {"geometric matrix": 0.0, "colour matrix": 0.0, "image": 0.0}
    n = 16
    for channels in (1, 3):
        for i, p in enumerate((0.0, 0.3, 1.0)):
            key = jax.random.PRNGKey(seed * 100 + 10 * channels + i)
            x = np.random.default_rng(seed + i).uniform(-1, 1, (n, res, res, channels)).astype(np.float32)
            want = np.asarray(ada.augment(jnp.asarray(x), p, key, "bgc"))
            u_g, u_c = ada_uniforms(key, n)
            pt = torch.tensor(p)
            got = ref_lib.augment(nchw(x), pt, u_g, u_c, "bgc").permute(0, 2, 3, 1).numpy()
            k_g, k_c = jax.random.split(key)
            g_want, f_want = ada.geometric_matrix(k_g, p, n, res, res)
            g_got, f_got = ref_lib.geometric_matrix(u_g, pt, res, res)
            c_want, fc_want = ada.color_matrix(k_c, p, n, channels)
            c_got, fc_got = ref_lib.color_matrix(u_c, pt, channels)
            tag = f"ADA {channels}ch p={p}"
            c.expect(np.array_equal(f_got.numpy(), np.asarray(f_want)), f"{tag}: geometric 'fired' differs")
            c.expect(np.array_equal(fc_got.numpy(), np.asarray(fc_want)), f"{tag}: colour 'fired' differs")
            if p == 0.0:
                c.expect(np.array_equal(got, x), f"{tag}: p = 0 is not the identity")
            for k, (a, b) in {
                "geometric matrix": (g_got.numpy(), g_want),
                "colour matrix": (c_got.numpy(), c_want),
                "image": (got, want),
            }.items():
                e = float(np.max(np.abs(a - np.asarray(b))))
                worst[k] = max(worst[k], e)
                c.expect(e <= c.tol.ada_atol, f"{tag} {k}: max abs error {e:.3g} > {c.tol.ada_atol:g}")
    print("ADA (1 and 3 channels, p = 0, 0.3, 1): " + ", ".join(f"{k} max abs err {e:.1e}" for k, e in worst.items()))


def _weights_close(c: Checker, tag: str, model, want_params, grads_jax, grads_torch, lr: float) -> tuple[float, int]:
    """Updated weights vs gan_jax's (in torch layout), with Adam's sign-flip exemption; (max abs error, exempted)."""
    tol = c.tol
    worst, exempted, total = 0.0, 0, 0
    gj = {k: v for k, _, v in ref_lib.param_pairs(model, grads_jax)}
    for path, param, want in ref_lib.param_pairs(model, want_params):
        err = (param.detach() - want).abs().double()
        g_j, g_t = gj[path].double(), grads_torch[path].double()
        exempt = (g_t - g_j).abs() > tol.elem_rtol * g_j.abs()
        needed = exempt & (err > tol.atol)
        exempted += int(needed.sum())
        total += param.numel()
        if bool((err[exempt] > 2 * lr + tol.atol).any()):
            c.failures.append(f"{tag} {path}: error {float(err[exempt].max()):.3g} > 2 lr where exempt")
        e = float(torch.where(exempt, 0.0, err).max())
        worst = max(worst, e)
        c.expect(e <= tol.atol, f"{tag} {path}: max abs error {e:.3g} > {tol.atol:g}")
    c.expect(exempted <= tol.max_exempt * total, f"{tag}: {exempted} of {total} weights needed the exemption")
    return worst, exempted


def _grads_close(c: Checker, tag: str, model, grads_jax) -> tuple[float, dict[str, torch.Tensor]]:
    worst, got = 0.0, {}
    for path, param, want in ref_lib.param_pairs(model, grads_jax):
        got[path] = param.grad.detach().clone()
        e = max_rel(got[path], want)
        worst = max(worst, e)
        c.expect(e <= c.tol.grad_rtol, f"{tag} gradient {path}: max rel error {e:.3g} > {c.tol.grad_rtol:g}")
    return worst, got


def check_steps(c: Checker, config, shape, batch: int, steps: list[int], layouts: list[str], seed: int) -> None:
    """Check 1 and 3 (see the module docstring)."""
    game = build_game(config, shape)
    game = FixedDrawsGame(**{f.name: getattr(game, f.name) for f in dataclasses.fields(game)})
    optimizers = make_optimizers(config)
    state = perturbed_state(game, optimizers, config, shape, batch, seed)
    n_g = sum(x.size for x in jax.tree.leaves(state.params["generator"]))
    n_d = sum(x.size for x in jax.tree.leaves(state.params["discriminator"]))
    probe = ref_lib.StyleGAN2Step.from_config(config, shape)
    t_g, t_d = sum(p.numel() for p in probe.G.parameters()), sum(p.numel() for p in probe.D.parameters())
    c.expect((t_g, t_d) == (n_g, n_d), f"parameter counts differ: torch G {t_g} D {t_d}, gan_jax G {n_g} D {n_d}")
    print(f"parameters: G torch {t_g:,} / gan_jax {n_g:,}; D torch {t_d:,} / gan_jax {n_d:,}", flush=True)

    rng = np.random.default_rng(seed + 3)
    m = max(batch // config.stylegan.pl_batch_shrink, 1)
    b1 = {p: config.optim[p].b1 for p in ("g", "d")}
    lr = {p: config.optim[p].lr for p in ("g", "d")}
    cases, step_fns = [], {}
    for t in steps:  # gan_jax's step from the perturbed state at step t, with the game's counters to match
        count = (t % config.stylegan.ada_interval) * batch
        game_state = dict(state.model_state["game"], d_steps=np.int32(t), g_steps=np.int32(t))
        game_state.update(ada_count=np.float32(count), ada_sign_sum=np.float32(round(0.5 * count)))
        old = state.replace(step=np.int32(t), model_state=dict(state.model_state, game=game_state))
        b = {
            "x": rng.uniform(-1, 1, (batch,) + shape).astype(np.float32),
            "z_d": rng.standard_normal((batch, game.z_dim)).astype(np.float32),
            "z_g": rng.standard_normal((batch, game.z_dim)).astype(np.float32),
            "aug_key": np.asarray(jax.random.PRNGKey(1000 + t)),
            "pl_key": np.asarray(jax.random.PRNGKey(2000 + t)),
        }
        b["pl_z"] = b["z_g"] if m == batch else rng.standard_normal((m, game.z_dim)).astype(np.float32)
        phase = game.phase(t)
        if phase not in step_fns:  # one compiled update per phase, as the trainer does
            ema = ema_decay_schedule(config)
            step_fns[phase] = jax.jit(make_train_step(game, optimizers, n_critic=1, ema_decay=ema, phase=phase))
        step_fn = step_fns[phase]
        t0 = time.perf_counter()
        new, metrics = step_fn(jax.tree.map(jnp.asarray, old), {k: jnp.asarray(v) for k, v in b.items()})
        new = jax.tree.map(np.asarray, new)
        print(f"gan_jax step t={t} phase (r1, pl)={phase}: {time.perf_counter() - t0:.1f} s (compile included)")
        y_key = jax.random.split(jnp.asarray(b["pl_key"]), 3)[2]  # gan_jax's path_length_penalty: (mix, noise, y)
        pl_y = nchw(jax.random.normal(y_key, (m,) + shape)) if config.stylegan.pl_weight > 0 else None
        cases.append((t, phase, b, old, new, {k: float(v) for k, v in metrics.items()}, pl_y))

    for layout in layouts:
        ref = ref_lib.StyleGAN2Step.from_config(
            config, shape, channels_last=layout == "channels_last", compile=layout == "compile"
        )
        ref_lib.load_gan_jax_params(ref, state.params, state.model_state)
        check_forward(c, ref, game, state, shape, batch, seed, layout)
        for t, phase, b, old, new, jm, pl_y in cases:
            tag = f"{layout} t={t}"
            ref_lib.load_gan_jax_params(ref, old.params, old.model_state)
            ref.t = t
            noises = const_noises(len(ref.G.synthesis.noise_shapes(1)), ref.G.synthesis.resolutions)
            latents = {k: torch.from_numpy(b[f"z_{k}"]) for k in ("d", "g")}
            latents["pl"] = torch.from_numpy(b["pl_z"])
            ref.draws = FixedDraws(latents, noises, pl_y, ada_uniforms(jnp.asarray(b["aug_key"]), batch))
            d_grads_jax = jax.tree.map(lambda mu: mu / (1 - b1["d"]), new.opt_state["d"][0].mu["discriminator"])
            g_grads_jax = jax.tree.map(lambda mu: mu / (1 - b1["g"]), new.opt_state["g"][0].mu["generator"])
            summary = {}

            def after_d(ref=ref, tag=tag, new=new, d_grads_jax=d_grads_jax, summary=summary):
                summary["D grad"], got = _grads_close(c, tag + " D", ref.D, d_grads_jax)
                summary["D weights"], summary["D exempt"] = _weights_close(
                    c, tag + " D", ref.D, new.params["discriminator"], d_grads_jax, got, lr["d"]
                )
                ref_lib.copy_gan_jax_weights(ref.D, new.params["discriminator"])

            tm = ref.step(ref.to_input(b["x"]), after_d=after_d)
            summary["G grad"], got = _grads_close(c, tag + " G", ref.G, g_grads_jax)
            summary["G weights"], summary["G exempt"] = _weights_close(
                c, tag + " G", ref.G, new.params["generator"], g_grads_jax, got, lr["g"]
            )
            summary["EMA"], _ = _weights_close(c, tag + " EMA", ref.G_ema, new.ema_params, g_grads_jax, got, lr["g"])
            # State: w_avg (live and EMA) and the game's.
            w_avg, ema_w_avg = (
                new.model_state["generator"]["stats"]["mapping"]["w_avg"],
                new.ema_state["stats"]["mapping"],
            )
            state_err = {
                "w_avg": float(np.max(np.abs(ref.G.mapping.w_avg.numpy() - w_avg))),
                "ema w_avg": float(np.max(np.abs(ref.G_ema.mapping.w_avg.numpy() - ema_w_avg["w_avg"]))),
            }
            gs = new.model_state["game"]
            for k, v in {"pl_mean": ref.pl_mean, "ada_p": ref.ada_p, "ada_sign_sum": ref.ada_sign_sum}.items():
                state_err[k] = abs(float(v) - float(gs[k]))
            for k, v in {"ada_count": ref.ada_count, "d_steps": ref.d_steps, "g_steps": ref.g_steps}.items():
                c.expect(float(v) == float(gs[k]), f"{tag} game state {k}: torch {v} vs gan_jax {gs[k]}")
            c.expect(ref.t == int(new.step), f"{tag}: step count torch {ref.t} vs gan_jax {int(new.step)}")
            for k, e in state_err.items():
                c.expect(e <= c.tol.atol, f"{tag} state {k}: abs error {e:.3g} > {c.tol.atol:g}")
            worst_rel = 0.0
            for k, v in tm.items():
                if k not in jm:
                    c.failures.append(f"{tag}: torch metric {k} has no gan_jax counterpart")
                    continue
                got_v, want = float(v), jm[k]
                rel = abs(got_v - want) / max(abs(want), 1e-2)
                worst_rel = max(worst_rel, rel)
                c.expect(
                    rel <= c.tol.rtol, f"{tag} metric {k}: torch {got_v:.8g} vs gan_jax {want:.8g} (rel {rel:.2g})"
                )
            missing = set(jm) - set(tm) - {"nonfinite"}
            c.expect(not missing, f"{tag}: gan_jax metrics missing in torch: {sorted(missing)}")
            shown = ("d_loss", "r1_penalty", "g_loss", "pl_penalty", "pl_length", "ada_p")
            print(
                f"{tag} phase (r1, pl)={phase}: "
                + ", ".join(f"{k} {float(tm[k]):.6g} (gan_jax {jm[k]:.6g})" for k in shown if k in tm)
                + f"; metrics max rel err {worst_rel:.1e}; "
                + ", ".join(f"{k} {v:.1e}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items())
                + "; state max abs err "
                + ", ".join(f"{k} {e:.1e}" for k, e in state_err.items()),
                flush=True,
            )


def smoke(c: Checker, spec: str, steps: int, layouts: list[str]) -> None:
    """Check 4: `steps` steps of the unmodified config from gan_jax's initial state, as step_speed.py sets it up."""
    config = load_config(spec)
    exp = setup(config, None)
    state = jax.tree.map(np.asarray, exp.init_state())
    batches = exp.dataset.iterate(0, config.batch_size, prefetch=config.data.prefetch)
    x = np.asarray(next(batches)["x"])
    batches.close()
    for layout in layouts:
        ref = ref_lib.StyleGAN2Step.from_config(
            config, x.shape[1:], channels_last=layout == "channels_last", compile=layout == "compile"
        )
        ref_lib.load_gan_jax_params(ref, state.params, state.model_state)
        real = ref.to_input(x)
        times: dict[tuple[bool, bool], list[float]] = {}
        for t in range(steps):
            phase = ref.phase(t)
            t0 = time.perf_counter()
            metrics = ref.step(real)
            values = {k: float(v) for k, v in metrics.items()}
            times.setdefault(phase, []).append(time.perf_counter() - t0)
            bad = sorted(k for k, v in values.items() if not math.isfinite(v))
            c.expect(not bad, f"smoke {layout} step {t}: non-finite metrics {bad}")
        want_phases = {exp.game.phase(i) for i in range(64)}
        c.expect(
            set(times) == want_phases, f"smoke {layout}: phases {sorted(times)} vs gan_jax's {sorted(want_phases)}"
        )
        per_phase = ", ".join(
            f"(r1, pl)={p}: {len(v)} steps, mean {np.mean(v[1:] if len(v) > 1 else v):.2f} s"
            for p, v in sorted(times.items())
        )
        print(
            f"smoke {layout}: {steps} steps of {spec} (batch {config.batch_size}), all metrics finite: "
            f"{not any('smoke ' + layout in f for f in c.failures)}; last: "
            + ", ".join(f"{k} {v:.4g}" for k, v in values.items())
            + f"; step time by phase (first step of each excluded): {per_phase}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=os.path.join(_ROOT, "configs", "stylegan.py"))
    parser.add_argument(
        "--batch", type=int, default=8, help="batch of checks 1 and 3 (the smoke run uses the config's)"
    )
    parser.add_argument("--steps", default="0,3,4", help="step indices t of check 3 (comma-separated)")
    parser.add_argument("--smoke", type=int, default=20, help="steps of the smoke run (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true", help="also check the torch.compile'd step")
    defaults = Tolerances()
    for field in dataclasses.fields(Tolerances):
        parser.add_argument(f"--{field.name}", type=float, default=getattr(defaults, field.name))
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    tol = Tolerances(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Tolerances)})
    layouts = ["nchw", "channels_last"] + (["compile"] if args.compile else [])
    config = load_config(args.config)
    reason = torch_reference_problem(config)
    if reason:
        raise SystemExit(f"{args.config}: {reason}")
    config.batch_size, config.seed = args.batch, args.seed
    config.stylegan.style_mixing_prob = 0.0  # its cutoff is a random draw the check cannot share; see the docstring
    shape = (config.data.resolution, config.data.resolution, config.data.channels)
    c = Checker(tol)
    check_ada(c, shape[0], args.seed)
    check_steps(c, config, shape, args.batch, [int(s) for s in args.steps.split(",") if s], layouts, args.seed)
    if args.smoke:
        smoke(c, args.config, args.smoke, layouts)
    what = f"{', '.join(layouts)}; steps {args.steps}, batch {args.batch}; smoke {args.smoke} steps"
    if c.failures:
        print(f"FAILED ({what}): {len(c.failures)} mismatches", *c.failures[:40], sep="\n")
        raise SystemExit(1)
    print(f"OK: the torch reference takes gan_jax's StyleGAN2 train step ({what})")


if __name__ == "__main__":
    main()
