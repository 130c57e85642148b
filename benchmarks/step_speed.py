"""Train-step throughput of gan_jax configs on this machine, with real data and with data already on device.

  python benchmarks/step_speed.py --config=configs/dcgan.py --steps=30 --repeats=3

Prints one JSON line per config: steps/s with batches from the input pipeline (`pipeline_steps_per_s`) and with one
batch already on the device (`device_steps_per_s`), their ratio (1.0 means the input pipeline costs nothing), the
compile time and the process's peak RSS. Each figure is the median of `--repeats` timed runs of `--steps` steps.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gan_jax.env import configure_xla  # noqa: E402

configure_xla()

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402

from gan_jax.config import load_config  # noqa: E402
from gan_jax.train import parallel  # noqa: E402
from gan_jax.train.experiment import setup  # noqa: E402
from gan_jax.train.step import make_train_step  # noqa: E402


def measure(spec: str, steps: int, repeats: int, overrides: dict) -> dict:
    config = load_config(spec)
    config.update_from_flattened_dict(overrides)
    exp = setup(config, tempfile.mkdtemp())
    repl = parallel.replicated(exp.mesh)
    step_fn = jax.jit(
        make_train_step(exp.game, exp.optimizers, n_critic=config.n_critic, ema_decay=config.ema_decay),
        in_shardings=(repl, parallel.batch_sharding(exp.mesh)),
        out_shardings=(repl, repl),
        donate_argnums=0,
    )
    state = exp.init_state()
    per_step = config.batch_size * config.n_critic
    batches = exp.dataset.iterate(0, per_step, prefetch=config.data.prefetch)
    fixed = parallel.global_batch(next(batches), exp.mesh)
    t = time.perf_counter()
    state, m = step_fn(state, fixed)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t

    def timed(get_batch) -> float:
        nonlocal state
        t = time.perf_counter()
        for _ in range(steps):
            state, m = step_fn(state, get_batch())
        jax.block_until_ready((state, m))
        return steps / (time.perf_counter() - t)

    device, pipeline = [], []
    for _ in range(repeats):  # alternate, so drifts in machine load hit both alike
        device.append(timed(lambda: fixed))
        pipeline.append(timed(lambda: parallel.global_batch(next(batches), exp.mesh)))
    batches.close()
    dev, pipe = statistics.median(device), statistics.median(pipeline)
    return {
        "config": spec,
        "model": config.model.name,
        "batch_size": config.batch_size,
        "devices": jax.device_count(),
        "device_steps_per_s": round(dev, 3),
        "pipeline_steps_per_s": round(pipe, 3),
        "pipeline_over_device": round(pipe / dev, 3),
        "examples_per_s": round(pipe * per_step, 1),
        "compile_s": round(compile_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", help="config spec (repeatable); default: the DCGAN default")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], help="override, e.g. --set batch_size=64")
    args = parser.parse_args()
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value) if value[:1] in "-0123456789[{tf" else value
    for spec in args.config or ["configs/dcgan.py"]:
        print(json.dumps(measure(spec, args.steps, args.repeats, overrides)), flush=True)


if __name__ == "__main__":
    main()
