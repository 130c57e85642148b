"""StyleGAN2's building blocks: FIR resampling, equalized learning rate, modulated convolution."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax.layers.conv import conv2d
from gan_jax.layers.equalized import EqualizedConv, EqualizedDense, ModulatedConv, demodulation, upsample_conv
from gan_jax.layers.resample import blur2d, downsample2d, upsample2d


def upfirdn_reference(x: np.ndarray, up: int, down: int, pad: tuple[int, int], gain: float) -> np.ndarray:
    """The official upfirdn2d with the [1, 3, 3, 1] filter, written out with numpy on one (H, W) channel."""
    f = np.outer([1, 3, 3, 1], [1, 3, 3, 1]).astype(np.float64)
    f = f / f.sum() * gain
    h, w = x.shape
    z = np.zeros((h * up, w * up))
    z[::up, ::up] = x
    z = np.pad(z, [pad, pad])
    out = np.zeros((z.shape[0] - 3, z.shape[1] - 3))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = np.sum(z[i : i + 4, j : j + 4] * f[::-1, ::-1])
    return out[::down, ::down]


def test_upsample_and_downsample_match_upfirdn():
    x = np.random.default_rng(0).normal(size=(6, 8))
    up = upsample2d(jnp.asarray(x)[None, :, :, None])[0, :, :, 0]
    # The official upsample2d(x, f, up=2): padding ((fw + up - 1) // 2, (fw - up) // 2) = (2, 1), gain up**2.
    np.testing.assert_allclose(up, upfirdn_reference(x, 2, 1, (2, 1), 4.0), atol=1e-5)
    down = downsample2d(jnp.asarray(x)[None, :, :, None])[0, :, :, 0]
    # The official downsample2d(x, f, down=2): padding ((fw - down + 1) // 2, (fw - down) // 2) = (1, 1).
    np.testing.assert_allclose(down, upfirdn_reference(x, 1, 2, (1, 1), 1.0), atol=1e-5)


def test_resampling_keeps_a_constant_inside():
    ones = jnp.ones((1, 8, 8, 2))
    np.testing.assert_allclose(upsample2d(ones)[:, 1:-1, 1:-1], 1.0, atol=1e-6)
    np.testing.assert_allclose(downsample2d(ones)[:, 1:-1, 1:-1], 1.0, atol=1e-6)
    np.testing.assert_allclose(blur2d(ones)[:, 1:-2, 1:-2], 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="even"):
        downsample2d(jnp.ones((1, 5, 5, 1)))


def test_upsample_conv_equals_upsample_then_conv_away_from_the_border():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 5, 3))
    k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 4))
    a = conv2d(upsample2d(x), k, padding=1)
    b = upsample_conv(x, k)
    assert a.shape == b.shape == (2, 12, 10, 4)
    np.testing.assert_allclose(a[:, 1:-1, 1:-1], b[:, 1:-1, 1:-1], atol=1e-4)


@pytest.mark.parametrize("size", [8, 7])
def test_resampling_of_feature_maps_on_onednn_equals_the_shifted_sums(size):
    """With 8+ channels on oneDNN the blur is a depthwise convolution ("onednn"); without ("fast") the shifted sums.
    Values and gradients of the blur, of the downsampling and of the upsampling convolution's blur and crop agree."""
    from gan_jax.layers import onednn
    from gan_jax.layers.conv import conv_impl
    from gan_jax.layers.resample import blur2d_cropped

    if jax.default_backend() != "cpu" or not onednn.available():
        pytest.skip("oneDNN runs on the CPU backend only")
    x = jax.random.normal(jax.random.PRNGKey(2), (2, size, size, 8))
    fns = {
        "blur": blur2d,
        "cropped": lambda x: blur2d_cropped(x, size - 1, size - 1, gain=4.0),
        "by_two": lambda x: blur2d_cropped(x, size - 2, size - 2),
    }
    if size % 2 == 0:
        fns["down"] = downsample2d
    for name, f in fns.items():
        loss = lambda x, f=f: jnp.sum(jnp.sin(f(x)))  # noqa: E731
        with conv_impl("onednn"):
            hlo = jax.jit(jax.grad(loss)).lower(x).compile().as_text()
            got = jax.jit(jax.value_and_grad(loss))(x)
        with conv_impl("fast"):
            want = jax.jit(jax.value_and_grad(loss))(x)
        assert "GanJaxOnednnDepthwise" in hlo, name
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6, err_msg=name)


