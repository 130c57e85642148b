"""SNGAN (Miyato et al. 2018) with the projection discriminator (Miyato & Koyama 2018): class-conditional, hinge loss.

  configs/sngan.py                 MNIST padded to 32x32, 10 classes (default): narrow ResNets sized for 2 CPU cores
  configs/sngan.py:fashion_mnist   the same on Fashion-MNIST
  configs/sngan.py:cifar10         Miyato & Koyama 2018, CIFAR-10 (section 5.1; their Table 1 reports IS 8.62, FID
                                   17.5): G 256 / D 128 channels, batch 64, Adam 2e-4 with betas (0, 0.9), 5 D steps
                                   per G step, 50,000 G steps with the learning rate decayed linearly to 0
  configs/sngan.py:imagenet128     Miyato & Koyama 2018, ImageNet 128x128: pfnet-research/sngan_projection's
                                   `configs/sn_projection.yml` (README_paper.md reports Inception score 29.7 and
                                   intra-class FID 103.1 at 450K iterations): the widening ResNets (`arch`
                                   "imagenet", g_ch = d_ch = 64, z of 128), batch 64 (4 GPUs x 16), Adam 2e-4
                                   with betas (0, 0.9), 5 D steps per G step, 450,000 G steps with the learning rate
                                   constant to 400,000 and then decayed linearly to 0, no EMA, no augmentation; data
                                   from TFDS imagenet2012 (--config.data.data_dir=...). Two differences: the
                                   reference's G step draws 128 samples (`n_gen_samples` 32 per GPU) where gan_jax's
                                   draws one batch (64), and it takes the G step before the D steps of an iteration
  configs/sngan.py:smoke           a tiny network for a few steps, for tests

Spectral norm on every D layer, none in G; G's blocks use categorical conditional batch norm; D ends in global sum
pooling, a linear output and the projection <embed(y), h>. No EMA of G in the papers: `ema_decay` 0 samples the live
generator (the default variants keep an EMA, which costs nothing and helps short runs).
"""

from gan_jax.config import base_config, conditional_section
from gan_jax.metrics.evaluators import evaluator_spec

VARIANTS = ("mnist", "fashion_mnist", "cifar10", "imagenet128", "smoke")


def get_config(arg: str = "mnist"):
    variant = arg or "mnist"
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {arg!r}: use {', '.join(VARIANTS)}")
    c = base_config()
    c.model.name = "sngan"
    c.model.z_dim = 128
    c.model.num_classes = 10
    c.model.g_ch = 256
    c.model.d_ch = 128
    c.model.arch = "cifar"
    c.loss = "hinge"
    c.n_critic = 5
    c.batch_size = 64
    for player in ("g", "d"):
        c.optim[player].update(name="adam", lr=2e-4, b1=0.0, b2=0.9)
    c.lr_decay = "linear"
    c.ema_decay = 0.0
    c.conditional = conditional_section()
    c.evals.fid = evaluator_spec("inception", every=0, metrics="fid,kid,pr", num_samples=10_000, split="test")
    c.best_metric = "fid/fid"

    if variant in ("mnist", "fashion_mnist", "smoke"):
        c.data.name = "mnist" if variant == "smoke" else variant
        c.data.split = "train+validation" if c.data.name == "mnist" else "train"
        c.data.resolution, c.data.resize, c.data.channels = 32, "pad", 1
        # Sized for 2 CPU cores (README: step speed, and FID after 600 s); the recipe is the paper's otherwise, except
        # fewer D steps per G step and an EMA of G for the samples.
        c.model.g_ch, c.model.d_ch = 64, 64
        c.n_critic = 2
        c.ema_decay = 0.999
        c.num_train_steps = 1000  # about 1.25 steps/s here (benchmarks/step_speed.py): ~14 min
        c.log_every, c.sample_every, c.checkpoint_every = 100, 250, 250
        c.num_grid_samples = 100  # a 10x10 grid: column c shows class c (samples take the classes in turn)
        if c.data.name == "mnist":
            c.evals.classes = evaluator_spec("class_accuracy", every=0)
    if variant == "cifar10":
        c.data.name, c.data.split, c.data.resolution, c.data.channels = "cifar10", "train", 32, 3
        c.num_train_steps = 50_000
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
        c.model.arch = "imagenet"
        c.model.num_classes = 1000
        c.model.g_ch = c.model.d_ch = 64
        c.num_train_steps, c.lr_decay_start = 450_000, 400_000
        c.log_every, c.sample_every, c.checkpoint_every = 500, 10_000, 10_000
        c.evals.fid.num_samples, c.evals.fid.split = 50_000, "validation"
    if variant == "smoke":
        c.model.g_ch, c.model.d_ch = 8, 8
        c.batch_size = 8
        c.n_critic = 1
        c.num_train_steps, c.log_every, c.sample_every, c.checkpoint_every = 4, 2, 2, 2
        c.evals.fid.num_samples, c.evals.fid.num_real, c.evals.fid.batch_size = 16, 16, 8
        c.evals.classes.num_samples = 20
    return c
