"""StyleGAN2's training objective (Karras et al. 2020) with ADA (Karras et al. 2020, "Training Generative Adversarial
Networks with Limited Data"), as a game for the shared trainer.

- Loss: the non-saturating logistic loss.
- Lazy R1 (gamma `r1_gamma`) on real images, every `r1_interval`-th discriminator step with weight `r1_interval`
  (the official code's `gain`). The gradient is taken with respect to the un-augmented real images through the
  augmentation, as in the official code.
- Path-length regularization (`pl_weight`), every `pl_interval`-th generator step with weight `pl_interval`, on
  1/`pl_batch_shrink` of the batch: the Jacobian-vector norm |J_w^T y| for y ~ N(0, I)/sqrt(H W) is pulled towards
  its running mean `pl_mean`, which lives in the training state.
- Style mixing: with probability `style_mixing_prob` the ws from a cutoff layer on come from a second latent.
- Augmentation of every image D sees (real and fake, in both players' losses): "ada" (the adaptive pipeline of
  gan_jax/objectives/ada.py with probability p), "diffaugment" (the DiffAugment policy `diffaugment_policy`), or
  "none". ADA's p starts at `ada_p_init` and every `ada_interval` discriminator steps moves by
  sign(E[sign(D(real))] - `ada_target`) * (images seen in the interval) / (`ada_kimg` * 1000), clipped to [0, 1];
  p and its accumulators live in the training state, so checkpoints keep them and a resumed run continues exactly.
- Class conditioning: when `num_classes` > 0, both networks take the batch's labels, and fakes are drawn with the
  real batch's labels (the data's label distribution, as the official code samples them).

The regularization terms are added to the main loss on their steps rather than taken as separate optimizer steps
(the official code's "Greg"/"Dreg" phases), so the trainer's one-update-per-player step stays as it is; the configs
therefore use the paper's learning rates and betas without the official per-phase k/(k+1) adjustment. Which terms a
step computes is its static `phase` (r1 due, path length due), so the trainer compiles one step per phase and the
other steps do none of that work; with `phase=None` (vmapped or scanned steps) the game decides from its counters
with `lax.cond` instead. The game's counters and statistics are the model state "game".
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.objectives.ada import augment as ada_augment
from gan_jax.objectives.augment import diff_augment
from gan_jax.objectives.game import batch_labels, default_labels
from gan_jax.objectives.regularizers import path_length_penalty, path_lengths

Array = jax.Array
PyTree = Any
LossOut = tuple[Array, tuple[dict[str, PyTree], dict[str, Array]]]
AUGMENTS = ("ada", "diffaugment", "none")
_AUGMENT_SALT, _MIX_SALT, _PL_SALT = 0x0A06, 0x3117, 0x9A7


@dataclasses.dataclass(frozen=True)
class StyleGAN2Game:
    generator: nn.Module
    discriminator: nn.Module
    z_dim: int
    num_classes: int = 0
    r1_gamma: float = 10.0
    r1_interval: int = 16
    pl_weight: float = 2.0
    pl_interval: int = 4
    pl_decay: float = 0.01
    pl_batch_shrink: int = 2
    style_mixing_prob: float = 0.9
    augment: str = "ada"
    diffaugment_policy: str = "color,translation,cutout"
    ada_groups: str = "bgc"
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 500.0
    ada_p_init: float = 0.0

    networks: tuple[str, ...] = ("generator", "discriminator")
    players: tuple[tuple[str, tuple[str, ...]], ...] = (("d", ("discriminator",)), ("g", ("generator",)))
    sampler: str = "generator"
    z_dist: str = "normal"

    # ------------------------------------------------------------------------------------------------------------
    # Networks.

    def sample_latents(self, rng: Array, n: int) -> Array:
        return jax.random.normal(rng, (n, self.z_dim))

    def default_labels(self, n: int) -> Array | None:
        return default_labels(n, self.num_classes)

    def _labels(self, batch: dict[str, Array]) -> Array | None:
        return batch_labels(batch, self.num_classes)

    def init(self, rng: Array, example: Array) -> tuple[dict[str, PyTree], dict[str, PyTree]]:
        g_rng, d_rng, z_rng = jax.random.split(rng, 3)
        n = example.shape[0]
        z = self.sample_latents(z_rng, n)
        labels = self.default_labels(n)
        g_vars = self.generator.init({"params": g_rng, "noise": g_rng}, z, labels, train=False)
        d_vars = self.discriminator.init({"params": d_rng}, example, labels, train=False)
        game_state = {
            "d_steps": jnp.zeros((), jnp.int32),
            "g_steps": jnp.zeros((), jnp.int32),
            "pl_mean": jnp.zeros((), jnp.float32),
            "ada_p": jnp.full((), self.ada_p_init, jnp.float32),
            "ada_sign_sum": jnp.zeros((), jnp.float32),
            "ada_count": jnp.zeros((), jnp.float32),
        }
        g_state = {k: v for k, v in g_vars.items() if k != "params"}
        params = {"generator": g_vars["params"], "discriminator": d_vars["params"]}
        return params, {"generator": g_state, "discriminator": {}, "game": game_state}

    def map(self, params: PyTree, g_state: PyTree, z: Array, labels: Array | None, train: bool = False, **kw):
        """ws (N, num_ws, w_dim); in training also the generator state with w_avg updated."""
        variables = {"params": params, **g_state}
        if train:
            ws, new = self.generator.apply(variables, z, labels, True, method="map", mutable=["stats"], **kw)
            return ws, {**g_state, **new}
        return self.generator.apply(variables, z, labels, False, method="map", **kw), g_state

    def synthesize(self, params: PyTree, g_state: PyTree, ws: Array, noise_mode: str, rng: Array | None = None):
        rngs = {"noise": rng} if rng is not None else None
        variables = {"params": params, **g_state}
        return self.generator.apply(variables, ws, noise_mode, method="synthesize", rngs=rngs)

    def generate(
        self,
        params: PyTree,
        state: PyTree,
        z: Array,
        train: bool = False,
        labels: Array | None = None,
        truncation_psi: float | Array = 1.0,
    ) -> tuple[Array, PyTree]:
        """Samples with "const" noise (the official generate.py default), the tracked mean w, and optional psi."""
        del train
        labels = self.default_labels(z.shape[0]) if labels is None else labels
        ws, _ = self.map(params, state, z, labels, truncation_psi=truncation_psi)
        return self.synthesize(params, state, ws, "const"), state

    def _mixed_ws(self, params, g_state, z, labels, rng, train: bool):
        """ws of `z`, with style mixing: from a random cutoff layer on, the ws of a second latent."""
        ws, g_state = self.map(params, g_state, z, labels, train=train)
        if self.style_mixing_prob > 0:
            n_ws = ws.shape[1]
            z_rng, cut_rng, p_rng = jax.random.split(jax.random.fold_in(rng, _MIX_SALT), 3)
            cutoff = jax.random.randint(cut_rng, (), 1, n_ws)
            cutoff = jnp.where(jax.random.uniform(p_rng) < self.style_mixing_prob, cutoff, n_ws)
            ws2, _ = self.map(params, g_state, self.sample_latents(z_rng, z.shape[0]), labels)
            ws = jnp.where(jnp.arange(n_ws)[None, :, None] < cutoff, ws, ws2)
        return ws, g_state

    def _run_g(self, params, g_state, z, labels, rng, train: bool = True):
        map_rng, noise_rng = jax.random.split(rng)
        ws, g_state = self._mixed_ws(params, g_state, z, labels, map_rng, train)
        return self.synthesize(params, g_state, ws, "random", noise_rng), g_state

    def d_input(self, x: Array, rng: Array | None, p: Array) -> Array:
        """The images D judges: augmented by the configured pipeline (none when `rng` is None, for evaluation)."""
        if rng is None or self.augment == "none":
            return x
        if self.augment == "ada":
            return ada_augment(x, jax.lax.stop_gradient(p), rng, self.ada_groups)
        return diff_augment(x, self.diffaugment_policy, rng)

    def _run_d(self, d_params, x, labels, aug_rng, p):
        return self.discriminator.apply({"params": d_params}, self.d_input(x, aug_rng, p), labels, train=True)

    # ------------------------------------------------------------------------------------------------------------
    # Losses.

    def phase(self, step: int) -> tuple[bool, bool]:
        """(R1 due, path-length regularization due) at training step `step` (0-based; one D and one G step each)."""
        return (
            self.r1_gamma > 0 and step % self.r1_interval == 0,
            self.pl_weight > 0 and step % self.pl_interval == 0,
        )

    def player_loss(
        self,
        player: str,
        params: dict[str, PyTree],
        state: dict[str, PyTree],
        batch: dict[str, Array],
        rng: Array,
        phase: tuple[bool, bool] | None = None,
    ) -> LossOut:
        do_r1, do_pl = (None, None) if phase is None else phase
        if player == "d":
            return self.d_loss(params, state, batch, rng, do_r1)
        return self.g_loss(params, state, batch, rng, do_pl)

    @staticmethod
    def _when(due: bool | None, counter: Array, interval: int, term, skipped):
        """`term()` on the steps it is due, else `skipped()`: decided at trace time when `due` is a bool, else from
        the traced counter with `lax.cond`."""
        if due is None:
            return jax.lax.cond(counter % interval == 0, term, skipped)
        return term() if due else skipped()

    def d_loss(self, params, state, batch, rng, do_r1: bool | None = None) -> LossOut:
        real, labels, gs = batch["x"], self._labels(batch), state["game"]
        n = real.shape[0]
        z_rng, g_rng = jax.random.split(rng)
        real_aug, fake_aug = jax.random.split(jax.random.fold_in(rng, _AUGMENT_SALT))
        fake, _ = self._run_g(params["generator"], state["generator"], self.sample_latents(z_rng, n), labels, g_rng)
        d_params, p = params["discriminator"], gs["ada_p"]
        fake_logits = self._run_d(d_params, jax.lax.stop_gradient(fake), labels, fake_aug, p)
        d_real = lambda x: self._run_d(d_params, x, labels, real_aug, p)  # noqa: E731

        def with_r1():
            logits, pullback = jax.vjp(d_real, real)
            grads = pullback(jnp.ones_like(logits))[0]
            return logits, jnp.mean(jnp.sum(jnp.square(grads).reshape(n, -1), axis=1))

        if self.r1_gamma > 0:
            real_logits, r1 = self._when(
                do_r1, gs["d_steps"], self.r1_interval, with_r1, lambda: (d_real(real), jnp.zeros(()))
            )
        else:
            real_logits, r1 = d_real(real), jnp.zeros(())
        loss = jnp.mean(jax.nn.softplus(fake_logits)) + jnp.mean(jax.nn.softplus(-real_logits))
        total = loss + (0.5 * self.r1_gamma * self.r1_interval) * r1

        # ADA: accumulate sign(D(real)) and adjust p every ada_interval steps.
        signs = gs["ada_sign_sum"] + jnp.sum(jnp.sign(jax.lax.stop_gradient(real_logits)))
        count = gs["ada_count"] + n
        d_steps = gs["d_steps"] + 1
        due = (d_steps % self.ada_interval) == 0
        new_gs = dict(gs, d_steps=d_steps)
        new_gs.update(ada_sign_sum=jnp.where(due, 0.0, signs), ada_count=jnp.where(due, 0.0, count))
        if self.augment == "ada":
            r_t = signs / jnp.maximum(count, 1.0)  # the overfitting heuristic: E[sign(D(real))] over the interval
            adjust = jnp.sign(r_t - self.ada_target) * count / (self.ada_kimg * 1000.0)
            new_gs["ada_p"] = jnp.where(due, jnp.clip(p + adjust, 0.0, 1.0), p)
        metrics = {
            "d_loss": loss,
            "d_real": jnp.mean(real_logits),
            "d_fake": jnp.mean(fake_logits),
            "r1_penalty": r1,  # zero on the steps without R1 (lazy regularization)
            "ada_p": p,
            "d_real_sign": jnp.mean(jnp.sign(real_logits)),
        }
        return total, ({"discriminator": {}, "game": new_gs}, metrics)

    def path_length_penalty(self, g_params, g_state, z, labels, rng, pl_mean):
        """(penalty, updated running mean, mean length) for latents z: lengths |J_w^T y| with y ~ N(0, 1/(H W))."""
        mix_rng, noise_rng, y_rng = jax.random.split(rng, 3)
        ws, _ = self._mixed_ws(g_params, g_state, z, labels, mix_rng, train=False)
        synth = lambda w: self.synthesize(g_params, g_state, w, "random", noise_rng)  # noqa: E731
        lengths, _ = path_lengths(synth, ws, y_rng)
        penalty, new_mean = path_length_penalty(lengths, pl_mean, self.pl_decay)
        return penalty, jax.lax.stop_gradient(new_mean), jnp.mean(lengths)

    def g_loss(self, params, state, batch, rng, do_pl: bool | None = None) -> LossOut:
        labels, gs = self._labels(batch), state["game"]
        n = batch["x"].shape[0]
        z_rng, g_rng, pl_rng = jax.random.split(rng, 3)
        g_params = params["generator"]
        fake, g_state = self._run_g(g_params, state["generator"], self.sample_latents(z_rng, n), labels, g_rng)
        aug_rng = jax.random.fold_in(rng, _AUGMENT_SALT)
        fake_logits = self._run_d(params["discriminator"], fake, labels, aug_rng, gs["ada_p"])
        loss = jnp.mean(jax.nn.softplus(-fake_logits))
        total = loss
        metrics = {"g_loss": loss}
        new_gs = dict(gs, g_steps=gs["g_steps"] + 1)
        if self.pl_weight > 0:
            m = max(n // self.pl_batch_shrink, 1)
            pl_z = self.sample_latents(jax.random.fold_in(pl_rng, _PL_SALT), m)
            pl_labels = None if labels is None else labels[:m]

            def with_pl():
                return self.path_length_penalty(g_params, g_state, pl_z, pl_labels, pl_rng, gs["pl_mean"])

            def without_pl():
                return jnp.zeros(()), gs["pl_mean"], jnp.zeros(())

            penalty, new_gs["pl_mean"], length = self._when(do_pl, gs["g_steps"], self.pl_interval, with_pl, without_pl)
            total = total + (self.pl_weight * self.pl_interval) * penalty
            metrics.update(pl_penalty=penalty, pl_mean=new_gs["pl_mean"], pl_length=length)
        return total, ({"generator": g_state, "game": new_gs}, metrics)

    def eval_losses(self, params: dict[str, PyTree], state: dict[str, PyTree], batch: dict[str, Array], rng: Array):
        """Both players' main losses on a real batch, without augmentation or regularization (--mode=eval)."""
        labels = self._labels(batch)
        z = self.sample_latents(rng, batch["x"].shape[0])
        fake, _ = self.generate(params["generator"], state["generator"], z, labels=labels)
        d = lambda x: self.discriminator.apply({"params": params["discriminator"]}, x, labels)  # noqa: E731
        real_logits, fake_logits = d(batch["x"]), d(fake)
        return {
            "d_loss": jnp.mean(jax.nn.softplus(fake_logits)) + jnp.mean(jax.nn.softplus(-real_logits)),
            "g_loss": jnp.mean(jax.nn.softplus(-fake_logits)),
            "d_real": jnp.mean(real_logits),
            "d_fake": jnp.mean(fake_logits),
        }
