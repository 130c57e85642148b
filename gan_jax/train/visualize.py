"""Pictures a person can look at: sample grids, 2-D scatter plots over the true means, loss curves."""

from __future__ import annotations

import json
import math
import os

import numpy as np
from PIL import Image


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] float images -> uint8 in [0, 255], rounding to nearest."""
    return np.clip(np.rint((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def image_grid(images: np.ndarray, pad: int = 2) -> np.ndarray:
    """uint8 NHWC images -> one uint8 HWC image of a near-square grid with `pad` pixels between tiles."""
    n, h, w, c = images.shape
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, cols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = img
    return grid


def save_image_grid(images: np.ndarray, path: str, scale: int = 2) -> None:
    """Writes float images in [-1, 1] as a PNG grid, upscaled so small images are visible."""
    grid = image_grid(to_uint8(images))
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    img.save(path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_points_plot(points: np.ndarray, path: str, means: np.ndarray | None = None, title: str = "") -> None:
    """Scatter of generated 2-D points, with the mixture's true means marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5, label="generated")
    if means is not None:
        ax.scatter(means[:, 0], means[:, 1], s=40, c="red", marker="x", label="true means")
        span = np.abs(means).max() * 1.5 + 0.5
        ax.set_xlim(-span, span)
        ax.set_ylim(-span, span)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def save_loss_curves(metrics_jsonl: str, path: str) -> None:
    """Plots the losses and gradient norms logged in `metrics.jsonl` against the step."""
    rows = []
    with open(metrics_jsonl) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    if not rows:
        return
    plt = _pyplot()
    panels = [
        ("losses", [k for k in ("d_loss", "g_loss") if k in rows[-1]]),
        ("discriminator outputs", [k for k in ("d_real", "d_fake") if k in rows[-1]]),
        ("gradient norms", [k for k in rows[-1] if k.endswith("_grad_norm")]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), dpi=100)
    steps = [r["step"] for r in rows]
    for ax, (title, keys) in zip(axes, panels):
        for k in keys:
            ax.plot(steps, [r.get(k, np.nan) for r in rows], label=k)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
