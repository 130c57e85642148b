"""Spectral normalization (Miyato et al. 2018): a layer's weight divided by its largest singular value.

Why: dividing every weight of the discriminator by its spectral norm bounds each layer's Lipschitz constant by 1
(ReLU-like activations do not increase it), which keeps D's gradients informative without a gradient penalty. BigGAN
(Brock et al. 2019) also normalises G's weights, for conditioning rather than for a Lipschitz bound.

The spectral norm is estimated with one step of power iteration per training step, warm-started from the vector `u`
of the previous step, as in the paper (Algorithm 1) and `torch.nn.utils.spectral_norm`: the weight changes slowly,
so the warm-started estimate tracks the true top singular value closely after a few steps. `u` and `v` are constants
for autodiff; the gradient flows through W only, in sigma = v^T W u and in W / sigma.

Matrix convention: a weight `w` is viewed as `w.reshape(-1, w.shape[-1])`, rows the fan-in and columns the output
units (HWIO kernels, (in, out) Dense kernels); an `nn.Embed` table (num, features) is viewed as that (num, features)
matrix. The largest singular value of a matrix is that of its transpose, so sigma is exactly PyTorch's: for a
convolution torch views weight (out, in, kh, kw) as (out, in*kh*kw), the transpose of ours up to a permutation of
rows; for an embedding BigGAN-PyTorch's SNEmbedding views the (num, features) table as it is. `u` has one entry per
column (the last axis).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array

SPECTRAL_COLLECTION = "spectral"
# The names of the parameter normalised in each supported layer: Conv2D, ConvTranspose2D and nn.Dense own a
# `kernel`, nn.Embed owns an `embedding` table.
_WEIGHT_NAMES = ("kernel", "embedding")

__all__ = ["SPECTRAL_COLLECTION", "SpectralNorm", "init_u", "spectral_normalize"]


def _normalize(x: Array, eps: float) -> Array:
    """x / max(||x||, eps), as torch.nn.functional.normalize: a zero vector stays zero instead of becoming NaN."""
    return x / jnp.maximum(jnp.linalg.norm(x), eps)


def init_u(key: Array, features: int, dtype: Any = jnp.float32) -> Array:
    """The initial power-iteration vector: N(0, 1) normalised to unit length, shape (features,)."""
    return _normalize(jax.random.normal(key, (features,), dtype), 1e-12)


def spectral_normalize(w: Array, u: Array, n_steps: int = 1, eps: float = 1e-12) -> tuple[Array, Array, Array]:
    """(w / sigma, new u, sigma): `w` divided by the power-iteration estimate sigma of its largest singular value.

    W = w.reshape(-1, w.shape[-1]) and u has shape (w.shape[-1],). Each of the `n_steps` steps is
    v = normalize(W u), u = normalize(W^T v); then sigma = v^T W u. With n_steps = 0, v = normalize(W u) from the
    given u (u unchanged), so sigma = ||W u||. u and v are computed from a stop-gradiented W and are constants for
    autodiff, so d sigma / d W = v u^T, as in the paper and torch. The arithmetic is in float32 (or w's dtype if
    wider); the normalised weight is returned in w's dtype. A zero matrix (sigma = 0) is returned unchanged.
    """
    if w.ndim < 2:
        raise ValueError(f"spectral normalization needs a weight with at least 2 axes, got shape {w.shape}")
    if u.shape != (w.shape[-1],):
        raise ValueError(f"u must have shape ({w.shape[-1]},) for a weight of shape {w.shape}, got {u.shape}")
    dtype = jnp.promote_types(w.dtype, jnp.float32)
    mat = w.reshape(-1, w.shape[-1]).astype(dtype)
    frozen = lax.stop_gradient(mat)
    u = lax.stop_gradient(u).astype(dtype)
    v = _normalize(frozen @ u, eps)
    for step in range(n_steps):
        if step > 0:
            v = _normalize(frozen @ u, eps)
        u = _normalize(frozen.T @ v, eps)
    u, v = lax.stop_gradient(u), lax.stop_gradient(v)
    sigma = v @ (mat @ u)
    normalized = mat / jnp.where(sigma > 0, sigma, 1.0)
    return normalized.reshape(w.shape).astype(w.dtype), u, sigma


class SpectralNorm(nn.Module):
    """Wraps a layer that owns a `kernel` (Conv2D, ConvTranspose2D, nn.Dense) or `embedding` (nn.Embed) param and
    runs it with that weight spectrally normalised: `SpectralNorm(Conv2D(64, 3, padding=1))(x, update_stats=train)`.

    Variables:
    * params: the wrapped layer's own, where flax puts that layer without the wrapper (a layer built inline in a
      compact method is named in the enclosing module, e.g. {"Conv2D_0": {"kernel", "bias"}}), so adding or removing
      spectral normalization changes no parameter path. In `setup`, give the layer a name (`self.c = SpectralNorm(
      Conv2D(..., name="conv"))`), else flax adopts it as {"c": {"layer": ...}}. The stored weight is the raw one
      (`init` stores what the layer's initializer drew); it is divided by sigma on every call.
    * "spectral": {"u": (out,)} under this wrapper's own name (e.g. {"SpectralNorm_0": {"u"}}), created at `init`.

    `update_stats=True` (training) runs `n_steps` power-iteration steps from the stored u, uses the resulting sigma
    and stores the new u, so the trainer must pass `mutable=["spectral", ...]`. `update_stats=False` runs the same
    computation from the stored u and writes nothing, so evaluation is deterministic and the network's output is the
    one a training-mode call would have given with the same variables.

    Other arguments of the call (positional and keyword) go to the wrapped layer. The layer may be called through this
    wrapper more than once; each training-mode call then advances u.
    """

    layer: nn.Module
    n_steps: int = 1
    eps: float = 1e-12
    collection: str = SPECTRAL_COLLECTION

    @nn.compact
    def __call__(self, *args: Any, update_stats: bool, **kwargs: Any) -> Any:
        raw: dict[str, Any] = {}

        def normalize(variables: dict[str, Any]) -> dict[str, Any]:
            params = dict(variables["params"])
            names = [name for name in _WEIGHT_NAMES if name in params]
            if len(names) != 1:
                raise ValueError(
                    f"SpectralNorm needs a layer owning exactly one of the params {_WEIGHT_NAMES}; "
                    f"{type(self.layer).__name__} has {sorted(params)}"
                )
            name = names[0]
            w = params[name]
            raw["params"] = variables["params"]
            u = self.variable(self.collection, "u", lambda: init_u(self.make_rng("params"), w.shape[-1]))
            params[name], new_u, _ = spectral_normalize(w, u.value, self.n_steps, self.eps)
            if update_stats:
                u.value = new_u.astype(u.value.dtype)
            return {**variables, "params": params}

        def restore(variables: dict[str, Any]) -> dict[str, Any]:
            # Only reached under `init`, where map_variables writes the mapped collection back: once after the pass
            # that creates the params (raw already) and once after the pass that reads their normalised view, which
            # must not replace the raw weight the layer created.
            return {**variables, "params": raw["params"]} if "params" in raw else variables

        return nn.map_variables(
            lambda layer: layer(*args, **kwargs),
            "params",
            trans_in_fn=normalize,
            trans_out_fn=restore,
            init=self.is_initializing(),
        )(self.layer)
