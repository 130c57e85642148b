"""The image tables over seeds: Stacked MNIST modes (PacGAN Table 2) and FID on MNIST / Fashion-MNIST (Lucic et al.).

Each (row, seed) is an ordinary gan_jax run in its own workdir, `<root>/<table>/<row>/seed<s>`, trained by the same
loop as `run.py` (checkpoints, resumption, sample grids, logs) and then scored by the table's evaluator. Image models
are too large for the vmap-over-seeds trick of `mixtures_table.py` to pay, and a full table takes many CPU hours, so
this script is built to be stopped and started again: a finished run is scored once and its scores are kept in its
workdir (`table_scores.json`); an unfinished one resumes from its newest checkpoint. Re-running the same command
picks up where the last one stopped and then writes the table.

    .venv/bin/python benchmarks/image_table.py --table=stacked_mnist               # the protocol: 100,000 steps
    .venv/bin/python benchmarks/image_table.py --table=fid_mnist --seeds=3
    .venv/bin/python benchmarks/image_table.py --table=stacked_mnist --steps=2000 --name=stacked_mnist_2k

`--set KEY=VALUE` changes every row's config. Sampling-only keys (`gan_jax.config.SAMPLING_KEYS`: discriminator
rejection sampling) leave the training alone: the same command with `--set drs_percentile=10` scores the trained runs
again under that rule, in seconds, keeping those scores beside the plain ones (`table_scores_<setting>.json`), and
the table gives the share of G's samples kept.

`--steps` shortens every run (the table then says so in its header and per row); `--num_samples` shortens the
evaluation likewise (for tests). Writes benchmarks/results/<name>.json (per row: method, seeds, per-seed scores,
mean and standard error of each score, steps, train and evaluation wall time), <name>.md (beside the papers' rows)
and <name>_<row>.png (seed 0's sample grid).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere, no install needed
from gan_jax.env import configure_xla  # noqa: E402

configure_xla()

from gan_jax import fileio  # noqa: E402
from gan_jax.config import ConfigError, add_set_flag, apply_overrides, load_config, split_sampling  # noqa: E402
from gan_jax.train.seeds import mean_sem  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Table:
    config: str  # config spec of every row
    eval_name: str  # the config's evaluator that scores a run
    scores: tuple[str, ...]  # the scores shown in the table, in order
    rows: dict[str, dict]  # row -> config changes ("pack": m also multiplies the batch, as in PacGAN's code)
    paper: tuple[tuple[str, tuple[float | None, ...]], ...]  # the papers' rows, scores in the same order
    protocol: str


# The "beat" row: FID within one hour of a 2-core CPU, training and scoring included. DCGAN at half the
# paper's width (G 256-128-64, D 64-128-256) has a quarter of its convolution work and runs at about 9.5 steps/s at
# batch 64 here, so an hour holds 27,000 steps (29 epochs, 47 minutes) plus the 10,000-sample FID (7.5 minutes).
# Both learning rates decay linearly to 0 over the second half, and the generator EMA (decay 0.999, every config's
# default) is what is sampled.
ONE_HOUR = {
    "batch_size": 64,
    "model.g_width": 64,
    "model.d_width": 64,
    "num_train_steps": 27_000,
    "lr_decay": "linear",
    "lr_decay_start": 13_500,
}


# MNIST's one-hour row adds what took its FID from 8.33 to 4.89 (README, the one-hour table): the generator's learning
# rate at 8e-4 (D's stays 2e-4), and sampling with standing statistics (16 batches of the generator's own samples in
# training mode) instead of the EMA generator's running batch-norm averages. Fashion-MNIST keeps the plain recipe,
# which met its goal (10.31) and has not been run with these.
ONE_HOUR_MNIST = {**ONE_HOUR, "optim.g.lr": 8e-4, "standing_stats": 16}


# Stacked MNIST's one-hour row: MNIST's one-hour recipe, trained for what fits the hour on the slowest machine measured
# (12,000 steps: its training loop ran this network at 3.2-4.7 steps/s, 50.0 minutes in all; scoring 26,000 samples by
# the classifier took 26 s, not the FID's ten minutes), with the decay over the second half as before.
ONE_HOUR_STACKED = {**ONE_HOUR_MNIST, "num_train_steps": 12_000, "lr_decay_start": 6_000}


def _fid_table(
    config: str, data: str, reference: str, *, wgan: float, ns: float, one_hour: dict = ONE_HOUR, extra: str = ""
) -> Table:
    """Lucic et al.'s FID protocol for one dataset, with their best WGAN and NS GAN FIDs as the paper rows, and the
    one-hour row (`one_hour`, described by `extra`)."""
    return Table(
        config=config,
        eval_name="fid",
        scores=("fid", "kid", "precision", "recall"),
        rows={
            "NS GAN (DCGAN)": {"batch_size": 64, "num_train_steps": 20 * 60_000 // 64},
            "NS GAN (DCGAN-64) in one hour": one_hour,
        },
        paper=(
            ("WGAN (Lucic et al., best)", (wgan, None, None, None)),
            ("NS GAN (Lucic et al., best)", (ns, None, None, None)),
        ),
        protocol=f"{data} padded to 32x32; DCGAN, batch 64, 20 epochs (the one-hour row: half width, "
        f"{one_hour['num_train_steps']:,} steps, learning rates decaying linearly to 0 over the second half{extra}); "
        "FID/KID/precision/recall of 10,000 samples "
        f"against the 10,000 {reference} (TF-Inception pool3)",
    )


TABLES: dict[str, Table] = {
    "stacked_mnist": Table(
        config="configs/dcgan.py:stacked_mnist",
        eval_name="modes",
        scores=("modes", "kl_to_uniform"),
        rows={"DCGAN": {}, "PacDCGAN2": {"pack": 2}, "DCGAN-64 in one hour": ONE_HOUR_STACKED},
        paper=(
            ("DCGAN (VEEGAN Table 2)", (99.0, 3.40)),
            ("DCGAN (PacGAN Table 2)", (78.9, 4.50)),
            ("PacDCGAN2 (PacGAN Table 2)", (1000.0, 0.06)),
        ),
        protocol="Stacked MNIST (128,000 training images, 1,000 modes); DCGAN, batch 64 (packs), Adam 2e-4 beta1 0.5, "
        "z of 100, 100,000 steps (the one-hour row: half width, G lr 8e-4, 12,000 steps, learning rates decaying "
        "linearly to 0 over the second half, sampled with 16 batches of standing statistics); 26,000 samples "
        "labelled by gan_jax's MNIST classifier; modes hit and KL to uniform",
    ),
    "fid_mnist": _fid_table(
        "configs/dcgan.py:mnist",
        "MNIST 60,000 training digits",
        "test digits",
        wgan=6.7,
        ns=6.8,
        one_hour=ONE_HOUR_MNIST,
        extra="; G lr 8e-4; sampled with 16 batches of standing statistics",
    ),
    "fid_fashion_mnist": _fid_table(
        "configs/dcgan.py:fashion_mnist", "Fashion-MNIST 60,000 training images", "test images", wgan=21.5, ns=26.5
    ),
}

SCORES_FILE = "table_scores.json"


def scores_file(sampling: dict) -> str:
    """The file that keeps a run's scores under the sampling setting `sampling` (see gan_jax.config.SAMPLING_KEYS):
    each setting scores the same trained run and keeps its scores beside the others'."""
    if not sampling:
        return SCORES_FILE
    setting = "_".join(f"{k}={v}" for k, v in sorted(sampling.items()))
    return f"table_scores_{re.sub(r'[^A-Za-z0-9.=-]+', '_', setting)}.json"


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


