"""Pooling mixtures rows over training seeds and evaluation draws: exact expectations on hand-made results files."""

import json

import pytest

from benchmarks import mixtures_summary as summary  # the repository is on pytest's path (pyproject)


def _row(seeds, draw, hq, kl, overrides=None, kept=None, train_s=600.0):
    per_seed = []
    for s, h, k in zip(seeds, hq, kl):
        per_seed.append({"seed": s, "modes": 25, "high_quality_pct": h, "reverse_kl": k})
        if kept is not None:
            per_seed[-1]["drs_acceptance"] = kept
    row = {"mixture": "grid", "method": "GAN", "epochs": 120.0, "seeds": seeds, "train_s": train_s, "num_samples": 2500}
    return {**row, "overrides": overrides or {}, "eval_seed": draw, "per_seed": per_seed}


def _write(tmp_path, name, *rows):
    (tmp_path / f"{name}.json").write_text(json.dumps({"rows": list(rows)}))


def test_pools_draws_per_seed_then_seeds(tmp_path):
    # Seed 0 trained alone (one file per draw), seed 1 trained by another invocation (--first_seed=1).
    _write(tmp_path, "g", _row([0], 0, [97.0], [0.010], train_s=1800.0))
    _write(tmp_path, "g_eval1", _row([0], 1, [96.0], [0.020], train_s=1800.0))
    _write(tmp_path, "g_seed1", _row([1], 0, [94.0], [0.030]))
    _write(tmp_path, "g_seed1_eval1", _row([1], 1, [95.0], [0.040]))
    # A sampling change is another setting, pooled apart.
    _write(tmp_path, "g_drs", _row([0, 1], 0, [98.0, 99.0], [0.05, 0.07], {"drs_percentile": 25}, kept=0.5))
    _write(tmp_path, "other", _row([0], 0, [1.0], [1.0]))  # not matched by the pattern
    rows = summary.main(["g*", f"--results_dir={tmp_path}", "--name=pooled"])
    plain, drs = rows
    assert plain["training_seeds"] == [0, 1] and plain["eval_draws"] == [0, 1]
    assert plain["high_quality_pct_per_seed"] == [96.5, 94.5]
    assert plain["high_quality_pct_mean"] == pytest.approx(95.5) and plain["high_quality_pct_sem"] == pytest.approx(1.0)
    assert plain["reverse_kl_per_seed"] == pytest.approx([0.015, 0.035])
    assert plain["train_min_per_seed"] == [30.0, 10.0] and "drs_acceptance_mean" not in plain
    assert drs["overrides"] == {"drs_percentile": 25} and drs["eval_draws"] == [0]
    assert drs["high_quality_pct_mean"] == 98.5 and drs["drs_acceptance_mean"] == 0.5
    assert drs["train_min_per_seed"] == [5.0, 5.0]
    md = (tmp_path / "pooled.md").read_text()
    assert "| 96.50 / 94.50 | 95.50 ± 1.00 |" in md and "| 50% |" in md
    # Its own output matches the pattern too, and is not read back as a results file.
    assert summary.main(["g*", "pooled", f"--results_dir={tmp_path}", "--name=pooled"]) == rows
    # A tuning seed's files match the pattern but are left out when excluded.
    _write(tmp_path, "g_tune_seed3", _row([3], 0, [50.0], [0.5]))
    _write(tmp_path, "g_tune_seed3_eval1", _row([3], 1, [50.0], [0.5]))
    assert summary.main(["g*", "--exclude=*_tune_*", f"--results_dir={tmp_path}", "--name=pooled"]) == rows
    assert "--exclude='*_tune_*'" in json.loads((tmp_path / "pooled.json").read_text())["command"]
    assert summary.main(["g*", f"--results_dir={tmp_path}", "--name=pooled"])[0]["training_seeds"] == [0, 1, 3]


def test_refuses_what_cannot_be_pooled(tmp_path, capsys):
    _write(tmp_path, "a", _row([0], 0, [97.0], [0.01]))
    _write(tmp_path, "a_eval1", _row([0], 1, [96.0], [0.02]))
    _write(tmp_path, "a_seed1", _row([1], 0, [94.0], [0.03]))  # seed 1 lacks draw 1
    with pytest.raises(SystemExit):
        summary.main(["a*", f"--results_dir={tmp_path}", "--name=p"])
    assert "training seeds scored on different draws" in capsys.readouterr().err
    _write(tmp_path, "a_seed1", _row([0], 0, [90.0], [0.01]))  # the same seed and draw, other scores
    with pytest.raises(SystemExit):
        summary.main(["a*", f"--results_dir={tmp_path}", "--name=p"])
    assert "scored differently in two files" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        summary.main(["nothing*", f"--results_dir={tmp_path}", "--name=p"])
    assert "no mixtures results" in capsys.readouterr().err
