"""Speed of the DCGAN 32x32 convolution layers with the plain ("xla") and the rewritten ("fast") formulation.

  python benchmarks/conv_speed.py [--batch=64] [--repeats=10] [--dtype=float32]

Times the jitted forward pass and forward + backward (gradients for the input and the kernel, as in a GAN step where
the generator's gradient flows through the discriminator) of each layer of a batch-64 DCGAN, G: ConvT 100->512 k4 s1
p0 from 1x1, then ConvT k4 s2 p1 512->256 (4->8), 256->128 (8->16), 128->3 (16->32); D: Conv k4 s2 p1 3->128
(32->16), 128->256 (16->8), 256->512 (8->4), then Conv 512->1 k4 s1 p0 (4->1). Each figure is the median of
`--repeats` runs after two warm-up calls. Prints one JSON line per layer and a final line with the totals. XLA_FLAGS
is taken from the environment (gan_jax.env's CPU defaults apply when it is unset), so compare flags by running the
script once per setting.
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
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from gan_jax.layers import conv2d, conv_transpose2d  # noqa: E402

# (name, transposed, input height, in channels, out channels, kernel, stride, padding)
DCGAN_LAYERS = [
    ("G1", True, 1, 100, 512, 4, 1, 0),
    ("G2", True, 4, 512, 256, 4, 2, 1),
    ("G3", True, 8, 256, 128, 4, 2, 1),
    ("G4", True, 16, 128, 3, 4, 2, 1),
    ("D1", False, 32, 3, 128, 4, 2, 1),
    ("D2", False, 16, 128, 256, 4, 2, 1),
    ("D3", False, 8, 256, 512, 4, 2, 1),
    ("D4", False, 4, 512, 1, 4, 1, 0),
]
IMPLS = ("xla", "fast")


def median_ms(fn: Callable, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--layers", default="", help="comma-separated subset of layer names, e.g. G2,D2")
    args = parser.parse_args()
    dtype = jnp.dtype(args.dtype)
    wanted = set(filter(None, args.layers.split(",")))
    totals = {f"{impl}_{what}": 0.0 for impl in IMPLS for what in ("fwd_ms", "fwd_bwd_ms")}
    for layer in DCGAN_LAYERS:
        name, transposed, size, cin, cout, k, stride, padding = layer
        if wanted and name not in wanted:
            continue
        row: dict = {
            "layer": name,
            "op": "conv_transpose2d" if transposed else "conv2d",
            "in": [args.batch, size, size, cin],
            "cout": cout,
            "kernel": k,
            "stride": stride,
            "padding": padding,
        }
        for impl in IMPLS:
            r = time_layer(layer, impl, args.batch, dtype, args.repeats)
            row["out"] = r["out"]
            for what in ("fwd_ms", "fwd_bwd_ms"):
                row[f"{impl}_{what}"] = round(r[what], 2)
                totals[f"{impl}_{what}"] += r[what]
        row["fwd_bwd_speedup"] = round(row["xla_fwd_bwd_ms"] / row["fast_fwd_bwd_ms"], 2)
        print(json.dumps(row), flush=True)
    summary = {k: round(v, 2) for k, v in totals.items()}
    summary["fwd_bwd_speedup"] = round(totals["xla_fwd_bwd_ms"] / max(totals["fast_fwd_bwd_ms"], 1e-9), 2)
    print(
        json.dumps(
            {
                "layer": "total",
                "dtype": args.dtype,
                "batch": args.batch,
                "backend": jax.default_backend(),
                "xla_flags": os.environ.get("XLA_FLAGS", ""),
                **summary,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
