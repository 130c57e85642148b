"""Optimizers from the config: one per player, each with its own learning rate and betas."""

from __future__ import annotations

import ml_collections
import optax


def make_optimizer(c: ml_collections.ConfigDict) -> optax.GradientTransformation:
    if c.name == "adam":
        return optax.adam(c.lr, b1=c.b1, b2=c.b2, eps=c.eps)
    if c.name == "adamw":
        return optax.adamw(c.lr, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay)
    if c.name == "rmsprop":
        return optax.rmsprop(c.lr, eps=c.eps, momentum=c.momentum or None)
    if c.name == "sgd":
        return optax.sgd(c.lr, momentum=c.momentum or None)
    raise ValueError(f"unknown optimizer {c.name!r}")


def make_optimizers(config: ml_collections.ConfigDict) -> dict[str, optax.GradientTransformation]:
    return {player: make_optimizer(config.optim[player]) for player in ("g", "d")}
