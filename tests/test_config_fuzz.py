"""Fuzzing the config space of every model: each config either builds or fails with an error naming its field."""

import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gan_jax.config import ConfigError, load_config
from gan_jax.data import DatasetNotFoundError
from gan_jax.train.experiment import setup

SPECS = ["configs/gan_mog.py:smoke", "configs/gan_mnist.py:smoke", "configs/dcgan.py:smoke"]

FIELDS = {
    "batch_size": st.integers(-4, 300),
    "n_critic": st.integers(-1, 6),
    "num_train_steps": st.integers(-3, 50),
    "loss": st.sampled_from(["minimax", "non_saturating", "hinge", "wasserstein", "least_squares", "bogus"]),
    "gp_weight": st.floats(-1.0, 20.0),
    "r1_gamma": st.floats(-1.0, 20.0),
    "pack": st.integers(-1, 5),
    "diffaugment": st.sampled_from(["", "color", "translation,cutout", "color,translation,cutout", "blur"]),
    "unroll_steps": st.integers(-1, 2),
    "ema_decay": st.floats(-0.5, 1.5),
    "log_every": st.integers(-1, 100),
    "nonfinite_policy": st.sampled_from(["stop", "skip", "rollback", "panic"]),
    "rollback_lr_factor": st.floats(-1.0, 2.0),
    "model.z_dim": st.integers(-2, 200),
    "model.z_dist": st.sampled_from(["normal", "uniform", "cauchy"]),
    "model.d_minibatch_std": st.integers(-1, 5),
    "optim.g.lr": st.floats(-1e-3, 1e-2),
    "optim.d.name": st.sampled_from(["adam", "adamw", "rmsprop", "sgd", "lion9"]),
    "optim.d.b1": st.floats(-0.5, 1.5),
    "data.resolution": st.sampled_from([-8, 0, 7, 16, 28, 32, 33, 64, 100]),
    "data.channels": st.integers(-1, 4),
    "data.resize": st.sampled_from(["pad", "resize", "stretch"]),
    "data.split": st.sampled_from(["train", "test", "validation", "bogus"]),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=st.sampled_from(SPECS),
    overrides=st.lists(st.sampled_from(sorted(FIELDS)), unique=True, max_size=4).flatmap(
        lambda keys: st.fixed_dictionaries({k: FIELDS[k] for k in keys})
    ),
)
def test_every_config_builds_or_names_its_field(spec, overrides):
    config = load_config(spec)
    config.update_from_flattened_dict(overrides)
    try:
        exp = setup(config, tempfile.mkdtemp())
    except ConfigError as e:
        assert str(e).startswith("config."), e  # the message leads with the offending field
        return
    except DatasetNotFoundError:
        pytest.fail("the smoke configs use offline data only")
    exp.checkpoints.close()
    assert exp.abstract_state is not None


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=st.sampled_from(SPECS),
    overrides=st.lists(st.sampled_from(sorted(FIELDS)), unique=True, min_size=1, max_size=3).flatmap(
        lambda keys: st.fixed_dictionaries({k: FIELDS[k] for k in keys})
    ),
)
def test_every_config_trains_or_names_its_field(spec, overrides):
    """The same fuzzing, carried through two real training steps for every config that validates."""
    from gan_jax.train.loop import NonFiniteError, train

    config = load_config(spec)
    config.update_from_flattened_dict(overrides)
    config.update_from_flattened_dict({"num_train_steps": 2, "log_every": 1, "sample_every": 2, "checkpoint_every": 2})
    try:
        state = train(config, tempfile.mkdtemp())
    except ConfigError as e:
        assert str(e).startswith("config."), e
        return
    except NonFiniteError:
        return  # an absurd but valid config (say lr 1e-2 with minimax) may diverge: a clean, named stop
    assert int(state.step) == 2
