"""Train-step throughput of gan_jax configs on this machine, with real data and with data on device, against PyTorch.

  python benchmarks/step_speed.py --config=configs/dcgan.py --steps=30 --repeats=3
  python benchmarks/step_speed.py --config=configs/dcgan.py --steps=20 --repeats=3 --torch_compile
  python benchmarks/step_speed.py --config=configs/dcgan.py --set batch_size=64 --set data.channels=3
  python benchmarks/step_speed.py --config=configs/stylegan.py --steps=32 --repeats=3
  python benchmarks/step_speed.py --config=configs/biggan.py --config=configs/sngan.py --steps=10 --repeats=3

Without a PyTorch reference (`--no-torch`, a config with none, or torch not installed) it prints one JSON line per
config: steps/s with batches from the input pipeline (`pipeline_steps_per_s`) and with one batch already on the
device (`device_steps_per_s`), their ratio (1.0 means the input pipeline costs nothing), the compile time and the
process's peak RSS. Each figure is the median of `--repeats` timed runs of `--steps` steps.

With one (`--torch`, the default for configs that have one when torch is importable; torch is a benchmark-only
dependency, see requirements-bench.txt), the same gan_jax step is timed against benchmarks/torch_refs/<model>.py, a
PyTorch implementation of the identical networks, losses, Adam, EMA and metrics (benchmarks/torch_refs/check_<model>.py
checks that they compute the same step). References exist for DCGAN, StyleGAN2 (with ADA, lazy R1 and path length),
SNGAN and BigGAN; each module's `reference_problem` says which settings it reproduces. For StyleGAN2 give a multiple of
16 `--steps`, so every timed run holds the same mix of lazily regularized steps whatever step it starts at. Each
framework runs in its own process, so that each one's peak RSS is its own and neither's libraries or threads touch the
other: one for gan_jax, one per torch variant (eager NCHW, eager channels-last, and torch.compile with
`--torch_compile`). They are set up one after the other (compilation included), then timed in turns, one process running
at a time, the order rotating each round, so that drifts in the machine's speed hit all alike. All use the same batch
size, the same real batch (gan_jax's first one) and the same initial weights (gan_jax's), every core
(torch.set_num_threads(os.cpu_count())), and sample z inside the step. Prints one JSON line per config with
`jax_steps_per_s` (batch on device, the like-for-like figure; the pipeline figure is `jax_pipeline_steps_per_s`),
`torch_steps_per_s` (the faster eager layout, named by `torch_layout`), `torch_nchw_steps_per_s`,
`torch_channels_last_steps_per_s`, `torch_compile_steps_per_s`, `ratio` (gan_jax / the best eager torch),
`jax_compile_s`, `torch_compile_s`, and each process's peak RSS (`jax_peak_rss_mb`, `torch_peak_rss_mb` for the best
eager layout, `torch_<variant>_peak_rss_mb`), plus the keys printed without torch.

Where the time goes: `conv_matmul_gflop_per_step` is the step's convolution and matmul work as torch's
FlopCounterMode counts it over one timed run of the NCHW reference (the products gan_jax computes too), and
`jax_conv_matmul_gflops` / `torch_<layout>_conv_matmul_gflops` the rate each framework gets through that work in the
whole step. Set beside the machine's matmul rate (`benchmarks/conv_speed.py --matmul`), they bound what any change
outside the kernels can win. `xla_gflop_per_step` is XLA's own count for gan_jax's compiled step (every op, the
elementwise ones and the fast convolutions' padded taps included), and `xla_gflops` (without torch) its rate.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gan_jax.env import configure_xla  # noqa: E402

configure_xla()

import argparse  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import pickle  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from gan_jax.config import ConfigError, add_set_flag, load_config  # noqa: E402

# jax is imported inside the functions that use it, so that the torch worker processes never load it.

TORCH_VARIANTS = ("torch_nchw", "torch_channels_last", "torch_compile")
_MARK = "@@step_speed@@ "  # prefix of the protocol lines a worker prints; anything else on its stdout is passed on
_TORCH_WARMUP_STEPS = 3


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _reference_module(model: str):
    """benchmarks/torch_refs/<model>.py, the PyTorch reference of that model's train step (imports torch)."""
    return importlib.import_module(f"benchmarks.torch_refs.{model}")


