"""The class-conditional game of SNGAN (Miyato et al. 2018; Miyato & Koyama 2018) and BigGAN (Brock et al. 2019).

Both networks take labels: G(z, y) and D(x, y), D with a projection head. Real examples come with the batch's
labels; fakes are drawn for labels sampled uniformly over the classes (as BigGAN-PyTorch and the SNGAN code do), so
G learns every class equally whatever the data's class balance.

- Loss: any of `losses.LOSSES` (the papers use hinge). D judges reals and fakes in one call on their concatenation,
  as BigGAN-PyTorch does, so spectral norm's power iteration advances once per D application and D's batch-level
  computations see both halves.
- Orthogonal regularization of G (BigGAN, section 3.1): `ortho_weight` * sum ||W W^T (1 - I)||_F^2 over G's weight
  matrices except the shared class embedding (`ortho_exclude`); see `regularizers.orthogonal_penalty` for how the
  weight relates to BigGAN-PyTorch's `--G_ortho`.
- Spectral norm's power-iteration vectors ("spectral") and batch-norm statistics ("batch_stats") are the networks'
  model state, updated in training like any other state, so checkpoints keep them and resuming is exact.
- Sampling: the truncation trick (z from a normal truncated to [-t, t], BigGAN section 3.1) with `truncation` > 0,
  and "standing statistics" (BigGAN appendix) when `standing_stats` > 0, via `TwoPlayerGame.sampling_state`, shared
  with the unconditional game.

D steps per G step (`n_critic`), the EMA of G with a start step (`ema_start`) and gradient accumulation
(`grad_accum`) are the trainer's (train/step.py), shared with every game.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.layers.normalization import MOMENTS_COLLECTION
from gan_jax.objectives.augment import diff_augment
from gan_jax.objectives.game import TwoPlayerGame, apply_network, batch_labels, default_labels
from gan_jax.objectives.losses import AdversarialLoss
from gan_jax.objectives.regularizers import orthogonal_penalty

Array = jax.Array
PyTree = Any
LossOut = tuple[Array, tuple[dict[str, PyTree], dict[str, Array]]]
# The model-state collections a network keeps between steps; others (sown "moments") are per call only.
STATE_COLLECTIONS = ("batch_stats", "spectral")
_AUGMENT_SALT, _LABEL_SALT = 0x0A06, 0x1AB


@dataclasses.dataclass(frozen=True)
class ConditionalGAN(TwoPlayerGame):
    """G(z, y) against D(x, y) for `num_classes` classes (0: unconditional, labels None)."""

    generator: nn.Module
    discriminator: nn.Module
    loss: AdversarialLoss
    z_dim: int
    num_classes: int
    ortho_weight: float = 0.0
    ortho_exclude: tuple[str, ...] = ("shared",)  # top-level G modules the orthogonal penalty leaves out
    diffaugment: str = ""
    truncation: float = 0.0  # sampling: z truncated to [-t, t]; 0 = plain normal
    standing_stats: int = 0  # sampling: batches of standing statistics; 0 = G's running averages

    networks: tuple[str, ...] = ("generator", "discriminator")
    players: tuple[tuple[str, tuple[str, ...]], ...] = (("d", ("discriminator",)), ("g", ("generator",)))
    sampler: str = "generator"
    z_dist: str = "normal"

    # ------------------------------------------------------------------------------------------------------------
    # Latents, labels and networks.

    def sample_latents(self, rng: Array, n: int, truncation: float = 0.0) -> Array:
        if truncation > 0:
            return jax.random.truncated_normal(rng, -truncation, truncation, (n, self.z_dim))
        return jax.random.normal(rng, (n, self.z_dim))

    def sample_labels(self, rng: Array, n: int) -> Array | None:
        return jax.random.randint(rng, (n,), 0, self.num_classes) if self.num_classes else None

    def default_labels(self, n: int) -> Array | None:
        return default_labels(n, self.num_classes)

    def _labels(self, batch: dict[str, Array]) -> Array | None:
        return batch_labels(batch, self.num_classes)

    def init(self, rng: Array, example: Array) -> tuple[dict[str, PyTree], dict[str, PyTree]]:
        g_rng, d_rng, z_rng = jax.random.split(rng, 3)
        n = example.shape[0]
        labels = self.default_labels(n)
        g_vars = self.generator.init({"params": g_rng}, self.sample_latents(z_rng, n), labels, train=False)
        d_vars = self.discriminator.init({"params": d_rng}, example, labels, train=False)
        state = lambda v: {k: x for k, x in v.items() if k in STATE_COLLECTIONS}  # noqa: E731
        params = {"generator": g_vars["params"], "discriminator": d_vars["params"]}
        return params, {"generator": state(g_vars), "discriminator": state(d_vars)}

    def generate(
        self,
        params: PyTree,
        state: PyTree,
        z: Array,
        train: bool = False,
        labels: Array | None = None,
    ) -> tuple[Array, PyTree]:
        """Samples for `labels` (default: the classes in turn) with G's parameters and state (live or EMA)."""
        labels = self.default_labels(z.shape[0]) if labels is None else labels
        return apply_network(self.generator, params, state, z, labels, train=train)

    def sampling_latents(self, rng: Array, n: int) -> Array:
        """The latents samples are drawn from: truncated when `truncation` > 0."""
        return self.sample_latents(rng, n, self.truncation)

    def generator_moments(self, params: PyTree, state: PyTree, rng: Array, n: int) -> PyTree:
        z_rng, y_rng = jax.random.split(rng)
        z, labels = self.sampling_latents(z_rng, n), self.sample_labels(y_rng, n)
        _, new = apply_network(self.generator, params, state, z, labels, train=True, extra=(MOMENTS_COLLECTION,))
        return new[MOMENTS_COLLECTION]

    def d_input(self, x: Array, aug_rng: Array | None) -> Array:
        """What D is shown: DiffAugment'ed when a policy is set and `aug_rng` is given (None in evaluation)."""
        if self.diffaugment and aug_rng is not None:
            return diff_augment(x, self.diffaugment, aug_rng)
        return x

    # ------------------------------------------------------------------------------------------------------------
    # Losses (`player_loss` is TwoPlayerGame's: "d" -> d_loss, "g" -> g_loss).

    def _fakes(self, params, state, n: int, rng: Array) -> tuple[Array, Array | None, PyTree]:
        z_rng, y_rng = jax.random.split(rng)
        labels = self.sample_labels(jax.random.fold_in(y_rng, _LABEL_SALT), n)
        fake, g_state = apply_network(
            self.generator, params["generator"], state["generator"], self.sample_latents(z_rng, n), labels, train=True
        )
        return fake, labels, g_state

    def d_loss(self, params, state, batch, rng) -> LossOut:
        real, real_labels = batch["x"], self._labels(batch)
        n = real.shape[0]
        g_rng, aug_rng = jax.random.split(rng)
        fake, fake_labels, _ = self._fakes(params, state, n, g_rng)  # G's state moves in G's own step only
        real_aug, fake_aug = jax.random.split(jax.random.fold_in(aug_rng, _AUGMENT_SALT))
        x = jnp.concatenate([self.d_input(real, real_aug), self.d_input(jax.lax.stop_gradient(fake), fake_aug)])
        labels = None if real_labels is None else jnp.concatenate([real_labels, fake_labels])
        logits, d_state = apply_network(
            self.discriminator, params["discriminator"], state["discriminator"], x, labels, train=True
        )
        real_logits, fake_logits = logits[:n], logits[n:]
        loss = self.loss.d(real_logits, fake_logits)
        metrics = {"d_loss": loss, "d_real": jnp.mean(real_logits), "d_fake": jnp.mean(fake_logits)}
        return loss, ({"discriminator": d_state}, metrics)

    def g_loss(self, params, state, batch, rng) -> LossOut:
        n = batch["x"].shape[0]
        g_rng, aug_rng = jax.random.split(rng)
        fake, labels, g_state = self._fakes(params, state, n, g_rng)
        fake = self.d_input(fake, jax.random.fold_in(aug_rng, _AUGMENT_SALT))
        # D's power iteration is not advanced by G's step: D's state moves in D's own step only.
        logits, _ = apply_network(
            self.discriminator, params["discriminator"], state["discriminator"], fake, labels, train=True
        )
        loss = self.loss.g(logits)
        total, metrics = loss, {"g_loss": loss}
        if self.ortho_weight > 0:
            exclude = lambda path: bool(path) and path[0] in self.ortho_exclude  # noqa: E731
            ortho = orthogonal_penalty(params["generator"], exclude)
            total = total + self.ortho_weight * ortho
            metrics["ortho_penalty"] = ortho
        return total, ({"generator": g_state}, metrics)

    def eval_losses(self, params, state, batch, rng) -> dict[str, Array]:
        """Both players' losses on a real batch in inference mode, without augmentation or regularization."""
        real, labels = batch["x"], self._labels(batch)
        z_rng, y_rng = jax.random.split(rng)
        fake_labels = self.sample_labels(y_rng, real.shape[0])
        fake, _ = self.generate(
            params["generator"], state["generator"], self.sample_latents(z_rng, real.shape[0]), labels=fake_labels
        )
        d = lambda x, y: apply_network(  # noqa: E731
            self.discriminator, params["discriminator"], state["discriminator"], x, y, train=False
        )[0]
        real_logits, fake_logits = d(real, labels), d(fake, fake_labels)
        return {
            "d_loss": self.loss.d(real_logits, fake_logits),
            "g_loss": self.loss.g(fake_logits),
            "d_real": jnp.mean(real_logits),
            "d_fake": jnp.mean(fake_logits),
        }
