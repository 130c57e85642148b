"""The 2-D mixtures table (PacGAN, Lin et al. 2018, Table 1; VEEGAN, Srivastava et al. 2017, Table 1), over seeds.

Every row trains `configs/gan_mog.py:<mixture>_paper` (8-Gaussian ring or 25-Gaussian grid, 100,000 points; G four
400-unit ReLU+BN layers, D three 200-unit maxout(5) layers; Adam lr 1e-4, beta1 0.8; 2-D normal z; batch 100) with
the row's changes, for every seed at once (`gan_jax.train.seeds`: the step vmapped over seeds; seed s is exactly the
run `run.py --config.seed=s` makes), then scores 2,500 samples of each seed's final generator with gan_jax's `modes`
metric (modes with a sample within 3 std, % of samples within 3 std of their nearest mode, reverse KL of the mode
histogram to uniform) and reports mean and standard error over seeds.

PacGAN-m rows follow the paper's code: the dataset holds 100,000 *packs* of m points and a batch is 100 packs, so
`batch_size` = 100 m, `data.num_examples` = 100,000 m, and an epoch is still 1,000 updates of D and G.

    .venv/bin/python benchmarks/mixtures_table.py                      # the paper's schedule: 400 epochs, 10 seeds
    .venv/bin/python benchmarks/mixtures_table.py --epochs=20 --seeds=5 --name=mixtures_20ep
    .venv/bin/python benchmarks/mixtures_table.py --mixtures=grid --methods=GAN+EMA+decay --set r1_gamma=0.1

`--set KEY=VALUE` (repeatable) changes any config key of every row after the row's own changes, to try a recipe
with one command; the changes are part of the row's name in the table and of its state folder. Sampling-only keys
(`gan_jax.config.SAMPLING_KEYS`: discriminator rejection sampling's `drs_percentile`, `drs_burn_in`,
`drs_calibrate_steps`, `drs_rule`) are not part of the folder: a finished row keeps its final state, so the same
command with `--set drs_percentile=80` re-scores it in seconds instead of training it again, and the table reports the
share of G's samples kept (and, with calibration, D's loss on the sampler before and after it).

Writes benchmarks/results/<name>.json (per row: method, mixture, seeds, per-seed scores, mean and standard error of
each score, wall and train time), <name>.md (the table beside the papers' rows) and <name>.png (seed 0's samples of
every row over the true means). `--measure_vmap=N` first times N steps of all seeds vmapped against one seed alone
and writes that comparison into the JSON too.

The paper's schedule takes hours per row on a 2-core CPU, so every row keeps its state under `--workdir` (default
runs/mixtures_table/<name>), one folder per row and setting: every seed's training state (an Orbax checkpoint of the
vmapped states, atomic and digest-checked like `run.py`'s) every `--checkpoint_every` epochs, and the row's scores and
samples once it is done. Run the same command again after an interruption: finished rows are read back, an unfinished
one continues from its newest checkpoint, and the result equals that of an uninterrupted run (each seed's batches are
a function of the step, and its random keys are part of the saved state).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere, no install needed
from gan_jax import fileio  # noqa: E402
from gan_jax.config import ConfigError, add_set_flag, apply_overrides, load_config, split_sampling  # noqa: E402
from gan_jax.data.mixtures import mixture_params  # noqa: E402
from gan_jax.metrics.scores import evaluate_points  # noqa: E402
from gan_jax.train.checkpoint import Checkpoints, model_signature  # noqa: E402
from gan_jax.train.seeds import SeedRuns, init_seed_runs, mean_sem, train_seed_runs  # noqa: E402

SCORES = ("modes", "high_quality_pct", "reverse_kl")

# Row -> config changes (beyond the packing, which `pack` sets up as in the paper's code).
METHODS: dict[str, dict] = {
    "GAN": {"pack": 1},
    "PacGAN2": {"pack": 2},
    "PacGAN4": {"pack": 4},
    # gan_jax's additions: samples from an EMA of G's weights (averages out Adam's jitter, which is what spreads
    # samples around the 0.01-std ring modes) and a learning rate decaying linearly to 0 over the run.
    "GAN+EMA+decay": {"pack": 1, "ema_decay": 0.999, "lr_decay": "linear"},
    "PacGAN2+EMA+decay": {"pack": 2, "ema_decay": 0.999, "lr_decay": "linear"},
    "PacGAN4+EMA+decay": {"pack": 4, "ema_decay": 0.999, "lr_decay": "linear"},
}

# The papers' rows (mean modes, % high quality, reverse KL), as in the issue's Table 1 summary.
PAPER_ROWS = {
    "ring": [
        ("GAN (PacGAN Table 1)", 6.3, 98.2, 0.45),
        ("PacGAN4 (PacGAN Table 1)", 7.8, 95.9, 0.07),
        ("GAN (VEEGAN Table 1)", 1.0, None, None),
        ("Unrolled GAN (VEEGAN Table 1)", 7.6, 35.6, None),
    ],
    "grid": [
        ("GAN (PacGAN Table 1)", 17.3, 94.8, 0.70),
        ("PacGAN4 (PacGAN Table 1)", 24.8, 93.6, 0.04),
        ("GAN (VEEGAN Table 1)", 3.3, None, None),
        ("Unrolled GAN (VEEGAN Table 1)", 23.6, 16.0, None),
    ],
}


def row_config(mixture: str, method: str, epochs: float, overrides: dict | None = None):
    """The paper config for `mixture` with `method`'s changes, then `overrides` ({dotted key: value}, `--set`),
    trained for `epochs` epochs of 1,000 updates."""
    config = load_config(f"{ROOT / 'configs' / 'gan_mog.py'}:{mixture}_paper")
    changes = dict(METHODS[method])
    m = changes.pop("pack")
    config.pack = m
    config.batch_size = 100 * m
    config.data.num_examples = 100_000 * m
    apply_overrides(config, changes)
    apply_overrides(config, overrides or {})
    config.num_train_steps = int(round(epochs * config.data.num_examples / config.batch_size))
    return config


def measure_vmap(mixture: str, seeds: list[int], steps: int) -> dict:
    """Seed-steps per second: all seeds vmapped vs one seed alone (the same chunked scan), compilation excluded."""
    out = {"mixture": mixture, "method": "GAN", "steps": steps, "seeds": len(seeds)}
    for label, group in (("one_seed", seeds[:1]), ("vmapped", seeds)):
        config = row_config(mixture, "GAN", 0)
        runs = train_seed_runs(init_seed_runs(config, group), steps, chunk=steps)
        out[f"{label}_seed_steps_per_s"] = round(len(group) * steps / runs.train_s, 2)
    out["speedup"] = round(out["vmapped_seed_steps_per_s"] / out["one_seed_seed_steps_per_s"], 2)
    out["sequential_wall_s_for_all_seeds"] = round(len(seeds) * steps / out["one_seed_seed_steps_per_s"], 1)
    out["vmapped_wall_s_for_all_seeds"] = round(len(seeds) * steps / out["vmapped_seed_steps_per_s"], 1)
    return out


def label(method: str, overrides: dict | None) -> str:
    """The row's name in the table: the method, with the `--set` changes when there are any."""
    if not overrides:
        return method
    return f"{method} ({', '.join(f'{k}={v}' for k, v in sorted(overrides.items()))})"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in text)


