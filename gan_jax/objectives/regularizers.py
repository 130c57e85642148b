"""Gradient penalties on the discriminator: WGAN-GP (Gulrajani et al. 2017) and R1 (Mescheder et al. 2018)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


def _per_example_grad_sq_norm(d_fn: Callable[[Array], Array], x: Array) -> Array:
    """||d D(x_i) / d x_i||^2 for each example; D's outputs are summed, so each example's gradient is its own."""
    grads = jax.grad(lambda v: jnp.sum(d_fn(v)))(x)
    return jnp.sum(grads.reshape(grads.shape[0], -1) ** 2, axis=1)


def gradient_penalty(d_fn: Callable[[Array], Array], real: Array, fake: Array, rng: Array) -> Array:
    """mean((||grad D(x_hat)|| - 1)^2) at random interpolates x_hat between real and fake samples."""
    eps = jax.random.uniform(rng, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
    x_hat = eps * real + (1.0 - eps) * fake
    norms = jnp.sqrt(_per_example_grad_sq_norm(d_fn, x_hat) + 1e-12)
    return jnp.mean((norms - 1.0) ** 2)


def r1_penalty(d_fn: Callable[[Array], Array], real: Array) -> Array:
    """mean(||grad D(x)||^2) at real samples; the caller multiplies by gamma / 2."""
    return jnp.mean(_per_example_grad_sq_norm(d_fn, real))
