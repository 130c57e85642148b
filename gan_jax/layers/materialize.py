"""`materialize`: an exact identity that makes XLA:CPU store a value once instead of recomputing it in its consumers.

XLA fuses cheap elementwise producers into every consumer, recomputing them there, and on its CPU backend two kinds of
such fusions run far slower than the separate passes would:

* The weight gradient of a convolution contracts over the batch, so XLA:CPU feeds its convolution kernel a copy of
  the layer input with the batch and channel axes swapped. When that input is a cheap elementwise result (the bias
  add and ReLU of the layer before, a normalization, a blur), the arithmetic is fused into the transposing copy,
  which then runs about 3.5 times slower than a copy of the stored activation (53-75 ms against 12-20 ms per
  128x32x32x64 activation; SNGAN's step spent 43% of its instruction time in such copies).
* A separable filter written as shifted sums along one axis and then the other (StyleGAN2's [1, 3, 3, 1] blur and
  upsampling, `resample.py`) fuses into one loop that reads 16 bounds-checked neighbours per pixel, and its gradient
  likewise; storing the result of the first axis leaves two loops of 4 reads.

Division is an operation XLA does not duplicate into other fusions, so dividing by a value that is exactly one but
that XLA cannot fold, min(|x|, 0) + 1, keeps `x` a stored buffer that its consumers read; the division rides along in
the loop that computes `x`. The divisor is 1 for every x but NaN (whose result is NaN anyway), infinities included.
Derivatives of every order are exactly the identity's: the tangent passes through, or with `backward=True` is divided
by the same (primal) divisor, which stores the cotangent in the backward pass the same way. `forward=False` leaves
the value itself untouched and stores only the cotangent: for the input of a batch normalization that follows a
convolution (DCGAN), whose input gradient is batch-statistics arithmetic that XLA:CPU would otherwise fuse into the
transposing copy that the convolution's weight gradient makes of it (DCGAN's default step on a 2-core CPU, runs
alternating with the code before: 0.73-0.76 steps/s without, 0.76-0.77 with; `benchmarks/step_speed.py --no-torch`).

Only the CPU backend needs this; elsewhere `materialize` returns its input untouched.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array


def _one(x: Array) -> Array:
    """Exactly 1 wherever x is not NaN, computed from x so that XLA cannot fold it away."""
    return jnp.minimum(jnp.abs(x), jnp.zeros((), x.dtype)) + jnp.ones((), x.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _stored(x: Array, forward: bool, backward: bool) -> Array:
    del backward
    return x / _one(x) if forward else x


@_stored.defjvp
def _stored_jvp(forward: bool, backward: bool, primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    (x,), (x_dot,) = primals, tangents
    one = _one(x)
    # Divided, the tangent stays linear in x_dot and its transpose divides the cotangent by the same one; otherwise
    # the tangent, and so the cotangent, passes through untouched.
    return (x / one if forward else x), (x_dot / one if backward else x_dot)


def materialize(x: Array, *, forward: bool = True, backward: bool = False) -> Array:
    """`x`, bit for bit, stored once by XLA:CPU instead of recomputed in each consumer (see the module docstring).

    `backward=True` stores the cotangent in the backward pass as well: right for a value between two stages of
    shifted sums, whose gradient is shifted sums too, but not for a convolution's input, where dividing the
    cotangent only adds a pass (StyleGAN2's step: 181-189 ms with the convolution inputs stored forward only,
    212-213 ms both ways, on a 2-core CPU). `forward=False` stores the cotangent only (with `backward=True`).
    """
    if jax.default_backend() != "cpu" or not (forward or backward):
        return x
    return _stored(x, forward, backward)
