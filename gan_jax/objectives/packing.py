"""PacGAN packing (Lin et al. 2018): the discriminator judges m samples at once instead of one.

A generator that has collapsed onto a few modes produces packs whose members look alike, which a packed discriminator
can tell from packs of independent real samples; one sample at a time it cannot. Packing is a reshape of D's input,
so the game applies it and no model needs to know: D is simply built for an input with m times the channels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def pack(x: Array, m: int) -> Array:
    """(B, ..., C) -> (B/m, ..., m*C): each group of m consecutive samples concatenated along the last axis.

    Images (B, H, W, C) become (B/m, H, W, m*C) with sample k of a pack in channels [k*C, (k+1)*C); points (B, 2)
    become (B/m, 2m). m=1 returns `x` unchanged, so an unpacked game keeps its parameter shapes.
    """
    if m == 1:
        return x
    b = x.shape[0]
    if m < 1 or b % m:
        raise ValueError(f"cannot pack a batch of {b} into groups of {m}: the batch must be divisible by the pack size")
    grouped = x.reshape((b // m, m) + x.shape[1:])  # (B/m, m, ..., C)
    grouped = jnp.moveaxis(grouped, 1, -2)  # (B/m, ..., m, C)
    return grouped.reshape(grouped.shape[:-2] + (m * x.shape[-1],))