def torch_reference_problem(config) -> str | None:
    """Why benchmarks/torch_refs cannot reproduce `config`'s train step, or None when it can.

    A model has a reference when benchmarks/torch_refs/<model name>.py exists; that module says (its
    `reference_problem`) which of the model's settings it reproduces.
    """
    name = config.model.name
    if not os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_refs", f"{name}.py")):
        return f"model {name!r} has no torch reference"
    return _reference_module(name).reference_problem(config)


# ----------------------------------------------------------------------------------------------------------------------
# gan_jax.


class JaxBench:
    """gan_jax's jitted, state-donating train step of one config, compiled, with timed runs on demand."""

    def __init__(self, spec: str, overrides: dict, steps: int, keep_initial: bool = False):
        import jax
        import numpy as np

        from gan_jax.train import parallel
        from gan_jax.train.experiment import setup

        self.jax, self.parallel, self.steps = jax, parallel, steps
        self.config = config = load_config(spec, overrides)
        self.exp = exp = setup(config, tempfile.mkdtemp())
        self.state = exp.init_state()
        self.step = 0  # the state's step, kept on the host: the game's phase of each step (e.g. StyleGAN2's lazy
        # regularization) picks its compiled update, so timed runs cycle through the phases as training does
        self.per_step = config.batch_size * config.n_critic
        self.batches = exp.dataset.iterate(0, self.per_step, prefetch=config.data.prefetch)
        self.first_batch = next(self.batches)
        self.fixed = parallel.global_batch(self.first_batch, exp.mesh)
        if keep_initial:  # copied: the first step donates the state's buffers
            self.initial = jax.tree.map(lambda a: np.array(a, copy=True), (self.state.params, self.state.model_state))
        t = time.perf_counter()
        phases, seen = {exp.game.phase(i) for i in range(64)}, set()  # every phase is compiled before timing
        while seen != phases:
            seen.add(exp.game.phase(self.step))
            self.state, m = self.step_fn(self.state, self.fixed)
        jax.block_until_ready(m)
        self.compile_s = time.perf_counter() - t

    def xla_gflop_per_step(self) -> float:
        """XLA's own count of the floating-point work of one compiled step (every op: convolutions, matmuls and the
        elementwise rest), averaged over the game's phases as training cycles through them (64 steps)."""
        per_phase = {}
        for i in range(64):
            phase = self.exp.game.phase(i)
            if phase not in per_phase:
                cost = self.exp.train_step(i).lower(self.state, self.fixed).compile().cost_analysis()
                cost = cost[0] if isinstance(cost, list) else cost  # a list of one dict in older jax
                per_phase[phase] = float(cost.get("flops", 0.0))
        return sum(per_phase[self.exp.game.phase(i)] for i in range(64)) / 64 / 1e9

    def step_fn(self, state, batch):
        fn = self.exp.train_step(self.step)
        self.step += 1
        return fn(state, batch)

    def timed(self, get_batch) -> float:
        t = time.perf_counter()
        state = self.state
        for _ in range(self.steps):
            state, m = self.step_fn(state, get_batch())
        self.jax.block_until_ready((state, m))
        self.state = state
        return self.steps / (time.perf_counter() - t)

    def device_run(self) -> float:
        return self.timed(lambda: self.fixed)

    def pipeline_run(self) -> float:
        return self.timed(lambda: self.parallel.global_batch(next(self.batches), self.exp.mesh))

    def close(self) -> None:
        self.batches.close()


