"""The class-conditional game (SNGAN, BigGAN): a training step, the resume, sampling options, config checks."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax.config import ConfigError, load_config, validate
from gan_jax.train.experiment import build_game, setup
from gan_jax.train.loop import train

SHAPE = (32, 32, 1)


def _game(spec: str, **conditional):
    config = load_config(spec)
    config.conditional.update(conditional)
    return config, build_game(config, SHAPE, 10)


def _init(game, n: int = 8):
    return jax.jit(lambda: game.init(jax.random.PRNGKey(0), jnp.zeros((n,) + SHAPE)))()


@pytest.fixture(scope="module")
def biggan():
    """BigGAN's smoke game, its initial variables, and a jitted sampler (z, labels) -> images: one compilation."""
    _, game = _game("configs/biggan.py:smoke")
    params, state = _init(game)
    sample = jax.jit(lambda z, y: game.generate(params["generator"], state["generator"], z, labels=y)[0])
    return game, params, state, sample


def test_labels_reach_the_generator_and_truncation_narrows_the_samples(biggan):
    game, _, _, sample = biggan
    spreads, zeros = [], jnp.zeros(256, jnp.int32)
    for t in (0.0, 1.0, 0.25):
        z = game.sample_latents(jax.random.PRNGKey(4), 256, truncation=t)
        if t:
            assert float(jnp.max(jnp.abs(z))) <= t
        x = sample(z, zeros)
        spreads.append(float(jnp.mean(jnp.std(x, axis=0))))  # spread of one class's samples over z
        if not t:  # the same latents for another class give other images
            assert float(jnp.max(jnp.abs(sample(z, zeros + 1) - x))) > 1e-4
    assert spreads[0] > spreads[1] > spreads[2], spreads


def test_standing_statistics_replace_the_running_averages(biggan):
    off, params, state, _ = biggan
    config = load_config("configs/biggan.py:smoke")
    config.standing_stats = 4
    game = build_game(config, SHAPE, 10)
    g_state = state["generator"]
    standing = game.sampling_state(params["generator"], g_state, jax.random.PRNGKey(5), 8)
    assert jax.tree.structure(standing) == jax.tree.structure(g_state)
    # Fresh running averages are (0, 1); the standing ones are the moments of G's activations.
    assert any(
        not np.allclose(a, b)
        for a, b in zip(jax.tree.leaves(standing["batch_stats"]), jax.tree.leaves(g_state["batch_stats"]))
    )
    assert off.sampling_state(params["generator"], g_state, jax.random.PRNGKey(5), 8) is g_state


def test_resume_matches_an_uninterrupted_run(tmp_path, branch_run):
    def config(steps):
        c = load_config("configs/biggan.py:smoke")
        c.update_from_flattened_dict({"num_train_steps": steps, "checkpoint_every": 2, "sample_every": 100})
        return c

    straight = train(config(4), str(tmp_path / "straight"))
    resumed = train(config(4), str(branch_run(tmp_path / "straight", tmp_path / "resumed", 2)))
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Training moved both networks' power iterations and G's batch statistics, which the resume restored exactly.
    fresh = setup(config(4), None).init_state()
    for net, collections in (("generator", ("spectral", "batch_stats")), ("discriminator", ("spectral",))):
        for col in collections:
            old, new = fresh.model_state[net][col], straight.model_state[net][col]
            assert all(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new))), (net, col)
    with open(tmp_path / "straight" / "metrics.jsonl") as f:
        logged = [json.loads(line) for line in f]
    rows = [row for row in logged if "d_loss" in row]
    assert rows and all(np.isfinite(row["d_loss"]) and row["ortho_penalty"] > 0 for row in rows)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"pack": 2}, "pack"),
        ({"unroll_steps": 1}, "unroll_steps"),
        ({"conditional.truncation": -1.0}, "truncation"),
        ({"model.num_classes": 5}, "the dataset has 10 classes"),
        ({"grad_accum": 3}, "grad_accum"),
    ],
)
def test_settings_the_conditional_game_cannot_honour_are_refused(overrides, match):
    config = load_config("configs/sngan.py:smoke")
    config.update_from_flattened_dict(overrides)
    with pytest.raises(ConfigError, match=match):
        setup(config, None)


def test_an_unlabelled_dataset_is_refused():
    config = load_config("configs/sngan.py:smoke")
    with pytest.raises(ConfigError, match="needs a labelled dataset"):
        build_game(config, SHAPE, 0)


@pytest.mark.parametrize(
    "spec",
    [f"configs/sngan.py:{v}" for v in ("mnist", "fashion_mnist", "cifar10", "imagenet128", "smoke")]
    + [f"configs/biggan.py:{v}" for v in ("mnist", "fashion_mnist", "cifar10", "imagenet128", "smoke")],
)
def test_every_variant_validates_and_its_networks_build(spec):
    config = load_config(spec)
    validate(config)
    shape = (config.data.resolution, config.data.resolution, config.data.channels)
    game = build_game(config, shape, config.model.num_classes)
    micro = config.batch_size // config.grad_accum
    example = jax.ShapeDtypeStruct((micro,) + shape, jnp.float32)
    params, _ = jax.eval_shape(lambda x: game.init(jax.random.PRNGKey(0), x), example)
    assert sum(x.size for x in jax.tree.leaves(params["generator"])) > 0
    if spec == "configs/biggan.py:imagenet128":  # the paper's batch of 2048 from 8 micro-batches of 256
        assert (config.batch_size, config.grad_accum, config.n_critic, config.model.g_ch) == (2048, 8, 2, 96)
    if spec == "configs/sngan.py:imagenet128":  # sn_projection.yml: 4 GPUs x 16, n_dis 5, decay from 400K of 450K
        assert (config.batch_size, config.n_critic, config.model.arch, config.model.g_ch) == (64, 5, "imagenet", 64)
        assert (config.num_train_steps, config.lr_decay, config.lr_decay_start) == (450_000, "linear", 400_000)
