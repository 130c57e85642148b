"""Speed of the DCGAN 32x32 convolution layers: XLA's plain formulation, gan_jax's rewritten one, and PyTorch.

  python benchmarks/conv_speed.py [--batch=64] [--repeats=10] [--dtype=float32]
  python benchmarks/conv_speed.py --impls=fast,torch_nchw,torch_channels_last --batch=128 --channels=1   # #7's gap

Times the jitted forward pass and forward + backward (gradients for the input and the kernel, as in a GAN step where
the generator's gradient flows through the discriminator) of each layer of a DCGAN of `--width` w (default 128, the
default config's), G: ConvT 100->4w k4 s1 p0 from 1x1, then ConvT k4 s2 p1 4w->2w (4->8), 2w->w (8->16),
w->`--channels` (16->32); D: Conv k4 s2 p1 channels->w (32->16), w->2w (16->8), 2w->4w (8->4), then Conv 4w->1 k4 s1
p0 (4->1). Each figure is the median of `--repeats` runs after two warm-up calls. Prints one JSON line per layer and
a final line with the totals.

`--impls` picks the formulations: `xla` (lax.conv_general_dilated as written), `fast` (gan_jax's XLA rewrite),
`onednn` (oneDNN's kernels through XLA's FFI, what the models use on CPU where the library builds),
and the PyTorch references `torch_nchw` / `torch_channels_last` (torch.nn.functional conv2d
and conv_transpose2d with the same shapes, eager, `torch.set_num_threads(os.cpu_count())`, the input and weight
gradients from one backward). The torch layers run in a child process before any JAX work, so neither library's
thread pool competes with the other's. Layer by layer this shows which convolutions a JAX step loses to torch on,
the part of `benchmarks/step_speed.py`'s ratio that is the convolution kernels themselves rather than the rest of the
step (`benchmarks/step_profile.py`). `--matmul=m,k,n` adds the rate (GFLOP/s) of one plain matrix product in each
library, the ceiling for a convolution's arithmetic on this machine. XLA_FLAGS is taken from the environment
(gan_jax.env's CPU defaults apply when it is unset), so compare flags by running the script once per setting.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gan_jax.env import configure_xla  # noqa: E402

configure_xla()

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from gan_jax.layers import conv2d, conv_transpose2d  # noqa: E402

JAX_IMPLS = ("xla", "fast", "onednn")
TORCH_IMPLS = ("torch_nchw", "torch_channels_last")


def dcgan_layers(width: int, channels: int) -> list[tuple]:
    """(name, transposed, input height, in channels, out channels, kernel, stride, padding) of each DCGAN layer."""
    w = width
    return [
        ("G1", True, 1, 100, 4 * w, 4, 1, 0),
        ("G2", True, 4, 4 * w, 2 * w, 4, 2, 1),
        ("G3", True, 8, 2 * w, w, 4, 2, 1),
        ("G4", True, 16, w, channels, 4, 2, 1),
        ("D1", False, 32, channels, w, 4, 2, 1),
        ("D2", False, 16, w, 2 * w, 4, 2, 1),
        ("D3", False, 8, 2 * w, 4 * w, 4, 2, 1),
        ("D4", False, 4, 4 * w, 1, 4, 1, 0),
    ]


def median_ms(fn: Callable, *args, repeats: int, sync: Callable = jax.block_until_ready) -> float:
    sync(fn(*args))  # compile
    sync(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sync(fn(*args))
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def time_layer(layer: tuple, impl: str, batch: int, dtype: jnp.dtype, repeats: int) -> dict[str, float]:
    _, transposed, size, cin, cout, k, stride, padding = layer
    kx, kk, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (batch, size, size, cin), dtype)
    kernel = (0.02 * jax.random.normal(kk, (k, k, cin, cout))).astype(dtype)
    op = conv_transpose2d if transposed else conv2d

    def forward(x: jax.Array, kernel: jax.Array) -> jax.Array:
        return op(x, kernel, stride, padding, impl=impl)

    out_shape = jax.eval_shape(forward, x, kernel).shape
    cotangent = jax.random.normal(kg, out_shape, dtype)

    def loss(x: jax.Array, kernel: jax.Array) -> jax.Array:
        return jnp.vdot(forward(x, kernel).astype(jnp.float32), cotangent.astype(jnp.float32))

    fwd = jax.jit(forward)
    fwd_bwd = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    return {
        "fwd_ms": median_ms(fwd, x, kernel, repeats=repeats),
        "fwd_bwd_ms": median_ms(fwd_bwd, x, kernel, repeats=repeats),
        "out": list(out_shape),
    }


def time_torch_layer(layer: tuple, impl: str, batch: int, dtype: str, repeats: int) -> dict[str, float]:
    """The same layer in PyTorch eager: forward, and forward + backward for the input and weight gradients."""
    import torch
    import torch.nn.functional as F

    _, transposed, size, cin, cout, k, stride, padding = layer
    tdtype = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cin, size, size, generator=gen).to(tdtype)
    # torch's weight layouts: conv2d (out, in, kh, kw), conv_transpose2d (in, out, kh, kw)
    w_shape = (cin, cout, k, k) if transposed else (cout, cin, k, k)
    weight = (0.02 * torch.randn(*w_shape, generator=gen)).to(tdtype)
    if impl == "torch_channels_last":
        x, weight = (t.contiguous(memory_format=torch.channels_last) for t in (x, weight))
    op = F.conv_transpose2d if transposed else F.conv2d

    def forward(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return op(x, weight, stride=stride, padding=padding)

    out = forward(x, weight)
    cotangent = torch.randn(*out.shape, generator=gen).to(tdtype)
    if impl == "torch_channels_last":
        cotangent = cotangent.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    weight.requires_grad_(True)

    def fwd_bwd(x: torch.Tensor, weight: torch.Tensor) -> tuple:
        y = op(x, weight, stride=stride, padding=padding)
        return torch.autograd.grad(y, (x, weight), cotangent)

    return {
        "fwd_ms": median_ms(forward, x, weight, repeats=repeats, sync=lambda r: r),
        "fwd_bwd_ms": median_ms(fwd_bwd, x, weight, repeats=repeats, sync=lambda r: r),
        "out": [out.shape[0], out.shape[2], out.shape[3], out.shape[1]],
    }


def matmul_shape(spec: str) -> tuple[int, int, int]:
    m, k, n = (int(v) for v in spec.split(","))
    return m, k, n


def time_matmul(impl: str, spec: str, dtype: str, repeats: int) -> dict[str, float]:
    """GFLOP/s of one (m, k) @ (k, n) product: the rate a convolution lowered to matrix products can reach here."""
    m, k, n = matmul_shape(spec)
    if impl in TORCH_IMPLS:  # the layout is moot for a 2-D product
        import torch

        gen = torch.Generator().manual_seed(0)
        a, b = (torch.randn(*shape, generator=gen).to(getattr(torch, dtype)) for shape in ((m, k), (k, n)))
        ms = median_ms(torch.mm, a, b, repeats=repeats, sync=lambda r: r)
    else:
        ka, kb = jax.random.split(jax.random.key(0))
        a, b = jax.random.normal(ka, (m, k), dtype), jax.random.normal(kb, (k, n), dtype)
        ms = median_ms(jax.jit(jnp.matmul), a, b, repeats=repeats)
    return {"ms": ms, "gflops": 2 * m * k * n / ms / 1e6}


def torch_child(args: argparse.Namespace) -> None:
    """Prints {layer: {impl: timings}} as one JSON line: the torch half of the table, timed in its own process."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    impls = [i for i in args.impls.split(",") if i in TORCH_IMPLS]
    out: dict = {"torch_version": torch.__version__, "threads": torch.get_num_threads(), "layers": {}}
    for layer in selected_layers(args):
        out["layers"][layer[0]] = {i: time_torch_layer(layer, i, args.batch, args.dtype, args.repeats) for i in impls}
    if args.matmul and impls:
        out["matmul"] = time_matmul(impls[0], args.matmul, args.dtype, args.repeats)
    print(json.dumps(out), flush=True)


