"""ADA: p = 0 is the exact identity, blit transforms are exact, each transform fires with the right probability, the
colour matrices keep grey grey, gradients flow, and it runs under jit (p traced) and vmap."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax.objectives.ada import (
    GROUPS,
    apply_color,
    apply_geometric,
    augment,
    color_matrix,
    geometric_matrix,
    parse_groups,
    rotate2d,
    scale2d,
    translate2d,
)

KEY = jax.random.PRNGKey(3)
augment_jit = jax.jit(augment, static_argnames="groups")
# The matrix builders are many small ops: jitted, the tests stay fast.
color_matrix_jit = jax.jit(color_matrix, static_argnums=(2, 3, 4))
geometric_matrix_jit = jax.jit(geometric_matrix, static_argnums=(2, 3, 4, 5))
apply_geometric_jit = jax.jit(apply_geometric)
apply_color_jit = jax.jit(apply_color)


def images(n=8, size=8, channels=3, seed=0, width=None):
    shape = (n, size, size if width is None else width, channels)
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, shape), jnp.float32)


def changed(y, x):
    return np.asarray(jnp.any(y != x, axis=(1, 2, 3)))


def assert_fraction(flags, expected):
    """The observed fraction of `flags` is within 4 binomial standard deviations of `expected`."""
    n = flags.size
    tolerance = 4 * math.sqrt(expected * (1 - expected) / n) + 1e-9
    assert abs(flags.mean() - expected) <= tolerance, (flags.mean(), expected, tolerance)


GROUP_STRINGS = ["", "b", "g", "c", "bg", "gc", "bgc"]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("groups", GROUP_STRINGS)
def test_p_zero_is_the_exact_identity(channels, groups):
    x = images(channels=channels)
    np.testing.assert_array_equal(np.asarray(augment_jit(x, jnp.float32(0.0), KEY, groups=groups)), np.asarray(x))


def test_empty_groups_is_the_identity():
    x = images()
    assert augment(x, 1.0, KEY, groups="") is x


@pytest.mark.parametrize("shape", [(3, 8, 8, 3), (2, 5, 7, 1), (4, 4, 6, 3)])
def test_shape_dtype_and_finite(shape):
    x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, shape), jnp.float32)
    y = augment_jit(x, 1.0, KEY)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert bool(jnp.all(jnp.isfinite(y)))


def test_bfloat16_stays_bfloat16():
    x = images(n=4).astype(jnp.bfloat16)
    y = augment_jit(x, 1.0, KEY)
    assert y.shape == x.shape and y.dtype == jnp.bfloat16
    assert bool(jnp.all(jnp.isfinite(y.astype(jnp.float32))))
    np.testing.assert_array_equal(np.asarray(augment_jit(x, 0.0, KEY)), np.asarray(x))


def test_deterministic_for_a_key_and_keys_differ():
    x = images()
    a, b = augment_jit(x, 1.0, KEY), augment_jit(x, 1.0, KEY)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    c = augment_jit(x, 1.0, jax.random.PRNGKey(4))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_quarter_turns_and_flips_are_exact():
    x = images(n=2, size=6)
    n = x.shape[0]
    for k, (cos, sin) in enumerate([(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)]):
        out = apply_geometric_jit(x, rotate2d(cos, sin, n))
        np.testing.assert_array_equal(np.asarray(out), np.asarray(jnp.rot90(x, k, axes=(1, 2))))
    np.testing.assert_array_equal(np.asarray(apply_geometric_jit(x, scale2d(-1.0, 1.0, n))), np.asarray(x[:, :, ::-1]))
    np.testing.assert_array_equal(np.asarray(apply_geometric_jit(x, scale2d(1.0, -1.0, n))), np.asarray(x[:, ::-1]))
    rect = images(n=2, size=5, width=7, channels=1)
    np.testing.assert_array_equal(
        np.asarray(apply_geometric_jit(rect, scale2d(-1.0, 1.0, 2))), np.asarray(rect[:, :, ::-1])
    )


def test_integer_translation_is_exact_with_reflect_padding():
    x = images(n=1, size=6)
    # As an output-to-input map, translate2d(tx, ty) gives out[i, j] = x[reflect(i + ty), reflect(j + tx)].
    out = np.asarray(apply_geometric_jit(x, translate2d(-2.0, 1.0, 1)))[0]
    padded = np.pad(np.asarray(x)[0], ((3, 3), (3, 3), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(out, padded[3 + 1 : 3 + 1 + 6, 3 - 2 : 3 - 2 + 6])


def dihedral_shifts(img, max_shift):
    """Every flip/quarter turn of `img`, then shifted by up to max_shift pixels with reflect padding."""
    size = img.shape[0]
    for flip, k in itertools.product([False, True], range(4)):
        turned = np.rot90(img[:, ::-1] if flip else img, k)
        padded = np.pad(turned, ((max_shift, max_shift), (max_shift, max_shift), (0, 0)), mode="reflect")
        for dy, dx in itertools.product(range(-max_shift, max_shift + 1), repeat=2):
            yield padded[max_shift - dy : max_shift - dy + size, max_shift - dx : max_shift - dx + size]


def test_blit_group_gives_exact_flips_rotations_and_shifts():
    x = images(n=24, size=8)
    y = np.asarray(augment_jit(x, 1.0, KEY, groups="b"))
    for out, img in zip(y, np.asarray(x), strict=True):
        # xint is at most 0.125 * 8 = 1 pixel.
        assert any(np.array_equal(out, candidate) for candidate in dihedral_shifts(img, 1))


def test_fraction_changed_per_group():
    p = 0.5
    # Blit on 8x8: xflip changes the image when it fires and mirrors (1/2), rotate90 when k != 0 (3/4), xint when one
    # of the two rounded shifts is non-zero (|U(-1, 1)| > 1/2 on either axis: 3/4).
    x = images(n=4096, size=8)
    unchanged = (1 - p / 2) * (1 - 3 * p / 4) * (1 - 3 * p / 4)
    assert_fraction(changed(augment_jit(x, p, KEY, groups="b"), x), 1 - unchanged)
    x = images(n=4096, size=4)
    # Geometric: scale, aniso, xfrac fire with p and each rotation with p_rot, (1 - p_rot)^2 = 1 - p.
    assert_fraction(changed(augment_jit(x, p, KEY, groups="g"), x), 1 - (1 - p) ** 4)
    # Colour, RGB: brightness, contrast, hue, saturation change the image when they fire, the luma flip half the time.
    assert_fraction(changed(augment_jit(x, p, KEY, groups="c"), x), 1 - (1 - p) ** 4 * (1 - p / 2))
    # Colour, grey: no hue or saturation.
    x1 = images(n=4096, size=4, channels=1)
    assert_fraction(changed(augment_jit(x1, p, KEY, groups="c"), x1), 1 - (1 - p) ** 2 * (1 - p / 2))


def test_each_rotation_fires_with_p_rot_so_one_of_them_with_p():
    for p in (0.2, 0.7):
        _, fired = geometric_matrix_jit(KEY, p, 4096, 8, 8, transforms=("rotate",))
        assert_fraction(np.asarray(fired), p)


@pytest.mark.parametrize("groups", ["b", "g", "c", "bgc"])
def test_gradient_flows_and_is_the_identity_at_p_zero(groups):
    x, w = images(n=4), images(n=4, seed=1)
    grad = jax.jit(jax.grad(lambda x, p: jnp.sum(augment(x, p, KEY, groups) * w)))
    g1 = grad(x, 1.0)
    assert bool(jnp.all(jnp.isfinite(g1))) and float(jnp.abs(g1).sum()) > 0
    np.testing.assert_array_equal(np.asarray(grad(x, 0.0)), np.asarray(w))


def test_jit_with_traced_p_and_vmap():
    x = images(n=4)
    fn = jax.jit(lambda x, p, key: augment(x, p, key))
    np.testing.assert_array_equal(np.asarray(fn(x, 0.0, KEY)), np.asarray(x))
    assert changed(fn(x, 1.0, KEY), x).all()
    keys = jax.random.split(KEY, 3)
    batched = jax.jit(jax.vmap(fn, in_axes=(None, None, 0)))(x, 0.6, keys)
    for i, key in enumerate(keys):
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(fn(x, 0.6, key)), atol=1e-5)
    over_p = jax.jit(jax.vmap(fn, in_axes=(None, 0, None)))(x, jnp.array([0.0, 1.0]), KEY)
    np.testing.assert_array_equal(np.asarray(over_p[0]), np.asarray(x))
    np.testing.assert_allclose(np.asarray(over_p[1]), np.asarray(fn(x, 1.0, KEY)), atol=1e-5)


def test_parse_groups():
    assert parse_groups("bgc") == ("b", "g", "c")
    assert parse_groups("") == ()
    assert set(GROUPS) == {"b", "g", "c"}
    with pytest.raises(ValueError, match="'x'"):
        parse_groups("bxc")
    with pytest.raises(ValueError, match="twice"):
        parse_groups("bgb")
    with pytest.raises(ValueError):
        augment(images(), 0.5, KEY, groups="f")


def grey_pixels(n, seed=0):
    level = np.random.default_rng(seed).uniform(-1, 1, (n, 1, 1, 1))
    return jnp.asarray(np.broadcast_to(level, (n, 2, 2, 3)), jnp.float32)


def is_grey(y):
    return np.allclose(np.asarray(y[..., 0]), np.asarray(y[..., 1]), atol=1e-5) and np.allclose(
        np.asarray(y[..., 1]), np.asarray(y[..., 2]), atol=1e-5
    )


def test_colour_transforms_keep_grey_grey():
    grey = grey_pixels(256)
    for transforms in [("hue",), ("saturation",), ("lumaflip",), GROUPS["c"]]:
        c, _ = color_matrix_jit(KEY, 1.0, 256, 3, transforms)
        assert is_grey(apply_color_jit(grey, c)), transforms
    assert is_grey(augment_jit(grey, 1.0, KEY, groups="c"))


def test_hue_and_saturation_keep_luma_and_hue_keeps_chroma():
    x = images(n=256, size=2)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    for transforms in [("hue",), ("saturation",)]:
        c, _ = color_matrix_jit(KEY, 1.0, 256, 3, transforms)
        y = apply_color_jit(x, c)
        np.testing.assert_allclose(np.asarray(jnp.mean(y, -1, keepdims=True)), np.asarray(mean), atol=1e-5)
    c, _ = color_matrix_jit(KEY, 1.0, 256, 3, ("hue",))
    y = apply_color_jit(x, c)
    np.testing.assert_allclose(
        np.asarray(jnp.linalg.norm(y - jnp.mean(y, -1, keepdims=True), axis=-1)),
        np.asarray(jnp.linalg.norm(x - mean, axis=-1)),
        atol=1e-5,
    )


def test_luma_flip_negates_grey_half_the_time():
    grey = grey_pixels(4096)
    c, fired = color_matrix_jit(KEY, 1.0, 4096, 3, ("lumaflip",))
    assert bool(fired.all())
    y = np.asarray(apply_color_jit(grey, c))
    flipped = np.all(np.isclose(y, -np.asarray(grey), atol=1e-5), axis=(1, 2, 3))
    kept = np.all(y == np.asarray(grey), axis=(1, 2, 3))
    assert np.all(flipped ^ kept)
    assert_fraction(flipped, 0.5)
    # One channel, the official luma-average rule: the flip negates the image.
    x1 = images(n=64, size=2, channels=1)
    c, _ = color_matrix_jit(KEY, 1.0, 64, 1, ("lumaflip",))
    y1 = np.asarray(apply_color_jit(x1, c))
    assert np.all(np.all(np.isclose(y1, -np.asarray(x1), atol=1e-6), axis=(1, 2, 3)) | np.all(y1 == x1, axis=(1, 2, 3)))


def test_brightness_shifts_a_constant_image():
    n = 4096
    x = jnp.full((n, 2, 2, 3), 0.25, jnp.float32)
    c, fired = color_matrix_jit(KEY, 1.0, n, 3, ("brightness",))
    assert bool(fired.all())
    shift = np.asarray(apply_color_jit(x, c) - x)
    np.testing.assert_allclose(shift, np.broadcast_to(shift[:, :1, :1, :1], shift.shape), atol=1e-6)
    assert abs(shift.std() - 0.2) < 0.01 and abs(shift.mean()) < 0.02
    # At p = 1/2 half the images move.
    _, fired = color_matrix_jit(KEY, 0.5, n, 3, ("brightness",))
    assert_fraction(np.asarray(fired), 0.5)


def test_contrast_scales_log_normally():
    n = 4096
    x = jnp.full((n, 1, 1, 3), 0.5, jnp.float32)
    c, _ = color_matrix_jit(KEY, 1.0, n, 3, ("contrast",))
    ratio = np.asarray(apply_color_jit(x, c) / x)[:, 0, 0, 0]
    assert abs(np.log2(ratio).std() - 0.5) < 0.025


def test_reflect_extension_keeps_a_constant_image_constant():
    x = jnp.full((16, 8, 8, 3), 0.3, jnp.float32)
    np.testing.assert_allclose(np.asarray(augment_jit(x, 1.0, KEY, groups="bg")), 0.3, atol=1e-6)
