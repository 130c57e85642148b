"""BigGAN (Brock, Donahue & Simonyan 2019): class-conditional, hinge loss, spectral norm in G and D.

  configs/biggan.py                 MNIST padded to 32x32, 10 classes (default): a narrow BigGAN sized for 2 CPU cores
  configs/biggan.py:fashion_mnist   the same on Fashion-MNIST
  configs/biggan.py:cifar10         CIFAR-10 as in BigGAN-PyTorch's scripts/launch_cifar_ema.sh (the paper's
                                    appendix reports IS 9.22, FID 14.73 on CIFAR-10): ch 64, no attention, batch 50,
                                    4 D steps per G step, Adam 2e-4 betas (0, 0.999), EMA from step 1,000, 500 epochs;
                                    one difference: G conditions through the shared class embedding, where that
                                    script (no --G_shared) gives each conditional BN its own class tables
  configs/biggan.py:imagenet128     ImageNet 128x128, the paper's Table 1 / appendix recipe: ch 96, z of 120 split
                                    hierarchically, shared class embedding of 128, self-attention at 64x64 in G and
                                    D, batch 2048 (8 micro-batches of 256 by gradient accumulation), G lr 5e-5 and D
                                    lr 2e-4 with betas (0, 0.999), 2 D steps per G step, orthogonal regularization
                                    1e-4, EMA 0.9999 from step 20,000, orthogonal init; data from TFDS imagenet2012
                                    (--config.data.data_dir=...). The paper's best 128x128 result: IS 166.5, FID 7.4
  configs/biggan.py:smoke           a tiny network for a few steps, for tests

Sampling options: `conditional.truncation` (the truncation trick, z resampled to [-t, t]) and `standing_stats` (G's
batch norm from the mean moments of that many batches, shared by every model with batch norm), as BigGAN samples.
"""

from gan_jax.config import base_config, conditional_section
from gan_jax.metrics.evaluators import evaluator_spec

VARIANTS = ("mnist", "fashion_mnist", "cifar10", "imagenet128", "smoke")


def get_config(arg: str = "mnist"):
    variant = arg or "mnist"
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {arg!r}: use {', '.join(VARIANTS)}")
    c = base_config()
    c.model.name = "biggan"
    c.model.z_dim = 120
    c.model.num_classes = 10
    c.model.g_ch = 96
    c.model.d_ch = 96
    c.model.shared_dim = 128
    c.model.hier = True
    c.model.g_attn = 64
    c.model.d_attn = 64
    c.model.bn_eps = 1e-5
    c.model.sn_eps = 1e-6
    c.model.init = "ortho"
    c.loss = "hinge"
    c.n_critic = 2
    c.batch_size = 2048
    for player, lr in (("g", 5e-5), ("d", 2e-4)):
        c.optim[player].update(name="adam", lr=lr, b1=0.0, b2=0.999, eps=1e-6)
    c.ema_decay = 0.9999
    c.ema_start = 20_000
    c.conditional = conditional_section(ortho_weight=1e-4)
    c.evals.fid = evaluator_spec("inception", every=0, metrics="fid,kid,pr", num_samples=10_000, split="test")
    c.best_metric = "fid/fid"

    if variant in ("mnist", "fashion_mnist", "smoke"):
        c.data.name = "mnist" if variant == "smoke" else variant
        c.data.split = "train+validation" if c.data.name == "mnist" else "train"
        c.data.resolution, c.data.resize, c.data.channels = 32, "pad", 1
        # Sized for 2 CPU cores (README: step speed, and FID after 600 s): 64 channels in every block, attention at
        # 16x16, batch 64, both learning rates 2e-4, EMA from the start; the rest is the paper's recipe.
        c.model.g_ch, c.model.d_ch = 16, 16
        c.model.shared_dim = 64
        c.model.g_attn, c.model.d_attn = 16, 16
        c.model.init = "N02"
        c.batch_size = 64
        c.optim.g.lr = 2e-4
        c.ema_decay, c.ema_start = 0.999, 0
        c.num_train_steps = 1000  # about 1.25 steps/s here (benchmarks/step_speed.py): ~14 min
        c.log_every, c.sample_every, c.checkpoint_every = 100, 250, 250
        c.num_grid_samples = 100  # a 10x10 grid: column c shows class c (samples take the classes in turn)
        if c.data.name == "mnist":
            c.evals.classes = evaluator_spec("class_accuracy", every=0)
    if variant == "cifar10":
        c.data.name, c.data.split, c.data.resolution, c.data.channels = "cifar10", "train", 32, 3
        c.model.g_ch = c.model.d_ch = 64
        c.model.hier, c.model.g_attn, c.model.d_attn = False, 0, 0
        c.model.init = "N02"
        c.batch_size, c.n_critic = 50, 4
        c.optim.g.lr = 2e-4
        for player in ("g", "d"):
            c.optim[player].eps = 1e-8
        c.ema_start = 1000
        c.conditional.ortho_weight = 0.0
        c.num_train_steps = 500 * 50_000 // (50 * 4)
        c.log_every, c.sample_every, c.checkpoint_every = 200, 5_000, 5_000
        c.evals.fid.num_samples, c.evals.fid.split = 50_000, "train"
    if variant == "imagenet128":
        c.data.name, c.data.split, c.data.resolution, c.data.resize, c.data.channels = (
            "imagenet2012",
            "train",
            128,
            "resize",
            3,
        )
        c.model.num_classes = 1000
        c.grad_accum = 8
        c.num_train_steps = 150_000
        c.log_every, c.sample_every, c.checkpoint_every = 200, 5_000, 2_000
        c.evals.fid.num_samples, c.evals.fid.split = 50_000, "validation"
    if variant == "smoke":
        c.model.g_ch, c.model.d_ch = 4, 4
        c.model.shared_dim = 8
        c.model.g_attn, c.model.d_attn = 16, 16
        c.model.z_dim = 16
        c.batch_size = 8
        c.n_critic = 1
        c.conditional.ortho_weight = 1e-4
        c.num_train_steps, c.log_every, c.sample_every, c.checkpoint_every = 4, 2, 2, 2
        c.evals.fid.num_samples, c.evals.fid.num_real, c.evals.fid.batch_size = 16, 16, 8
        c.evals.classes.num_samples = 20
    return c