def row_dir(
    workdir: str, mixture: str, method: str, seeds: list[int], epochs: float, overrides: dict | None = None
) -> str:
    """The folder of one row's state: its training setting is in the name, so a different setting never meets its
    state (sampling settings share it: see gan_jax.config.SAMPLING_KEYS)."""
    slug = _slug(label(method, split_sampling(overrides)[0]))
    which = f"{len(seeds)}seeds" if seeds[0] == 0 else f"seeds{seeds[0]}-{seeds[-1]}"
    return os.path.join(workdir, f"{mixture}_{slug}_{which}_{epochs:g}ep")


def _resume(runs: SeedRuns, checkpoints: Checkpoints, abstract: Any, seconds: dict) -> float:
    """Restores the newest intact checkpoint of the row into `runs`, with the training time spent up to it (from
    `seconds`, step -> seconds); returns the wall time spent up to it (0 when starting afresh)."""
    restored = checkpoints.restore_latest(abstract)
    if restored is None:
        return 0.0
    runs.states = restored
    step = int(np.asarray(restored.step)[0])
    spent = seconds.get(str(step), {})
    runs.train_s = float(spent.get("train_s", 0.0))
    print(f"  resumed from step {step} ({checkpoints.directory})", file=sys.stderr, flush=True)
    return float(spent.get("wall_s", 0.0))


