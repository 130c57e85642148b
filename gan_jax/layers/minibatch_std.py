"""Minibatch standard deviation (Karras et al. 2018): a feature that tells D how varied its batch is.

A collapsed generator produces batches with little variation; one sample at a time D cannot see that, but the
standard deviation across samples can. The layer computes it over groups of `group_size` samples, averages it over
features and pixels, and appends it as extra channels (extra features for flat inputs), as ProGAN and StyleGAN do.

Groups follow StyleGAN's layout: the batch is read as (group_size, B / group_size), so sample i belongs to group
i mod (B / group_size). As in StyleGAN, a group size larger than the batch falls back to the whole batch
(min(group_size, B)); a group size that does not divide the batch is an error, since a statistic over unequal groups
would weigh samples differently.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def minibatch_std(x: Array, group_size: int, num_features: int = 1, eps: float = 1e-8) -> Array:
    """(B, ..., C) -> (B, ..., C + num_features): appends the group's mean standard deviation over samples."""
    b, c = x.shape[0], x.shape[-1]
    g = min(group_size, b)
    if g < 1 or b % g:
        raise ValueError(f"minibatch std: group size {g} must divide the discriminator's batch of {b}")
    if c % num_features:
        raise ValueError(f"minibatch std: num_features {num_features} must divide the {c} channels")
    y = x.astype(jnp.float32).reshape((g, b // g) + x.shape[1:-1] + (num_features, c // num_features))
    y = y - jnp.mean(y, axis=0, keepdims=True)
    y = jnp.sqrt(jnp.mean(y**2, axis=0) + eps)  # (M, ..., n, C/n): std over each group
    y = jnp.mean(y, axis=tuple(range(1, y.ndim - 2)) + (y.ndim - 1,))  # (M, n): averaged over pixels and channels
    y = jnp.tile(y, (g, 1)).reshape((b,) + (1,) * (x.ndim - 2) + (num_features,))  # sample i gets group i mod M
    y = jnp.broadcast_to(y, x.shape[:-1] + (num_features,)).astype(x.dtype)
    return jnp.concatenate([x, y], axis=-1)


class MinibatchStd(nn.Module):
    """`minibatch_std` as a parameter-free Flax layer."""

    group_size: int = 4
    num_features: int = 1

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return minibatch_std(x, self.group_size, self.num_features)
