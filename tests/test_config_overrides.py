"""`apply_overrides`: the benchmarks' `--set`, which must refuse what `update_from_flattened_dict` would accept."""

import pytest

from gan_jax.config import ConfigError, apply_overrides, base_config


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
