"""StyleGAN2's generation tools: images of chosen seeds with truncation, style-mixing grids, latent interpolations.

They are what users of the official StyleGAN2(-ADA) code reach for (its generate.py and style_mixing.py), built on
this library's `StyleGAN2Game.map` / `.synthesize`. Each tool is a function of (game, params, g_state, ...) returning
uint8 images, so it can be tested on an untrained state, plus a wrapper that writes the files; run.py's
`--mode=generate|style_mixing|interpolate` call the wrappers through gan_jax/tools/stylegan_cli.py.

Seeds: the latent of seed s is `game.sample_latents(jax.random.PRNGKey(s), 1)`, so seed s always gives the same
image of a given checkpoint (and psi, class), whatever other seeds are asked for with it and in whatever order:
latents, mapping and synthesis all run in fixed-size batches, so even the batch a seed lands in cannot change its
pixels. Images are synthesized with "const" noise (the official default), so they are deterministic.

Truncation: w' = w_avg + psi (w - w_avg) with the generator's tracked mean w (psi=1: none, psi=0: every seed gives
the image of w_avg).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from gan_jax.models.stylegan2 import num_ws as num_ws_of_resolution
from gan_jax.train.visualize import to_uint8

Array = jax.Array
PyTree = Any
MAX_SEED = 2**32 - 1
BATCH_SIZE = 8
COARSE_RESOLUTION = 8  # style mixing's default cutoff: the ws of 4x4 and 8x8 (StyleGAN's "coarse styles")


class StyleGANToolError(ValueError):
    """The tools were asked for something the model or the arguments cannot give; the message says what to change."""


# ----------------------------------------------------------------------------------------------------------------
# Arguments.


def parse_seeds(spec: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]: comma-separated seeds and inclusive ranges a-b, in the order given."""
    seeds: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise StyleGANToolError(
                f"seeds {spec!r}: {part!r} is not a seed or an inclusive range a-b of seeds (e.g. '0-7,12')"
            ) from None
        if a < 0 or b > MAX_SEED:
            raise StyleGANToolError(f"seeds {spec!r}: seeds must lie in 0..{MAX_SEED}")
        if b < a:
            raise StyleGANToolError(f"seeds {spec!r}: the range {part!r} is empty (write it from low to high)")
        seeds.extend(range(a, b + 1))
    return seeds


def require_stylegan(game: Any) -> None:
    """Refuses a game without StyleGAN2's `map` and `synthesize` (the tools work in its w space)."""
    if not (callable(getattr(game, "map", None)) and callable(getattr(game, "synthesize", None))):
        raise StyleGANToolError(
            f"these tools need a StyleGAN2 model (configs/stylegan.py); {type(game).__name__} has no mapping network"
        )


def check_class_idx(num_classes: int, class_idx: int | None, required: bool = True) -> None:
    """A class label fits the model: none for an unconditional one, one of its classes (if `required`) otherwise."""
    if not num_classes:
        if class_idx is not None:
            raise StyleGANToolError(f"class_idx={class_idx}: the model is unconditional; leave the class out")
        return
    if class_idx is None:
        if required:
            raise StyleGANToolError(
                f"the model is class-conditional ({num_classes} classes): choose one with class_idx (--class_idx)"
            )
        return
    if not 0 <= class_idx < num_classes:
        raise StyleGANToolError(f"class_idx={class_idx}: the model's classes are 0..{num_classes - 1}")


def class_labels(game: Any, n: int, class_idx: int | None) -> Array | None:
    """Labels for `n` images of class `class_idx`, or None for an unconditional model."""
    num_classes = getattr(game, "num_classes", 0)
    check_class_idx(num_classes, class_idx)
    return None if not num_classes else jnp.full((n,), class_idx, jnp.int32)


# ----------------------------------------------------------------------------------------------------------------
# Latents, ws, images.


@functools.lru_cache(maxsize=8)
def _compiled(game: Any) -> tuple[Callable, Callable]:
    """(map, synthesize) of `game`, jitted once per game; parameters are arguments, never baked-in constants."""
    map_fn = jax.jit(lambda p, s, z, labels, psi: game.map(p, s, z, labels, train=False, truncation_psi=psi)[0])
    synth_fn = jax.jit(lambda p, s, ws: game.synthesize(p, s, ws, "const"))
    return map_fn, synth_fn


