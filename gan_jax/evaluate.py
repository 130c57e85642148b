"""The standalone evaluator: scores of a set of fake images (or 2-D points) against a real set, as one JSON object.

    python -m gan_jax.evaluate --real=dataset:mnist:test --fake=samples.npz --metrics=fid,kid,pr
    python -m gan_jax.evaluate --real=real_images/ --fake=fake_images/ --metrics=fid,is --inception_logits=pt.pth
    python -m gan_jax.evaluate --metrics=modes --mixture=ring --fake=points.npz

A set (--real, --fake) is one of
  * a folder of images (.png, .jpg, .jpeg, .bmp, .webp, any nesting, read in sorted path order; all of one size;
    grey images stay grey unless the folder mixes grey and colour, then all are read as RGB);
  * an .npz (or .npy) whose array `x` holds NHWC (or NHW) images, as `run.py --mode=sample` writes: uint8 0..255 as
    they are; other integers must lie in 0..255; floats are read by `--float_range`: "auto" (default) takes floats
    with a negative value as [-1, 1] and floats in [0, 1] as [0, 1] (floats outside [-1, 1] are an error), or force
    "-1,1" or "0,1". Floats become uint8 as the generator's samples do (`gan_jax.train.visualize.to_uint8`);
  * `dataset:NAME:SPLIT` (e.g. dataset:mnist:test): the first --num_real images of that split (default: all of it),
    at --resolution (0: native; 32 pads MNIST as the DCGAN configs do), features cached by gan_jax.metrics.reference.
--num_real / --num_fake keep the first N images of a file or folder too.

Metrics: fid, kid, pr (improved precision and recall), is (Inception Score of the fake set; needs the logits layer,
see gan_jax.metrics.inception_score), or modes (2-D points against a mixture's means, gan_jax.metrics.modes). The
output holds, per metric, its scores and its protocol (gan_jax.metrics.reference.protocol): one JSON object on
stdout. Bad input prints one `error: ...` line on stderr and exits with status 2.

`evaluate_images` and `evaluate_features` are the library form, shared with the training-time evaluators.
"""

from gan_jax.env import configure_xla  # sets XLA_FLAGS before JAX initializes

configure_xla()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any, NoReturn  # noqa: E402

import numpy as np  # noqa: E402

from gan_jax.metrics.scores import (  # noqa: E402
    IMAGE_METRICS,
    POINT_METRICS,
    EvaluationError,
    check_counts,
    evaluate_features,
    evaluate_images,
    evaluate_points,
    logits_layer,
    parse_metrics,
)

__all__ = [
    "IMAGE_METRICS",
    "POINT_METRICS",
    "EvaluationError",
    "evaluate_features",
    "evaluate_images",
    "evaluate_points",
]

FLOAT_RANGES = ("auto", "-1,1", "0,1")
DATASET_PREFIX = "dataset:"

# ----------------------------------------------------------------------------------------------------- input sets


