"""benchmarks/onednn_time.py reads oneDNN's verbose log right: both line formats, the timed window, and the overlap
arithmetic behind `jax_onednn_busy_ms` and `jax_overlapped_calls` (issue #7's account of the step's kernels)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from benchmarks.onednn_time import busy_ms, overlapped, parse_verbose, table  # noqa: E402

# One line of each format oneDNN prints with ONEDNN_VERBOSE_TIMESTAMP=1 (the library gan_jax builds against, and the
# newer one PyTorch bundles), plus lines the parser must skip: an info header, a line outside the window, other output.
LOG = [
    "onednn_verbose,v1,primitive,info,template:timestamp,operation,engine,primitive,implementation,prop_kind,"
    "memory_descriptors,attributes,auxiliary,problem_desc,exec_time",
    "onednn_verbose,1000.5,exec,cpu,convolution,brgconv_strided:avx512_core,backward_data,src_f32::blocked:acdb::f0 "
    "wei_f32:a:blocked:Bcda32b::f0 bia_undef::undef::: dst_f32::blocked:acdb::f0,attr-scratchpad:user ,"
    "alg:convolution_direct,mb64_ic128oc256_ih16oh8kh4sh2dh0ph1_iw16ow8kw4sw2dw0pw1,20.25",
    "onednn_verbose,v1,1010.0,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core,forward_training,"
    "src:f32::blocked:acdb::f0 wei:f32:a:blocked:Acdb32a::f0 bia:undef::undef::: dst:f32::blocked:acdb::f0,"
    "attr-scratchpad:user,alg:convolution_direct,mb64_ic128oc256_ih16oh8kh4sh2dh0ph1_iw16ow8kw4sw2dw0pw1,18.5",
    "onednn_verbose,v1,1040.0,primitive,exec,cpu,reorder,jit:uni,undef,src:f32::blocked:acdb::f0 "
    "dst:f32::blocked:Acdb32a::f0,attr-scratchpad:user,,256x128x4x4,1.25",
    "onednn_verbose,v1,5000.0,primitive,exec,cpu,reorder,jit:uni,undef,src dst,,,256x128x4x4,9.0",
    "step 3: d_loss 1.2",
]
PROBLEM = "mb64_ic128oc256_ih16oh8kh4sh2dh0ph1_iw16ow8kw4sw2dw0pw1"


def test_parse_verbose_reads_both_formats_inside_the_window():
    calls = parse_verbose(LOG, 1000.0, 2000.0)
    assert calls == [
        (1000.5, 20.25, ("convolution", "backward_data", "brgconv_strided:avx512_core", PROBLEM)),
        (1010.0, 18.5, ("convolution", "forward_training", "brg_conv_fwd:avx512_core", PROBLEM)),
        (1040.0, 1.25, ("reorder", "undef", "jit:uni", "256x128x4x4")),
    ]


def test_busy_time_and_overlaps():
    key = ("convolution", "forward_training", "x", "p")
    # [0, 10) and [5, 20) overlap; [30, 31) stands alone; [40, 50) contains [42, 44).
    calls = [(30.0, 1.0, key), (0.0, 10.0, key), (5.0, 15.0, key), (40.0, 10.0, key), (42.0, 2.0, key)]
    assert busy_ms(calls) == 20.0 + 1.0 + 10.0
    assert overlapped(calls) == 4
    assert busy_ms([]) == 0.0 and overlapped([]) == 0


def test_table_groups_calls_per_step():
    calls = parse_verbose(LOG, 1000.0, 2000.0) * 2  # two steps' worth of the same calls
    rows = table(calls, steps=2)
    assert rows[1].split()[:3] == ["20.2", "1.0", "20.25"]  # the largest group first: ms/step, calls/step, ms/call
    assert rows[1].endswith(f"convolution / backward_data / brgconv_strided:avx512_core / {PROBLEM}")
    assert len(rows) == 4
