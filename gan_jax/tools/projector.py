"""Projection into StyleGAN2's latent space: the w (or w+) whose image best matches a given picture.

Users project real images to edit them, mix their styles or check what the generator can represent. This follows the
official StyleGAN2-ADA projector (projector.py): start from the mean w of `num_w_samples` mapped latents; Adam
(betas 0.9, 0.999) with a learning rate that ramps up (linearly, over the first 5% of the steps) and down (cosine,
over the last 25%); Gaussian noise added to w early on (scale w_std * 0.05, decaying quadratically to zero at 75% of
the steps) so the search does not settle in the first local minimum; "const" synthesis noise. Differences:

- The distance is pixel MSE on [-1, 1] images (plus an optional regularizer `w_reg` * |w - w_avg|^2 / w_std^2), not
  LPIPS: the VGG16 LPIPS weights the official projector downloads cannot be fetched offline here and this library
  ships none. MSE matches colours and layout but gives blurrier, less perceptually faithful projections.
- The synthesis noise maps are not optimized (this library's "const" noise is drawn from a fixed key, not stored as
  buffers), so there is no noise regularization either.
- `w_plus=True` optimizes one w per layer (w+, Abdal et al. 2019, "Image2StyleGAN"), which fits images more closely
  but can leave the region of w the generator was trained on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image, UnidentifiedImageError

from gan_jax.tools.stylegan_tools import StyleGANToolError, check_class_idx, require_stylegan, save_png, tile
from gan_jax.train.visualize import to_uint8

log = logging.getLogger(__name__)
Array = jax.Array
PyTree = Any


@dataclasses.dataclass
class Projection:
    ws: np.ndarray  # (num_ws, w_dim): the projected ws (all rows equal unless w_plus)
    image: np.ndarray  # (H, W, C) float32 in about [-1, 1]: the image of `ws`
    losses: np.ndarray  # (num_steps,): the objective at each step (with the step's w noise)
    final_mse: float  # pixel MSE of `image` against the target (no w noise)
    w_plus: bool


def load_target(path: str, resolution: int, channels: int) -> np.ndarray:
    """An image file as the model's input: centre-cropped to a square, resized (Lanczos) to `resolution`, grey or
    RGB to match `channels`; float32 (H, W, C) in [-1, 1]."""
    if channels not in (1, 3):
        raise StyleGANToolError(f"projection needs a grey or RGB model, not one with {channels} channels")
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
    except FileNotFoundError:
        raise StyleGANToolError(f"target image {path!r} does not exist") from None
    except (UnidentifiedImageError, OSError) as e:
        raise StyleGANToolError(f"target image {path!r} cannot be read: {e}") from None
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2)).resize(
        (resolution, resolution), Image.LANCZOS
    )
    x = np.asarray(img, np.float32).reshape(resolution, resolution, channels)
    return x / 127.5 - 1.0


def learning_rate(step: Array | int, num_steps: int, initial_lr: float, rampup: float, rampdown: float) -> Array:
    """The official projector's schedule: linear ramp-up over `rampup` of the steps, cosine ramp-down over the last
    `rampdown`."""
    t = step / num_steps
    ramp = jnp.minimum(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * jnp.cos(ramp * jnp.pi)
    return initial_lr * ramp * jnp.minimum(1.0, t / rampup)


def w_stats(
    game: Any, params: PyTree, g_state: PyTree, num_samples: int, class_idx: int | None, seed: int
) -> tuple[Array, Array, int]:
    """(w_avg (w_dim,), w_std (scalar), num_ws) of `num_samples` mapped latents, untruncated; for a conditional model
    of class `class_idx`, or of the classes in turn when it is None."""
    z = game.sample_latents(jax.random.PRNGKey(seed), num_samples)
    if getattr(game, "num_classes", 0) and class_idx is not None:
        labels = jnp.full((num_samples,), class_idx, jnp.int32)
    else:
        labels = game.default_labels(num_samples)
    ws = jax.jit(lambda p, s, z, y: game.map(p, s, z, y, train=False)[0])(params, g_state, z, labels)
    w = ws[:, 0]
    w_avg = jnp.mean(w, axis=0)
    w_std = jnp.sqrt(jnp.sum(jnp.square(w - w_avg)) / num_samples)
    return w_avg, w_std, ws.shape[1]


def project(
    game: Any,
    params: PyTree,
    g_state: PyTree,
    target: np.ndarray,
    num_steps: int = 1000,
    w_plus: bool = False,
    *,
    initial_lr: float = 0.1,
    lr_rampup: float = 0.05,
    lr_rampdown: float = 0.25,
    noise_factor: float = 0.05,
    noise_ramp: float = 0.75,
    w_reg: float = 0.0,
    num_w_samples: int = 10_000,
    class_idx: int | None = None,
    seed: int = 0,
    log_every: int = 100,
) -> Projection:
    """Optimizes w (one, broadcast to every layer) or w+ (one per layer) so that `synthesize(ws)` matches `target`
    ((H, W, C) float in [-1, 1] at the model's resolution and channels, e.g. from `load_target`); see the module
    docstring. Every step is one jitted call."""
    require_stylegan(game)
    check_class_idx(getattr(game, "num_classes", 0), class_idx, required=False)
    if num_steps < 1:
        raise StyleGANToolError(f"num_steps={num_steps}: projection needs at least one step")
    w_avg, w_std, num_ws = w_stats(game, params, g_state, num_w_samples, class_idx, seed)
    target = jnp.asarray(target, jnp.float32)[None]
    w_opt = jnp.tile(w_avg[None], (num_ws if w_plus else 1, 1))
    adam = optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)
    opt_state = adam.init(w_opt)

    def to_ws(w: Array) -> Array:
        return jnp.broadcast_to(w[None], (1, num_ws, w.shape[-1]))

    @jax.jit
    def step(w, opt_state, i, rng, params, g_state, target, w_avg, w_std):
        t = i / num_steps
        noise_scale = w_std * noise_factor * jnp.square(jnp.maximum(0.0, 1.0 - t / noise_ramp))

        def loss_fn(w):
            image = game.synthesize(params, g_state, to_ws(w + noise_scale * jax.random.normal(rng, w.shape)), "const")
            mse = jnp.mean(jnp.square(image - target))
            return mse + w_reg * jnp.mean(jnp.square(w - w_avg)) / jnp.square(w_std)

        loss, grad = jax.value_and_grad(loss_fn)(w)
        updates, opt_state = adam.update(grad, opt_state)
        w = w - learning_rate(i, num_steps, initial_lr, lr_rampup, lr_rampdown) * updates
        return w, opt_state, loss

    key = jax.random.PRNGKey(seed)
    losses = []
    for i in range(num_steps):
        w_opt, opt_state, loss = step(
            w_opt, opt_state, jnp.float32(i), jax.random.fold_in(key, i), params, g_state, target, w_avg, w_std
        )
        losses.append(loss)
        if log_every and (i + 1) % log_every == 0:
            log.info("projection step %d/%d: loss %.5f", i + 1, num_steps, float(loss))
    ws = to_ws(w_opt)
    image = jax.jit(lambda p, s, ws: game.synthesize(p, s, ws, "const"))(params, g_state, ws)
    return Projection(
        ws=np.asarray(ws[0]),
        image=np.asarray(image[0]),
        losses=np.asarray(jnp.stack(losses)),
        final_mse=float(jnp.mean(jnp.square(image - target))),
        w_plus=w_plus,
    )


def save_loss_curve(losses: np.ndarray, path: str, title: str = "projection") -> str:
    """The objective per step, log scale, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.semilogy(np.arange(1, len(losses) + 1), losses)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (pixel MSE)")
    ax.set_title(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_projection(projection: Projection, target: np.ndarray, out_dir: str) -> dict[str, str]:
    """Writes target.png, proj.png, target_vs_proj.png (side by side), loss_curve.png and projected_w.npz (`ws`
    (num_ws, w_dim), `w` (w_dim,) unless w+, `losses`, `final_mse`, `w_plus`); returns name -> path."""
    target_u8, proj_u8 = to_uint8(target), to_uint8(projection.image)
    paths = {
        "target": save_png(target_u8, os.path.join(out_dir, "target.png")),
        "projection": save_png(proj_u8, os.path.join(out_dir, "proj.png")),
        "side_by_side": save_png(tile(np.stack([target_u8, proj_u8]), 2), os.path.join(out_dir, "target_vs_proj.png")),
        "loss_curve": save_loss_curve(
            projection.losses,
            os.path.join(out_dir, "loss_curve.png"),
            f"projection into {'w+' if projection.w_plus else 'w'}: final MSE {projection.final_mse:.4g}",
        ),
    }
    arrays = {"ws": projection.ws, "losses": projection.losses, "final_mse": projection.final_mse}
    if not projection.w_plus:
        arrays["w"] = projection.ws[0]
    paths["w"] = os.path.join(out_dir, "projected_w.npz")
    np.savez(paths["w"], w_plus=projection.w_plus, **arrays)
    return paths