def run_dir(root: str, table: str, row: str, seed: int) -> str:
    """The workdir of one (row, seed) run of `table` under `root`."""
    return os.path.join(root, table, slug(row), f"seed{seed}")


def row_config(table: Table, row: str, seed: int, steps: int = 0, num_samples: int = 0, overrides: dict | None = None):
    """The table's config with the row's changes for `seed`; `steps` / `num_samples` > 0 shorten training / scoring.

    `overrides` (flattened keys, from --set) are applied before the row's changes, so a packed row still multiplies an
    overridden batch size, and again after them for the keys the row sets itself: what the user sets explicitly wins
    (a one-hour row trained for fewer steps, with its decay moved to match)."""
    overrides = overrides or {}
    config = load_config(str(ROOT / table.config), overrides)
    changes = dict(table.rows[row])
    m = changes.pop("pack", 1)
    config.pack = m
    config.batch_size *= m
    apply_overrides(config, changes)
    apply_overrides(config, {k: v for k, v in overrides.items() if k in changes})
    config.seed = seed
    if steps:
        config.num_train_steps = steps
    config.checkpoint_every = min(config.checkpoint_every, config.num_train_steps)
    config.sample_every = min(config.sample_every, config.num_train_steps)
    if num_samples:
        spec = config.evals[table.eval_name]
        spec.num_samples = num_samples
        if "num_real" in spec:
            spec.num_real = num_samples
    for name in list(config.evals):  # score with the table's evaluator only, once, after training
        if name != table.eval_name:
            del config.evals[name]
    config.evals[table.eval_name].every = 0
    config.best_metric = ""
    return config


