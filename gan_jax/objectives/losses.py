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


def _bce_d(real: Array, fake: Array) -> Array:
    # -log D(x) - log(1 - D(G(z)))
    return jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake))


LOSSES: dict[str, AdversarialLoss] = {
    # Goodfellow et al. 2014, eq. 1: G minimises log(1 - D(G(z))); saturates when D wins early.
    "minimax": AdversarialLoss(d=_bce_d, g=lambda fake: -jnp.mean(jax.nn.softplus(fake))),
    # The same paper's practical variant: G maximises log D(G(z)).
    "non_saturating": AdversarialLoss(d=_bce_d, g=lambda fake: jnp.mean(jax.nn.softplus(-fake))),
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


def get_loss(name: str) -> AdversarialLoss:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]
