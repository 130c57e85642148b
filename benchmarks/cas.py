"""Classification accuracy score (CAS, Ravuri & Vinyals 2019): what a class-conditional GAN's samples are worth as
training data, measured by a small classifier scored on the real test split.

Rows (each trained from scratch for every seed, then scored on the whole real test split):

    real                      the real training set alone (the reference: the best a classifier of this size does)
    synthetic                 `per_class` generated images of every class alone: the CAS proper
    real+synthetic            both
    real_<k>pc                k real images per class only (`--real_per_class`, a low-data regime) ...
    real_<k>pc+synthetic      ... and the same k with the synthetic set: where synthetic data should help most

    .venv/bin/python benchmarks/cas.py --config=configs/sngan.py:mnist --workdir=runs/sngan_mnist
    .venv/bin/python benchmarks/cas.py --synthetic=runs/sngan_mnist/cas/synthetic_6000pc_seed0.npz --seeds=5
    .venv/bin/python benchmarks/cas.py --config=... --workdir=... --real_per_class=10,100 --epochs=5 --name=cas_x

With `--workdir`, the synthetic set is written first by gan_jax/tools/synthetic.py (`run.py --mode=synthesize`) to
WORKDIR/cas/synthetic_<per_class>pc_seed<s>.npz, kept for reuse with `--synthetic`; `--per_class` defaults to the
real training set's count per class (6,000 for MNIST and Fashion-MNIST), so the synthetic and real rows train on
sets of the same size. With `--synthetic` and no `--config`, the real data settings come from the config recorded in
the npz.

Real data comes from gan_jax's own (offline) data sources with the config's data settings, so real images are padded
or resized exactly as the generator's training images were (MNIST-like: 28x28 padded to 32x32) and match the
synthetic ones pixel for pixel in size and channels. The training split is the config's (`train+validation`, 60,000,
for MNIST), the test split `--test_split` (10,000 test images), never seen in training. A low-data subset holds the
first k images of each class in the split's order (fixed, the same for every seed).

The classifier is benchmarks' own copy of the recipe of gan_jax/metrics/classifier.py (two 3x3 conv layers of 32 and
64 channels, each with ReLU and 2x2 max pooling, a 128-unit ReLU dense layer; Adam 2e-3 with cosine decay to 0,
batch 100, random shifts of up to 2 pixels), with as many logits as classes and any image size and channel count.
That module is not reused because it is fixed to 10 classes of 28x28 grey digits and its training loads MNIST
itself; leaving it untouched keeps its cached classifier (and recipe hash) valid. Every row trains for the same
number of steps, `--epochs` passes over the *full* real training set (3 epochs of 60,000 = 1,800 steps), so rows
get equal compute: the real+synthetic rows see each image less often, the low-data rows see theirs many times
(with the shifts as the only regulariser). `--mix=union` (default) samples batches uniformly from the union of the
row's real and synthetic images; `--mix=balanced` fills half of each batch from each, so a small real set is not
drowned by a large synthetic one.

Writes benchmarks/results/<name>.json (settings, the synthetic set's provenance, per row: real and synthetic image
counts, per-seed accuracies, mean and sample standard deviation over seeds, time) and <name>.md (the table), and
prints one JSON line per row as it finishes.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere, no install needed
from gan_jax.env import configure_xla  # noqa: E402

configure_xla()

import ml_collections  # noqa: E402

from gan_jax.config import ConfigError, add_set_flag, load_config  # noqa: E402

RECIPE: dict[str, Any] = {
    "model": {"conv": [32, 64], "kernel": 3, "pool": 2, "dense": 128},
    "augment_shift": 2,
    "batch_size": 100,
    "optimizer": "adam",
    "learning_rate": 2e-3,
    "schedule": "cosine to 0",
}


# ---------------------------------------------------------------------------------------------------- data & rows


@dataclasses.dataclass(frozen=True)
class RowSpec:
    """A row of the table: which real images (None: all; else k per class) and whether the synthetic set is added."""

    name: str
    real_per_class: int | None  # None: the whole real training set; 0: no real images
    synthetic: bool


def plan_rows(real_per_class: list[int]) -> list[RowSpec]:
    """The table's rows: real, synthetic, real+synthetic, then real_<k>pc and real_<k>pc+synthetic per k."""
    rows = [RowSpec("real", None, False), RowSpec("synthetic", 0, True), RowSpec("real+synthetic", None, True)]
    for k in real_per_class:
        rows += [RowSpec(f"real_{k}pc", k, False), RowSpec(f"real_{k}pc+synthetic", k, True)]
    return rows


