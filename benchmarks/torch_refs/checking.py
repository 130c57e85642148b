"""What the torch checkers (check_dcgan.py, check_biggan.py and, through it, check_sngan.py) share: comparing two
sets of named arrays, gan_jax's and the PyTorch reference's, with failures collected instead of raised, so that one
run lists every mismatch."""

from __future__ import annotations

import numpy as np


def compare(
    name: str,
    got: dict[str, np.ndarray],
    want: dict[str, np.ndarray],
    atol: float,
    failures: list[str],
    exempt: dict[str, np.ndarray] | None = None,
    exempt_atol: float = 0.0,
    relative: bool = False,
    floor: float = 1e-30,
) -> tuple[float, int]:
    """Max error of got vs want (abs, or relative to each tensor's max |want| but at least `floor`) and the number of
    exempt elements that needed their exemption (those where `exempt` is True need only be within `exempt_atol`)."""
    worst, exempted = 0.0, 0
    if set(got) != set(want):
        failures.append(f"{name}: keys differ: {sorted(set(got) ^ set(want))[:10]}")
        return float("inf"), 0
    for k in want:
        if got[k].shape != want[k].shape:
            failures.append(f"{name}/{k}: shape {got[k].shape} != {want[k].shape}")
            continue
        err = np.abs(got[k].astype(np.float64) - want[k])
        if relative:
            err = err / max(float(np.max(np.abs(want[k]))), floor)
        mask = exempt.get(k) if exempt else None
        if mask is not None:
            exempted += int(np.sum(mask & (err > atol)))
            if np.any(err[mask] > exempt_atol):
                failures.append(f"{name}/{k}: error {float(np.max(err[mask])):.3g} > {exempt_atol:g} where exempt")
            err = np.where(mask, 0.0, err)
        e = float(np.max(err)) if err.size else 0.0
        worst = max(worst, e)
        if not e <= atol:
            failures.append(f"{name}/{k}: max {'rel' if relative else 'abs'} error {e:.3g} > {atol:g}")
    return worst, exempted
