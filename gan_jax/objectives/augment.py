"""DiffAugment (Zhao et al. 2020): differentiable augmentations of every image the discriminator sees.

With little data D memorises the real set and its feedback to G becomes useless. Augmenting both real and fake images
(in D's and in G's loss) keeps D from memorising while G still learns the un-augmented distribution, which only works
if the augmentations are differentiable, so G's gradient flows through them. The three policies and their parameters
follow the reference implementation (mit-han-lab/data-efficient-gans, DiffAugment_pytorch.py), written for NHWC:

- color: brightness + U(-0.5, 0.5); saturation: deviation from the pixel's channel mean times U(0, 2); contrast:
  deviation from the image mean times U(0.5, 1.5); each factor drawn per image.
- translation: a shift of up to 1/8 of the height and width (rounded), drawn per image, with zero padding.
- cutout: a square of half the height and width (rounded) set to zero, its centre drawn per image.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


def _uniform_per_image(key: Array, x: Array) -> Array:
    return jax.random.uniform(key, (x.shape[0], 1, 1, 1), x.dtype)


def rand_brightness(x: Array, key: Array) -> Array:
    return x + (_uniform_per_image(key, x) - 0.5)


def rand_saturation(x: Array, key: Array) -> Array:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    return (x - mean) * (_uniform_per_image(key, x) * 2.0) + mean


def rand_contrast(x: Array, key: Array) -> Array:
    mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    return (x - mean) * (_uniform_per_image(key, x) + 0.5) + mean


def translate(x: Array, shift_rows: Array, shift_cols: Array) -> Array:
    """out[b, i, j] = x[b, i + shift_rows[b], j + shift_cols[b]], zero where that falls outside the image."""
    _, h, w, _ = x.shape
    rows = jnp.arange(h)[None, :] + shift_rows[:, None]  # (B, H): the source row of each output row
    cols = jnp.arange(w)[None, :] + shift_cols[:, None]
    x = jax.vmap(lambda img, r: img[r])(x, jnp.clip(rows, 0, h - 1))
    x = x * ((rows >= 0) & (rows < h)).astype(x.dtype)[:, :, None, None]
    x = jax.vmap(lambda img, c: img[:, c])(x, jnp.clip(cols, 0, w - 1))
    return x * ((cols >= 0) & (cols < w)).astype(x.dtype)[:, None, :, None]


def rand_translation(x: Array, key: Array, ratio: float = 0.125) -> Array:
    _, h, w, _ = x.shape
    max_rows, max_cols = int(h * ratio + 0.5), int(w * ratio + 0.5)
    k_rows, k_cols = jax.random.split(key)
    shift_rows = jax.random.randint(k_rows, (x.shape[0],), -max_rows, max_rows + 1)
    shift_cols = jax.random.randint(k_cols, (x.shape[0],), -max_cols, max_cols + 1)
    return translate(x, shift_rows, shift_cols)


def cutout(x: Array, top: Array, left: Array, size: tuple[int, int]) -> Array:
    """Zeroes rows [top[b], top[b] + size[0]) x columns [left[b], left[b] + size[1]) of image b (clipped to it)."""
    _, h, w, _ = x.shape
    in_rows = (jnp.arange(h)[None, :] >= top[:, None]) & (jnp.arange(h)[None, :] < top[:, None] + size[0])
    in_cols = (jnp.arange(w)[None, :] >= left[:, None]) & (jnp.arange(w)[None, :] < left[:, None] + size[1])
    mask = 1.0 - (in_rows[:, :, None] & in_cols[:, None, :]).astype(x.dtype)
    return x * mask[..., None]


def rand_cutout(x: Array, key: Array, ratio: float = 0.5) -> Array:
    _, h, w, _ = x.shape
    size = (int(h * ratio + 0.5), int(w * ratio + 0.5))
    k_rows, k_cols = jax.random.split(key)
    # The reference draws the square's centre in [0, H + (1 - size % 2)) and clips the square to the image.
    centre_rows = jax.random.randint(k_rows, (x.shape[0],), 0, h + (1 - size[0] % 2))
    centre_cols = jax.random.randint(k_cols, (x.shape[0],), 0, w + (1 - size[1] % 2))
    return cutout(x, centre_rows - size[0] // 2, centre_cols - size[1] // 2, size)


POLICIES: dict[str, tuple[Callable[[Array, Array], Array], ...]] = {
    "color": (rand_brightness, rand_saturation, rand_contrast),
    "translation": (rand_translation,),
    "cutout": (rand_cutout,),
}


def parse_policy(policy: str) -> tuple[str, ...]:
    """The policy's names in order, e.g. ("color", "translation") for "color,translation"; () for ""; an unknown name
    raises ValueError, so a misspelt policy never silently trains without augmentation."""
    names = tuple(name.strip() for name in policy.split(",")) if policy.strip() else ()
    unknown = [name for name in names if name not in POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {unknown[0]!r}; choose from {', '.join(POLICIES)}")
    return names


def diff_augment(x: Array, policy: str, key: Array) -> Array:
    """Applies the comma-separated `policy` to NHWC images `x`, each random choice drawn from `key`; "" is identity."""
    for name in parse_policy(policy):
        for fn in POLICIES[name]:
            key, sub = jax.random.split(key)
            x = fn(x, sub)
    return x