def test_equalized_dense_scales_at_run_time():
    layer = EqualizedDense(5, lr_mul=0.01, bias_init=1.0)
    x = jnp.ones((2, 16))
    params = layer.init(jax.random.PRNGKey(0), x)["params"]
    # Stored weights are N(0, 1) / lr_mul; the effective weight is stored * lr_mul / sqrt(fan_in).
    assert 50 < float(jnp.std(params["kernel"])) < 200
    np.testing.assert_allclose(params["bias"], 100.0)
    expected = x @ (params["kernel"] * 0.01 / 4.0) + params["bias"] * 0.01
    np.testing.assert_allclose(layer.apply({"params": params}, x), expected, rtol=1e-5)


def test_equalized_conv_unit_gain_and_downsampling_shape():
    x = jax.random.normal(jax.random.PRNGKey(0), (16, 8, 8, 64))
    conv = EqualizedConv(64, 3, activation=False, use_bias=False)
    params = conv.init(jax.random.PRNGKey(1), x)
    y = conv.apply(params, x)
    # He scaling: unit-variance inputs and weights give unit-variance outputs (interior pixels).
    assert 0.85 < float(jnp.std(y[:, 1:-1, 1:-1])) < 1.15
    down = EqualizedConv(32, 3, down=2)
    assert down.apply(down.init(jax.random.PRNGKey(2), x), x).shape == (16, 4, 4, 32)
    skip = EqualizedConv(32, 1, down=2, use_bias=False, activation=False)
    assert skip.apply(skip.init(jax.random.PRNGKey(3), x), x).shape == (16, 4, 4, 32)


def test_demodulation_keeps_activations_at_unit_scale():
    """Whatever the styles, a demodulated convolution of unit-variance input has unit-variance output."""
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 16, 16, 32))
    layer = ModulatedConv(48, 3)
    params = layer.init(jax.random.PRNGKey(1), x, jnp.ones((8, 32)))
    for scale in (0.01, 1.0, 100.0):
        styles = scale * jnp.exp(jax.random.normal(jax.random.PRNGKey(2), (8, 32)))  # wildly uneven per channel
        y = layer.apply(params, x, styles)[:, 1:-1, 1:-1]
        per_channel_std = jnp.std(y, axis=(1, 2))  # (N, out): each sample's each channel
        assert 0.8 < float(jnp.min(per_channel_std)) and float(jnp.max(per_channel_std)) < 1.2, scale
    # Without demodulation the output scales with the styles.
    plain = ModulatedConv(48, 3, demodulate=False)
    p2 = plain.init(jax.random.PRNGKey(1), x, jnp.ones((8, 32)))
    assert float(jnp.std(plain.apply(p2, x, 100.0 * jnp.ones((8, 32))))) > 50


def test_demodulation_coefficients_by_hand():
    w = jax.random.normal(jax.random.PRNGKey(0), (3, 3, 4, 5))
    s = jax.random.normal(jax.random.PRNGKey(1), (2, 4))
    by_hand = np.zeros((2, 5))
    for n in range(2):
        for o in range(5):
            by_hand[n, o] = 1.0 / math.sqrt(float(jnp.sum((w[:, :, :, o] * s[n][None, None, :]) ** 2)) + 1e-8)
    np.testing.assert_allclose(demodulation(w, s), by_hand, rtol=1e-5)


def test_modulated_conv_equals_a_per_sample_kernel():
    """The shared-kernel form (scale input, convolve, scale output) equals convolving each sample with its own
    modulated and demodulated kernel, and the upsampling form equals upsampling first (inside)."""
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 6, 6, 4))
    styles = jax.random.normal(jax.random.PRNGKey(1), (3, 4))
    for up in (1, 2):
        layer = ModulatedConv(5, 3, up=up)
        params = layer.init(jax.random.PRNGKey(2), x, styles)
        y = layer.apply(params, x, styles)
        w = params["params"]["kernel"] / math.sqrt(4 * 9)
        for n in range(3):
            wn = w * styles[n][None, None, :, None]
            wn = wn / jnp.sqrt(jnp.sum(wn**2, axis=(0, 1, 2), keepdims=True) + 1e-8)
            xn = upsample2d(x[n : n + 1]) if up == 2 else x[n : n + 1]
            ref = conv2d(xn, wn, padding=1)
            np.testing.assert_allclose(y[n : n + 1, 1:-1, 1:-1], ref[:, 1:-1, 1:-1], atol=1e-4)
