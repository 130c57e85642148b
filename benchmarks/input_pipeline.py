"""Input-pipeline throughput: batches/s of `Dataset.iterate` (and of plain `Dataset.batch` for reference).

Prints one JSON line per measurement. The question it answers: can the data layer outrun a train step? A DCGAN step
at batch 128 on CPU takes tens of milliseconds, on an accelerator a few; the pipeline should deliver well above
that rate while leaving the cores to the step.

    .venv/bin/python benchmarks/input_pipeline.py [--seconds 3] [--batch_size 128]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere, no install needed
from gan_jax.data import Dataset, get_dataset  # noqa: E402


def _rate(fn, seconds: float) -> tuple[float, int]:
    """Calls fn() repeatedly for about `seconds`; returns (calls per second, calls)."""
    fn()  # warm-up (epoch permutation, first queue fill)
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        fn()
        n += 1
    return n / elapsed, n


def bench(cfg: dict, batch_size: int, seconds: float) -> list[dict]:
    t0 = time.perf_counter()
    ds: Dataset = get_dataset(cfg, seed=0)
    load_s = time.perf_counter() - t0
    base = {
        "dataset": cfg["name"],
        "shape": list(ds.shape),
        "batch_size": batch_size,
        "load_s": round(load_s, 3),
        "cpus": os.cpu_count(),
    }
    rows = []
    step = iter(range(10**9))
    rate, n = _rate(lambda: ds.batch(next(step), batch_size), seconds)
    rows.append({**base, "mode": "batch (synchronous)", "batches_per_s": round(rate, 1), "batches": n})
    for threads in (1, 2):
        with ds.iterate(0, batch_size, prefetch=4, num_threads=threads) as it:
            rate, n = _rate(lambda it=it: next(it), seconds)
        rows.append({**base, "mode": f"iterate threads={threads}", "batches_per_s": round(rate, 1), "batches": n})
    # With a busy consumer: a stand-in "train step" of ~5 ms of numpy work competing for the same 2 cores.
    a = np.random.default_rng(0).standard_normal((384, 384), np.float32)

    def step_with_work(it):
        next(it)
        for _ in range(4):
            a @ a

    work_rate, _ = _rate(lambda: [a @ a for _ in range(4)], seconds / 2)
    with ds.iterate(0, batch_size, prefetch=4) as it:
        rate, n = _rate(lambda it=it: step_with_work(it), seconds)
    rows.append(
        {
            **base,
            "mode": "iterate + 4x(384^2 matmul) consumer",
            "batches_per_s": round(rate, 1),
            "consumer_alone_per_s": round(work_rate, 1),
            "batches": n,
        }
    )
    for r in rows:
        r["examples_per_s"] = round(r["batches_per_s"] * batch_size)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--batch_size", type=int, default=128)
    args = p.parse_args()
    configs = [
        {"name": "mnist", "resolution": 32, "resize": "pad", "channels": 1},
        {"name": "mnist", "resolution": 32, "resize": "pad", "channels": 3},
        {"name": "fashion_mnist", "resolution": 0},
        {"name": "fashion_mnist", "resolution": 32, "resize": "pad", "channels": 1},
        {"name": "ring"},
    ]
    for cfg in configs:
        for row in bench(cfg, args.batch_size, args.seconds):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
