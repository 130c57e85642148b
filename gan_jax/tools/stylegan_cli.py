"""run.py's StyleGAN2 modes: generate, style_mixing, interpolate, project.

Every argument is checked before the (slow) restore, so a typo costs a second, not a checkpoint load; then the
newest checkpoint of the workdir is restored and the tool runs on its EMA generator. Each mode returns the paths it
wrote, which run.py prints.
"""

from __future__ import annotations

import os

import ml_collections

from gan_jax.tools.stylegan_tools import StyleGANToolError, check_class_idx, parse_seeds

MODES = ("generate", "style_mixing", "interpolate", "project")
DEFAULT_SEEDS = {"generate": "0-7", "style_mixing": "0-4", "interpolate": "0-3", "project": "0"}
DEFAULT_COL_SEEDS = "5-9"


def run_tool(
    mode: str,
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    out: str | None = None,
    seeds: str | None = None,
    col_seeds: str | None = None,
    psi: float = 1.0,
    class_idx: int | None = None,
    cutoff: int | None = None,
    num_frames: int = 30,
    target: str | None = None,
    num_steps: int = 1000,
    w_plus: bool = False,
) -> list[str]:
    """Runs `mode` on the newest checkpoint of `workdir`, writing under `out` (default WORKDIR/<mode>); returns the
    paths written. `seeds`: the images (generate), the rows (style_mixing), the path (interpolate) or, its first
    one, the projection's random seed; `col_seeds`: style mixing's columns."""
    if mode not in MODES:
        raise StyleGANToolError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    name = config.model.name
    if name != "stylegan2":
        raise StyleGANToolError(
            f"--mode={mode} needs a StyleGAN2 model (configs/stylegan.py); this config's model is {name!r}"
        )
    seed_list = parse_seeds(seeds if seeds is not None else DEFAULT_SEEDS[mode])
    col_list = parse_seeds(col_seeds if col_seeds is not None else DEFAULT_COL_SEEDS)
    check_class_idx(config.model.get("num_classes", 0), class_idx, required=mode != "project")
    if mode == "interpolate" and (len(seed_list) < 2 or num_frames < 2):
        raise StyleGANToolError(
            f"--mode=interpolate needs at least two seeds and two frames (got {len(seed_list)} and {num_frames})"
        )
    if mode == "project":
        if not target:
            raise StyleGANToolError("--mode=project needs --target=IMAGE (a PNG or JPEG file)")
        if not os.path.isfile(target):
            raise StyleGANToolError(f"--target={target}: no such file")
        if num_steps < 1:
            raise StyleGANToolError(f"--num_steps={num_steps}: must be positive")

    from gan_jax.tools.generate import restore

    exp, state = restore(config, workdir)
    game, params, g_state = exp.game, state.ema_params, state.ema_state
    out = out or os.path.join(workdir, mode)

    from gan_jax.tools import stylegan_tools as tools

    if mode == "generate":
        return tools.generate_images(game, params, g_state, seed_list, out, psi, class_idx)
    if mode == "style_mixing":
        path = os.path.join(out, "style_mixing.png")
        return [tools.style_mixing_grid(game, params, g_state, seed_list, col_list, path, cutoff, psi, class_idx)]
    if mode == "interpolate":
        return list(tools.interpolation(game, params, g_state, seed_list, out, num_frames, psi, class_idx))

    from gan_jax.tools.projector import load_target, project, write_projection

    res, _, channels = exp.dataset.shape
    target_image = load_target(target, res, channels)
    projection = project(game, params, g_state, target_image, num_steps, w_plus, class_idx=class_idx, seed=seed_list[0])
    return list(write_projection(projection, target_image, out).values())
