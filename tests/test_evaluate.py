"""gan_jax.evaluate: the CLI in real subprocesses on real MNIST digits, the library form, and clear bad-input errors.

The two Inception runs score a set against the same images reached another way (a cached dataset reference against
a nested PNG folder; a uint8 .npz against its float [-1, 1] copy), so precision and recall are exactly 1 and FID is
0 up to float error. Closed forms for the library form come from the metric functions themselves on small features.

Run: .venv/bin/python -m pytest tests/test_evaluate.py -q
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gan_jax import evaluate
from gan_jax.data import get_dataset
from gan_jax.data.mixtures import mixture_params
from gan_jax.data.transforms import to_float
from gan_jax.metrics.fid import feature_statistics, frechet_distance
from gan_jax.metrics.inception_score import ENV_VAR, inception_logits, inception_score, load_logits_layer
from gan_jax.metrics.inception_weights import file_sha256, torchscript_path
from gan_jax.metrics.kid import kernel_inception_distance
from gan_jax.metrics.precision_recall import precision_recall
from gan_jax.metrics.reference import FEATURE_EXTRACTOR, RESIZER, SELECTION

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTOCOL_KEYS = {"metric", "feature_extractor", "weights_sha256", "num_real", "num_fake", "reference", "resizer"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("gan_jax_cache"))


def cli(*args: str, cache: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    env.update(JAX_PLATFORMS="cpu", GAN_JAX_CACHE=cache)
    return subprocess.run(
        [sys.executable, "-m", "gan_jax.evaluate", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def scores(r: subprocess.CompletedProcess) -> dict:
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """The first 64 MNIST test digits, uint8 (64, 28, 28, 1), through the data layer."""
    from gan_jax.config import base_config
    from gan_jax.train.visualize import to_uint8

    data = base_config().data
    data.split = "test"
    return to_uint8(get_dataset(data, seed=0).get(np.arange(64))["x"])


def logits_file(path) -> str:
    rng = np.random.default_rng(0)
    layer = {"fc.weight": rng.normal(size=(1008, 2048)).astype(np.float32) * 0.05, "fc.bias": np.zeros(1008, "f4")}
    np.savez(path, **layer)
    return str(path)


# ------------------------------------------------------------------------------------------------ the CLI on images


def test_dataset_reference_against_a_png_folder(tmp_path, digits, cache):
    folder = tmp_path / "fake"
    for i, img in enumerate(digits):  # any nesting; sorted paths
        sub = folder / ("a" if i % 2 else "b/deeper")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[..., 0]).save(sub / f"{i:03d}.png")
    layer = logits_file(tmp_path / "fc.npz")
    out = scores(
        cli(
            "--real=dataset:mnist:test",
            "--num_real=64",
            f"--fake={folder}",
            "--metrics=kid,pr,is",  # fid: its 2048-d sqrtm alone takes 20 s here; tested on small features below
            f"--inception_logits={layer}",
            "--kid_subsets=5",
            cache=cache,
        )
    )
    assert set(out) == {"kid", "pr", "is", "inputs"}
    assert out["pr"]["precision"] == 1.0 and out["pr"]["recall"] == 1.0
    assert 1.0 <= out["is"]["is"] <= 1008 and out["is"]["is_std"] >= 0
    sha = file_sha256(torchscript_path())
    for name in ("kid", "pr", "is"):
        p = out[name]["protocol"]
        assert PROTOCOL_KEYS <= set(p), name
        assert p["feature_extractor"] == FEATURE_EXTRACTOR and p["resizer"] == RESIZER
        assert p["weights_sha256"] == sha and p["num_fake"] == 64
    for name in ("kid", "pr"):
        p = out[name]["protocol"]
        assert p["num_real"] == 64 and p["reference"] == "mnist/test" and p["selection"] == SELECTION
    assert [out[m]["protocol"]["metric"] for m in ("kid", "pr", "is")] == ["kid", "precision_recall", "inception_score"]
    assert out["kid"]["protocol"]["subsets"] == 5 and out["kid"]["protocol"]["subset_size"] == 64
    assert out["is"]["protocol"]["num_real"] == 0 and out["is"]["protocol"]["logits_sha256"] == file_sha256(layer)
    assert out["inputs"]["fake"] == {"spec": str(folder), "count": 64, "shape": [28, 28, 1]}
    assert out["inputs"]["real"]["reference"]["num_real"] == 64
    assert os.listdir(os.path.join(cache, "reference"))  # the reference features were cached


def test_uint8_npz_against_its_float_copy(tmp_path, digits, cache):
    np.savez(tmp_path / "real.npz", x=digits, step=5)  # the layout run.py --mode=sample writes
    np.savez(tmp_path / "fake.npz", x=to_float(digits))  # floats in [-1, 1]
    out = scores(cli(f"--real={tmp_path / 'real.npz'}", f"--fake={tmp_path / 'fake.npz'}", "--metrics=pr", cache=cache))
    assert set(out) == {"pr", "inputs"}
    assert out["pr"]["precision"] == 1.0 and out["pr"]["recall"] == 1.0
    assert out["pr"]["protocol"]["reference"] == str(tmp_path / "real.npz") and out["pr"]["protocol"]["k"] == 3


# ------------------------------------------------------------------------------------------------ the CLI on points


def ring_points(counts: list[int]) -> np.ndarray:
    """counts[k] points around ring mean k, each within 0.02 per coordinate (< 3 std = 0.03 away)."""
    means, _ = mixture_params("ring")
    rng = np.random.default_rng(0)
    return np.concatenate([means[k] + rng.uniform(-0.02, 0.02, (c, 2)) for k, c in enumerate(counts) if c])


def test_modes_on_ring_samples(tmp_path, cache):
    np.savez(tmp_path / "ring.npz", x=ring_points([50] * 8).astype(np.float32))
    out = scores(cli("--metrics=modes", "--mixture=ring", f"--fake={tmp_path / 'ring.npz'}", cache=cache))
    modes = out["modes"]
    assert modes["modes"] == 8 and modes["num_modes"] == 8 and modes["num_samples"] == 400
    assert modes["high_quality_pct"] == 100.0 and modes["reverse_kl"] == pytest.approx(0.0, abs=1e-12)
    assert modes["protocol"]["mixture"] == "ring" and modes["protocol"]["std"] == 0.01

    np.savez(tmp_path / "collapsed.npz", x=ring_points([400] + [0] * 7))
    modes = scores(cli("--metrics=modes", "--mixture=ring", f"--fake={tmp_path / 'collapsed.npz'}", cache=cache))
    assert modes["modes"]["modes"] == 1 and modes["modes"]["reverse_kl"] == pytest.approx(math.log(8), rel=1e-12)


# ------------------------------------------------------------------------------------------------ bad input


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("bad")
    (d / "empty").mkdir()
    (d / "mixed").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(d / "mixed" / "a.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(d / "mixed" / "b.png")
    np.savez(d / "good.npz", x=np.zeros((16, 28, 28, 1), np.uint8))
    np.savez(d / "no_x.npz", images=np.zeros((4, 28, 28, 1), np.uint8))
    np.savez(d / "out_of_range.npz", x=np.full((4, 8, 8, 3), 3.5, np.float32))
    paths = {k: str(d / k) for k in ("empty", "mixed")} | {"dir": str(d)}
    return paths | {k: str(d / f"{k}.npz") for k in ("good", "no_x", "out_of_range")}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--real={dir}/missing.npz", "--fake={good}"], "no such file or folder"),
        (["--real={empty}", "--fake={good}"], "no images"),
        (["--real={mixed}", "--fake={good}"], "different sizes"),
        (["--real={good}", "--fake={good}", "--metrics=fid,lpips"], "unknown metric 'lpips'"),
        (["--fake={good}", "--metrics=is"], "--inception_logits=PATH"),
        (["--real={no_x}", "--fake={good}"], "no array 'x'"),
        (["--real={out_of_range}", "--fake={good}"], "[-1, 1] or [0, 1]"),
        (["--real=dataset:mnist", "--fake={good}"], "dataset:NAME:SPLIT"),
        (["--real=dataset:mnist:nope", "--fake={good}"], "split"),
        (["--fake={good}", "--metrics=fid"], "need --real"),
        (["--metrics=modes", "--fake={good}"], "--mixture"),
        (["--metrics=modes", "--mixture=ring", "--fake={good}"], "(N, 2) points"),
        (["--real={good}", "--fake={good}", "--num_real=abc"], "invalid int value"),
        (["--real={good}", "--fake={good}", "--metrics=pr", "--num_fake=3"], "pr needs at least 4"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, bad_inputs, cache):
    r = cli(*[a.format(**bad_inputs) for a in args], cache=cache)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and r.stdout == "", r.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


# ------------------------------------------------------------------------------------------------ the library form


def test_evaluate_features_equals_the_metric_functions():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(60, 16)), rng.normal(size=(50, 16)) + 0.3
    out = evaluate.evaluate_features(real, fake, "fid,kid,pr", reference="r", kid_subsets=4, kid_subset_size=20)
    assert out["fid"]["fid"] == frechet_distance(*feature_statistics(real), *feature_statistics(fake))
    kid = kernel_inception_distance(real, fake, num_subsets=4, subset_size=20)
    assert {k: out["kid"][k] for k in kid} == kid
    pr = precision_recall(real, fake)
    assert {k: out["pr"][k] for k in pr} == pr
    assert out["kid"]["protocol"]["kernel"] == "(x.y/16 + 1)^3"
    assert [out[m]["protocol"]["metric"] for m in out] == ["fid", "kid", "precision_recall"]
    for m in out:
        p = out[m]["protocol"]
        assert PROTOCOL_KEYS <= set(p) and p["weights_sha256"] == file_sha256(torchscript_path())
        assert p["reference"] == "r" and p["num_real"] == 60 and p["num_fake"] == 50


def test_evaluate_features_inception_score_alone(tmp_path):
    path = logits_file(tmp_path / "fc.npz")
    fake = np.random.default_rng(1).uniform(0, 1, (20, 2048)).astype(np.float32)
    out = evaluate.evaluate_features(None, fake, ["is"], inception_logits=path, is_splits=4)
    want = inception_score(inception_logits(fake, load_logits_layer(path)), splits=4)
    assert {k: out["is"][k] for k in want} == want
    assert out["is"]["protocol"]["splits"] == 4 and out["is"]["protocol"]["reference"] is None


def test_evaluate_images_checks_before_extracting(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    images = np.zeros((16, 28, 28, 1), np.uint8)
    with pytest.raises(ValueError, match="inception_logits"):
        evaluate.evaluate_images(images, images, "fid,is")
    with pytest.raises(evaluate.EvaluationError, match="pr needs at least 4"):
        evaluate.evaluate_images(images, images[:3], "pr")
    with pytest.raises(evaluate.EvaluationError, match="need a real set"):
        evaluate.evaluate_images(None, images, "kid")


def test_images_to_uint8_rules():
    u8 = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    assert evaluate.images_to_uint8(u8, "x") is u8
    np.testing.assert_array_equal(evaluate.images_to_uint8(to_float(u8), "x"), u8)  # [-1, 1]
    np.testing.assert_array_equal(evaluate.images_to_uint8(u8 / 255.0, "x"), u8)  # no negative value: [0, 1]
    np.testing.assert_array_equal(evaluate.images_to_uint8(u8.astype(np.int64), "x"), u8)
    np.testing.assert_array_equal(evaluate.images_to_uint8(u8[..., 0], "x"), u8)  # NHW
    # An image in [-1, 1] that happens to have no negative pixel: forced by --float_range.
    forced = evaluate.images_to_uint8(np.ones((1, 2, 2, 1)), "x", "-1,1")
    np.testing.assert_array_equal(forced, np.full((1, 2, 2, 1), 255))
    with pytest.raises(evaluate.EvaluationError, match="NCHW"):
        evaluate.images_to_uint8(np.zeros((2, 3, 8, 8), np.uint8), "x")
    with pytest.raises(evaluate.EvaluationError, match="0..255"):
        evaluate.images_to_uint8(np.full((1, 2, 2, 1), 300), "x")
    with pytest.raises(evaluate.EvaluationError, match="float_range=0,1"):
        evaluate.images_to_uint8(np.full((1, 2, 2, 1), -0.5), "x", "0,1")


def test_parse_metrics():
    assert evaluate.parse_metrics("fid, KID,fid,pr") == ["fid", "kid", "pr"]
    with pytest.raises(evaluate.EvaluationError, match="cannot be combined"):
        evaluate.parse_metrics("modes,fid")
    with pytest.raises(evaluate.EvaluationError, match="no metric"):
        evaluate.parse_metrics(" , ")
