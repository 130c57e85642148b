"""Goodfellow et al. (2014), the MNIST model: MLP generator (1200-1200 ReLU), maxout discriminator (240x5, 240x5).

  configs/gan_mnist.py        the default schedule (a few minutes on 2 CPU cores)
  configs/gan_mnist.py:smoke  a few steps, for tests

The paper trained with SGD + momentum and a decaying learning rate; we use Adam (2e-4, beta1 0.5), which reaches
the same samples with far less tuning. The paper's uniform noise and dropout on the discriminator are kept.
"""

from gan_jax.config import base_config
from gan_jax.metrics.evaluators import evaluator_spec


def get_config(arg: str = ""):
    if arg not in ("", "smoke"):
        raise ValueError(f"unknown variant {arg!r}: use no argument or smoke")
    c = base_config()
    c.data.name = "mnist"
    c.data.split = "train"
    c.model.name = "mlp"
    c.model.z_dim = 100
    c.model.z_dist = "uniform"
    c.model.g_hidden = (1200, 1200)
    c.model.g_batch_norm = False
    c.model.d_hidden = (240, 240)
    c.model.d_pieces = 5
    c.model.d_dropout = 0.5
    c.model.d_minibatch_std = 0  # minibatch std group size before D's last layer; 0 = off (README: mitigations)
    c.batch_size = 100
    c.num_train_steps = 5_000
    c.log_every, c.sample_every, c.checkpoint_every = 100, 1_000, 1_000
    # FID, KID and precision/recall of 10,000 samples against the 10,000 test images, in --mode=eval (see dcgan.py).
    c.evals.fid = evaluator_spec("inception", every=0, metrics="fid,kid,pr", num_samples=10_000, split="test")
    c.best_metric = "fid/fid"
    if arg == "smoke":
        c.num_train_steps, c.log_every, c.sample_every, c.checkpoint_every = 6, 2, 3, 3
        c.model.g_hidden = (64,)
        c.model.d_hidden = (32,)
        c.batch_size = 16
        c.evals.fid.num_samples, c.evals.fid.num_real, c.evals.fid.batch_size = 16, 16, 8
    return c
