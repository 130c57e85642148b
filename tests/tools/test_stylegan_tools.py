"""StyleGAN2's tools (generate, style mixing, interpolation, projection) on an untrained smoke state, and run.py's
modes for them: untrained weights are enough to check that seeds, truncation, mixing and paths mean what they say,
and skip compiling a training step."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image

from gan_jax.config import load_config
from gan_jax.tools import stylegan_tools as st
from gan_jax.tools.projector import load_target, project, write_projection
from gan_jax.tools.stylegan_cli import run_tool
from gan_jax.train.experiment import setup

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


SMOKE = "configs/stylegan.py:smoke"
R, NUM_WS = 16, 6  # the smoke model: 16x16 grey, 2 * log2(16) - 2 ws of 16 dims


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """(workdir, game, params, g_state) of an untrained StyleGAN2 smoke model (R x R grey, NUM_WS ws of 16 dims), saved
    as the workdir's checkpoint for run.py (no training: it would compile the train step)."""
    workdir = str(tmp_path_factory.mktemp("stylegan"))
    exp = setup(load_config(SMOKE), workdir)
    state = exp.init_state()
    exp.checkpoints.save(0, state)
    exp.checkpoints.close()
    return workdir, exp.game, state.ema_params, state.ema_state


@pytest.fixture(scope="module")
def smoke(smoke_run):
    return smoke_run[1:]


def test_parse_seeds():
    assert st.parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert st.parse_seeds(" 12 , 3-4") == [12, 3, 4]
    for bad in ("a-b", "", "1,,2", "5-3", "-1", "1-2-3", str(2**32)):
        with pytest.raises(st.StyleGANToolError):
            st.parse_seeds(bad)


def test_class_labels():
    conditional = types.SimpleNamespace(num_classes=10)
    assert st.class_labels(conditional, 3, 4).tolist() == [4, 4, 4]
    for bad in (None, 10, -1):
        with pytest.raises(st.StyleGANToolError):
            st.class_labels(conditional, 3, bad)
    assert st.class_labels(types.SimpleNamespace(num_classes=0), 3, None) is None
    with pytest.raises(st.StyleGANToolError):
        st.class_labels(types.SimpleNamespace(num_classes=0), 3, 1)
    with pytest.raises(st.StyleGANToolError):
        st.require_stylegan(types.SimpleNamespace(generate=None))


def test_seeds_and_truncation(smoke, tmp_path):
    game, params, g_state = smoke
    paths = st.generate_images(game, params, g_state, [7, 3, 7], str(tmp_path))
    assert [os.path.basename(p) for p in paths] == ["seed0007.png", "seed0003.png", "seed0007.png"]
    images = st.seed_images(game, params, g_state, [7, 3, 7])
    assert images.shape == (3, R, R, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(Image.open(paths[1]))[..., None], images[1])
    np.testing.assert_array_equal(images[0], images[2])  # same seed, same image, wherever it sits in the batch
    assert not np.array_equal(images[0], images[1])
    np.testing.assert_array_equal(st.seed_images(game, params, g_state, [3])[0], images[1])
    flat = st.seed_images(game, params, g_state, [0, 1, 2], psi=0.0)  # every w is w_avg
    np.testing.assert_array_equal(flat[0], flat[1])
    np.testing.assert_array_equal(flat[0], flat[2])


def test_style_mixing(smoke, tmp_path):
    game, params, g_state = smoke
    rows, cols = [1, 2], [3, 4, 5]
    grid = st.style_mixing_array(game, params, g_state, rows, cols)
    assert grid.shape == (3 * R, 4 * R, 1)
    tile = lambda r, c: grid[r * R : (r + 1) * R, c * R : (c + 1) * R]  # noqa: E731
    plain = st.seed_images(game, params, g_state, rows + cols)
    assert (tile(0, 0) == 255).all()
    for i in range(2):
        np.testing.assert_array_equal(tile(i + 1, 0), plain[i])
    for j in range(3):
        np.testing.assert_array_equal(tile(0, j + 1), plain[2 + j])
    all_rows = st.style_mixing_array(game, params, g_state, rows, cols, cutoff=NUM_WS)
    all_cols = st.style_mixing_array(game, params, g_state, rows, cols, cutoff=0)
    np.testing.assert_array_equal(all_rows[2 * R : 3 * R, 3 * R : 4 * R], plain[1])  # row seed 2, any column
    np.testing.assert_array_equal(all_cols[2 * R : 3 * R, 3 * R : 4 * R], plain[4])  # column seed 5, any row
    with pytest.raises(st.StyleGANToolError):
        st.style_mixing_array(game, params, g_state, rows, cols, cutoff=NUM_WS + 1)
    path = st.style_mixing_grid(game, params, g_state, rows, cols, str(tmp_path / "m.png"))
    assert Image.open(path).size == (4 * R, 3 * R)