def selected_layers(args: argparse.Namespace) -> list[tuple]:
    wanted = set(filter(None, args.layers.split(",")))
    return [layer for layer in dcgan_layers(args.width, args.channels) if not wanted or layer[0] in wanted]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=128, help="w of the layers above (DCGAN's default 128)")
    parser.add_argument("--channels", type=int, default=3, help="image channels (3: CIFAR-10; 1: MNIST)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--layers", default="", help="comma-separated subset of layer names, e.g. G2,D2")
    parser.add_argument("--impls", default="xla,fast", help=f"comma-separated, of {', '.join(JAX_IMPLS + TORCH_IMPLS)}")
    parser.add_argument(
        "--matmul", default="", help="m,k,n: also time one float matmul of these sizes per library, e.g. 4096,2048,256"
    )
    parser.add_argument("--torch_child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    impls = list(dict.fromkeys(filter(None, args.impls.split(","))))
    unknown = [i for i in impls if i not in JAX_IMPLS + TORCH_IMPLS]
    if unknown or not impls or args.batch < 1 or args.width < 1 or args.channels < 1:
        parser.error(f"--impls: unknown {unknown} (known: {JAX_IMPLS + TORCH_IMPLS}); sizes must be >= 1")
    try:
        if args.matmul and min(matmul_shape(args.matmul)) < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--matmul takes three positive integers m,k,n, not {args.matmul!r}")
    if args.torch_child:
        return torch_child(args)
    torch_info: dict = {"layers": {}}
    if any(i in TORCH_IMPLS for i in impls):
        child = subprocess.run(
            [sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--torch_child"],
            check=True,
            capture_output=True,
            text=True,
        )
        torch_info = json.loads(child.stdout.strip().splitlines()[-1])
    dtype = jnp.dtype(args.dtype)
    totals = {f"{impl}_{what}": 0.0 for impl in impls for what in ("fwd_ms", "fwd_bwd_ms")}
    for layer in selected_layers(args):
        name, transposed, size, cin, cout, k, stride, padding = layer
        row: dict = {
            "layer": name,
            "op": "conv_transpose2d" if transposed else "conv2d",
            "in": [args.batch, size, size, cin],
            "cout": cout,
            "kernel": k,
            "stride": stride,
            "padding": padding,
        }
        for impl in impls:
            if impl in TORCH_IMPLS:
                r = torch_info["layers"][name][impl]
            else:
                r = time_layer(layer, impl, args.batch, dtype, args.repeats)
            row["out"] = r["out"]
            for what in ("fwd_ms", "fwd_bwd_ms"):
                row[f"{impl}_{what}"] = round(r[what], 2)
                totals[f"{impl}_{what}"] += r[what]
        row.update(_speedups(row, impls))
        print(json.dumps(row), flush=True)
    if args.matmul:
        row = {"layer": "matmul", "mkn": list(matmul_shape(args.matmul))}
        if any(i in JAX_IMPLS for i in impls):
            row["jax_gflops"] = round(time_matmul("xla", args.matmul, dtype, args.repeats)["gflops"], 1)
        if "matmul" in torch_info:
            row["torch_gflops"] = round(torch_info["matmul"]["gflops"], 1)
        print(json.dumps(row), flush=True)
    summary = {k: round(v, 2) for k, v in totals.items()}
    summary.update(_speedups(totals, impls))
    extra = {k: torch_info[k] for k in ("torch_version", "threads") if k in torch_info}
    print(
        json.dumps(
            {
                "layer": "total",
                "dtype": args.dtype,
                "batch": args.batch,
                "backend": jax.default_backend(),
                "xla_flags": os.environ.get("XLA_FLAGS", ""),
                **extra,
                **summary,
            }
        ),
        flush=True,
    )


def _speedups(times: dict, impls: list[str]) -> dict[str, float]:
    """fwd_bwd_speedup: plain XLA over fast; <impl>_over_fast: that torch layout's time over fast's (> 1: JAX wins)."""
    out = {}
    fast = times.get("fast_fwd_bwd_ms")
    if fast and "xla" in impls:
        out["fwd_bwd_speedup"] = round(times["xla_fwd_bwd_ms"] / max(fast, 1e-9), 2)
    for impl in (i for i in impls if i in TORCH_IMPLS):
        if fast:
            out[f"{impl}_over_fast"] = round(times[f"{impl}_fwd_bwd_ms"] / max(fast, 1e-9), 2)
    return out


if __name__ == "__main__":
    main()