def first_per_class(labels: np.ndarray, k: int, num_classes: int) -> np.ndarray:
    """Indices of the first `k` examples of every class, in the data's order (a fixed subset, seed-independent)."""
    out = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) < k:
            raise ValueError(f"class {c} has only {len(idx)} examples, fewer than {k} per class")
        out.append(idx[:k])
    return np.sort(np.concatenate(out))


def summarize(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one seed) over seeds."""
    a = np.asarray(values, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def real_split(config: ml_collections.ConfigDict, split: str | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(uint8 NHWC images at the generator's size and channels, int32 labels, num_classes) of a real split through
    gan_jax's data sources; `split` None: the config's training split (and subset), else the whole named split."""
    from gan_jax.data import get_dataset
    from gan_jax.data.transforms import expand_channels

    data = ml_collections.ConfigDict(config.data.to_dict())
    if split is not None:
        data.split = split
        data.num_examples = 0
    ds = get_dataset(data, seed=0)
    if ds.kind != "image" or not ds.num_classes:
        raise ValueError(f"CAS needs a labelled image dataset; {ds.name!r} split {ds.split!r} is not one")
    x, y = ds.source.get(np.arange(ds.num_examples))
    if y is None:
        raise ValueError(f"dataset {ds.name!r} split {ds.split!r} has no labels")
    return expand_channels(np.asarray(x), ds.shape[-1]), np.asarray(y, np.int32), ds.num_classes


def select_synthetic(x: np.ndarray, y: np.ndarray, per_class: int | None, num_classes: int):
    """The first `per_class` of each class of a synthetic set (None: all of it)."""
    if per_class is None:
        return x, y
    counts = np.bincount(y, minlength=num_classes)
    if counts.min() < per_class:
        raise ValueError(f"--per_class={per_class}: the synthetic set has only {counts.min()} of some class")
    idx = first_per_class(y, per_class, num_classes)
    return x[idx], y[idx]


# ------------------------------------------------------------------------------------------------------ classifier


@functools.cache
def _model(num_classes: int) -> Any:
    import flax.linen as nn
    import jax

    spec = RECIPE["model"]

    class SmallCNN(nn.Module):
        """conv3x3(32) - pool - conv3x3(64) - pool - dense(128) - dense(classes); input in [0, 1]."""

        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            h = x
            for width in spec["conv"]:
                h = nn.relu(nn.Conv(width, (spec["kernel"],) * 2, padding="SAME")(h))
                n, height, w, c = h.shape
                p = spec["pool"]
                h = h.reshape(n, height // p, p, w // p, p, c).max(axis=(2, 4))
            h = nn.relu(nn.Dense(spec["dense"])(h.reshape(h.shape[0], -1)))
            return nn.Dense(num_classes)(h)

    return SmallCNN()


def train_and_score(
    parts: list[tuple[np.ndarray, np.ndarray]],
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    *,
    seed: int,
    steps: int,
    mix: str = "union",
    batch_size: int = RECIPE["batch_size"],
    learning_rate: float = RECIPE["learning_rate"],
    shift: int = RECIPE["augment_shift"],
) -> float:
    """Trains the CNN on `parts` (uint8 (N, H, W, C) images and labels; a real and/or a synthetic set) for `steps`
    steps and returns its accuracy on `test`. Deterministic by seed.

    The images stay uint8 on the device and each step gathers its batch there by index, so only indices cross from
    the host per step. `mix`: "union" draws batches from an epoch permutation of all parts together; "balanced"
    draws an equal share of each batch from each part (its own permutations).
    """
    import jax
    import jax.numpy as jnp

    parts = [p for p in parts if len(p[0])]
    x_all = np.concatenate([p[0] for p in parts])
    y_all = np.concatenate([p[1] for p in parts]).astype(np.int32)
    model = _model(num_classes)
    tx, step = _trainer(num_classes, max(steps, 1), learning_rate, shift)
    key = jax.random.key(seed)
    params = model.init(jax.random.fold_in(key, 0), jnp.zeros((1, *x_all.shape[1:]), jnp.float32))["params"]
    opt_state = tx.init(params)
    x_dev, y_dev = jnp.asarray(x_all), jnp.asarray(y_all)
    aug_key = jax.random.fold_in(key, 1)
    for i, idx in enumerate(batch_indices([len(p[0]) for p in parts], batch_size, steps, seed, mix)):
        params, opt_state = step(params, opt_state, x_dev, y_dev, jnp.asarray(idx), jax.random.fold_in(aug_key, i))
    return accuracy(num_classes, params, *test)


@functools.cache
def _trainer(num_classes: int, steps: int, learning_rate: float, shift: int) -> tuple[Any, Any]:
    """(optax transform, jitted step): built once per setting, so every seed and every row of the same data size
    reuses one compilation (a fresh closure per call would recompile each time)."""
    import jax
    import jax.numpy as jnp
    import optax

    model = _model(num_classes)
    tx = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))

    def augment(x: jax.Array, k: jax.Array) -> jax.Array:
        """uint8 (B, H, W, C) -> float in [0, 1], each image shifted by up to `shift` pixels (zero fill)."""
        b, h, w, c = x.shape
        padded = jnp.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
        offsets = jax.random.randint(k, (b, 2), 0, 2 * shift + 1)
        crop = jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, c)))(padded, offsets)
        return crop.astype(jnp.float32) / 255.0

    @jax.jit
    def step(params, opt_state, x_dev, y_dev, idx, k):
        def loss_fn(p):
            logits = model.apply({"params": p}, augment(x_dev[idx], k))
            return optax.softmax_cross_entropy_with_integer_labels(logits, y_dev[idx]).mean()

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return tx, step