def run_row(
    mixture: str,
    method: str,
    seeds: list[int],
    epochs: float,
    chunk: int,
    num_samples: int,
    workdir: str,
    checkpoint_every: float = 10,
    stop_at_step: int = 0,
    overrides: dict | None = None,
    eval_seed: int = 0,
) -> dict | None:
    """Trains (or resumes, or reads back) one row over its seeds and scores it. `stop_at_step` > 0 stops training
    there after a checkpoint and returns None, as an interruption would (for tests)."""
    config = row_config(mixture, method, epochs, overrides)
    directory = row_dir(workdir, mixture, method, seeds, epochs, overrides)
    sampling = split_sampling(overrides)[1]
    if eval_seed:  # another draw of the scored samples: a sampling setting too
        sampling = {**sampling, "eval_seed": eval_seed}
    suffix = "_" + _slug("_".join(f"{k}={v}" for k, v in sorted(sampling.items()))) if sampling else ""
    done_path = os.path.join(directory, f"row{suffix}.json")
    samples_path = os.path.join(directory, f"samples_seed0{suffix}.npy")
    if os.path.exists(done_path) and os.path.exists(samples_path):
        row = json.loads(Path(done_path).read_text())
        if row.get("num_samples") == num_samples:
            print(f"  {mixture} {method}: finished earlier, read back from {directory}", file=sys.stderr, flush=True)
            return {**row, "samples_seed0": np.load(samples_path)}
    t0 = time.perf_counter()
    runs = init_seed_runs(config, seeds)
    abstract = jax.eval_shape(lambda: runs.states)
    checkpoints = Checkpoints(
        os.path.join(directory, "checkpoints"),
        dict(model_signature(config.model.name, runs.experiment.dataset.shape, abstract), seeds=seeds),
        keep=2,
        async_save=False,
    )
    seconds_path = os.path.join(directory, "seconds.json")  # step -> training and wall seconds up to its checkpoint
    seconds = json.loads(Path(seconds_path).read_text()) if os.path.exists(seconds_path) else {}
    wall_before = _resume(runs, checkpoints, abstract, seconds)
    start = int(np.asarray(runs.states.step)[0])
    steps_per_epoch = config.data.num_examples // config.batch_size
    save_every = max(chunk, int(checkpoint_every * steps_per_epoch) // chunk * chunk)
    show_every = max(chunk, config.num_train_steps // 20 // chunk * chunk)
    end = min(stop_at_step, config.num_train_steps) if stop_at_step > 0 else config.num_train_steps

    def after_chunk(step: int, r: SeedRuns) -> None:
        """Progress now and then; a checkpoint every `save_every` steps, where training stops and at the end (the
        final state, which other sampling settings re-score)."""
        saved = step % save_every == 0 or step == end
        if saved:
            checkpoints.save(step, r.states)
            checkpoints.wait()
            seconds[str(step)] = {"train_s": r.train_s, "wall_s": wall_before + time.perf_counter() - t0}
            fileio.write_json(seconds_path, seconds)
        rate = len(seeds) * step / max(r.train_s, 1e-9)  # train_s counts every invocation's steps, as `step` does
        eta = (config.num_train_steps - step) * len(seeds) / max(rate, 1e-9)
        print(
            f"  {mixture} {method}: step {step}/{config.num_train_steps}, {rate:.0f} seed-steps/s, "
            f"ETA {eta / 60:.1f} min" + (" (checkpoint saved)" if saved else ""),
            file=sys.stderr,
            flush=True,
        )

    every = math.gcd(save_every, show_every)
    runs = train_seed_runs(runs, end, chunk=chunk, callback=after_chunk, callback_every=every)
    checkpoints.close()
    if end < config.num_train_steps:
        return None
    per_seed, samples = [], []
    for i, s in enumerate(seeds):  # the `modes` evaluator's latents (its seed 0, unless --eval_seed)
        x = runs.experiment.generate(runs.state(i), num_samples, seed=eval_seed)
        samples.append(x)
        per_seed.append({"seed": s, **_scores(x, mixture)})
        rejection = runs.experiment.last_rejection
        if rejection is not None:  # rejection sampling: the share of G's samples kept, D's calibration loss
            per_seed[-1]["drs_acceptance"] = rejection["acceptance"]
            if "calibrate_steps" in rejection:
                per_seed[-1]["drs_calibrate_loss"] = [rejection[f"calibrate_loss_{k}"] for k in ("first", "last")]
    row = {
        "mixture": mixture,
        "method": method,
        "seeds": seeds,
        "epochs": epochs,
        "steps": config.num_train_steps,
        "batch_size": config.batch_size,
        "pack": config.pack,
        "changes": METHODS[method],
        "overrides": overrides or {},
        "num_samples": num_samples,
        "eval_seed": eval_seed,
        "per_seed": per_seed,
        "wall_s": round(wall_before + time.perf_counter() - t0, 1),  # every invocation's, when resumed
        "train_s": round(runs.train_s, 1),
        "compile_s": round(runs.compile_s, 1),
        "steps_this_invocation": int(np.asarray(runs.states.step)[0]) - start,  # fewer when resumed
    }
    for name in SCORES + ("drs_acceptance",) * ("drs_acceptance" in per_seed[0]):
        row[f"{name}_mean"], row[f"{name}_sem"] = mean_sem([r[name] for r in per_seed])
    np.save(samples_path, samples[0])
    fileio.write_json(done_path, row)
    row["samples_seed0"] = samples[0]  # for the picture; dropped from the JSON
    return row


def _scores(points: np.ndarray, mixture: str) -> dict:
    s = evaluate_points(points, mixture)["modes"]
    return {name: s[name] for name in SCORES}


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, ""]
    for mixture in dict.fromkeys(r["mixture"] for r in rows):
        k = len(mixture_params(mixture)[0])
        lines += [
            f"**{mixture}** ({k} modes)",
            "",
            f"| method | modes (of {k}) | % high quality | reverse KL | seeds | epochs | wall |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in (r for r in rows if r["mixture"] == mixture):
            kept = ""
            if "drs_acceptance_mean" in r:
                kept += f", keeping {100 * r['drs_acceptance_mean']:.0f}% of G's samples"
            if r.get("eval_seed"):
                kept += f", scored on evaluation seed {r['eval_seed']}"
            lines.append(
                f"| gan_jax {label(r['method'], r.get('overrides'))}{kept} "
                f"| {r['modes_mean']:.2f} ± {r['modes_sem']:.2f} "
                f"| {r['high_quality_pct_mean']:.1f} ± {r['high_quality_pct_sem']:.1f} "
                f"| {r['reverse_kl_mean']:.3f} ± {r['reverse_kl_sem']:.3f} | {len(r['seeds'])} | {r['epochs']:g} "
                f"| {r['wall_s'] / 60:.1f} min |"
            )
        for name, modes, hq, kl in PAPER_ROWS[mixture]:
            cell = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
            lines.append(f"| paper: {name} | {cell(modes, '.1f')} | {cell(hq, '.1f')} | {cell(kl, '.2f')} | | 400 | |")
        lines.append("")
    return "\n".join(lines)


def scatter(rows: list[dict], path: str) -> None:
    """Seed 0's samples of every row (one panel each) over the true means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.4), squeeze=False)
    for ax, r in zip(axes[0], rows, strict=True):
        means, _ = mixture_params(r["mixture"])
        x = r["samples_seed0"]
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4, color="tab:blue", linewidths=0)
        ax.scatter(means[:, 0], means[:, 1], s=25, marker="x", color="tab:red")
        s = r["per_seed"][0]
        name = textwrap.fill(f"{r['mixture']} {label(r['method'], r.get('overrides'))} (seed {s['seed']})", 44)
        ax.set_title(
            f"{name}\n{s['modes']} modes, {s['high_quality_pct']:.1f}% HQ, KL {s['reverse_kl']:.3f}",
            fontsize=8,
        )
        lim = 1.5 if r["mixture"] == "ring" else 5.5
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mixtures", default="ring,grid")
    p.add_argument("--methods", default="GAN,PacGAN4,GAN+EMA+decay", help=f"comma-separated, of {', '.join(METHODS)}")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument(
        "--first_seed",
        type=int,
        default=0,
        help="train seeds first_seed .. first_seed+seeds-1 (another machine or session can add seeds to a table; "
        "benchmarks/mixtures_summary.py pools them)",
    )
    p.add_argument("--epochs", type=float, default=400, help="epochs of 1,000 updates (the paper: 400)")
    p.add_argument("--chunk", type=int, default=1000, help="steps per compiled call")
    p.add_argument("--num_samples", type=int, default=2500)
    p.add_argument(
        "--eval_seed",
        type=int,
        default=0,
        help="seed of the scored samples' latents (0, the modes evaluator's); another re-scores a finished row with a "
        "fresh draw, to see the scores' sampling noise",
    )
    p.add_argument("--measure_vmap", type=int, default=0, help="steps for the vmap-vs-one-seed timing (0: skip)")
    p.add_argument("--out_dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--name", default="mixtures")
    p.add_argument("--workdir", default="", help="where rows keep their state (default runs/mixtures_table/<name>)")
    p.add_argument("--checkpoint_every", type=float, default=10, help="epochs between checkpoints of a row")
    add_set_flag(p, "a config change for every row")
    p.add_argument("--stop_at_step", type=int, default=0, help=argparse.SUPPRESS)  # tests: an interruption
    args = p.parse_args(argv)
    mixtures = [m for m in args.mixtures.split(",") if m]
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            p.error(f"--methods: unknown method {m!r}; choose from {', '.join(METHODS)}")
    for m in mixtures:
        if m not in PAPER_ROWS:
            p.error(f"--mixtures: unknown mixture {m!r}; choose from {', '.join(PAPER_ROWS)}")
    if args.seeds < 1 or args.first_seed < 0 or args.epochs <= 0 or args.checkpoint_every <= 0:
        p.error("--seeds must be >= 1, --first_seed >= 0, --epochs and --checkpoint_every > 0")
    try:
        overrides = dict(args.set)
        for mixture in mixtures:  # an unknown key fails here, before any training
            row_config(mixture, methods[0] if methods else "GAN", args.epochs, overrides)
    except ConfigError as e:
        p.error(str(e))
    workdir = args.workdir or str(ROOT / "runs" / "mixtures_table" / args.name)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    os.makedirs(args.out_dir, exist_ok=True)
    t0 = time.perf_counter()
    result: dict = {"command": shlex.join(["benchmarks/mixtures_table.py"] + (argv or sys.argv[1:])), "rows": []}
    if args.measure_vmap:
        result["vmap"] = measure_vmap(mixtures[0], seeds, args.measure_vmap)
        print(json.dumps(result["vmap"]), flush=True)
    rows, rows_s = [], 0.0
    for mixture in mixtures:
        for method in methods:
            t_row = time.perf_counter()
            row = run_row(
                mixture,
                method,
                seeds,
                args.epochs,
                args.chunk,
                args.num_samples,
                workdir,
                args.checkpoint_every,
                args.stop_at_step,
                overrides,
                args.eval_seed,
            )
            rows_s += time.perf_counter() - t_row
            if row is None:
                print(f"stopped at step {args.stop_at_step}; run the same command again to resume", file=sys.stderr)
                return result
            rows.append(row)
            public = {k: v for k, v in row.items() if k != "samples_seed0"}
            result["rows"].append(public)
            print(json.dumps({k: v for k, v in public.items() if k != "per_seed"}), flush=True)
    # A row's wall_s spans every invocation that trained it, so rows read back or resumed count their earlier time.
    outside_rows_s = time.perf_counter() - t0 - rows_s
    result["wall_s"] = round(outside_rows_s + sum(r["wall_s"] for r in result["rows"]), 1)
    base = os.path.join(args.out_dir, args.name)
    fileio.write_json(base + ".json", result)
    header = (
        f"2-D mixtures, PacGAN protocol: {args.epochs:g} epochs of 1,000 updates, {args.seeds} seeds "
        f"({seeds[0]}-{seeds[-1]}), "
        f"{args.num_samples} samples per seed; mean ± standard error over seeds. "
        f"Command: `.venv/bin/python {result['command']}` ({result['wall_s'] / 60:.1f} min in all)."
    )
    with open(base + ".md", "w") as f:
        f.write(markdown(rows, header) + "\n")
    scatter(rows, base + ".png")
    return result


if __name__ == "__main__":
    main()
