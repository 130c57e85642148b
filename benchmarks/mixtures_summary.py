"""Pools finished 2-D mixtures rows over training seeds and evaluation draws into one table.

`benchmarks/mixtures_table.py` writes one results file per invocation, and an invocation covers one set of training
seeds (`--seeds`, `--first_seed`) and one draw of the scored samples (`--eval_seed`). A goal is a mean over training
seeds, and one draw of 2,500 samples is noisy (the percentages move by about half a point between draws), so this
script reads every results file whose name matches the patterns, groups their rows by setting (mixture, method,
epochs and every `--set` change, sampling changes included), and reports for each setting:

- per training seed, the mean of each score over its evaluation draws;
- then the mean and standard error of those per-seed means over the training seeds.

Usage (every figure of the README's pooled mixtures tables comes from such a command):

    .venv/bin/python benchmarks/mixtures_summary.py 'mixtures_grid_r1_120ep*' --name=mixtures_grid_r1_120ep_pooled

`--exclude=PATTERN` leaves out names a pattern would take, such as a seed used to choose a setting, which must not be
pooled with the seeds that report it:

    .venv/bin/python benchmarks/mixtures_summary.py 'mixtures_grid_r1_120ep*' --exclude='*_tune_*' --name=...

Writes benchmarks/results/<name>.json and <name>.md. A training seed scored on a different set of draws than the
others is refused, since its mean would not be comparable; a (seed, draw) pair found twice must agree.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.mixtures_table import SCORES  # noqa: E402
from gan_jax import fileio  # noqa: E402
from gan_jax.train.seeds import mean_sem  # noqa: E402

POOLED_NAMES = SCORES + ("drs_acceptance",)  # the per-seed entries pooled (the last only for rejection sampling)
POOLED_KEY = "pooled"  # marks this script's own outputs, which a pattern may also match


def _setting(row: dict) -> tuple:
    """What makes rows the same experiment: everything but which seeds trained it and which draw scored it."""
    overrides = tuple(sorted((k, json.dumps(v)) for k, v in (row.get("overrides") or {}).items()))
    return (row["mixture"], row["method"], float(row["epochs"]), int(row["num_samples"]), overrides)


def _label(setting: tuple) -> str:
    mixture, method, epochs, num_samples, overrides = setting
    changes = ", ".join(f"{k}={json.loads(v)}" for k, v in overrides)
    return f"{mixture} {method}, {epochs:g} epochs, {num_samples} samples" + (f" ({changes})" if changes else "")


def pool(results: list[tuple[str, dict]]) -> list[dict]:
    """Pooled rows from (file name, results JSON) pairs; see the module docstring."""
    scores: dict[tuple, dict[int, dict[int, dict]]] = {}  # setting -> training seed -> draw -> scores
    train_s: dict[tuple, dict[int, float]] = {}  # setting -> training seed -> training seconds per seed
    sources: dict[tuple, list[str]] = {}
    for name, result in results:
        for row in result.get("rows", []):
            key = _setting(row)
            draw = int(row.get("eval_seed", 0))
            sources.setdefault(key, []).append(name)
            for entry in row["per_seed"]:
                seed = int(entry["seed"])
                got = {k: entry[k] for k in POOLED_NAMES if k in entry}
                seen = scores.setdefault(key, {}).setdefault(seed, {})
                if draw in seen and seen[draw] != got:
                    raise ValueError(
                        f"{_label(key)}: training seed {seed}, draw {draw} scored differently in two files "
                        f"({', '.join(sources[key])}); they are not the same run"
                    )
                seen[draw] = got
                train_s.setdefault(key, {})[seed] = float(row["train_s"]) / len(row["seeds"])
    pooled = []
    for key, by_seed in scores.items():
        draws = {seed: sorted(d) for seed, d in by_seed.items()}
        if len({tuple(d) for d in draws.values()}) > 1:
            raise ValueError(f"{_label(key)}: training seeds scored on different draws: {draws}")
        seeds = sorted(by_seed)
        out: dict = {
            "setting": _label(key),
            "mixture": key[0],
            "method": key[1],
            "epochs": key[2],
            "num_samples": key[3],
            "overrides": {k: json.loads(v) for k, v in key[4]},
            "training_seeds": seeds,
            "eval_draws": draws[seeds[0]],
            "train_min_per_seed": [round(train_s[key][s] / 60, 1) for s in seeds],
            "files": sorted(set(sources[key])),
        }
        names = [n for n in POOLED_NAMES if all(n in v for d in by_seed.values() for v in d.values())]
        for n in names:
            per_seed = [float(np.mean([by_seed[s][d][n] for d in draws[s]])) for s in seeds]
            out[f"{n}_per_seed"] = per_seed
            out[f"{n}_mean"], out[f"{n}_sem"] = mean_sem(per_seed)
        pooled.append(out)
    return pooled


def _mean_cell(row: dict, name: str, fmt: str) -> str:
    """ "mean ± s.e." over training seeds; with one seed there is no spread to show, not a zero one."""
    mean, sem = format(row[f"{name}_mean"], fmt), format(row[f"{name}_sem"], fmt)
    return f"{mean} (one seed)" if len(row["training_seeds"]) == 1 else f"{mean} ± {sem}"


def markdown(rows: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| setting | training seeds | draws | modes | % high quality per seed | mean ± s.e. | reverse KL per seed "
        "| mean ± s.e. | kept | training per seed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        kept = f"{100 * r['drs_acceptance_mean']:.0f}%" if "drs_acceptance_mean" in r else "100%"
        lines.append(
            f"| {r['setting']} | {', '.join(map(str, r['training_seeds']))} "
            f"| {', '.join(map(str, r['eval_draws']))} "
            f"| {' / '.join(f'{v:g}' for v in r['modes_per_seed'])} "
            f"| {' / '.join(f'{v:.2f}' for v in r['high_quality_pct_per_seed'])} "
            f"| {_mean_cell(r, 'high_quality_pct', '.2f')} "
            f"| {' / '.join(f'{v:.3f}' for v in r['reverse_kl_per_seed'])} "
            f"| {_mean_cell(r, 'reverse_kl', '.3f')} | {kept} "
            f"| {' / '.join(f'{v:g}' for v in r['train_min_per_seed'])} min |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("patterns", nargs="+", help="results names to pool (shell-style patterns, without .json)")
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        help="results names to leave out although a pattern matches them (repeatable), e.g. a tuning seed's",
    )
    p.add_argument("--results_dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--name", required=True, help="writes <results_dir>/<name>.json and .md")
    args = p.parse_args(argv)
    stems = (Path(f).stem for f in os.listdir(args.results_dir) if f.endswith(".json"))
    names = sorted(
        n
        for n in stems
        if any(fnmatch.fnmatch(n, pat) for pat in args.patterns)
        and not any(fnmatch.fnmatch(n, pat) for pat in args.exclude)
    )
    results = [(n, json.loads(Path(args.results_dir, n + ".json").read_text())) for n in names]
    results = [(n, r) for n, r in results if POOLED_KEY not in r]
    if not results:
        p.error(f"no mixtures results in {args.results_dir} match {' '.join(args.patterns)}")
    try:
        rows = pool(results)
    except (KeyError, ValueError) as e:
        p.error(f"cannot pool these results: {e}")
    command = "benchmarks/mixtures_summary.py " + " ".join(
        [f"'{pat}'" for pat in args.patterns] + [f"--exclude='{pat}'" for pat in args.exclude] + [f"--name={args.name}"]
    )
    header = (
        f"2-D mixtures rows pooled from {len(results)} results files: per training seed the mean over its "
        f"evaluation draws, then mean ± standard error over training seeds. "
        f"Command: `.venv/bin/python {command}`."
    )
    base = os.path.join(args.results_dir, args.name)
    fileio.write_json(base + ".json", {POOLED_KEY: True, "command": command, "rows": rows})
    with open(base + ".md", "w") as f:
        f.write(markdown(rows, header) + "\n")
    print(markdown(rows, header))
    return rows


if __name__ == "__main__":
    main()
