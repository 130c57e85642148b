"""Where a gan_jax train step spends its time on this machine: XLA's own per-instruction times, grouped.

  python benchmarks/step_profile.py --config=configs/sngan.py
  python benchmarks/step_profile.py --config=configs/stylegan.py --steps=16 --top=30

Runs the config's compiled train step `--steps` times under `jax.profiler.trace` and reads the trace back: on the CPU
backend every executed XLA instruction (a fusion, a convolution, a copy) is one trace event named after the
instruction, so summing the events by name gives the time of each instruction per step, and the compiled HLO text
says what each one is (its shape, the ops fused into it, and the JAX operation it came from). Prints the step time,
the time per kind of instruction (the name without its number: `transpose_copy_fusion`, `ynn_fusion` (XLA:CPU's
YNNPACK fusions, where most convolutions run), `convolution`, loop fusions of elementwise ops...), and the `--top`
instructions. A game with several compiled phases (StyleGAN2's lazy regularization) is profiled in the phase of step
1, its most common one, run at every timed step.

Every instruction runs on the host threads XLA:CPU uses, and an instruction split over threads is one event per
thread piece, so the per-kind times can exceed the wall time. One blind spot: XLA:CPU's plain convolutions (the
`convolution` / `conv_general_dilated` instructions) record little more than their dispatch,
so their compute is missing from the sums (a 128x32x32x64 3x3 convolution that takes 38.7 ms of wall time shows as
0.1 ms). The wall time includes it: in a step with many plain convolutions (DCGAN) the instruction time is well
below the wall time. Convolutions that XLA fuses with their neighbours (`ynn_fusion`) are timed in full.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gan_jax.env import configure_xla  # noqa: E402

configure_xla()

import argparse  # noqa: E402
import collections  # noqa: E402
import glob  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402

from gan_jax.config import ConfigError, add_set_flag, load_config  # noqa: E402

_INSTRUCTION = re.compile(r"^  (?:ROOT )?%(\S+) = (\S+) ([\w-]+)\((.*)$", re.M)
_COMPUTATION = re.compile(r"^%(\S+) \([^\n]*\{\n(.*?)\n\}", re.M | re.S)
_NOT_WORK = ("parameter", "constant", "broadcast", "bitcast", "tuple", "get-tuple-element")


def describe_instructions(hlo: str) -> dict[str, dict]:
    """Instruction name -> its shape, opcode, the main ops of the computation it calls, and the JAX op it came from."""
    bodies = {m.group(1): m.group(2) for m in _COMPUTATION.finditer(hlo)}
    out = {}
    for m in _INSTRUCTION.finditer(hlo):
        name, shape, opcode, rest = m.groups()
        source = re.search(r'op_name="([^"]*)"', rest)
        called = re.search(r"calls=%([\w.-]+)", rest)
        ops = []
        if called and called.group(1) in bodies:
            counts = collections.Counter(re.findall(r"= \S+ ([\w-]+)\(", bodies[called.group(1)]))
            ops = [op for op, _ in counts.most_common() if op not in _NOT_WORK]
        out[name] = {
            "shape": shape.split("{")[0],
            "opcode": opcode,
            "fused_ops": ops[:5],
            "source": source.group(1).removeprefix("jit(train_step)/") if source else "",
        }
    return out


def kind(name: str) -> str:
    """An instruction's kind: its name without the numeric suffix XLA adds (`ynn_fusion.12` -> `ynn_fusion`)."""
    base, _, suffix = name.rpartition(".")
    return base if base and suffix.isdigit() else name


def profile(spec: str, overrides: dict, steps: int) -> tuple[float, collections.Counter, dict[str, dict]]:
    """(wall seconds per step, microseconds per instruction name over the run, instruction descriptions)."""
    from gan_jax.train import parallel
    from gan_jax.train.experiment import setup

    config = load_config(spec, overrides)
    exp = setup(config, tempfile.mkdtemp())
    state = exp.init_state()
    batches = exp.dataset.iterate(0, config.batch_size * config.n_critic)
    batch = parallel.global_batch(next(batches), exp.mesh)
    batches.close()
    step_fn = exp.train_step(1)
    hlo = step_fn.lower(state, batch).compile().as_text()
    for _ in range(3):  # compile and warm up
        state, metrics = step_fn(state, batch)
    jax.block_until_ready(metrics)
    trace_dir = tempfile.mkdtemp(prefix="step_profile_")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = step_fn(state, batch)
        jax.block_until_ready(metrics)
        wall = (time.perf_counter() - start) / steps
    (trace_file,) = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
    with gzip.open(trace_file) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    described = describe_instructions(hlo)
    times = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in described:
            times[e["name"]] += e.get("dur", 0)
    return wall, times, described


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/dcgan.py", help="config spec")
    parser.add_argument("--steps", type=int, default=8, help="profiled steps (after 3 warm-up steps)")
    parser.add_argument("--top", type=int, default=25, help="instructions to list")
    add_set_flag(parser)
    args = parser.parse_args()
    try:
        load_config(args.config, dict(args.set))  # a misspelled key is a usage error, not a traceback
    except ConfigError as e:
        parser.error(str(e))
    wall, times, described = profile(args.config, dict(args.set), args.steps)
    per_step = lambda us: us / args.steps / 1e3  # noqa: E731  microseconds over the run -> ms per step
    total = per_step(sum(times.values()))
    print(f"{args.config}: {1e3 * wall:.1f} ms per step (wall, under the profiler); instructions: {total:.1f} ms")
    by_kind = collections.Counter()
    for name, us in times.items():
        by_kind[kind(name)] += us
    print("\nms/step   share  kind")
    for k, us in by_kind.most_common(15):
        print(f"{per_step(us):8.1f}  {per_step(us) / total:5.1%}  {k}")
    print("\nms/step  instruction                     shape                          fused ops / from")
    for name, us in times.most_common(args.top):
        d = described[name]
        print(f"{per_step(us):7.1f}  {name:30s}  {d['shape']:30s} [{','.join(d['fused_ops'])}] {d['source'][-70:]}")


if __name__ == "__main__":
    main()
