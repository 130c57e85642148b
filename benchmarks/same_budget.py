"""GAN families against each other under the same wall-clock budget on this machine, scored by their evaluators.

Each model trains with `run.py` on the same dataset (a variant every listed config has: fashion_mnist or mnist) for
`--budget_s` seconds of wall time, start-up and compilation included, and is then stopped with SIGTERM, which the
trainer answers by saving the step it is at (the same path a cluster's pre-emption takes). Each is then scored by
every evaluator of its config through `run.py --mode=eval`: `fid` (FID, KID, precision/recall of 10,000 EMA samples
against the 10,000 test images, the protocol of Lucic et al. 2018) and, for the class-conditional models on MNIST,
`classes` (intra-class accuracy by gan_jax's MNIST classifier). Run it on an otherwise idle machine: the budget is
wall time. Compiled steps come from the persistent compilation cache when it holds them (StyleGAN2's three step
variants take about 67 s to compile here); point GAN_JAX_CACHE at an empty directory to charge every model its
compilation.

  .venv/bin/python benchmarks/same_budget.py                     # StyleGAN2 vs DCGAN, 900 s each, Fashion-MNIST
  .venv/bin/python benchmarks/same_budget.py --models=dcgan,sngan,biggan --data=mnist   # issue #6's comparison
  .venv/bin/python benchmarks/same_budget.py --budget_s=60 --num_samples=500 --name=quick   # a quick check

Writes benchmarks/results/<name>.json (steps reached, wall times, every score with its protocol) and <name>.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
    "dcgan": "configs/dcgan.py:{data}",
    "stylegan2": "configs/stylegan.py:{data}",
    "sngan": "configs/sngan.py:{data}",
    "biggan": "configs/biggan.py:{data}",
}


def run_py(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "run.py", *args], cwd=ROOT, text=True, **kw)


def train_for(spec: str, workdir: str, budget_s: float, log_path: str) -> dict:
    """Trains `spec` in a fresh `workdir` until `budget_s` seconds of wall time have passed, then stops it cleanly."""
    args = [f"--config={spec}", f"--workdir={workdir}", "--config.num_train_steps=10000000"]
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = run_py(*args, stdout=log, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=budget_s)
            raise RuntimeError(f"{spec} stopped before its budget (exit {proc.returncode}); see {log_path}")
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            proc.wait()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{spec} did not stop cleanly (exit {proc.returncode}); see {log_path}")
    steps = 0
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            steps = max(steps, json.loads(line)["step"])
    return {"wall_s": round(wall, 1), "logged_steps": steps}


def evaluate(spec: str, workdir: str, num_samples: int) -> dict:
    args = [f"--config={spec}", f"--workdir={workdir}", "--mode=eval"]
    if num_samples:
        args += [f"--config.evals.fid.num_samples={num_samples}", f"--config.evals.fid.num_real={num_samples}"]
    start = time.perf_counter()
    proc = run_py(*args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"evaluating {spec} failed (exit {proc.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    return {"step": result["step"], "eval_s": round(time.perf_counter() - start, 1), "evals": result["evals"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="dcgan,stylegan2", help=f"comma-separated, from {', '.join(CONFIGS)}")
    parser.add_argument("--data", default="fashion_mnist", help="config variant of every model (fashion_mnist, mnist)")
    parser.add_argument("--budget_s", type=float, default=900.0, help="wall seconds of training per model")
    parser.add_argument("--num_samples", type=int, default=0, help="FID samples and real images (0: the configs')")
    parser.add_argument("--runs", default="runs/same_budget", help="parent of the workdirs (replaced)")
    parser.add_argument("--name", default="", help="results file name under benchmarks/results/ (default: from models)")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in CONFIGS]
    if unknown or not models:
        parser.error(f"--models: unknown {unknown}; choose from {', '.join(CONFIGS)}")
    name = args.name or "_vs_".join(models) + f"_{args.data}"

    results = {"data": args.data, "budget_s": args.budget_s, "models": {}}
    for model in models:
        spec = CONFIGS[model].format(data=args.data)
        workdir = os.path.join(ROOT, args.runs, model)
        shutil.rmtree(workdir, ignore_errors=True)
        os.makedirs(workdir)
        print(f"{model}: training {spec} for {args.budget_s:.0f} s", flush=True)
        trained = train_for(spec, workdir, args.budget_s, os.path.join(workdir, "train.log"))
        scores = evaluate(spec, workdir, args.num_samples)
        results["models"][model] = {"config": spec, **trained, **scores}
        flat = {f"{ev}/{k}": v for ev, r in scores["evals"].items() for k, v in r["scores"].items()}
        print(json.dumps({model: {**trained, **flat, "step": scores["step"]}}), flush=True)

    out_dir = os.path.join(ROOT, "benchmarks", "results")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(results, f, indent=2)
    rows = [
        "| model | config | steps in budget | FID | KID | precision | recall | class accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, r in results["models"].items():
        s = r["evals"]["fid"]["scores"]
        classes = r["evals"].get("classes", {}).get("scores", {})
        acc = f"{classes['accuracy']:.3f}" if classes else "n/a (unconditional)"
        rows.append(
            f"| {model} | `{r['config']}` | {r['step']} | {s['fid']:.2f} | {s['kid']:.4f} | "
            f"{s['precision']:.3f} | {s['recall']:.3f} | {acc} |"
        )
    samples = args.num_samples or "the configs' 10,000"
    header = f"{args.data}, {args.budget_s:.0f} s of wall time each on this machine, FID of {samples} samples\n\n"
    with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
        f.write(header + "\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