def _batched(fn: Callable, arrays: Sequence[Array | None], batch_size: int) -> np.ndarray:
    """fn over fixed-size chunks of the arrays' leading axis (padded at the end), so one compilation serves every
    count and no result depends on what else shares its batch; None arrays are passed through."""
    n = next(a.shape[0] for a in arrays if a is not None)
    pad = -n % batch_size
    padded = [None if a is None else jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)]) for a in arrays]
    chunks = []
    for i in range(0, n + pad, batch_size):
        chunks.append(np.asarray(fn(*[None if a is None else a[i : i + batch_size] for a in padded])))
    return np.concatenate(chunks)[:n]


def seed_latents(game: Any, seeds: Sequence[int]) -> Array:
    """(N, z_dim): the latent of each seed s, `game.sample_latents(PRNGKey(s), 1)`."""
    if not len(seeds):
        raise StyleGANToolError("no seeds given")
    return jnp.concatenate([game.sample_latents(jax.random.PRNGKey(int(s)), 1) for s in seeds])


def seed_ws(
    game: Any,
    params: PyTree,
    g_state: PyTree,
    seeds: Sequence[int],
    psi: float = 1.0,
    class_idx: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> np.ndarray:
    """(N, num_ws, w_dim) float32: the truncated ws of the seeds."""
    require_stylegan(game)
    z = seed_latents(game, seeds)
    labels = class_labels(game, len(seeds), class_idx)
    map_fn, _ = _compiled(game)
    psi_arr = jnp.float32(psi)
    return _batched(lambda z, y: map_fn(params, g_state, z, y, psi_arr), (z, labels), batch_size)


def synthesize_images(
    game: Any, params: PyTree, g_state: PyTree, ws: np.ndarray | Array, batch_size: int = BATCH_SIZE
) -> np.ndarray:
    """uint8 NHWC images of ws (N, num_ws, w_dim), with "const" noise."""
    require_stylegan(game)
    _, synth_fn = _compiled(game)
    images = _batched(lambda w: synth_fn(params, g_state, w), (jnp.asarray(ws, jnp.float32),), batch_size)
    return to_uint8(images)


def seed_images(
    game: Any,
    params: PyTree,
    g_state: PyTree,
    seeds: Sequence[int],
    psi: float = 1.0,
    class_idx: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> np.ndarray:
    """uint8 NHWC images of the seeds."""
    ws = seed_ws(game, params, g_state, seeds, psi, class_idx, batch_size)
    return synthesize_images(game, params, g_state, ws, batch_size)


# ----------------------------------------------------------------------------------------------------------------
# Files.


def save_png(image: np.ndarray, path: str) -> str:
    """Writes one uint8 HWC image (1 or 3 channels) as a PNG; returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)
    return path


def tile(images: np.ndarray, cols: int, fill: int = 255) -> np.ndarray:
    """uint8 NHWC images -> one HWC image, `cols` per row, left to right then top to bottom, no gaps."""
    n, h, w, c = images.shape
    rows = math.ceil(n / cols)
    out = np.full((rows * h, cols * w, c), fill, np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        out[r * h : (r + 1) * h, k * w : (k + 1) * w] = img
    return out


def generate_images(
    game: Any,
    params: PyTree,
    g_state: PyTree,
    seeds: Sequence[int],
    out_dir: str,
    psi: float = 1.0,
    class_idx: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> list[str]:
    """One PNG per seed, `out_dir/seed0007.png` (the official generate.py's names); returns the paths."""
    images = seed_images(game, params, g_state, seeds, psi, class_idx, batch_size)
    return [save_png(img, os.path.join(out_dir, f"seed{s:04d}.png")) for s, img in zip(seeds, images)]


# ----------------------------------------------------------------------------------------------------------------
# Style mixing.


def default_cutoff(num_ws: int) -> int:
    """The ws of the 4x4 and 8x8 layers (StyleGAN's "coarse styles"): layers [0, 4), at most all of them."""
    return min(num_ws_of_resolution(COARSE_RESOLUTION), num_ws)


def mix_styles(row_ws: np.ndarray, col_ws: np.ndarray, cutoff: int) -> np.ndarray:
    """(R, C, num_ws, w_dim): for each (row, column) the row's ws in layers [0, cutoff), the column's after."""
    num_ws = row_ws.shape[1]
    if not 0 <= cutoff <= num_ws:
        raise StyleGANToolError(f"style-mixing cutoff {cutoff}: must be in 0..{num_ws} (the generator's ws)")
    coarse = (np.arange(num_ws) < cutoff)[None, None, :, None]
    return np.where(coarse, row_ws[:, None], col_ws[None, :])


def style_mixing_array(
    game: Any,
    params: PyTree,
    g_state: PyTree,
    row_seeds: Sequence[int],
    col_seeds: Sequence[int],
    cutoff: int | None = None,
    psi: float = 1.0,
    class_idx: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> np.ndarray:
    """The style-mixing grid as one uint8 HWC image of (R + 1) x (C + 1) tiles, the official layout: the top row
    holds the column seeds' images, the left column the row seeds', the corner is blank (white), and tile (r, c)
    mixes row r's coarse styles (ws [0, cutoff), default `default_cutoff`) with column c's fine ones."""
    ws = seed_ws(game, params, g_state, list(row_seeds) + list(col_seeds), psi, class_idx, batch_size)
    row_ws, col_ws = ws[: len(row_seeds)], ws[len(row_seeds) :]
    cutoff = default_cutoff(ws.shape[1]) if cutoff is None else cutoff
    mixed = mix_styles(row_ws, col_ws, cutoff)
    r, c = mixed.shape[:2]
    headers = synthesize_images(game, params, g_state, ws, batch_size)
    cells = synthesize_images(game, params, g_state, mixed.reshape((r * c,) + mixed.shape[2:]), batch_size)
    h, w, ch = headers.shape[1:]
    tiles = np.full((r + 1, c + 1, h, w, ch), 255, np.uint8)
    tiles[0, 1:] = headers[r:]
    tiles[1:, 0] = headers[:r]
    tiles[1:, 1:] = cells.reshape(r, c, h, w, ch)
    return tile(tiles.reshape((-1, h, w, ch)), c + 1)


def style_mixing_grid(
    game: Any,
    params: PyTree,
    g_state: PyTree,
    row_seeds: Sequence[int],
    col_seeds: Sequence[int],
    out_path: str,
    cutoff: int | None = None,
    psi: float = 1.0,
    class_idx: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> str:
    """`style_mixing_array` written as one PNG; returns its path."""
    grid = style_mixing_array(game, params, g_state, row_seeds, col_seeds, cutoff, psi, class_idx, batch_size)
    return save_png(grid, out_path)


# ----------------------------------------------------------------------------------------------------------------
# Interpolation.


def interpolate_ws(ws: np.ndarray, num_frames: int) -> np.ndarray:
    """(num_frames, num_ws, w_dim): a path through ws (K, num_ws, w_dim) in order, linear in w, evenly spaced in
    the segments; the first frame is exactly ws[0] and the last exactly ws[-1]."""
    k = ws.shape[0]
    if k < 2:
        raise StyleGANToolError(f"interpolation needs at least two seeds, got {k}")
    if num_frames < 2:
        raise StyleGANToolError(f"interpolation needs at least two frames, got {num_frames}")
    t = np.linspace(0.0, k - 1, num_frames)
    i = np.minimum(np.floor(t).astype(np.int64), k - 2)
    f = (t - i).astype(np.float32)[:, None, None]
    ws = np.asarray(ws, np.float32)
    return (1.0 - f) * ws[i] + f * ws[i + 1]  # (1 - f) a + f b: exactly a at f=0 and b at f=1


def interpolation_frames(
    game: Any,
    params: PyTree,
    g_state: PyTree,
    seeds: Sequence[int],
    num_frames: int = 30,
    psi: float = 1.0,
    class_idx: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> np.ndarray:
    """uint8 frames (num_frames, H, W, C) moving linearly in w from the first seed through the others to the last."""
    ws = seed_ws(game, params, g_state, seeds, psi, class_idx, batch_size)
    return synthesize_images(game, params, g_state, interpolate_ws(ws, num_frames), batch_size)


def interpolation(
    game: Any,
    params: PyTree,
    g_state: PyTree,
    seeds: Sequence[int],
    out_dir: str,
    num_frames: int = 30,
    psi: float = 1.0,
    class_idx: int | None = None,
    frame_ms: int = 80,
    strip_cols: int = 10,
    batch_size: int = BATCH_SIZE,
) -> tuple[str, str]:
    """(GIF, PNG strip) of `interpolation_frames`: `out_dir/interpolation.gif`, looping, `frame_ms` per frame, and
    `out_dir/interpolation.png` with all frames, `strip_cols` per row. The GIF writer merges consecutive identical
    frames (keeping their total duration), so such a GIF has fewer frames than asked for."""
    frames = interpolation_frames(game, params, g_state, seeds, num_frames, psi, class_idx, batch_size)
    os.makedirs(out_dir, exist_ok=True)
    gif = os.path.join(out_dir, "interpolation.gif")
    pictures = [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in frames]
    pictures[0].save(gif, save_all=True, append_images=pictures[1:], duration=frame_ms, loop=0)
    strip = save_png(tile(frames, min(strip_cols, len(frames))), os.path.join(out_dir, "interpolation.png"))
    return gif, strip
