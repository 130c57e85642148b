"""Adversarial losses, regularizers and the games (who updates what, with which loss) that the trainer plays."""

from gan_jax.objectives.losses import LOSSES, AdversarialLoss, get_loss
from gan_jax.objectives.regularizers import gradient_penalty, r1_penalty

__all__ = ["LOSSES", "AdversarialLoss", "get_loss", "gradient_penalty", "r1_penalty"]
