"""Which digits a trained Stacked MNIST run draws: each channel's digit frequencies, against uniform and real images.

The table's KL to uniform splits into the channels' digit-frequency KLs (`channel_kl`) and their dependence (see
gan_jax/metrics/stacked_mnist.py). When `channel_kl` dominates, this shows which digits the generator makes too often
or too rarely, in which channel, as a multiple of their uniform share (1.0 = a tenth of the samples):

    .venv/bin/python benchmarks/stacked_digits.py '--row=DCGAN-64 in one hour' --seed=0

The run is image_table.py's (`<root>/stacked_mnist/<row>/seed<s>`, trained by that script; give its `--set` changes
too); its samples are drawn as the table draws them (same count and seed), so the scores are the table's. Prints one
JSON line: per channel the ten ratios for the samples and for the first `num_samples` real test images, and both
histograms' scores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere, no install needed
from gan_jax.env import configure_xla  # noqa: E402

configure_xla()

import numpy as np  # noqa: E402

from benchmarks import image_table  # noqa: E402
from gan_jax.config import ConfigError, add_set_flag  # noqa: E402


def digit_ratios(labels: np.ndarray) -> list[list[float]]:
    """(N, 3) digit labels -> per channel, each digit's share of N as a multiple of 1/10."""
    from gan_jax.metrics.stacked_mnist import digit_frequencies

    return (digit_frequencies(labels) * 10).round(3).tolist()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--row", required=True, help="a row of image_table.py's stacked_mnist table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", default=str(ROOT / "runs" / "tables"), help="image_table.py's --root")
    p.add_argument("--num_samples", type=int, default=0, help="0: the table's 26,000")
    add_set_flag(p, help="image_table.py's --set changes, as the run was trained and scored with them")
    args = p.parse_args(argv)
    table = image_table.TABLES["stacked_mnist"]
    if args.row not in table.rows:
        p.error(f"--row: stacked_mnist has no row {args.row!r}; it has {', '.join(table.rows)}")
    workdir = image_table.run_dir(args.root, "stacked_mnist", args.row, args.seed)
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        p.error(f"no trained run in {workdir}: train it with benchmarks/image_table.py first")

    from gan_jax.data import get_dataset
    from gan_jax.metrics.stacked_mnist import mode_histogram_stats, stacked_mnist_labels
    from gan_jax.tools.generate import restore

    try:
        config = image_table.row_config(
            table, args.row, args.seed, num_samples=args.num_samples, overrides=dict(args.set)
        )
    except ConfigError as e:
        p.error(str(e))
    spec = config.evals[table.eval_name]
    exp, state = restore(config, workdir)
    fake = stacked_mnist_labels(exp.generate(state, spec.num_samples, spec.seed))
    real_set = get_dataset({"name": "stacked_mnist", "split": "test", "resolution": config.data.resolution}, seed=0)
    real = stacked_mnist_labels(real_set.get(np.arange(min(spec.num_samples, real_set.num_examples)))["x"])
    result = {
        "row": args.row,
        "seed": args.seed,
        "step": int(state.step),
        "num_samples": spec.num_samples,
        "digits": list(range(10)),
        "samples_ratio_rgb": digit_ratios(fake),
        "real_ratio_rgb": digit_ratios(real),
        "samples_scores": mode_histogram_stats(fake),
        "real_scores": mode_histogram_stats(real),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
