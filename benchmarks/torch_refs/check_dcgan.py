"""Checks that benchmarks/torch_refs/dcgan.py computes gan_jax's DCGAN train step: same losses, same updated weights.

  python benchmarks/torch_refs/check_dcgan.py [--config=configs/dcgan.py] [--batch=32] [--steps=3] [--compile]

gan_jax's own jitted `make_train_step` runs `--steps` steps from its initial state on random real batches, with the
latents fed explicitly (a game whose `sample_latents` returns the batch's `z_d` in the D step and `z_g` in the G step,
bypassing the RNG). Before each of those steps the torch reference is loaded with gan_jax's state (weights, batch
statistics, Adam moments, EMA, step count: `load_gan_jax_state`) and takes the same step on the same inputs:

* its D step is compared with gan_jax's: losses and mean logits (relative `--rtol`, 1e-4), D's gradient (through
  Adam's first moment; relative to the tensor's largest entry, `--grad_rtol`), D's weights (absolute `--atol`, 1e-5)
  and running statistics;
* then D's weights are set to gan_jax's updated ones, so the G step also starts from identical state, and its loss,
  gradient, G's weights and statistics and G's EMA are compared the same way; both players' gradient norms too.

So steps after the first check Adam's bias correction and the EMA's decay schedule, without the float32 differences
of earlier steps compounding. Two float32 effects get a tolerance of their own, with the counts printed:

* Adam divides each gradient by its own running scale, so a weight whose gradient is rounding noise (or sits on a
  ReLU/LeakyReLU kink that rounding puts on one side or the other) can move by +-lr whichever way. Weights whose two
  gradients differ by more than `--elem_rtol` (1%) of themselves need only agree to 2 * lr; at most `--max_exempt`
  (0.1%) of a network's weights may be such.
* For the same reason a gradient can differ beyond rounding where an activation sits on a kink: `--grad_rtol` is 2e-2
  of each tensor's largest entry, far below what a wrong loss, layer or update rule gives (order 1). (It was 1e-2
  until one Xeon's channels-last kernels put D's third convolution's gradient at 1.01e-2, at batch 32.)

PyTorch updates BatchNorm running variances with the unbiased batch variance and Flax with the biased one, so torch's
buffer (and its EMA) is compared with the value the torch rule gives from gan_jax's batch variance. Runs the NCHW and
channels-last layouts (and torch.compile with `--compile`). Exits non-zero on any mismatch.
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
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.step_speed import torch_reference_problem  # noqa: E402
from benchmarks.torch_refs.checking import compare  # noqa: E402
from benchmarks.torch_refs.dcgan import DCGANStep, copy_gan_jax_weights, load_gan_jax_state  # noqa: E402
from gan_jax.config import load_config  # noqa: E402
from gan_jax.objectives.game import UnconditionalGAN  # noqa: E402
from gan_jax.train.experiment import build_game  # noqa: E402
from gan_jax.train.optim import make_optimizers  # noqa: E402
from gan_jax.train.state import create_train_state  # noqa: E402
from gan_jax.train.step import make_train_step  # noqa: E402

_PREFIX = {"generator": "ConvTranspose2D_", "discriminator": "Conv2D_"}
_PLAYER = {"generator": "g", "discriminator": "d"}


@dataclasses.dataclass(frozen=True)
class FixedLatentGAN(UnconditionalGAN):
    """UnconditionalGAN whose players use the latents in the batch (`z_d` for the D step, `z_g` for the G step)."""

    latents: Any = None

    def sample_latents(self, rng, n):
        if self.latents is None:  # init: any latents do
            return UnconditionalGAN.sample_latents(self, rng, n)
        assert self.latents.shape == (n, self.z_dim), f"latents of shape {self.latents.shape}, need {(n, self.z_dim)}"
        return self.latents

    def player_loss(self, player, params, state, batch, rng, phase=()):
        return UnconditionalGAN.player_loss(
            dataclasses.replace(self, latents=batch[f"z_{player}"]), player, params, state, batch, rng, phase=phase
        )


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if hasattr(v, "items"):
            out.update(_flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = np.asarray(v)
    return out


def _torch_view(model: torch.nn.Module, conv_prefix: str, opt: torch.optim.Optimizer | None = None) -> dict:
    """The torch model's tensors under gan_jax's names and layouts (params/..., batch_stats/...).

    With `opt`, Adam's first moments of the parameters instead (params/... only), in the parameters' layout.
    """
    get = (lambda p: p.detach()) if opt is None else (lambda p: opt.state[p]["exp_avg"])
    out = {}
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for i, m in enumerate(convs):
        w = get(m.weight)
        kernel = w.permute(2, 3, 1, 0) if isinstance(m, torch.nn.Conv2d) else w.permute(2, 3, 0, 1)
        out[f"params/{conv_prefix}{i}/kernel"] = kernel.contiguous().numpy()
        if m.bias is not None:
            out[f"params/{conv_prefix}{i}/bias"] = get(m.bias).numpy().copy()
    for i, m in enumerate(bns):
        out[f"params/BatchNorm_{i}/scale"] = get(m.weight).numpy().copy()
        out[f"params/BatchNorm_{i}/bias"] = get(m.bias).numpy().copy()
        if opt is None:
            out[f"batch_stats/BatchNorm_{i}/mean"] = m.running_mean.numpy().copy()
            out[f"batch_stats/BatchNorm_{i}/var"] = m.running_var.numpy().copy()
    return out


def _bn_counts(shape: tuple[int, ...], batch: int, net: str) -> dict[int, int]:
    """Elements per channel that each BatchNorm layer of the DCGAN `net` normalises over (for the var correction)."""
    res = shape[0]
    n_layers = int(np.log2(res)) - 2
    if net == "generator":  # 4x4, 8x8, ...: one BN per layer but the last
        return {i: batch * (4 * 2**i) ** 2 for i in range(n_layers)}
    return {i: batch * (res // 2 ** (i + 2)) ** 2 for i in range(n_layers - 1)}  # D: from the second layer on


def _expected_torch_var(old: np.ndarray, flax_new: np.ndarray, n: int, times: int) -> np.ndarray:
    """Torch's running var after `times` updates (batches of n elements) when Flax's went from old to flax_new.

    Both rules are linear: after k updates the buffer is 0.9**k * old plus a sum of batch variances, biased in Flax
    and scaled by n / (n - 1) in torch, so the torch value follows exactly from the Flax one.
    """
    m = 0.9**times
    return m * old + (flax_new - m * old) * n / (n - 1)


@dataclasses.dataclass
class Tolerances:
    rtol: float = 1e-4  # losses, mean logits, norms: relative
    atol: float = 1e-5  # weights, statistics, EMA: absolute
    grad_rtol: float = 2e-2  # gradients: relative to each tensor's largest entry
    elem_rtol: float = 1e-2  # a weight whose two gradients differ by more than this (relatively) is exempt from atol
    max_exempt: float = 1e-3  # ... and at most this fraction of a network's weights may be


def _check_player(tag, net, ref, old, new, config, shape, batch, tol, failures) -> str:
    """Compares one player's update (gradient, weights, batch statistics, and G's EMA); returns a summary line."""
    model, opt = (ref.G, ref.opt_g) if net == "generator" else (ref.D, ref.opt_d)
    player, prefix = _PLAYER[net], _PREFIX[net]
    b1, lr = config.optim[player].b1, config.optim[player].lr
    mu = _flat({"params": new.opt_state[player][0].mu[net]})
    old_mu = _flat({"params": old.opt_state[player][0].mu[net]})
    torch_mu = _torch_view(model, prefix, opt)
    g_err, _ = compare(f"{tag} {net} gradient", torch_mu, mu, tol.grad_rtol, failures, relative=True)
    exempt = {}
    for k in mu:  # the gradients, from Adam's first moments: mu = b1 * mu_old + (1 - b1) * gradient on both sides
        g_jax, g_torch = (mu[k] - b1 * old_mu[k]) / (1 - b1), (torch_mu[k] - b1 * old_mu[k]) / (1 - b1)
        exempt[k] = np.abs(g_torch - g_jax) > tol.elem_rtol * np.abs(g_jax)
    want = _flat({"params": new.params[net], **new.model_state[net]})
    before = _flat(old.model_state[net])
    flax_var = {}
    for i, n in _bn_counts(shape, batch, net).items():
        key = f"batch_stats/BatchNorm_{i}/var"
        flax_var[key] = want[key]
        # D's statistics move twice per step (the real batch, then the fake one), G's once (its own step).
        want[key] = _expected_torch_var(before[key], want[key], n, 2 if net == "discriminator" else 1)
    w_err, n_ex = compare(
        f"{tag} {net}", _torch_view(model, prefix), want, tol.atol, failures, exempt, 2 * lr + tol.atol
    )
    total = sum(v.size for v in mu.values())
    if n_ex > tol.max_exempt * total:
        failures.append(f"{tag} {net}: {n_ex} of {total} weights needed the exemption, over {tol.max_exempt:g}")
    summary = f"{net} gradient max rel err {g_err:.1e}, weights/stats max abs err {w_err:.1e}"
    summary += f" ({n_ex} of {total} weights exempt)"
    if net == "generator":
        decay = min(config.ema_decay, (1.0 + ref.t - 1) / (10.0 + ref.t - 1))
        want_ema = _flat({"params": new.ema_params, **new.ema_state})
        for k, v in flax_var.items():  # the EMA of the running var follows torch's var rule
            want_ema[k] = want_ema[k] + (1.0 - decay) * (want[k] - v)
        e_err, _ = compare(
            f"{tag} generator_ema", _torch_view(ref.G_ema, prefix), want_ema, tol.atol, failures, exempt, 2 * lr
        )
        summary += f", EMA max abs err {e_err:.1e}"
    return summary


def run_check(spec: str, batch: int, steps: int, tol: Tolerances, layouts: list[str], seed: int) -> list[str]:
    """Runs the comparison described in the module docstring; returns the mismatches."""
    config = load_config(spec)
    config.batch_size = batch
    config.seed = seed
    reason = torch_reference_problem(config)
    if reason:
        raise SystemExit(f"{spec}: {reason}")
    shape = (config.data.resolution, config.data.resolution, config.data.channels)
    game = build_game(config, shape)
    game = FixedLatentGAN(**{f.name: getattr(game, f.name) for f in dataclasses.fields(game)})
    optimizers = make_optimizers(config)
    example = jnp.zeros((batch,) + shape, jnp.float32)
    state = jax.jit(lambda rng: create_train_state(game, optimizers, rng, example))(jax.random.PRNGKey(seed))
    step_fn = jax.jit(make_train_step(game, optimizers, n_critic=1, ema_decay=config.ema_decay))

    rng = np.random.default_rng(seed)
    cases = []  # (inputs, state before, state after, metrics) per step
    for _ in range(steps):
        b = {
            "x": rng.uniform(-1, 1, (batch,) + shape).astype(np.float32),
            "z_d": rng.standard_normal((batch, config.model.z_dim)).astype(np.float32),
            "z_g": rng.standard_normal((batch, config.model.z_dim)).astype(np.float32),
        }
        old = jax.tree.map(np.asarray, state)
        state, m = step_fn(state, {k: jnp.asarray(v) for k, v in b.items()})
        cases.append((b, old, jax.tree.map(np.asarray, state), {k: float(v) for k, v in m.items()}))

    failures: list[str] = []
    for layout in layouts:
        ref = DCGANStep.from_config(config, shape, channels_last=layout == "channels_last", compile=layout == "compile")
        for t, (b, old, new, jm) in enumerate(cases):
            tag = f"{layout} step {t}"
            load_gan_jax_state(ref, old)
            summary = []

            def after_d(ref=ref, tag=tag, old=old, new=new, summary=summary):
                summary.append(_check_player(tag, "discriminator", ref, old, new, config, shape, batch, tol, failures))
                copy_gan_jax_weights(ref.D, new.params["discriminator"], "discriminator")

            tm = ref.step(ref.to_input(b["x"]), torch.from_numpy(b["z_d"]), torch.from_numpy(b["z_g"]), after_d)
            summary.append(_check_player(tag, "generator", ref, old, new, config, shape, batch, tol, failures))
            worst_rel = 0.0
            for k, v in tm.items():
                want, got = jm[k], float(v)
                rel = abs(got - want) / max(abs(want), 1e-12)
                worst_rel = max(worst_rel, rel)
                if not rel <= tol.rtol:
                    failures.append(f"{tag}: metric {k}: torch {got:.8g} vs gan_jax {want:.8g} (rel {rel:.2g})")
            print(
                f"{tag}: d_loss {float(tm['d_loss']):.6f} (gan_jax {jm['d_loss']:.6f}), g_loss "
                f"{float(tm['g_loss']):.6f} (gan_jax {jm['g_loss']:.6f}), metrics max rel err {worst_rel:.1e}; "
                + "; ".join(summary),
                flush=True,
            )
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=os.path.join(_ROOT, "configs", "dcgan.py"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true", help="also check the torch.compile'd step")
    defaults = Tolerances()
    for field in dataclasses.fields(Tolerances):
        parser.add_argument(f"--{field.name}", type=float, default=getattr(defaults, field.name))
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    tol = Tolerances(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Tolerances)})
    layouts = ["nchw", "channels_last"] + (["compile"] if args.compile else [])
    failures = run_check(args.config, args.batch, args.steps, tol, layouts, args.seed)
    what = f"{', '.join(layouts)}; {args.steps} steps, batch {args.batch}"
    if failures:
        print(f"FAILED ({what}): {len(failures)} mismatches", *failures[:40], sep="\n")
        raise SystemExit(1)
    print(f"OK: the torch reference takes gan_jax's DCGAN train step ({what})")


if __name__ == "__main__":
    main()
