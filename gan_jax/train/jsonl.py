"""The run's JSON-lines logs (`metrics.jsonl`, `evals.jsonl`): one row per line, each with its `step`."""

from __future__ import annotations

import json
import os


def trim_after(path: str, upto_step: int) -> None:
    """Drops rows logged after the checkpoint a resumed (or rolled back) run starts from, so a log matches the state."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        rows = [line for line in f if line.strip() and json.loads(line)["step"] <= upto_step]
    with open(path, "w") as f:
        f.writelines(rows)
