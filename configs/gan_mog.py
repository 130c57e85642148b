"""Goodfellow's MLP GAN on the 2-D mixtures of Gaussians, in the PacGAN / VEEGAN setting.

  configs/gan_mog.py:ring        8 Gaussians on the unit circle, std 0.01 (default)
  configs/gan_mog.py:grid        25 Gaussians at {-4,-2,0,2,4}^2, std 0.05
  configs/gan_mog.py:ring_paper  the paper's full schedule: 400 epochs of 100,000 points at batch 100
  configs/gan_mog.py:smoke       a few steps, for tests

Networks as in PacGAN (Lin et al. 2018, Appendix): G has four 400-unit ReLU layers with batch norm, D three
200-unit maxout layers with 5 pieces; z is a 2-D standard normal; Adam lr 1e-4, beta1 0.8; batch 100.
"""

from gan_jax.config import base_config
from gan_jax.metrics.evaluators import evaluator_spec


def get_config(arg: str = "ring"):
    variant = arg or "ring"
    mixture, _, schedule = variant.partition("_")
    if mixture not in ("ring", "grid", "smoke"):
        raise ValueError(f"unknown variant {arg!r}: use ring, grid, ring_paper, grid_paper or smoke")
    c = base_config()
    c.data.name = "grid" if mixture == "grid" else "ring"
    c.data.num_examples = 100_000
    c.model.name = "mlp"
    c.model.z_dim = 2
    c.model.g_hidden = (400, 400, 400, 400)
    c.model.g_batch_norm = True
    c.model.d_hidden = (200, 200, 200)
    c.model.d_pieces = 5
    c.model.d_dropout = 0.0
    c.model.d_minibatch_std = 0  # minibatch std group size before D's last layer; 0 = off (README: mitigations)
    c.batch_size = 100
    for player in ("g", "d"):
        c.optim[player].lr = 1e-4
        c.optim[player].b1 = 0.8
    c.ema_decay = 0.0  # the protocol scores the generator itself
    c.num_train_steps = 10_000
    c.log_every = 250
    c.sample_every = 2_500
    c.checkpoint_every = 2_500
    # The PacGAN / VEEGAN protocol: 2,500 samples, modes within 3 std, reverse KL; the best checkpoint by reverse KL.
    c.evals.modes = evaluator_spec("modes", every=2_500, num_samples=2_500)
    c.best_metric, c.best_mode = "modes/reverse_kl", "min"
    if schedule == "paper":
        c.num_train_steps = 400 * 100_000 // 100
        c.log_every, c.sample_every, c.checkpoint_every = 1_000, 20_000, 20_000
        c.evals.modes.every = 20_000
    elif mixture == "smoke":
        c.num_train_steps, c.log_every, c.sample_every, c.checkpoint_every = 20, 5, 10, 10
        c.evals.modes.every = 10
        c.model.g_hidden = (32, 32)
        c.model.d_hidden = (16,)
        c.data.num_examples = 1000
    return c