def batch_indices(sizes: list[int], batch_size: int, steps: int, seed: int, mix: str):
    """Yields `steps` int32 index batches into the concatenation of parts of `sizes` (see `train_and_score`)."""
    if mix == "union":
        streams, shares = [(0, sum(sizes))], [batch_size]
    elif mix == "balanced":
        offsets = np.cumsum([0, *sizes[:-1]])
        streams = list(zip(offsets.tolist(), sizes, strict=True))
        shares = [batch_size // len(sizes) + (i < batch_size % len(sizes)) for i in range(len(sizes))]
    else:
        raise ValueError(f"mix={mix!r}: choose union or balanced")
    state = [
        {"epoch": 0, "pos": 0, "perm": np.random.default_rng([seed, j, 0]).permutation(n)}
        for j, (_, n) in enumerate(streams)
    ]
    for _ in range(steps):
        out = []
        for j, ((offset, n), share, s) in enumerate(zip(streams, shares, state, strict=True)):
            need = share
            while need:
                take = min(need, n - s["pos"])
                out.append(offset + s["perm"][s["pos"] : s["pos"] + take])
                s["pos"] += take
                need -= take
                if s["pos"] == n:
                    s["epoch"] += 1
                    s["pos"] = 0
                    s["perm"] = np.random.default_rng([seed, j, s["epoch"]]).permutation(n)
        yield np.concatenate(out).astype(np.int32)


@functools.cache
def _predict(num_classes: int) -> Any:
    import jax
    import jax.numpy as jnp

    model = _model(num_classes)
    return jax.jit(lambda p, xb: jnp.argmax(model.apply({"params": p}, xb.astype(jnp.float32) / 255.0), -1))


def accuracy(num_classes: int, params: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> float:
    """Top-1 accuracy on uint8 images, in fixed-size batches (the last one padded) so it compiles once."""
    apply = _predict(num_classes)
    batch_size = min(batch_size, len(x))
    correct = 0
    for lo in range(0, len(x), batch_size):
        chunk = x[lo : lo + batch_size]
        n = len(chunk)
        if n < batch_size:
            chunk = np.concatenate([chunk, np.zeros((batch_size - n, *chunk.shape[1:]), chunk.dtype)])
        correct += int(np.sum(np.asarray(apply(params, chunk))[:n] == y[lo : lo + n]))
    return correct / len(x)


# ---------------------------------------------------------------------------------------------------------- table


def markdown(result: dict) -> str:
    """The table: one line per row with its data and its test accuracy (mean ± std over seeds)."""
    s = result["synthetic"]
    lines = [
        f"CAS (Ravuri & Vinyals 2019) of `{s.get('config') or s.get('model')}` (checkpoint step {s.get('step')}): a "
        f"small CNN trained on each row's data for {result['steps']:,} steps ({result['epochs']:g} epochs of the "
        f"{result['real_train']:,} real training images, batch {result['batch_size']}, mix {result['mix']}), scored "
        f"on the {result['real_test']:,} real {result['test_split']} images; mean ± std over {len(result['seeds'])} "
        f"seeds. Synthetic: {s['per_class']:,} per class (seed {s['seed']}). Command: `{result['command']}`.",
        "",
        "| training data | real images | synthetic images | test accuracy (%) |",
        "|---|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['row']} | {r['real_images']:,} | {r['synthetic_images']:,} "
            f"| {100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_std']:.2f} |"
        )
    by = {r["row"]: r for r in result["rows"]}
    if "real" in by and "synthetic" in by and by["real"]["accuracy_mean"] > 0:
        ratio = by["synthetic"]["accuracy_mean"] / by["real"]["accuracy_mean"]
        lines += ["", f"CAS / real accuracy: {ratio:.3f}."]
    return "\n".join(lines) + "\n"


def run_rows(
    rows: list[RowSpec],
    real: tuple[np.ndarray, np.ndarray],
    synthetic: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    seeds: list[int],
    steps: int,
    mix: str,
    train_fn=train_and_score,
    emit=print,
) -> list[dict]:
    """Trains and scores every row for every seed; `train_fn` is swappable so tests can check the assembly."""
    out = []
    for spec in rows:
        parts = []
        if spec.real_per_class is None:
            parts.append(real)
        elif spec.real_per_class > 0:
            idx = first_per_class(real[1], spec.real_per_class, num_classes)
            parts.append((real[0][idx], real[1][idx]))
        n_real = sum(len(p[0]) for p in parts)
        if spec.synthetic:
            parts.append(synthetic)
        t0 = time.perf_counter()
        accs = []
        for s in seeds:
            accs.append(float(train_fn(parts, test, num_classes, seed=s, steps=steps, mix=mix)))
            print(f"  {spec.name}: seed {s}: accuracy {100 * accs[-1]:.2f}%", file=sys.stderr, flush=True)
        mean, std = summarize(accs)
        row = {
            "row": spec.name,
            "real_images": n_real,
            "real_per_class": "all" if spec.real_per_class is None else spec.real_per_class,
            "synthetic_images": len(synthetic[0]) if spec.synthetic else 0,
            "accuracy_mean": round(mean, 5),
            "accuracy_std": round(std, 5),
            "per_seed": [round(a, 5) for a in accs],
            "seeds": list(seeds),
            "wall_s": round(time.perf_counter() - t0, 1),
        }
        out.append(row)
        emit(json.dumps(row))
    return out


# ----------------------------------------------------------------------------------------------------------- main


def _parse_ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag}={text!r}: comma-separated integers") from None
    if any(v < 1 for v in values):
        raise ValueError(f"{flag}={text!r}: every value must be >= 1")
    return values


def load_synthetic(args, config) -> tuple[dict, ml_collections.ConfigDict]:
    """The synthetic set (npz contents) and the config for the real data, from --synthetic or by writing one."""
    from gan_jax.tools.synthetic import load_npz, write_synthetic

    if args.synthetic:
        data = load_npz(args.synthetic)
        data["path"] = args.synthetic
        if config is None:
            if not data.get("config_json"):
                raise ConfigError(f"{args.synthetic} records no config: pass --config")
            config = ml_collections.ConfigDict(json.loads(data["config_json"]))
        return data, config
    per_class = args.per_class
    if per_class is None:
        _, y, num_classes = real_split(config)
        per_class = int(np.bincount(y, minlength=num_classes).min())  # the real set's count (6,000 for MNIST)
    out = os.path.join(args.workdir, "cas", f"synthetic_{per_class}pc_seed{args.synthetic_seed}.npz")
    print(f"writing {per_class} synthetic images per class to {out}", file=sys.stderr, flush=True)
    write_synthetic(
        config, args.workdir, per_class, out, args.synthetic_seed, overwrite=True, config_name=args.config or ""
    )
    data = load_npz(out)
    data["path"] = out
    return data, config


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="", help="configs/<x>.py[:variant] of the model (and its real data)")
    add_set_flag(p, "a change to --config's config")
    p.add_argument("--workdir", default="", help="a trained class-conditional model's workdir")
    p.add_argument("--synthetic", default="", help="an existing synthetic .npz (instead of --workdir)")
    p.add_argument("--per_class", type=int, default=None, help="synthetic images per class (default: the real set's)")
    p.add_argument("--synthetic_seed", type=int, default=0, help="--workdir: seed of the synthetic set")
    p.add_argument("--real_per_class", default="100", help="low-data rows: comma-separated k, '' for none")
    p.add_argument("--epochs", type=float, default=3.0, help="training length of every row, in full real epochs")
    p.add_argument("--seeds", type=int, default=3, help="classifier seeds per row (0..seeds-1)")
    p.add_argument("--mix", default="union", choices=["union", "balanced"])
    p.add_argument("--test_split", default="test")
    p.add_argument("--out_dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--name", default="", help="results file name (default: cas_<model>_<dataset>)")
    args = p.parse_args(argv)
    if bool(args.workdir) == bool(args.synthetic):
        p.error("pass exactly one of --workdir (a trained conditional model) and --synthetic (an npz)")
    if args.workdir and not args.config:
        p.error("--workdir needs --config (the config the model was trained with)")
    if args.set and not args.config:
        p.error("--set changes --config's config: pass --config too")
    if args.seeds < 1 or args.epochs <= 0 or (args.per_class is not None and args.per_class < 1):
        p.error("--seeds and --per_class must be >= 1 and --epochs > 0")
    try:
        low_data = _parse_ints(args.real_per_class, "--real_per_class")
    except ValueError as e:
        p.error(str(e))

    from gan_jax.errors import USER_ERRORS
    from gan_jax.tools.synthetic import SyntheticDataError

    t0 = time.perf_counter()
    try:
        config = load_config(args.config, dict(args.set)) if args.config else None
        synth, config = load_synthetic(args, config)
        x_real, y_real, num_classes = real_split(config)
        x_test, y_test, _ = real_split(config, args.test_split)
        if synth["x"].shape[1:] != x_real.shape[1:]:
            raise ValueError(
                f"synthetic images are {synth['x'].shape[1:]} but the real ones {x_real.shape[1:]}: use the model's "
                "own config (its data settings decide the real images' size and channels)"
            )
        if synth["label"].min() < 0 or synth["label"].max() >= num_classes:
            raise ValueError(
                f"synthetic labels span {synth['label'].min()}..{synth['label'].max()}, not 0..{num_classes - 1}"
            )
        x_syn, y_syn = select_synthetic(synth["x"], synth["label"], args.per_class, num_classes)
    except (*USER_ERRORS, SyntheticDataError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None

    import jax

    batch = RECIPE["batch_size"]
    steps = int(round(args.epochs * len(x_real) / batch))
    seeds = list(range(args.seeds))
    rows = plan_rows(low_data)
    provenance = {k: synth.get(k) for k in ("path", "config", "model", "dataset", "step", "seed", "num_classes")}
    provenance["per_class"] = int(np.bincount(y_syn, minlength=num_classes).min())
    result: dict[str, Any] = {
        "command": " ".join(["benchmarks/cas.py"] + (argv if argv is not None else sys.argv[1:])),
        "synthetic": provenance,
        "dataset": str(config.data.name),
        "num_classes": num_classes,
        "image_shape": list(x_real.shape[1:]),
        "real_train": len(x_real),
        "real_test": len(x_test),
        "test_split": args.test_split,
        "epochs": args.epochs,
        "steps": steps,
        "batch_size": batch,
        "mix": args.mix,
        "recipe": RECIPE,
        "seeds": seeds,
        "device": jax.devices()[0].device_kind,
    }
    result["rows"] = run_rows(
        rows, (x_real, y_real), (x_syn, y_syn), (x_test, y_test), num_classes, seeds, steps, args.mix
    )
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    name = args.name or f"cas_{provenance.get('model') or 'model'}_{result['dataset']}"
    os.makedirs(args.out_dir, exist_ok=True)
    base = os.path.join(args.out_dir, name)
    with open(base + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(base + ".md", "w") as f:
        f.write(markdown(result))
    print(f"wrote {base}.json and {base}.md ({result['wall_s'] / 60:.1f} min)", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
