"""A game: the networks of a GAN family, the players that own them, and each player's loss.

The trainer knows only this interface, so a family with other networks (CycleGAN's two generators and two
discriminators, a conditional GAN's label input) is a new game, not a new training loop. `UnconditionalGAN` covers
Goodfellow's GAN and DCGAN: a generator from latents, a discriminator on examples, any loss of `losses.LOSSES`, the
WGAN-GP and R1 penalties, and two mode-collapse mitigations that work with any model because they only change what D
is shown: PacGAN packing and DiffAugment (see `d_input`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.layers.normalization import MOMENTS_COLLECTION, standing_statistics
from gan_jax.objectives.augment import diff_augment
from gan_jax.objectives.losses import AdversarialLoss, bce_d_loss, top_k_generator_loss
from gan_jax.objectives.packing import pack
from gan_jax.objectives.regularizers import gradient_penalty, r1_penalty

Array = jax.Array
PyTree = Any
LossOut = tuple[Array, tuple[dict[str, PyTree], dict[str, Array]]]
# DiffAugment's keys are folded from a loss's rng with this constant rather than split from it, so that the other
# random streams (latents, dropout, penalties) are the same with and without augmentation.
_AUGMENT_SALT = 0x0A06


def apply_network(
    net: nn.Module,
    params: PyTree,
    state: PyTree,
    *args: Array | None,
    train: bool,
    rng: Array | None = None,
    extra: tuple[str, ...] = (),
) -> tuple[Array, PyTree]:
    """Runs `net`, returning (output, updated non-parameter state such as batch statistics). In training every state
    collection is updated, in inference none; `extra` names collections to collect as well (e.g. sown "moments"),
    returned alongside the state."""
    rngs = {"dropout": rng} if rng is not None else None
    variables = {"params": params, **state}
    mutable = [*state, *extra] if train else list(extra)
    if mutable:
        out, new_state = net.apply(variables, *args, train=train, mutable=mutable, rngs=rngs)
        return out, {**state, **new_state}
    return net.apply(variables, *args, train=train, rngs=rngs), state


def default_labels(n: int, num_classes: int) -> Array | None:
    """Labels for generation without given ones: the classes in turn (a grid shows each class); None when
    unconditional (num_classes 0). Shared by the class-conditional games."""
    return jnp.arange(n) % num_classes if num_classes else None


def batch_labels(batch: dict[str, Array], num_classes: int) -> Array | None:
    """A batch's labels for a class-conditional game (None when unconditional); a clear error if it has none."""
    if not num_classes:
        return None
    if "label" not in batch:
        raise ValueError("a class-conditional GAN needs a labelled dataset (batches without 'label')")
    return batch["label"]


class TwoPlayerGame:
    """What the two-player games share: player "d" minimises `d_loss`, player "g" `g_loss`, and every step is alike
    (no static phases, unlike StyleGAN2's lazy regularization)."""

    def sampling_state(self, params: PyTree, state: PyTree, rng: Array, batch_size: int) -> PyTree:
        """G's state to sample with: with `standing_stats` = K > 0, its batch-norm statistics replaced by the mean
        batch moments of K batches of its own samples in training mode (BigGAN's "standing statistics"); else
        `state`. The EMA generator's running averages are averages of the live generator's statistics, which need
        not match the averaged weights; standing statistics are those of the weights actually sampled from."""
        if self.standing_stats <= 0 or "batch_stats" not in state:
            return state
        keys = jax.random.split(rng, self.standing_stats)
        trees = [_generator_moments(self, params, state, key, batch_size) for key in keys]
        return {**state, "batch_stats": standing_statistics(trees, state["batch_stats"])}

    def generator_moments(self, params: PyTree, state: PyTree, rng: Array, n: int) -> PyTree:
        """The "moments" its batch norms sow when G runs in training mode on `n` latents (and labels) drawn as in
        training: one pass of standing statistics. Games whose G has batch norm implement it."""
        raise NotImplementedError(f"{type(self).__name__} has no batch-norm generator for standing statistics")

    def phase(self, step: int) -> tuple:
        """The static phase of step `step` (see train/step.py): every step of this game is alike."""
        del step
        return ()

    def player_loss(
        self,
        player: str,
        params: dict[str, PyTree],
        state: dict[str, PyTree],
        batch: dict[str, Array],
        rng: Array,
        phase: tuple | None = None,
    ) -> LossOut:
        del phase
        return self.d_loss(params, state, batch, rng) if player == "d" else self.g_loss(params, state, batch, rng)


