"""Optimizers from the config: one per player, each with its own learning rate and betas."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax


def make_optimizer(c: ml_collections.ConfigDict, *, differentiable: bool = False) -> optax.GradientTransformation:
    """The optimizer of one player. `differentiable=True` is for an optimizer that is differentiated through (the
    unrolled discriminator's look-ahead): Adam's sqrt(v) has an infinite derivative where a gradient entry is exactly
    zero (a dead unit, an unused maxout piece), which turns the look-ahead's gradient into NaN, so the square root
    gets eps_root = eps**2 inside it, the smallest change that keeps it finite. Its state has the same structure, so
    it continues the player's own optimizer state. RMSProp (eps inside the root) and SGD need no change."""
    eps_root = c.eps**2 if differentiable else 0.0
    if c.name == "adam":
        return optax.adam(c.lr, b1=c.b1, b2=c.b2, eps=c.eps, eps_root=eps_root)
    if c.name == "adamw":
        return optax.adamw(c.lr, b1=c.b1, b2=c.b2, eps=c.eps, eps_root=eps_root, weight_decay=c.weight_decay)
    if c.name == "rmsprop":
        return optax.rmsprop(c.lr, eps=c.eps, momentum=c.momentum or None)
    if c.name == "sgd":
        return optax.sgd(c.lr, momentum=c.momentum or None)
    raise ValueError(f"unknown optimizer {c.name!r}")


def make_optimizers(config: ml_collections.ConfigDict) -> dict[str, optax.GradientTransformation]:
    return {player: make_optimizer(config.optim[player]) for player in ("g", "d")}


def ema_decay_schedule(config: ml_collections.ConfigDict) -> float | Callable[[jax.Array], jax.Array]:
    """The generator EMA's decay: `config.ema_decay` (a number; the step applies its own warm-up), or with
    `config.ema_kimg` > 0 StyleGAN's half-life schedule, step -> 0.5 ** (batch / min(ema_kimg * 1000, images seen
    * ema_rampup)): at step 0 the average is a copy, and it lengthens to a half-life of ema_kimg thousand images."""
    if config.ema_kimg <= 0:
        return config.ema_decay
    batch, half_life, rampup = config.batch_size, config.ema_kimg * 1000.0, config.ema_rampup

    def decay(step: jax.Array) -> jax.Array:
        nimg = jnp.asarray(half_life, jnp.float32)
        if rampup > 0:
            nimg = jnp.minimum(nimg, step.astype(jnp.float32) * batch * rampup)
        return 0.5 ** (batch / jnp.maximum(nimg, 1e-8))

    return decay


def lr_decay_factor(config: ml_collections.ConfigDict) -> Callable[[jax.Array], jax.Array] | None:
    """step -> the factor on both players' learning rates (`config.lr_decay`), or None for a constant rate.

    Applied by the train step as a multiplier of the updates (equal to scaling the rate for Adam, RMSProp and SGD),
    so the optimizer states keep one structure whatever the schedule, and it depends on the step alone: a resumed run
    continues the same curve. It stays 1 until `lr_decay_start` and falls from there to `lr_decay_final` at
    `num_train_steps`.
    """
    if config.lr_decay == "constant":
        return None
    start, final = config.get("lr_decay_start", 0), config.lr_decay_final
    span = max(config.num_train_steps - start, 1)

    def factor(step: jax.Array) -> jax.Array:
        t = jnp.clip((step.astype(jnp.float32) - start) / span, 0.0, 1.0)
        if config.lr_decay == "linear":
            shape = 1.0 - t
        else:
            shape = 0.5 * (1.0 + jnp.cos(jnp.pi * t))
        return final + (1.0 - final) * shape

    return factor