def images_to_uint8(x: np.ndarray, what: str, float_range: str = "auto") -> np.ndarray:
    """An array of NHWC or NHW images -> uint8 NHWC, by the rules in the module docstring."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise EvaluationError(f"{what}: images must be NHWC or NHW, got an array of shape {x.shape}")
    if x.shape[-1] not in (1, 3):
        hint = " (it looks like NCHW: transpose it to NHWC)" if x.shape[1] in (1, 3) else ""
        raise EvaluationError(f"{what}: images must have 1 or 3 channels last, got shape {x.shape}{hint}")
    if len(x) == 0:
        raise EvaluationError(f"{what}: holds no images")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.integer):
        if x.min() < 0 or x.max() > 255:
            raise EvaluationError(f"{what}: integer pixels must lie in 0..255, got {x.min()}..{x.max()}")
        return x.astype(np.uint8)
    if not np.issubdtype(x.dtype, np.floating):
        raise EvaluationError(f"{what}: images must be uint8, integers or floats, got {x.dtype}")
    if not np.isfinite(x).all():
        raise EvaluationError(f"{what}: the images hold NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if float_range == "auto":
        if lo < -1.0 or hi > 1.0:
            raise EvaluationError(f"{what}: float pixels must lie in [-1, 1] or [0, 1], got [{lo:.4g}, {hi:.4g}]")
        float_range = "-1,1" if lo < 0 else "0,1"
    bounds = (-1.0, 1.0) if float_range == "-1,1" else (0.0, 1.0)
    if lo < bounds[0] or hi > bounds[1]:
        raise EvaluationError(f"{what}: --float_range={float_range} but the pixels span [{lo:.4g}, {hi:.4g}]")
    from gan_jax.train.visualize import to_uint8

    return to_uint8(x if float_range == "-1,1" else x * 2.0 - 1.0)


def _read_array(path: str) -> np.ndarray:
    try:
        if path.endswith(".npy"):
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f.files:
                raise EvaluationError(f"{path}: no array 'x' in it (it holds {', '.join(f.files) or 'nothing'})")
            return f["x"]
    except EvaluationError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise EvaluationError(f"{path}: cannot read it as .npz/.npy ({e})") from None


def read_image_folder(path: str) -> np.ndarray:
    """Every image under `path`, recursively, in sorted path order, as uint8 NHWC (all must share one size)."""
    from PIL import Image, UnidentifiedImageError

    from gan_jax.data.sources import IMAGE_EXTENSIONS

    files = sorted(
        os.path.join(d, f) for d, _, names in os.walk(path) for f in names if f.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not files:
        raise EvaluationError(f"{path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder or below")
    grey = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"}
    try:
        headers = []
        for f in files:
            with Image.open(f) as im:
                headers.append((im.size, im.mode))
    except (OSError, UnidentifiedImageError) as e:
        raise EvaluationError(f"cannot read image {f}: {e}") from None
    sizes = {size for size, _ in headers}
    if len(sizes) > 1:
        first = headers[0][0]
        odd = next(i for i, (size, _) in enumerate(headers) if size != first)
        raise EvaluationError(
            f"{path}: images of different sizes: {files[0]} is {first[0]}x{first[1]}, {files[odd]} is "
            f"{headers[odd][0][0]}x{headers[odd][0][1]} (width x height); resize them to one size first"
        )
    mode = "L" if all(m in grey for _, m in headers) else "RGB"
    (width, height), channels = headers[0][0], 1 if mode == "L" else 3
    out = np.empty((len(files), height, width, channels), np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                out[i] = np.asarray(im.convert(mode)).reshape(height, width, channels)
        except (OSError, UnidentifiedImageError) as e:
            raise EvaluationError(f"cannot read image {f}: {e}") from None
    return out


def parse_dataset_spec(spec: str) -> tuple[str, str]:
    """The (name, split) of a dataset spec: dataset:mnist:test -> ("mnist", "test")."""
    parts = spec[len(DATASET_PREFIX) :].split(":")
    if len(parts) != 2 or not all(parts):
        raise EvaluationError(f"{spec!r}: write a dataset split as dataset:NAME:SPLIT, e.g. dataset:mnist:test")
    return parts[0], parts[1]


def load_image_set(spec: str, limit: int = 0, float_range: str = "auto") -> np.ndarray:
    """A folder or an .npz/.npy file -> uint8 NHWC images (the first `limit` if > 0)."""
    if not os.path.exists(spec):
        raise EvaluationError(f"{spec}: no such file or folder")
    x = read_image_folder(spec) if os.path.isdir(spec) else images_to_uint8(_read_array(spec), spec, float_range)
    if limit:
        if limit > len(x):
            raise EvaluationError(f"{spec}: holds {len(x)} images, fewer than the {limit} asked for")
        x = x[:limit]
    return x


def load_points(spec: str, limit: int = 0) -> np.ndarray:
    """An .npz/.npy of (N, 2) points (run.py --mode=sample on a mixture) -> float64 (N, 2)."""
    if not os.path.isfile(spec):
        raise EvaluationError(f"{spec}: no such file (modes wants an .npz or .npy of (N, 2) points)")
    x = _read_array(spec)
    if x.ndim != 2 or x.shape[1] != 2 or len(x) == 0 or not np.issubdtype(x.dtype, np.number):
        raise EvaluationError(f"{spec}: modes wants (N, 2) points, got an array of shape {x.shape} ({x.dtype})")
    if not np.isfinite(x).all():
        raise EvaluationError(f"{spec}: the points hold NaN or infinite values")
    return np.asarray(x[:limit] if limit else x, np.float64)


# ----------------------------------------------------------------------------------------------------- the CLI


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        _fail(message)


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m gan_jax.evaluate", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--real", help="folder, .npz/.npy, or dataset:NAME:SPLIT")
    p.add_argument("--fake", help="folder, .npz/.npy, or dataset:NAME:SPLIT (modes: an .npz of (N, 2) points)")
    p.add_argument("--metrics", default="fid,kid,pr", help="comma-separated: fid, kid, pr, is; or modes")
    p.add_argument("--num_real", type=int, default=0, help="first N real images (0: all)")
    p.add_argument("--num_fake", type=int, default=0, help="first N fake images or points (0: all)")
    p.add_argument("--resolution", type=int, default=0, help="dataset:... sets: pad/resize to this size (0: native)")
    p.add_argument("--data_dir", default=None, help="dataset:... sets: a TFDS data_dir")
    p.add_argument("--float_range", default="auto", choices=FLOAT_RANGES, help="how float pixels are read")
    p.add_argument("--batch_size", type=int, default=32, help="Inception batch (split over the devices)")
    p.add_argument("--inception_logits", default=None, help="is: the logits layer file (or $GAN_JAX_INCEPTION_LOGITS)")
    p.add_argument("--kid_subsets", type=int, default=100)
    p.add_argument("--kid_subset_size", type=int, default=1000)
    p.add_argument("--pr_k", type=int, default=3, help="pr: the k of the k-NN radii")
    p.add_argument("--is_splits", type=int, default=10)
    p.add_argument("--mixture", choices=("ring", "grid"), help="modes: the mixture the points are scored against")
    p.add_argument("--std", type=float, default=None, help="modes: the mixture's std (default: the protocol's)")
    p.add_argument("--min_count", type=int, default=1, help="modes: high-quality samples that make a mode captured")
    return p


def _check_args(args: argparse.Namespace) -> None:
    for name in ("num_real", "num_fake", "resolution"):
        if getattr(args, name) < 0:
            raise EvaluationError(f"--{name}={getattr(args, name)}: must be >= 0")
    for name in ("batch_size", "kid_subsets", "pr_k", "is_splits", "min_count"):
        if getattr(args, name) < 1:
            raise EvaluationError(f"--{name}={getattr(args, name)}: must be >= 1")
    if args.kid_subset_size < 2:
        raise EvaluationError(f"--kid_subset_size={args.kid_subset_size}: must be >= 2")
    if args.std is not None and not args.std > 0:
        raise EvaluationError(f"--std={args.std}: must be positive")


def _image_set(spec: str, limit: int, args: argparse.Namespace) -> tuple[np.ndarray | None, np.ndarray | None, dict]:
    """(images or None, features or None, description) of one side."""
    if spec.startswith(DATASET_PREFIX):
        from gan_jax.metrics.reference import reference_features

        name, split = parse_dataset_spec(spec)
        try:
            features, info = reference_features(
                name, split, limit, resolution=args.resolution, data_dir=args.data_dir, batch_size=args.batch_size
            )
        except ValueError as e:  # DatasetNotFoundError included: the data is not here, or the request is impossible
            raise EvaluationError(f"{spec}: {e}") from None
        return None, features, {"spec": spec, "count": len(features), "reference": info}
    images = load_image_set(spec, limit, args.float_range)
    return images, None, {"spec": spec, "count": len(images), "shape": list(images.shape[1:])}


def run(args: argparse.Namespace) -> dict:
    _check_args(args)
    metrics = parse_metrics(args.metrics)
    if not args.fake:
        raise EvaluationError("--fake is required")
    if metrics == ["modes"]:
        if not args.mixture:
            raise EvaluationError("modes needs --mixture=ring or --mixture=grid")
        points = load_points(args.fake, args.num_fake)
        out = evaluate_points(points, args.mixture, std=args.std, min_count=args.min_count)
        return {**out, "inputs": {"fake": {"spec": args.fake, "count": len(points)}}}
    needs_real = any(m != "is" for m in metrics)
    if needs_real and not args.real:
        raise EvaluationError(f"{', '.join(m for m in metrics if m != 'is')} need --real")
    options = dict(
        inception_logits=args.inception_logits,
        kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size,
        pr_k=args.pr_k,
        is_splits=args.is_splits,
    )
    if "is" in metrics:
        logits_layer(args.inception_logits)  # before any image is read
    inputs: dict[str, dict] = {}
    real_images = real_features = real_info = None
    if needs_real:
        real_images, real_features, inputs["real"] = _image_set(args.real, args.num_real, args)
        real_info = inputs["real"].get("reference")
    fake_images, fake_features, inputs["fake"] = _image_set(args.fake, args.num_fake, args)
    reference = real_info["reference"] if real_info else args.real if needs_real else None
    if fake_features is None:
        out = evaluate_images(
            real_images,
            fake_images,
            metrics,
            real_features=real_features,
            batch_size=args.batch_size,
            reference=reference,
            reference_info=real_info,
            **options,
        )
    else:  # a dataset split on the fake side too (e.g. the score of one real split against another)
        if needs_real and real_features is None:
            check_counts(metrics, len(real_images), len(fake_features), pr_k=args.pr_k, is_splits=args.is_splits)
            from gan_jax.metrics.inception import fid_features

            real_features = fid_features(real_images, batch_size=args.batch_size)
        out = evaluate_features(
            real_features, fake_features, metrics, reference=reference, reference_info=real_info, **options
        )
    return {**out, "inputs": inputs}


def main(argv: Sequence[str] | None = None) -> int:
    from gan_jax.data import DatasetNotFoundError
    from gan_jax.metrics.inception_score import InceptionScoreUnavailable
    from gan_jax.metrics.inception_weights import InceptionWeightsError

    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except (EvaluationError, InceptionScoreUnavailable, InceptionWeightsError, DatasetNotFoundError) as e:
        _fail(str(e))
    print(json.dumps(result, default=_json_default))
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(main())