def test_interpolation(smoke, tmp_path):
    game, params, g_state = smoke
    frames = st.interpolation_frames(game, params, g_state, [4, 9, 2], num_frames=7)
    ends = st.seed_images(game, params, g_state, [4, 9, 2])
    assert frames.shape == (7, R, R, 1)
    np.testing.assert_array_equal(frames[0], ends[0])
    np.testing.assert_array_equal(frames[3], ends[1])  # the middle seed, halfway along
    np.testing.assert_array_equal(frames[-1], ends[2])
    gif, strip = st.interpolation(game, params, g_state, [4, 9, 2], str(tmp_path), num_frames=7, strip_cols=4)
    with Image.open(gif) as img:
        assert img.n_frames == 7
    assert Image.open(strip).size == (4 * R, 2 * R)
    with pytest.raises(st.StyleGANToolError):
        st.interpolation_frames(game, params, g_state, [4], num_frames=7)


@pytest.mark.parametrize("w_plus", [False, True])
def test_projection_recovers_a_generated_image(smoke, tmp_path, w_plus):
    game, params, g_state = smoke
    [path] = st.generate_images(game, params, g_state, [11], str(tmp_path))
    target = load_target(path, R, 1)
    np.testing.assert_allclose((target + 1) * 127.5, np.asarray(Image.open(path))[..., None], atol=1e-3)
    result = project(game, params, g_state, target, num_steps=100, w_plus=w_plus, num_w_samples=1000)
    assert result.ws.shape == (NUM_WS, 16) and result.losses.shape == (100,)
    assert result.final_mse < 0.3 * result.losses[0], (result.final_mse, result.losses[0])
    if not w_plus:
        assert (result.ws == result.ws[0]).all()
    files = write_projection(result, target, str(tmp_path / "proj"))
    assert all(os.path.getsize(p) > 0 for p in files.values())
    saved = np.load(files["w"])
    np.testing.assert_array_equal(saved["ws"], result.ws)
    assert ("w" in saved) != w_plus
    assert Image.open(files["side_by_side"]).size == (2 * R, R)


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "run.py", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_run_py_generate(smoke_run, tmp_path):
    workdir, game, params, g_state = smoke_run
    r = _run(f"--config={SMOKE}", f"--workdir={workdir}", "--mode=generate", "--seeds=0-2,7", "--psi=0.5")
    assert r.returncode == 0, r.stderr[-3000:]
    paths = r.stdout.split()
    assert paths == [os.path.join(workdir, "generate", f"seed000{s}.png") for s in (0, 1, 2, 7)]
    expected = st.seed_images(game, params, g_state, [0, 1, 2, 7], psi=0.5)
    for path, image in zip(paths, expected):
        np.testing.assert_array_equal(np.asarray(Image.open(path))[..., None], image)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config=configs/dcgan.py:smoke", "--mode=generate"], "needs a StyleGAN2 model"),
        ([f"--config={SMOKE}", "--mode=style_mixing", "--seeds=a-b"], "'a-b' is not a seed"),
    ],
)
def test_run_py_refuses_clearly(tmp_path, args, message):
    r = _run(*args, f"--workdir={tmp_path}")
    assert r.returncode == 1, r.stderr[-2000:]
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize(
    "mode, kwargs, message",
    [
        ("project", {}, "needs --target"),
        ("project", {"target": "/no/such.png"}, "no such file"),
        ("interpolate", {"seeds": "3"}, "at least two seeds"),
        ("generate", {"class_idx": 1}, "unconditional"),
    ],
)
def test_run_tool_checks_arguments_before_restoring(tmp_path, mode, kwargs, message):
    with pytest.raises(st.StyleGANToolError, match=message):
        run_tool(mode, load_config(SMOKE), str(tmp_path), **kwargs)
    assert not os.listdir(tmp_path)
