"""The plain XLA convolution in gan_jax's layout, shared by conv.py and onednn.py (which conv.py imports, so neither
can hold it for the other): NHWC activations, HWIO kernels, equal strides and dilations on both spatial axes."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax import lax

Array = jax.Array
Padding1D = tuple[int, int]
DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def conv_nhwc(
    x: Array,
    kernel: Array,
    stride: int,
    padding: Sequence[Padding1D],
    lhs_dilation: int = 1,
    feature_group_count: int = 1,
) -> Array:
    """`lax.conv_general_dilated` of NHWC `x` and HWIO `kernel`, with (low, high) `padding` per spatial axis."""
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(stride, stride),
        padding=tuple(padding),
        lhs_dilation=(lhs_dilation, lhs_dilation),
        dimension_numbers=DIMENSION_NUMBERS,
        feature_group_count=feature_group_count,
    )
