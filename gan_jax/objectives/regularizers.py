"""Regularizers: WGAN-GP (Gulrajani et al. 2017) and R1 (Mescheder et al. 2018) on the discriminator, StyleGAN2's
path-length regularization (Karras et al. 2020) on the generator, and BigGAN's orthogonal regularization (Brock et
al. 2019) on weights."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
PyTree = Any


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


def path_lengths(synthesize: Callable[[Array], Array], ws: Array, rng: Array) -> tuple[Array, Array]:
    """(|J_w^T y| per example, images) for ws (N, L, D), J the Jacobian of the NHWC images in w, y ~ N(0, 1/(H W)).

    The length is sqrt(mean over the L layers of the squared norm over D), as in StyleGAN2's loss.py; scaling y by
    1/sqrt(H W) makes it independent of the resolution.
    """
    images, pullback = jax.vjp(synthesize, ws)
    y = jax.random.normal(rng, images.shape, images.dtype) / jnp.sqrt(images.shape[1] * images.shape[2])
    grads = pullback(y)[0]
    return jnp.sqrt(jnp.mean(jnp.sum(jnp.square(grads), axis=2), axis=1)), images


def path_length_penalty(lengths: Array, pl_mean: Array, decay: float) -> tuple[Array, Array]:
    """(mean((lengths - a)^2), a) with a = pl_mean moved by `decay` towards the batch's mean length: the penalty pulls
    every length towards the running mean, i.e. a generator whose output changes equally fast in every direction.
    As in the official code, `a` is not detached inside the penalty; the caller stores it detached."""
    new_mean = pl_mean + decay * (jnp.mean(lengths) - pl_mean)
    return jnp.mean(jnp.square(lengths - new_mean)), new_mean


def orthogonal_penalty(params: PyTree, exclude: Callable[[tuple[str, ...]], bool] | None = None) -> Array:
    """BigGAN's orthogonal regularization (Brock et al. 2019, sec. 3.1): sum over weights of ||(W W^T) ⊙ (1 - I)||_F^2.

    It pushes the rows of every weight matrix towards mutual orthogonality without constraining their norms, which
    makes G amenable to the truncation trick. Every param leaf with at least 2 axes counts, except those for which
    `exclude(path)` is true, `path` being the tuple of dict keys to the leaf, e.g. ("shared", "embedding").
    W has one row per output unit, as torch's `weight.view(weight.shape[0], -1)`: W = leaf.reshape(-1, out).T for
    kernels (HWIO convolutions, (in, out) Dense kernels). A leaf named "embedding" (an nn.Embed table (num, features),
    whose torch weight has the same layout) is used as it is, one row per entry. BigGAN-PyTorch excludes G's shared
    class embedding ("it makes no sense"); pass an `exclude` that does the same.

    Gradient: d/dW ||(W W^T) ⊙ (1 - I)||_F^2 = 4 ((W W^T) ⊙ (1 - I)) W. BigGAN-PyTorch's `utils.ortho(model, strength)`
    adds 2 * strength * ((W W^T) ⊙ (1 - I)) W to each weight's gradient, so adding (strength / 2) * penalty to the
    loss gives exactly its gradient. The paper writes the term as beta * penalty (gradient 4 beta (...) W), so a loss
    weight beta corresponds to `ortho(model, strength=2 * beta)`.
    """
    total = jnp.zeros((), jnp.float32)
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        keys = tuple(_key_name(k) for k in path)
        if jnp.ndim(leaf) < 2 or (exclude is not None and exclude(keys)):
            continue
        w = leaf if keys[-1:] == ("embedding",) else leaf.reshape(-1, leaf.shape[-1]).T
        w = w.reshape(w.shape[0], -1).astype(jnp.float32)
        gram = w @ w.T
        off_diagonal = gram * (1.0 - jnp.eye(gram.shape[0], dtype=gram.dtype))
        total = total + jnp.sum(jnp.square(off_diagonal))
    return total


def _key_name(key: Any) -> str:
    """The name of one step of a pytree path: a dict key, an attribute name, or a sequence index."""
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)
