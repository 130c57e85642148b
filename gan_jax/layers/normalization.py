"""Batch normalization with synchronized statistics, class-conditional batch normalization, and standing statistics.

* `BatchNorm` is batch normalization (Ioffe & Szegedy 2015) whose batch moments are plain `jnp.mean`s over the
  global batch. Under `jax.jit` with the batch sharded over a data axis (gan_jax.train.parallel) XLA computes them
  with cross-device reductions, so they are the synchronized, cross-replica statistics of the whole batch that
  BigGAN relies on, with no explicit `axis_name`: 8 devices give the numbers of one.
* `ConditionalBatchNorm` normalizes without an affine of its own and applies a per-example gain and bias: looked up
  per class (SNGAN's categorical conditional BN, Miyato & Koyama 2018) or predicted from a conditioning vector by
  linear layers (BigGAN's `ccbn`, Brock et al. 2019: the shared class embedding concatenated with a chunk of z).
* `standing_statistics` averages the batch moments of several training-mode passes into running statistics for
  sampling (BigGAN's "standing statistics"): the generator is then normalized with statistics of its own current
  samples instead of an exponential average over past generators.

Both norms use the biased variance (divide by the number of values), for normalizing and for the running average.
PyTorch normalizes with the biased variance too but keeps the unbiased one in `running_var`; the difference is a
factor n / (n - 1) with n = N*H*W values per channel, negligible for image batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.layers.materialize import materialize
from gan_jax.layers.spectral import SpectralNorm

Array = jax.Array
PyTree = Any

MOMENTS_COLLECTION = "moments"

__all__ = ["MOMENTS_COLLECTION", "BatchNorm", "ConditionalBatchNorm", "standing_statistics"]


class BatchNorm(nn.Module):
    """Batch normalization over every axis but the last (NHWC images, (N, C) features).

    Variables: params "scale" (C,) (init `scale_init`, default 1, if `use_scale`) and "bias" (C,) (init 0, if
    `use_bias`); "batch_stats" {"mean": (C,) init 0, "var": (C,) init 1}.

    `train=True` normalizes with the batch mean and biased variance, computed in float32 with `jnp.mean` over the
    whole (global) batch: under `jax.jit` with the batch sharded over devices these are the synchronized cross-device
    statistics automatically. The running averages move as ra = momentum * ra + (1 - momentum) * batch (momentum 0.9
    is PyTorch's momentum=0.1) when "batch_stats" is mutable and the module is not being initialized (so `init`
    returns mean 0, var 1 whatever the mode, and a pass with only "moments" mutable, for standing statistics, leaves
    them alone). The batch moments are also sown into the "moments" collection as "mean" and "var" (no-op unless that
    collection is mutable; never during `init`) for `standing_statistics`.
    `train=False` normalizes with the running averages.
    """

    use_scale: bool = True
    use_bias: bool = True
    momentum: float = 0.9
    eps: float = 1e-5
    scale_init: nn.initializers.Initializer = nn.initializers.ones_init()  # DCGAN draws it from N(1, 0.02)
    # One pass, var = E[x^2] - E[x]^2 (flax's default; about 10% faster for DCGAN on CPU), instead of two; exact
    # enough after a convolution whose output has mean near 0, not when |mean| >> std.
    fast_variance: bool = False
    # Store the input's cotangent in the backward pass (materialize(forward=False, backward=True), 4-D inputs, CPU):
    # faster after a convolution in DCGAN (see materialize.py), slower in SNGAN's residual blocks (0.68-0.69 steps/s
    # against 0.71-0.74), so a model's choice.
    store_input_cotangent: bool = False

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        features = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
        if train:
            if self.store_input_cotangent and x.ndim == 4:
                x = materialize(x, forward=False, backward=True)
            axes = tuple(range(x.ndim - 1))
            x32 = x.astype(jnp.float32)
            mean = jnp.mean(x32, axis=axes)
            if self.fast_variance:
                var = jnp.maximum(jnp.mean(jnp.square(x32), axis=axes) - jnp.square(mean), 0.0)
            else:
                var = jnp.mean(jnp.square(x32 - mean), axis=axes)  # two-pass: no cancellation when |mean| >> std
            if not self.is_initializing():
                if self.is_mutable_collection("batch_stats"):
                    ra_mean.value = self.momentum * ra_mean.value + (1.0 - self.momentum) * mean
                    ra_var.value = self.momentum * ra_var.value + (1.0 - self.momentum) * var
                self.sow(MOMENTS_COLLECTION, "mean", mean)
                self.sow(MOMENTS_COLLECTION, "var", var)
        else:
            mean, var = ra_mean.value, ra_var.value
        mul = jax.lax.rsqrt(var + self.eps)
        if self.use_scale:
            mul = mul * self.param("scale", self.scale_init, (features,), jnp.float32)
        y = (x - mean.astype(x.dtype)) * mul.astype(x.dtype)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros_init(), (features,), jnp.float32).astype(x.dtype)
        return y


class ConditionalBatchNorm(nn.Module):
    """Batch normalization whose gain and bias depend on each example's condition: y = BN(x) * gain + bias.

    * `num_classes > 0` (SNGAN): `cond` holds int labels (N,); gain and bias are rows of per-class tables, params
      "gain" {"embedding": (num_classes, C)} initialised to 1 and "bias" {"embedding": (num_classes, C)} to 0, so at
      init the layer is plain batch normalization. The tables are never spectrally normalised (SNGAN's G has no SN).
    * `num_classes == 0` (BigGAN's `ccbn`): `cond` is a float vector (N, D); gain = 1 + gain_linear(cond) and
      bias = bias_linear(cond), two nn.Dense(C) params "gain" and "bias", each wrapped in `SpectralNorm` when
      `spectral` (their power-iteration vectors in the "spectral" collection, updated when `train`). Following
      BigGAN-PyTorch, whose G builds ccbn with `which_linear(..., bias=False)` when the class embedding is shared,
      the linear layers have no bias unless `linear_bias`.

    The normalization is a `BatchNorm` without affine named "bn": its running averages are "batch_stats" {"bn":
    {"mean", "var"}} and its moments are sown as "moments" {"bn": {"mean", "var"}}; see `BatchNorm` for train mode.
    """

    num_classes: int = 0
    spectral: bool = False
    momentum: float = 0.9
    eps: float = 1e-5
    linear_bias: bool = False
    sn_steps: int = 1
    sn_eps: float = 1e-12

    @nn.compact
    def __call__(self, x: Array, cond: Array, train: bool) -> Array:
        features = x.shape[-1]
        h = BatchNorm(use_scale=False, use_bias=False, momentum=self.momentum, eps=self.eps, name="bn")(x, train)
        if self.num_classes > 0:
            if not jnp.issubdtype(cond.dtype, jnp.integer) or cond.ndim != 1:
                raise ValueError(f"with num_classes > 0, cond must be int labels (N,), got {cond.dtype}{cond.shape}")
            ones, zeros = nn.initializers.ones_init(), nn.initializers.zeros_init()
            gain = nn.Embed(self.num_classes, features, embedding_init=ones, name="gain")(cond)
            bias = nn.Embed(self.num_classes, features, embedding_init=zeros, name="bias")(cond)
        else:
            if cond.ndim != 2:
                raise ValueError(f"with num_classes == 0, cond must be a float vector (N, D), got shape {cond.shape}")
            gain_layer = nn.Dense(features, use_bias=self.linear_bias, name="gain")
            bias_layer = nn.Dense(features, use_bias=self.linear_bias, name="bias")
            if self.spectral:
                sn = dict(n_steps=self.sn_steps, eps=self.sn_eps)
                gain = 1.0 + SpectralNorm(gain_layer, name="gain_sn", **sn)(cond, update_stats=train)
                bias = SpectralNorm(bias_layer, name="bias_sn", **sn)(cond, update_stats=train)
            else:
                gain, bias = 1.0 + gain_layer(cond), bias_layer(cond)
        shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (features,)  # broadcast over the spatial axes
        return h * gain.reshape(shape).astype(h.dtype) + bias.reshape(shape).astype(h.dtype)


def _is_moments_leaf(x: Any) -> bool:
    return isinstance(x, tuple)


def standing_statistics(moment_trees: Sequence[PyTree], batch_stats: PyTree | None = None) -> dict[str, Any]:
    """Running statistics to sample with: the plain average of the batch moments of K training-mode passes.

    `moment_trees` are the "moments" collections of K `apply(..., train=True, mutable=["moments", ...])` calls of the
    same network (each a tree whose leaves are the tuples `sow` stores; a BatchNorm called several times in one pass
    contributes every call). The result has the layout of "batch_stats": the same nested module names with leaves
    {"mean": (C,), "var": (C,)}, each the mean over all passes and calls. Averaging the K variances (each about its
    own batch mean) is what BigGAN-PyTorch's `accumulate_standing_stats` does (PyTorch's cumulative average with
    momentum=None), and with equal batch sizes it is the statistic of the K batches pooled per batch.

    With `batch_stats` given, returns a copy of it with those leaves replaced (every averaged path must exist there),
    so batch statistics of layers that sow no moments are kept; pass the network's current "batch_stats" to get a
    drop-in replacement.
    """
    if not moment_trees:
        raise ValueError("standing_statistics needs the moments of at least one pass")
    trees = [jax.tree.map(lambda t: list(t), _to_dict(tree), is_leaf=_is_moments_leaf) for tree in moment_trees]
    structure = jax.tree.structure(trees[0], is_leaf=lambda x: isinstance(x, list))
    for tree in trees[1:]:
        other = jax.tree.structure(tree, is_leaf=lambda x: isinstance(x, list))
        if other != structure:
            raise ValueError(f"the passes sowed different moments: {structure} vs {other}")
    averaged = jax.tree.map(
        lambda *calls: jnp.mean(jnp.stack([v for call in calls for v in call]), axis=0),
        *trees,
        is_leaf=lambda x: isinstance(x, list),
    )
    if batch_stats is None:
        return averaged
    return _replace(_to_dict(batch_stats), averaged, ())


def _to_dict(tree: PyTree) -> Any:
    """Nested Mappings (dict, FrozenDict) as plain dicts, other leaves as they are."""
    if isinstance(tree, Mapping):
        return {k: _to_dict(v) for k, v in tree.items()}
    return tree


def _replace(base: dict[str, Any], new: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    out = dict(base)
    for key, value in new.items():
        if key not in base:
            raise KeyError(f"batch_stats has no entry {'/'.join(path + (key,))} for the averaged moments")
        if isinstance(value, dict):
            if not isinstance(base[key], Mapping):
                raise KeyError(f"batch_stats entry {'/'.join(path + (key,))} is not a module")
            out[key] = _replace(base[key], value, path + (key,))
        else:
            if jnp.shape(base[key]) != jnp.shape(value):
                raise ValueError(f"{'/'.join(path + (key,))}: shape {jnp.shape(value)} != {jnp.shape(base[key])}")
            out[key] = value
    return out
