"""DCGAN (Radford, Metz & Chintala 2016) at 32x32.

  configs/dcgan.py                 MNIST padded to 32x32 (default)
  configs/dcgan.py:fashion_mnist   Fashion-MNIST padded to 32x32
  configs/dcgan.py:stacked_mnist   Stacked MNIST (1,000 modes), the PacGAN / VEEGAN protocol: batch 64, 50 epochs of the
                                   128,000 stacked training images (100,000 steps), scored by modes and KL of 26,000
  configs/dcgan.py:cifar10         CIFAR-10, for users who have it prepared in TFDS (--config.data.data_dir=...)
  configs/dcgan.py:smoke           a tiny network for a few steps, for tests

The paper's hyperparameters: Adam 2e-4, beta1 0.5, batch 128, z of 100 from N(0, 1), N(0, 0.02) weights, the
non-saturating loss; networks 512-256-128 (`width` 128 next to the image).
"""

from gan_jax.config import base_config
from gan_jax.metrics.evaluators import evaluator_spec


def get_config(arg: str = "mnist"):
    variant = arg or "mnist"
    if variant not in ("mnist", "fashion_mnist", "stacked_mnist", "cifar10", "smoke"):
        raise ValueError(f"unknown variant {arg!r}: use mnist, fashion_mnist, stacked_mnist, cifar10 or smoke")
    c = base_config()
    c.data.name = "mnist" if variant == "smoke" else variant
    c.data.split = "train+validation" if c.data.name == "mnist" else "train"
    c.data.resolution = 32
    c.data.resize = "pad"
    c.data.channels = 3 if variant in ("cifar10", "stacked_mnist") else 1
    c.model.name = "dcgan"
    c.model.z_dim = 100
    # A step of a few large convolutions and little else: one OpenMP team per convolution beats XLA's threads (the
    # default, config.py) by 8% at batch 64 on 32x32x3 images and ties with them on this default (batch 128, MNIST).
    c.onednn_threads = "openmp"
    c.model.g_width = 128
    c.model.d_width = 128
    c.model.d_minibatch_std = 0  # minibatch std group size before D's last layer; 0 = off (README: mitigations)
    c.loss = "non_saturating"
    c.batch_size = 128
    # 800 steps (about 1.7 epochs of MNIST) fit in 10 minutes on 2 CPU cores at ~1.45 steps/s.
    c.num_train_steps = 800
    c.log_every, c.sample_every, c.checkpoint_every = 50, 200, 200
    # FID, KID and precision/recall of 10,000 samples against the 10,000 test images (the protocol of Lucic et al.
    # 2018). On 2 CPU cores it costs minutes, so it runs in --mode=eval only; --config.evals.fid.every=N adds it to
    # training, and the best checkpoint by FID is then kept.
    c.evals.fid = evaluator_spec("inception", every=0, metrics="fid,kid,pr", num_samples=10_000, split="test")
    c.best_metric = "fid/fid"
    if variant == "stacked_mnist":
        # PacGAN Table 2 (VEEGAN's setting): batch 64, Adam 2e-4 beta1 0.5, z of 100, 50 epochs of 128,000 images.
        c.batch_size = 64
        c.num_train_steps = 50 * 128_000 // 64
        c.log_every, c.sample_every, c.checkpoint_every = 200, 5_000, 2_500
        c.evals = {"modes": evaluator_spec("stacked_mnist", every=0)}
        c.best_metric = ""
    if variant == "cifar10":
        c.num_train_steps = 100_000
        c.log_every, c.sample_every, c.checkpoint_every = 200, 5_000, 5_000
    if variant == "smoke":
        c.model.g_width = 8
        c.model.d_width = 8
        c.batch_size = 16
        c.num_train_steps, c.log_every, c.sample_every, c.checkpoint_every = 6, 2, 3, 3
        c.evals.fid.num_samples, c.evals.fid.num_real, c.evals.fid.batch_size = 16, 16, 8
    return c
