"""`apply_overrides`: the benchmarks' `--set`, which must refuse what `update_from_flattened_dict` would accept."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gan_jax.config import (
    SAMPLING_KEYS,
    ConfigError,
    add_set_flag,
    apply_overrides,
    base_config,
    load_config,
    override,
    split_sampling,
)

ROOT = Path(__file__).resolve().parents[1]
MOG = f"{ROOT / 'configs' / 'gan_mog.py'}:smoke"


def test_sets_known_keys_at_any_depth():
    config = base_config()
    apply_overrides(config, {"r1_gamma": 0.5, "optim.g.lr": 1e-3, "model.z_dim": 8})
    assert (config.r1_gamma, config.optim.g.lr, config.optim.d.lr, config.model.z_dim) == (0.5, 1e-3, 2e-4, 8)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"r1_gama": 0.1}, "--set r1_gama: the config has no such key"),
        ({"optim.g.lrr": 0.1}, "--set optim.g.lrr: the config has no such key"),
        ({"nowhere.lr": 0.1}, "--set nowhere.lr: the config has no such key"),
        ({"r1_gamma": "x"}, "cannot be casted"),
    ],
)
def test_refuses_unknown_keys_and_wrong_types(overrides, message):
    config = base_config()
    with pytest.raises(ConfigError, match=message):
        apply_overrides(config, overrides)
    assert "r1_gama" not in config and config.r1_gamma == 0.0


def test_set_flag_reads_json_values_and_refuses_malformed_items(capsys):
    parser = argparse.ArgumentParser()
    add_set_flag(parser)
    args = parser.parse_args(["--set=optim.g.lr=1e-3", "--set=lr_decay=linear", "--set=model.g_hidden=[8, 8]"])
    assert dict(args.set) == {"optim.g.lr": 1e-3, "lr_decay": "linear", "model.g_hidden": [8, 8]}
    for item in ("r1_gamma", "=0.1"):
        with pytest.raises(SystemExit):
            parser.parse_args([f"--set={item}"])
        assert "use KEY=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize("value", [0.1, 3, "linear", True, None, [400, 400]])
def test_an_item_forwarded_to_a_worker_reads_back_the_same(value):
    # step_speed.py and onednn_time.py pass their --set on to worker processes as KEY=json.dumps(VALUE).
    assert override(f"a.b={json.dumps(value)}") == ("a.b", value)


def test_load_config_applies_and_checks_overrides():
    config = load_config(MOG, {"optim.d.lr": 1e-3})
    assert config.optim.d.lr == 1e-3
    with pytest.raises(ConfigError, match="--set optim.d.lrr: the config has no such key"):
        load_config(MOG, {"optim.d.lrr": 1e-3})


@pytest.mark.parametrize("script", ["step_speed.py", "step_profile.py", "onednn_time.py", "cas.py"])
def test_benchmarks_refuse_a_misspelled_key_before_any_work(script):
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), f"--config={MOG}", "--set=r1_gama=0.1"]
    if script == "cas.py":
        cmd.append("--synthetic=unused.npz")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode != 0
    assert "--set r1_gama: the config has no such key" in done.stderr
    assert "Traceback" not in done.stderr


def test_split_sampling_separates_what_only_changes_sampling():
    training, sampling = split_sampling({"optim.g.lr": 8e-4, "drs_percentile": 10.0, "drs_rule": "hard"})
    assert training == {"optim.g.lr": 8e-4}
    assert sampling == {"drs_percentile": 10.0, "drs_rule": "hard"}
    assert split_sampling(None) == ({}, {})
    config = base_config()
    assert all(key in config for key in SAMPLING_KEYS)  # every sampling key is a real config key
