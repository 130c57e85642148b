"""Adversarial losses on discriminator logits, chosen by name in the config.

Each loss is a pair (discriminator loss, generator loss), both to be minimised, written with `softplus` so that the
sigmoid cross-entropies stay finite for logits of any size (log(sigmoid(x)) = -softplus(-x)).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class AdversarialLoss(NamedTuple):
    """d(real_logits, fake_logits) -> scalar and g(fake_logits) -> scalar, both minimised."""

    d: Callable[[Array, Array], Array]
    g: Callable[[Array], Array]


def bce_d_loss(real: Array, fake: Array) -> Array:
    """-log D(x) - log(1 - D(G(z))) from logits: the standard D loss, whose optimal logit is log p_data / p_g."""
    return jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake))


LOSSES: dict[str, AdversarialLoss] = {
    # Goodfellow et al. 2014, eq. 1: G minimises log(1 - D(G(z))); saturates when D wins early.
    "minimax": AdversarialLoss(d=bce_d_loss, g=lambda fake: -jnp.mean(jax.nn.softplus(fake))),
    # The same paper's practical variant: G maximises log D(G(z)).
    "non_saturating": AdversarialLoss(d=bce_d_loss, g=lambda fake: jnp.mean(jax.nn.softplus(-fake))),
    # Lim & Ye 2017; Miyato et al. 2018.
    "hinge": AdversarialLoss(
        d=lambda real, fake: jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake)),
        g=lambda fake: -jnp.mean(fake),
    ),
    # Arjovsky et al. 2017 (the critic's Lipschitz constraint comes from gp_weight, Gulrajani et al. 2017).
    "wasserstein": AdversarialLoss(
        d=lambda real, fake: jnp.mean(fake) - jnp.mean(real), g=lambda fake: -jnp.mean(fake)
    ),
    # Mao et al. 2017 with a=0, b=1, c=1.
    "least_squares": AdversarialLoss(
        d=lambda real, fake: 0.5 * jnp.mean((real - 1.0) ** 2) + 0.5 * jnp.mean(fake**2),
        g=lambda fake: 0.5 * jnp.mean((fake - 1.0) ** 2),
    ),
}


def top_k_generator_loss(g: Callable[[Array], Array], fake_logits: Array, keep: Array) -> Array:
    """G's loss `g` over only the fraction `keep` (traced, in (0, 1]) of its samples that D rates most real: top-k
    training (Sinha et al. 2020). The others contribute no gradient, because the worst-rated samples' gradients can
    push samples away from the nearest mode (their mixture-of-Gaussians analysis); at least one sample is kept.
    Every loss of `LOSSES` is a mean over logits, so `g` of one row is that row's share of the loss."""
    n = fake_logits.shape[0]
    rows = fake_logits.reshape(n, -1)
    per_sample = jax.vmap(lambda row: g(row[None]))(rows)
    k = jnp.maximum(jnp.round(keep * n), 1.0)
    rank = jnp.argsort(jnp.argsort(-jnp.mean(rows, axis=1)))  # 0 = the sample D rates most real
    mask = (rank < k).astype(per_sample.dtype)
    return jnp.sum(mask * per_sample) / jnp.sum(mask)


def get_loss(name: str) -> AdversarialLoss:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]