def run_one(table: Table, row: str, seed: int, workdir: str, steps: int, num_samples: int, overrides: dict) -> dict:
    """Trains (or resumes) one run to its last step and scores it once; returns the kept scores.

    Sampling-only overrides (rejection sampling) are left out of the training and applied to the scoring alone, so a
    trained run is scored under them without training again."""
    from gan_jax.tools.generate import restore
    from gan_jax.train.evaluation import Evaluations
    from gan_jax.train.loop import train

    training, sampling = split_sampling(overrides)
    config = row_config(table, row, seed, steps, num_samples, overrides)
    path = os.path.join(workdir, scores_file(sampling))
    if os.path.exists(path):
        with open(path) as f:
            kept = json.load(f)
        if kept.get("config_digest") == _digest(config):
            return kept
    t0 = time.perf_counter()
    train(row_config(table, row, seed, steps, num_samples, training), workdir)
    train_s = time.perf_counter() - t0
    exp, state = restore(config, workdir)
    t0 = time.perf_counter()
    result = Evaluations(exp, record=False).run(state, [table.eval_name])[table.eval_name]
    kept = {
        "config_digest": _digest(config),
        "seed": seed,
        "steps": int(state.step),
        "num_samples": config.evals[table.eval_name].num_samples,
        "scores": result["scores"],
        "protocol": result["protocol"],
        "train_s_this_invocation": round(train_s, 1),
        "eval_s": round(time.perf_counter() - t0, 1),
        "train_s_total": _train_seconds(workdir),
    }
    if "rejection" in result:  # rejection sampling: the share of G's samples kept, the rule's M and gamma
        kept["rejection"] = result["rejection"]
    fileio.write_json(path, kept)
    return kept


def _digest(config) -> str:
    """Scores are reused only for the very config that produced them."""
    return hashlib.sha256(config.to_json(sort_keys=True).encode()).hexdigest()[:16]