@dataclasses.dataclass(frozen=True)
class UnconditionalGAN(TwoPlayerGame):
    """G(z) against D(x), trained with an adversarial loss plus optional gradient penalties."""

    generator: nn.Module
    discriminator: nn.Module
    loss: AdversarialLoss
    z_dim: int
    z_dist: str = "normal"
    gp_weight: float = 0.0
    r1_gamma: float = 0.0
    pack: int = 1  # PacGAN: D judges packs of this many samples, concatenated along the channel axis
    diffaugment: str = ""  # DiffAugment policy ("color,translation,cutout") for every image D sees; "" = none
    standing_stats: int = 0  # sampling: batches of standing statistics (see `sampling_state`); 0 = running averages

    # The networks by name, and the players in update order with the networks each one owns.
    networks: tuple[str, ...] = ("generator", "discriminator")
    players: tuple[tuple[str, tuple[str, ...]], ...] = (("d", ("discriminator",)), ("g", ("generator",)))
    sampler: str = "generator"  # the network whose EMA is kept and sampled from

    def sample_latents(self, rng: Array, n: int) -> Array:
        if self.z_dist == "uniform":
            return jax.random.uniform(rng, (n, self.z_dim), minval=-1.0, maxval=1.0)
        return jax.random.normal(rng, (n, self.z_dim))

    def init(self, rng: Array, example: Array) -> tuple[dict[str, PyTree], dict[str, PyTree]]:
        """Parameters and non-parameter state of every network, from one example batch."""
        g_rng, d_rng, z_rng = jax.random.split(rng, 3)
        z = self.sample_latents(z_rng, example.shape[0])
        g_vars = self.generator.init({"params": g_rng, "dropout": g_rng}, z, train=False)
        d_vars = self.discriminator.init({"params": d_rng, "dropout": d_rng}, pack(example, self.pack), train=False)
        split = lambda v: (v["params"], {k: x for k, x in v.items() if k != "params"})  # noqa: E731
        (gp, gs), (dp, ds) = split(g_vars), split(d_vars)
        return {"generator": gp, "discriminator": dp}, {"generator": gs, "discriminator": ds}

    def d_input(self, x: Array, aug_rng: Array | None) -> Array:
        """What D is shown of a batch of examples: augmented (when a policy is set and `aug_rng` is given; None in
        evaluation) and then packed, so each member of a pack gets its own augmentation. Differentiable in `x`."""
        if self.diffaugment and aug_rng is not None:
            x = diff_augment(x, self.diffaugment, aug_rng)
        return pack(x, self.pack)

    def generator_moments(self, params: PyTree, state: PyTree, rng: Array, n: int) -> PyTree:
        z = self.sample_latents(rng, n)
        _, new = apply_network(self.generator, params, state, z, train=True, extra=(MOMENTS_COLLECTION,))
        return new[MOMENTS_COLLECTION]

    def generate(self, params: PyTree, state: PyTree, z: Array, train: bool = False) -> tuple[Array, PyTree]:
        """Samples from the generator with its own parameters and state (live or EMA)."""
        return apply_network(self.generator, params, state, z, train=train)

    def d_loss(
        self, params: dict[str, PyTree], state: dict[str, PyTree], batch: dict[str, Array], rng: Array
    ) -> LossOut:
        real = batch["x"]
        z_rng, real_rng, fake_rng, pen_rng = jax.random.split(rng, 4)
        z = self.sample_latents(z_rng, real.shape[0])
        fake, g_state = apply_network(self.generator, params["generator"], state["generator"], z, train=True)
        real_aug_rng, fake_aug_rng = jax.random.split(jax.random.fold_in(rng, _AUGMENT_SALT))
        # Penalties below act on these: the augmented, packed inputs that D actually judges. `fake` keeps its
        # dependence on G's parameters: D's own step differentiates D's parameters only, so nothing is back-propagated
        # into G there, while an unrolled look-ahead (train/step.py) needs D's update to stay differentiable in G.
        real = self.d_input(real, real_aug_rng)
        fake = self.d_input(fake, fake_aug_rng)
        d_params, d_state = params["discriminator"], state["discriminator"]
        real_logits, d_state = apply_network(self.discriminator, d_params, d_state, real, train=True, rng=real_rng)
        fake_logits, d_state = apply_network(self.discriminator, d_params, d_state, fake, train=True, rng=fake_rng)
        loss = self.loss.d(real_logits, fake_logits)
        metrics = {"d_loss": loss, "d_real": jnp.mean(real_logits), "d_fake": jnp.mean(fake_logits)}

        def d_fn(x: Array) -> Array:  # D as a function of its input alone, for the penalties
            return apply_network(self.discriminator, d_params, d_state, x, train=True, rng=pen_rng)[0]

        total = loss
        if self.gp_weight > 0:
            gp = gradient_penalty(d_fn, real, fake, pen_rng)
            metrics["gradient_penalty"] = gp
            total = total + self.gp_weight * gp
        if self.r1_gamma > 0:
            r1 = r1_penalty(d_fn, real)
            metrics["r1_penalty"] = r1
            total = total + 0.5 * self.r1_gamma * r1
        # The generator's batch statistics are not updated by D's step: only G's own step moves them.
        del g_state
        return total, ({"discriminator": d_state}, metrics)

    def g_loss(
        self, params: dict[str, PyTree], state: dict[str, PyTree], batch: dict[str, Array], rng: Array
    ) -> LossOut:
        z_rng, d_rng = jax.random.split(rng)
        z = self.sample_latents(z_rng, batch["x"].shape[0])
        fake, g_state = apply_network(self.generator, params["generator"], state["generator"], z, train=True)
        fake = self.d_input(fake, jax.random.fold_in(rng, _AUGMENT_SALT))
        fake_logits, _ = apply_network(
            self.discriminator, params["discriminator"], state["discriminator"], fake, train=True, rng=d_rng
        )
        if "g_keep" in batch:  # top-k training: the fraction of the samples G learns from (train/step.py)
            keep = batch["g_keep"][0]
            loss = top_k_generator_loss(self.loss.g, fake_logits, keep)
            return loss, ({"generator": g_state}, {"g_loss": loss, "g_keep": keep})
        loss = self.loss.g(fake_logits)
        return loss, ({"generator": g_state}, {"g_loss": loss})

    def critic(self, params: dict[str, PyTree], state: dict[str, PyTree], x: Array) -> Array:
        """D's logits for a batch of examples in inference mode, without augmentation: one per example, or one per
        pack of `pack` examples (what `eval_losses` and discriminator rejection sampling read)."""
        d_params, d_state = params["discriminator"], state["discriminator"]
        return apply_network(self.discriminator, d_params, d_state, self.d_input(x, None), train=False)[0]

    def critic_loss(self, params: dict[str, PyTree], state: dict[str, PyTree], real: Array, fake: Array) -> Array:
        """The logistic classification loss of D on given real and fake examples, as `critic` reads them (inference
        mode, no augmentation), without penalties: what calibrating D for rejection sampling minimises. With G fixed
        there is no game for penalties to stabilise, and the logistic loss, whatever the game's own, is the one whose
        optimal logit is log p_data / p_g, the quantity the rejection rule reads."""
        return bce_d_loss(self.critic(params, state, real), self.critic(params, state, fake))

    def eval_losses(
        self, params: dict[str, PyTree], state: dict[str, PyTree], batch: dict[str, Array], rng: Array
    ) -> dict[str, Array]:
        """Both players' losses on a real batch in inference mode, without augmentation or penalties (--mode=eval)."""
        z = self.sample_latents(rng, batch["x"].shape[0])
        fake, _ = self.generate(params["generator"], state["generator"], z)
        real_logits, fake_logits = self.critic(params, state, batch["x"]), self.critic(params, state, fake)
        return {
            "d_loss": self.loss.d(real_logits, fake_logits),
            "g_loss": self.loss.g(fake_logits),
            "d_real": jnp.mean(real_logits),
            "d_fake": jnp.mean(fake_logits),
        }


@functools.partial(jax.jit, static_argnums=(0, 4))
def _generator_moments(game: TwoPlayerGame, params: PyTree, state: PyTree, key: Array, batch_size: int) -> PyTree:
    """`game.generator_moments`, jitted once per (game, batch size) with the weights as arguments, so that every
    `Experiment.generate` call with standing statistics reuses one compiled program."""
    return game.generator_moments(params, state, key, batch_size)
