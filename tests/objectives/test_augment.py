"""DiffAugment: exact translation and cutout, the colour transforms' ranges, gradients, and the config checks."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gan_jax.config import ConfigError, base_config, validate
from gan_jax.models.mlp import MLPDiscriminator, MLPGenerator
from gan_jax.objectives import get_loss
from gan_jax.objectives.augment import (
    cutout,
    diff_augment,
    parse_policy,
    rand_brightness,
    rand_contrast,
    rand_cutout,
    rand_saturation,
    rand_translation,
    translate,
)
from gan_jax.objectives.game import UnconditionalGAN
from gan_jax.train.experiment import build_game
from gan_jax.train.state import create_train_state
from gan_jax.train.step import make_train_step

KEY = jax.random.PRNGKey(7)


def images(n=16, size=8, channels=3, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (n, size, size, channels)), jnp.float32)


def test_empty_policy_is_the_identity():
    x = images()
    assert diff_augment(x, "", KEY) is x
    assert parse_policy("") == ()


def test_translate_exact():
    x = jnp.arange(1.0, 17.0).reshape(1, 4, 4, 1)
    # out[i, j] = x[i + 1, j - 1], zero outside the image.
    expected = [[0, 5, 6, 7], [0, 9, 10, 11], [0, 13, 14, 15], [0, 0, 0, 0]]
    np.testing.assert_array_equal(np.asarray(translate(x, jnp.array([1]), jnp.array([-1])))[0, :, :, 0], expected)


def test_cutout_exact_and_clipped_to_the_image():
    x = jnp.ones((1, 4, 4, 1))
    out = np.asarray(cutout(x, jnp.array([-1]), jnp.array([2]), (2, 2)))[0, :, :, 0]
    np.testing.assert_array_equal(out, [[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])


def zero_padded_shift(img, dr, dc):
    """Numpy reference: out[i, j] = img[i + dr, j + dc] or 0."""
    h, w = img.shape[:2]
    out = np.zeros_like(img)
    for i, j in itertools.product(range(h), range(w)):
        if 0 <= i + dr < h and 0 <= j + dc < w:
            out[i, j] = img[i + dr, j + dc]
    return out


def test_rand_translation_is_a_zero_padded_shift_of_at_most_an_eighth():
    x = images(size=16)  # an eighth of 16 is 2: shifts in [-2, 2]
    out = np.asarray(rand_translation(x, KEY))
    assert out.shape == x.shape
    shifts = []
    for b in range(x.shape[0]):
        img = np.asarray(x[b])
        matches = [
            (r, c) for r in range(-2, 3) for c in range(-2, 3) if np.array_equal(out[b], zero_padded_shift(img, r, c))
        ]
        assert len(matches) == 1, (b, matches)
        shifts.append(matches[0])
    assert len(set(shifts)) > 1  # drawn per image


def test_rand_cutout_zeroes_one_half_size_square_per_image():
    x = jnp.ones((16, 8, 8, 1))
    out = np.asarray(rand_cutout(x, KEY))[..., 0]
    assert set(np.unique(out)) <= {0.0, 1.0}
    corners = []
    for b in range(16):
        # Centres as the reference draws them: [0, 8 + 1) for an even 4x4 square, which is then clipped.
        matches = [
            (r, c)
            for r in range(9)
            for c in range(9)
            if np.array_equal(
                out[b], np.asarray(cutout(x[b : b + 1], jnp.array([r - 2]), jnp.array([c - 2]), (4, 4)))[0, ..., 0]
            )
        ]
        assert len(matches) == 1, (b, matches)
        corners.append(matches[0])
    assert len(set(corners)) > 1


def test_color_transforms_have_the_reference_ranges():
    x = images(n=64)
    b = np.asarray(rand_brightness(x, KEY) - x)
    # Brightness adds one constant per image, in [-0.5, 0.5).
    np.testing.assert_allclose(b, np.broadcast_to(b[:, :1, :1, :1], b.shape), atol=1e-6)
    assert b.min() >= -0.5 and b.max() < 0.5 and b.std() > 0.1
    # Saturation scales the deviation from each pixel's channel mean by one factor in [0, 2) per image.
    s = rand_saturation(x, KEY)
    mean = x.mean(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(s.mean(-1)), np.asarray(mean[..., 0]), atol=1e-5)
    factor = np.asarray((s - mean)[:, 0, 0, 0] / (x - mean)[:, 0, 0, 0])
    np.testing.assert_allclose(np.asarray(s - mean), factor[:, None, None, None] * np.asarray(x - mean), atol=1e-5)
    assert factor.min() >= 0.0 and factor.max() < 2.0 and factor.max() > 1.0
    # Contrast scales the deviation from the image mean by a factor in [0.5, 1.5) per image.
    c = rand_contrast(x, KEY)
    img_mean = x.mean((1, 2, 3), keepdims=True)
    np.testing.assert_allclose(np.asarray(c.mean((1, 2, 3))), np.asarray(img_mean[:, 0, 0, 0]), atol=1e-5)
    factor = np.asarray((c - img_mean)[:, 0, 0, 0] / (x - img_mean)[:, 0, 0, 0])
    assert factor.min() >= 0.5 - 1e-4 and factor.max() < 1.5 + 1e-4


def test_full_policy_keeps_shape_and_is_random_per_key():
    x = images()
    a = diff_augment(x, "color,translation,cutout", KEY)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert not np.array_equal(
        np.asarray(a), np.asarray(diff_augment(x, "color,translation,cutout", jax.random.PRNGKey(8)))
    )
    np.testing.assert_array_equal(np.asarray(a), np.asarray(diff_augment(x, "color,translation,cutout", KEY)))


def test_gradients_flow_through_every_policy():
    x = images()
    for policy in ("color", "translation", "cutout", "color,translation,cutout"):
        grad = jax.grad(lambda v, p=policy: jnp.sum(diff_augment(v, p, KEY) ** 2))(x)
        assert np.all(np.isfinite(grad)) and float(jnp.abs(grad).sum()) > 0.0, policy
    # Brightness alone has the identity as its Jacobian.
    np.testing.assert_allclose(np.asarray(jax.grad(lambda v: jnp.sum(rand_brightness(v, KEY)))(x)), 1.0)


def test_generator_gradient_flows_through_the_augmentation_in_a_train_step():
    g, d = MLPGenerator((8, 8, 1), hidden=(32,)), MLPDiscriminator(hidden=(16,), pieces=2)
    game = UnconditionalGAN(g, d, get_loss("non_saturating"), z_dim=8, diffaugment="color,translation,cutout")
    txs = {"d": optax.adam(1e-3), "g": optax.adam(1e-3)}
    x = images(n=8, size=8, channels=1)
    state = create_train_state(game, txs, jax.random.PRNGKey(0), x)
    _, metrics = jax.jit(make_train_step(game, txs))(state, {"x": x})
    assert float(metrics["nonfinite"]) == 0.0 and float(metrics["g_grad_norm"]) > 0.0
    # The augmentation changes what D sees in G's loss, so it changes G's gradient.
    plain = UnconditionalGAN(g, d, get_loss("non_saturating"), z_dim=8)
    _, plain_metrics = jax.jit(make_train_step(plain, txs))(state, {"x": x})
    assert float(metrics["g_grad_norm"]) != float(plain_metrics["g_grad_norm"])


def test_config_rejects_unknown_policy():
    config = base_config()
    config.diffaugment = "color,blur"
    with pytest.raises(ConfigError, match=r"^config\.diffaugment='color,blur': unknown DiffAugment policy 'blur'"):
        validate(config)
    config.diffaugment = "translation,cutout,color"
    validate(config)


def test_diffaugment_is_refused_for_points():
    config = base_config()
    config.model.name = "mlp"
    config.diffaugment = "translation"
    with pytest.raises(ConfigError, match=r"^config\.diffaugment='translation': DiffAugment needs images"):
        build_game(config, (2,))


def test_build_game_wires_the_switches():
    config = base_config()
    config.model.name = "mlp"
    config.pack, config.diffaugment = 4, "cutout"
    game = build_game(config, (28, 28, 1))
    assert (game.pack, game.diffaugment) == (4, "cutout")