def _train_seconds(workdir: str) -> float | None:
    """Training wall time over every invocation: the logged intervals of metrics.jsonl (whose rows a resumed run trims
    back to its checkpoint, so work that was redone counts once)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return round(sum(json.loads(line).get("interval_s", 0.0) for line in f), 1)


def markdown(table: Table, rows: list[dict], header: str) -> str:
    names = " | ".join(table.scores)
    lines = [
        header,
        "",
        f"| method | {names} | seeds | steps | wall per run (train + score) |",
        "|---" * (len(table.scores) + 4) + "|",
    ]
    for r in rows:
        one = len(r["seeds"]) == 1  # no standard error from one seed
        cells = " | ".join(f"{r[f'{s}_mean']:.4g}" + ("" if one else f" ± {r[f'{s}_sem']:.2g}") for s in table.scores)
        wall = "-" if r["wall_s_mean"] is None else f"{r['wall_s_mean'] / 60:.1f} min"
        method = r["method"]
        if "sampling" in r:
            setting = ", ".join(f"{k}={v}" for k, v in sorted(r["sampling"].items()))
            method += f" ({setting}; {r['acceptance_mean']:.0%} of samples kept)"
        lines.append(f"| gan_jax {method} | {cells} | {len(r['seeds'])} | {r['steps']} | {wall} |")
    for name, values in table.paper:
        cells = " | ".join("-" if v is None else f"{v:g}" for v in values)
        lines.append(f"| paper: {name} | {cells} | | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", required=True, choices=sorted(TABLES))
    p.add_argument("--rows", default="", help="comma-separated rows (default: all of the table's)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument(
        "--first_seed",
        type=int,
        default=0,
        help="run seeds first_seed .. first_seed+seeds-1 (a held-out tuning seed, or seeds added by another session)",
    )
    p.add_argument("--steps", type=int, default=0, help="train every run this many steps (0: the protocol's)")
    p.add_argument("--num_samples", type=int, default=0, help="score this many samples (0: the protocol's)")
    add_set_flag(p)
    p.add_argument("--root", default=str(ROOT / "runs" / "tables"), help="where the runs' workdirs live")
    p.add_argument("--out_dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--name", default="", help="results file name (default: the table's name)")
    args = p.parse_args(argv)
    table = TABLES[args.table]
    rows = [r for r in args.rows.split(",") if r] or list(table.rows)
    for r in rows:
        if r not in table.rows:
            p.error(f"--rows: {args.table} has no row {r!r}; it has {', '.join(table.rows)}")
    if args.seeds < 1 or args.first_seed < 0 or args.steps < 0 or args.num_samples < 0:
        p.error("--seeds must be >= 1, --first_seed, --steps and --num_samples >= 0")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    name = args.name or args.table
    overrides = dict(args.set)
    try:
        for row in rows:  # a misspelled key fails here, before any training
            row_config(table, row, 0, args.steps, args.num_samples, overrides)
    except ConfigError as e:
        p.error(str(e))
    os.makedirs(args.out_dir, exist_ok=True)
    t0 = time.perf_counter()
    result: dict = {
        "command": shlex.join(["benchmarks/image_table.py"] + (argv or sys.argv[1:])),  # quoted, to paste back
        "table": args.table,
        "protocol": table.protocol,
        "rows": [],
    }
    for row in rows:
        per_seed = []
        for seed in seeds:
            workdir = run_dir(args.root, args.table, row, seed)
            kept = run_one(table, row, seed, workdir, args.steps, args.num_samples, overrides)
            per_seed.append(kept)
            print(json.dumps({"row": row, **{k: v for k, v in kept.items() if k != "protocol"}}), flush=True)
        config = row_config(table, row, 0, args.steps, args.num_samples, overrides)
        out = {
            "method": row,
            "changes": table.rows[row],
            "seeds": seeds,
            "steps": config.num_train_steps,
            "batch_size": config.batch_size,
            "pack": config.pack,
            "protocol_steps": row_config(table, row, 0).num_train_steps,
            "per_seed": per_seed,
            "evaluation_protocol": per_seed[0]["protocol"],
        }
        for s in table.scores:
            out[f"{s}_mean"], out[f"{s}_sem"] = mean_sem([k["scores"][s] for k in per_seed])
        if all("rejection" in k for k in per_seed):  # the share of G's samples that rejection sampling kept
            out["sampling"] = split_sampling(overrides)[1]
            out["acceptance_mean"] = sum(k["rejection"]["acceptance"] for k in per_seed) / len(per_seed)
        # Wall time of one run: its training (the logged intervals, over every invocation) plus its scoring.
        walls = [k["train_s_total"] + k["eval_s"] for k in per_seed if k["train_s_total"] is not None]
        out["wall_s_mean"] = round(sum(walls) / len(walls), 1) if walls else None
        result["rows"].append(out)
        grids = sorted(Path(run_dir(args.root, args.table, row, seeds[0]), "samples").glob("*.png"))
        if grids:
            shutil.copyfile(grids[-1], os.path.join(args.out_dir, f"{name}_{slug(row)}.png"))
    result["wall_s_this_invocation"] = round(time.perf_counter() - t0, 1)
    fileio.write_json(os.path.join(args.out_dir, name + ".json"), result)
    shortened = [r for r in result["rows"] if r["steps"] != r["protocol_steps"]]
    header = (
        f"{args.table}: {table.protocol}. "
        + (f"One seed ({seeds[0]}). " if args.seeds == 1 else f"Mean ± standard error over seeds {seeds}. ")
        + f"Command: `.venv/bin/python {result['command']}`."
    )
    if shortened:
        header += (
            f" SHORTENED: {shortened[0]['steps']} training steps per run instead of the protocol's "
            f"{shortened[0]['protocol_steps']}."
        )
    if overrides:
        header += f" CHANGED from the protocol: {overrides}."
    if args.num_samples:
        header += f" SHORTENED: {args.num_samples} samples scored instead of the protocol's."
    with open(os.path.join(args.out_dir, name + ".md"), "w") as f:
        f.write(markdown(table, result["rows"], header))
    return result


if __name__ == "__main__":
    main()
