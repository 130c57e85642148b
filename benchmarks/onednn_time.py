"""How much of a train step is oneDNN's kernels, in gan_jax and in its PyTorch reference, call by call.

  python benchmarks/onednn_time.py --config=configs/dcgan.py --set batch_size=64 --set data.channels=3
  python benchmarks/onednn_time.py --config=configs/biggan.py --steps=4

On a CPU both frameworks run a GAN's convolutions as oneDNN primitives (gan_jax through `gan_jax/layers/onednn.py`,
PyTorch through its bundled copy of the library), so the question behind `benchmarks/step_speed.py`'s ratio is: how
long do the same kernels take in each step, and how much of each step is left outside them? This script runs the
config's gan_jax step and its torch reference (channels-last, eager, every core), each in its own process with
`ONEDNN_VERBOSE=1` and `ONEDNN_VERBOSE_TIMESTAMP=1`, so that oneDNN itself logs the start and duration of every
primitive it executes, and reads back the calls made during `--steps` timed steps (after as many warm-up steps).
`--repeats` processes per side run in turns, so that drifts in the machine's speed hit both alike. For the last run of
each side it prints the primitives grouped by (kind, direction, oneDNN implementation, problem): ms per step, calls
per step, median ms per call; then one JSON line of medians over the runs:

  `jax_step_ms`, `torch_step_ms`        wall time per step under the logging (which adds a line per call)
  `jax_onednn_ms`, `torch_onednn_ms`    oneDNN time per step (the sum of the calls; gan_jax's includes the small
                                        matrix products XLA:CPU itself hands to its own copy of oneDNN, `gemm_api`;
                                        with onednn_threads="xla" the calls are single-threaded chunks on
                                        several threads, so this is CPU time, and the busy time below is the wall)
  `jax_onednn_busy_ms`                  wall time per step during which at least one oneDNN call ran: below the sum
                                        when XLA runs two at once (independent instructions run concurrently)
  `jax_overlapped_calls`                share of gan_jax's calls that overlapped another oneDNN call
  `torch_rest_ms`                       torch's step minus its oneDNN time: everything else (normalization,
                                        activations, Adam, EMA, Python)
  `ceiling_ratio`                       torch_step_ms / torch_onednn_ms: the step_speed ratio gan_jax would reach
                                        if it ran torch's kernels at torch's speed and everything else took no time
  `*_step_ms_runs`                      each run's step time (the spread is the machine's noise)

The ceiling is the figure to set beside a ratio goal: a goal above it cannot be met with oneDNN's kernels as they are,
only with faster convolutions than the ones PyTorch itself calls. Per-call times also show whether a kernel runs
slower inside gan_jax's step than inside torch's (oversubscription, when two calls or a call and an XLA fusion share
the cores). Needs torch (requirements-bench.txt) and a config with a torch reference.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

_MARK = "@@onednn_time@@ "


def _child(side: str, spec: str, overrides: dict, steps: int, shared_file: str) -> None:
    """One side's process: set up, warm up, then time `steps` steps and report the window's epoch milliseconds."""
    from benchmarks import step_speed

    if side == "jax":
        bench = step_speed.JaxBench(spec, overrides, steps, keep_initial=True)
        step_speed.write_shared(bench, shared_file)
        bench.device_run()  # warm-up: `steps` steps
        start = time.time()
        per_s = bench.device_run()
        end = time.time()
    else:
        ref, real, extra = step_speed.torch_reference(spec, overrides, shared_file, "torch_channels_last", "fused")
        for _ in range(steps):  # warm-up
            ref.step(real, **extra)
        start = time.time()
        for _ in range(steps):
            metrics = ref.step(real, **extra)
        float(metrics["g_loss"])
        end = time.time()
        per_s = steps / (end - start)
    sys.stdout.flush()
    print(_MARK + json.dumps({"start_ms": start * 1e3, "end_ms": end * 1e3, "step_ms": 1e3 / per_s}), flush=True)


Call = tuple[float, float, tuple[str, str, str, str]]  # (start ms, duration ms, (kind, direction, impl, problem))


def parse_verbose(lines: list[str], start_ms: float, end_ms: float) -> list[Call]:
    """The primitive executions oneDNN logged (with timestamps) that started inside [start_ms, end_ms].

    Two line formats occur (oneDNN versions differ): `onednn_verbose,[v1,]<timestamp>,[primitive,]exec,cpu,<kind>,
    <impl>,<direction>,<memory descriptors>,<attributes>,<algorithm>,<problem>,<ms>`."""
    calls = []
    for line in lines:
        if not line.startswith("onednn_verbose,"):
            continue
        f = line.strip().split(",")
        if "exec" not in f:
            continue
        i = f.index("exec")
        stamp = f[i - 2] if f[i - 1] == "primitive" else f[i - 1]
        try:
            t0, ms = float(stamp), float(f[-1])
        except ValueError:
            continue
        if start_ms <= t0 <= end_ms and i + 4 < len(f):
            calls.append((t0, ms, (f[i + 2], f[i + 4] or "-", f[i + 3] or "-", f[-2])))
    return calls


def busy_ms(calls: list[Call]) -> float:
    """Wall time covered by at least one call (the union of their intervals)."""
    total, reach = 0.0, float("-inf")
    for t0, ms, _ in sorted(calls):
        t1 = t0 + ms
        if t1 > reach:
            total += t1 - max(t0, reach)
            reach = t1
    return total


def overlapped(calls: list[Call]) -> int:
    """How many calls overlap another call in time."""
    ordered = sorted(calls)
    hit = [False] * len(ordered)
    for a, (t0, ms, _) in enumerate(ordered):
        for b in range(a + 1, len(ordered)):
            if ordered[b][0] >= t0 + ms:
                break
            hit[a] = hit[b] = True
    return sum(hit)


def table(calls: list[Call], steps: int) -> list[str]:
    groups: dict[tuple, list[float]] = collections.defaultdict(list)
    for _, ms, key in calls:
        groups[key].append(ms)
    rows = sorted(groups.items(), key=lambda kv: -sum(kv[1]))
    out = ["  ms/step  calls/step  ms/call  kind / direction / implementation / problem"]
    for (kind, direction, impl, problem), times in rows:
        out.append(
            f"  {sum(times) / steps:7.1f}  {len(times) / steps:10.1f}  {statistics.median(times):7.2f}  "
            f"{kind} / {direction} / {impl} / {problem}"
        )
    return out


def run_side(side: str, args: argparse.Namespace, shared_file: str) -> tuple[dict, list[Call]]:
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "ONEDNN_VERBOSE_TIMESTAMP": "1"}
    cmd = [sys.executable, os.path.abspath(__file__), f"--_side={side}", f"--_shared_file={shared_file}"]
    cmd += [f"--config={args.config}", f"--steps={args.steps}"] + [f"--set={k}={json.dumps(v)}" for k, v in args.set]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = proc.stdout.splitlines()
    marks = [json.loads(line[len(_MARK) :]) for line in lines if line.startswith(_MARK)]
    if proc.returncode != 0 or not marks:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"onednn_time: the {side} process failed (status {proc.returncode})")
    info = marks[0]
    return info, parse_verbose(lines, info["start_ms"], info["end_ms"])


def main() -> None:
    from gan_jax.config import ConfigError, add_set_flag, load_config

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/dcgan.py", help="config spec")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per side (after warm-up)")
    parser.add_argument("--repeats", type=int, default=3, help="processes per side, alternated; medians reported")
    add_set_flag(parser)
    parser.add_argument("--_side", choices=("jax", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--_shared_file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    overrides = dict(args.set)
    try:
        load_config(args.config, overrides)  # a misspelled key is a usage error, not a traceback
    except ConfigError as e:
        parser.error(str(e))
    if args._side:
        from gan_jax.env import configure_xla

        configure_xla()
        _child(args._side, args.config, overrides, args.steps, args._shared_file)
        return

    runs: dict[str, list[tuple[dict, list[Call]]]] = {"jax": [], "torch": []}
    with tempfile.TemporaryDirectory(prefix="onednn_time_") as tmp:
        shared_file = os.path.join(tmp, "shared.pkl")
        for _ in range(args.repeats):  # alternated, so that drifts in the machine's speed hit both sides alike
            for side in ("jax", "torch"):  # jax first: it writes the shared batch and weights
                runs[side].append(run_side(side, args, shared_file))
    n = args.steps
    onednn_ms = lambda calls: sum(ms for _, ms, _ in calls) / n  # noqa: E731
    med = lambda side, f: statistics.median(f(info, calls) for info, calls in runs[side])  # noqa: E731
    for side, name in (("jax", "gan_jax"), ("torch", "torch channels-last")):
        info, calls = runs[side][-1]
        print(f"{name}, last run: {info['step_ms']:.1f} ms per step, oneDNN {onednn_ms(calls):.1f} ms per step")
        print("\n".join(table(calls, n)) + "\n")
    torch_step, torch_onednn = med("torch", lambda i, c: i["step_ms"]), med("torch", lambda i, c: onednn_ms(c))
    summary = {
        "config": args.config,
        "overrides": overrides,
        "steps": n,
        "repeats": args.repeats,
        "jax_step_ms": round(med("jax", lambda i, c: i["step_ms"]), 1),
        "torch_step_ms": round(torch_step, 1),
        "jax_onednn_ms": round(med("jax", lambda i, c: onednn_ms(c)), 1),
        "torch_onednn_ms": round(torch_onednn, 1),
        "jax_onednn_busy_ms": round(med("jax", lambda i, c: busy_ms(c) / n), 1),
        "jax_overlapped_calls": round(med("jax", lambda i, c: overlapped(c) / max(len(c), 1)), 3),
        "torch_rest_ms": round(med("torch", lambda i, c: i["step_ms"] - onednn_ms(c)), 1),
        "ceiling_ratio": round(med("torch", lambda i, c: i["step_ms"] / onednn_ms(c)), 3) if torch_onednn else None,
        "torch_step_ms_runs": [round(i["step_ms"], 1) for i, _ in runs["torch"]],
        "jax_step_ms_runs": [round(i["step_ms"], 1) for i, _ in runs["jax"]],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