def measure(spec: str, steps: int, repeats: int, overrides: dict) -> dict:
    """gan_jax alone, in this process: the figures described in the module docstring's first paragraph."""
    import jax

    bench = JaxBench(spec, overrides, steps)
    config = bench.config
    xla_gflop = bench.xla_gflop_per_step()
    device, pipeline = [], []
    for _ in range(repeats):  # alternate, so drifts in machine load hit both alike
        device.append(bench.device_run())
        pipeline.append(bench.pipeline_run())
    bench.close()
    dev, pipe = statistics.median(device), statistics.median(pipeline)
    return {
        "config": spec,
        "model": config.model.name,
        "batch_size": config.batch_size,
        "devices": jax.device_count(),
        "device_steps_per_s": round(dev, 3),
        "pipeline_steps_per_s": round(pipe, 3),
        "pipeline_over_device": round(pipe / dev, 3),
        "examples_per_s": round(pipe * bench.per_step, 1),
        "compile_s": round(bench.compile_s, 2),
        "xla_gflop_per_step": round(xla_gflop, 2),
        "xla_gflops": round(xla_gflop * dev, 1),
        "peak_rss_mb": peak_rss_mb(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


# ----------------------------------------------------------------------------------------------------------------------
# Worker processes: a line protocol on stdin/stdout (commands "run" and "exit"; replies prefixed with _MARK).


def _send(obj: dict) -> None:
    sys.stdout.write(_MARK + json.dumps(obj) + "\n")
    sys.stdout.flush()


def _serve(setup_info: dict, run, close=lambda: None) -> None:
    _send(setup_info)
    for line in sys.stdin:
        command = line.strip()
        if command == "run":
            _send(run())
        elif command == "exit":
            break
    close()
    _send({"peak_rss_mb": peak_rss_mb()})


def write_shared(bench: JaxBench, shared_file: str) -> None:
    """Writes the real batch and the initial weights (of a `keep_initial` bench) that the torch workers use too."""
    import numpy as np

    with open(shared_file, "wb") as f:
        label = bench.first_batch.get("label")
        shared = {"x": np.asarray(bench.first_batch["x"]), "params": bench.initial[0], "state": bench.initial[1]}
        shared["label"] = None if label is None else np.asarray(label)
        pickle.dump(shared, f)


def jax_worker(spec: str, overrides: dict, steps: int, shared_file: str) -> None:
    import jax

    bench = JaxBench(spec, overrides, steps, keep_initial=True)
    write_shared(bench, shared_file)
    info = {
        "compile_s": bench.compile_s,
        "devices": jax.device_count(),
        "batch_size": bench.config.batch_size,
        "examples_per_step": bench.per_step,
        "data_shape": list(bench.exp.dataset.shape),
        "jax_version": jax.__version__,
        "xla_gflop_per_step": bench.xla_gflop_per_step(),
    }

    def run() -> dict:
        # The pipeline first: its prefetch threads refill their queue during the device run, not during torch's.
        pipeline = bench.pipeline_run()
        return {"steps_per_s": bench.device_run(), "pipeline_steps_per_s": pipeline}

    _serve(info, run, bench.close)


def torch_reference(spec: str, overrides: dict, shared_file: str, variant: str, optimizer: str) -> tuple:
    """(reference step, real batch, extra step arguments) of a torch variant, on every core, with the batch and the
    initial weights gan_jax's worker wrote to `shared_file`."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    config = load_config(spec, overrides)
    ref_module = _reference_module(config.model.name)
    with open(shared_file, "rb") as f:
        shared = pickle.load(f)
    x = shared["x"]
    ref = ref_module.Step.from_config(
        config,
        x.shape[1:],
        channels_last=variant == "torch_channels_last",
        compile=variant == "torch_compile",
        optimizer_impl=optimizer,
    )
    ref_module.load_gan_jax_params(ref, shared["params"], shared["state"])
    real = ref.to_input(x)
    labels = None if shared["label"] is None else ref.to_labels(shared["label"])  # None: an unconditional model
    return ref, real, ({} if labels is None else {"labels": labels})


def torch_worker(variant: str, spec: str, overrides: dict, steps: int, shared_file: str, optimizer: str) -> None:
    import torch

    ref, real, extra = torch_reference(spec, overrides, shared_file, variant, optimizer)
    t = time.perf_counter()
    ref.step(real, **extra)  # compiles, for torch.compile
    first_s = time.perf_counter() - t
    for _ in range(_TORCH_WARMUP_STEPS):
        ref.step(real, **extra)
    gflop = None
    if variant == "torch_nchw":  # the layouts do the same arithmetic; counted once, over one timed run's steps
        from torch.utils.flop_counter import FlopCounterMode

        try:
            with FlopCounterMode(display=False) as counter:
                for _ in range(steps):
                    ref.step(real, **extra)
            gflop = counter.get_total_flops() / steps / 1e9
        except (AssertionError, RuntimeError) as e:
            # The counter's module hooks fail on StyleGAN2's reference (inputs without a gradient function, from its
            # regularizers' autograd.grad): its rate keys are left out rather than the whole comparison.
            print(f"step_speed: torch's FlopCounterMode cannot count this reference ({e!r})", file=sys.stderr)

    def run() -> dict:
        t = time.perf_counter()
        for _ in range(steps):
            metrics = ref.step(real, **extra)
        float(metrics["g_loss"])  # eager CPU work is synchronous; this only makes that explicit
        return {"steps_per_s": steps / (time.perf_counter() - t)}

    _serve(
        {
            "first_step_s": first_s,
            "threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
            "optimizer": optimizer,
            "gflop_per_step": gflop,
        },
        run,
    )


class Worker:
    """A worker process of this script for one framework variant, driven over its stdin/stdout."""

    def __init__(self, variant: str, spec: str, args: argparse.Namespace, shared_file: str):
        self.variant = variant
        cmd = [sys.executable, os.path.abspath(__file__), f"--_worker={variant}", f"--_shared_file={shared_file}"]
        cmd += [f"--config={spec}", f"--steps={args.steps}", f"--torch_optimizer={args.torch_optimizer}"]
        cmd += [f"--set={key}={json.dumps(value)}" for key, value in args.set]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def recv(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(_MARK):
                return json.loads(line[len(_MARK) :])
            sys.stderr.write(line)  # a library's output on stdout: pass it on, out of the JSON stream
        raise RuntimeError(f"the {self.variant} worker exited with status {self.proc.wait()} (its stderr is above)")

    def request(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.recv()

    def finish(self) -> dict:
        out = self.request("exit")
        self.proc.stdin.close()
        self.proc.wait()
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def compare_with_torch(spec: str, args: argparse.Namespace, overrides: dict) -> dict:
    config = load_config(spec, overrides)
    variants = ["jax", "torch_nchw", "torch_channels_last"] + (["torch_compile"] if args.torch_compile else [])
    tmp = tempfile.mkdtemp(prefix="step_speed_")
    shared_file = os.path.join(tmp, "shared.pkl")
    workers: dict[str, Worker] = {}
    try:
        setup = {}
        for v in variants:  # one at a time: no process compiles while another does
            workers[v] = Worker(v, spec, args, shared_file)
            setup[v] = workers[v].recv()
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for r in range(args.repeats):
            for v in variants[r % len(variants) :] + variants[: r % len(variants)]:
                runs[v].append(workers[v].request("run"))
        final = {v: workers[v].finish() for v in variants}
    finally:
        for w in workers.values():
            w.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    med = {v: statistics.median(r["steps_per_s"] for r in runs[v]) for v in variants}
    jax_pipe = statistics.median(r["pipeline_steps_per_s"] for r in runs["jax"])
    best = max(("torch_nchw", "torch_channels_last"), key=lambda v: med[v])
    js, ts = setup["jax"], setup[best]
    out = {
        "config": spec,
        "model": config.model.name,
        "batch_size": js["batch_size"],
        "data_shape": js["data_shape"],
        "jax_steps_per_s": round(med["jax"], 3),
        "torch_steps_per_s": round(med[best], 3),
        "torch_layout": best.removeprefix("torch_"),
        "ratio": round(med["jax"] / med[best], 3),
    }
    # The step's convolution and matmul work as torch counts it (FlopCounterMode; gan_jax does the same products),
    # and the rate each framework gets through it: with the machine's matmul rate (conv_speed.py --matmul) this says
    # how much of a gap is the kernels' speed and how much is the rest of the step.
    gflop = setup["torch_nchw"]["gflop_per_step"]
    if gflop is not None:
        out["conv_matmul_gflop_per_step"] = round(gflop, 2)
        out["jax_conv_matmul_gflops"] = round(gflop * med["jax"], 1)
        for v in ("torch_nchw", "torch_channels_last"):
            out[f"{v}_conv_matmul_gflops"] = round(gflop * med[v], 1)
    out["xla_gflop_per_step"] = round(js["xla_gflop_per_step"], 2)
    for v in variants[1:]:
        out[f"{v}_steps_per_s"] = round(med[v], 3)
    if "torch_compile" in med:
        out["ratio_vs_compile"] = round(med["jax"] / med["torch_compile"], 3)
    out.update(
        {
            "jax_pipeline_steps_per_s": round(jax_pipe, 3),
            "jax_compile_s": round(js["compile_s"], 2),
            "jax_peak_rss_mb": final["jax"]["peak_rss_mb"],
            "torch_peak_rss_mb": final[best]["peak_rss_mb"],
        }
    )
    for v in variants[1:]:
        out[f"{v}_peak_rss_mb"] = final[v]["peak_rss_mb"]
    if "torch_compile" in setup:
        out["torch_compile_s"] = round(setup["torch_compile"]["first_step_s"], 2)
    out.update(
        {
            "runs_steps_per_s": {v: [round(r["steps_per_s"], 3) for r in runs[v]] for v in variants},
            "steps": args.steps,
            "repeats": args.repeats,
            "threads": ts["threads"],
            "torch_optimizer": ts["optimizer"],
            "jax_version": js["jax_version"],
            "torch_version": ts["torch_version"],
            # The keys printed without torch, for the same gan_jax run.
            "devices": js["devices"],
            "device_steps_per_s": round(med["jax"], 3),
            "pipeline_steps_per_s": round(jax_pipe, 3),
            "pipeline_over_device": round(jax_pipe / med["jax"], 3),
            "examples_per_s": round(jax_pipe * js["examples_per_step"], 1),
            "compile_s": round(js["compile_s"], 2),
            "peak_rss_mb": final["jax"]["peak_rss_mb"],
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
        }
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", help="config spec (repeatable); default: the DCGAN default")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    add_set_flag(parser)
    parser.add_argument(
        "--torch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time the PyTorch reference too (default: for configs that have one, when torch is importable)",
    )
    parser.add_argument("--torch_compile", action="store_true", help="also time the torch.compile'd reference")
    parser.add_argument(
        "--torch_optimizer", default="fused", choices=("fused", "foreach", "for_loop"), help="torch Adam's kernels"
    )
    parser.add_argument("--_worker", choices=("jax",) + TORCH_VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--_shared_file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    overrides = dict(args.set)
    try:
        for spec in args.config or ["configs/dcgan.py"]:  # a misspelled key is a usage error, not a traceback
            load_config(spec, overrides)
    except ConfigError as e:
        parser.error(str(e))
    if args._worker == "jax":
        return jax_worker(args.config[0], overrides, args.steps, args._shared_file)
    if args._worker:
        return torch_worker(
            args._worker, args.config[0], overrides, args.steps, args._shared_file, args.torch_optimizer
        )

    have_torch = importlib.util.find_spec("torch") is not None
    if args.torch and not have_torch:
        parser.error("--torch needs torch: pip install -r requirements-bench.txt")
    for spec in args.config or ["configs/dcgan.py"]:
        problem = torch_reference_problem(load_config(spec, overrides))
        if args.torch and problem:
            print(f"{spec}: no torch comparison: {problem}", file=sys.stderr)
        if args.torch is not False and have_torch and not problem:
            print(json.dumps(compare_with_torch(spec, args, overrides)), flush=True)
        else:
            print(json.dumps(measure(spec, args.steps, args.repeats, overrides)), flush=True)


if __name__ == "__main__":
    main()
