"""The configuration schema shared by every model, and its validation.

Every config file under `configs/` starts from `base_config()` and overrides fields, so the set of keys is the same
for all models and an unknown key on the command line is rejected by ml_collections before anything runs. Checks that
a type system cannot express (ranges, divisibility, known names) live in `validate`, which names the offending field.
"""

from __future__ import annotations

import argparse
from typing import Any

import ml_collections

LOSSES = ("minimax", "non_saturating", "hinge", "wasserstein", "least_squares")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
Z_DISTRIBUTIONS = ("normal", "uniform")
NONFINITE_POLICIES = ("stop", "skip", "rollback")
LR_DECAYS = ("constant", "linear", "cosine")


class ConfigError(ValueError):
    """A config field holds a value that cannot work; the message names the field."""


def _optimizer(lr: float) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {"name": "adam", "lr": lr, "b1": 0.5, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0}
    )


def base_config() -> ml_collections.ConfigDict:
    """Defaults for every field; model configs override what their paper specifies."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_train_steps = 1000
    c.batch_size = 64  # global batch, split over all devices
    c.n_critic = 1  # discriminator steps per generator step; each sees its own real batch
    # Gradient accumulation: each player's step averages the gradients of this many micro-batches of batch_size /
    # grad_accum examples (BigGAN's batch of 2048 on a few devices); batch statistics are per micro-batch.
    c.grad_accum = 1

    c.data = ml_collections.ConfigDict(
        {
            "name": "mnist",
            "split": "train",
            "resolution": 0,  # 0 keeps the native size
            "channels": 0,  # 0 keeps the native channel count
            "resize": "pad",  # "pad" (MNIST 28 -> 32 as in the DCGAN papers) or "resize"
            "data_dir": ml_collections.FieldReference(None, field_type=str),
            "path": "",  # for the "folder" dataset
            "num_examples": 0,  # size of the fixed training set for the 2-D mixtures; 0 = all
            "std": ml_collections.FieldReference(None, field_type=float),  # 2-D mixtures; None = protocol default
            "prefetch": 2,
        }
    )

    c.model = ml_collections.ConfigDict()
    c.model.name = "dcgan"
    c.model.z_dim = 100
    c.model.z_dist = "normal"
    # Model-specific fields are added by each config (they are the keyword arguments of the model's build function).

    c.loss = "non_saturating"
    c.gp_weight = 0.0  # WGAN-GP penalty weight (Gulrajani et al.: 10)
    c.r1_gamma = 0.0  # R1 penalty gamma (Mescheder et al.)
    # Mode-collapse mitigations, for any model (a model's own switch, e.g. model.d_minibatch_std, is a model field).
    c.pack = 1  # PacGAN (Lin et al. 2018): D judges packs of this many samples stacked on the channel axis; 1 = off
    c.diffaugment = ""  # DiffAugment (Zhao et al. 2020) policy for images, e.g. "color,translation,cutout"; "" = off
    c.unroll_steps = 0  # unrolled GAN (Metz et al. 2017): G's loss against D advanced this many look-ahead steps
    # Top-k training (Sinha et al. 2020): G learns only from the fraction of its batch that D rates most real, which
    # starts at 1 and shrinks by topk_decay per epoch down to topk_keep (their 0.99 and 0.5); topk_keep 1 = off.
    c.topk_keep = 1.0
    c.topk_decay = 0.99
    c.optim = ml_collections.ConfigDict({"g": _optimizer(2e-4), "d": _optimizer(2e-4)})
    # Learning-rate decay of both players over num_train_steps: "constant", "linear" or "cosine" (to
    # lr_decay_final times the optimizer's lr at the last step), starting at step lr_decay_start (sngan_projection's
    # iteration_decay_start; 0 = from the first step). A function of the step only, so resuming is exact.
    c.lr_decay = "constant"
    c.lr_decay_final = 0.0
    c.lr_decay_start = 0
    c.ema_decay = 0.999  # EMA of the generator used for samples; 0 disables (samples use the live generator)
    # Sampling: G's batch norms use the mean batch moments of this many batches of its own samples in training mode
    # (BigGAN's "standing statistics") instead of running averages, which for the EMA generator are averages of the
    # live generator's statistics and need not match its weights; 0 = off. Any model whose G has batch norm.
    c.standing_stats = 0
    # Sampling: discriminator rejection sampling (Azadi et al. 2019; gan_jax/objectives/rejection.py). G's samples are
    # kept with a probability read from the trained D's logit; gamma is this percentile of the burn-in's scores (the
    # exact rule is gamma = 0; higher percentiles keep fewer, more data-like samples); 0 = off. drs_burn_in
    # candidates set the rule first. Unconditional models without packing.
    c.drs_percentile = 0.0
    c.drs_burn_in = 10_000
    # "soft": the paper's rule above; "hard": keep a sample if and only if its score is at least gamma (the rule's
    # zero-temperature limit: rejects what D ranks lowest without shifting the modes' weights by D's small offsets).
    c.drs_rule = "soft"
    # ... and before it, this many Adam steps (config.optim.d) training a copy of D against the fixed sampler, with the
    # logistic loss alone: the rule assumes D optimal for the G being sampled, while the trained D is the D of a
    # moving G, held smooth by the game's penalties; 0 = D as trained.
    c.drs_calibrate_steps = 0
    c.ema_start = 0  # before this step the EMA is a copy of the generator (BigGAN: 20,000); its warm-up starts here
    # StyleGAN's EMA instead, when ema_kimg > 0: a half-life of ema_kimg thousand images, ramped up over the first
    # steps as min(ema_kimg * 1000, images seen * ema_rampup) when ema_rampup > 0 (Karras et al. 2020).
    c.ema_kimg = 0.0
    c.ema_rampup = 0.0

    # Evaluators by name (see gan_jax.metrics.evaluators): each runs every `every` steps and at the end of training
    # (every=0: only in --mode=eval). best_metric "<eval name>/<score>" keeps the best checkpoint by that score
    # under workdir/checkpoints_best ("" keeps none); best_mode says whether lower ("min") or higher ("max") is better.
    c.evals = ml_collections.ConfigDict()
    c.best_metric = ""
    c.best_mode = "min"

    # CPU only: which threads run the train step's oneDNN convolutions (sampling and evaluation keep OpenMP teams),
    # "xla" (the batch in chunks on XLA's own threads) or "openmp" (one OpenMP team per convolution, every core, as
    # PyTorch runs them); see gan_jax/layers/onednn.py.
    # Speed only, not the math: "xla" was 18% faster for StyleGAN2's step, 12% for BigGAN's and 5% for SNGAN's,
    # "openmp" 8% faster for DCGAN's, whose config picks it.
    c.onednn_threads = "xla"

    c.log_every = 50
    c.sample_every = 500
    c.checkpoint_every = 1000
    c.keep_checkpoints = 3
    c.async_checkpoints = True
    c.num_grid_samples = 64
    c.eval_batches = 8  # real batches used by --mode=eval for the losses

    # What a non-finite loss or gradient does: "stop" (default), "skip" the step (counted), or "rollback" to the
    # newest checkpoint with every learning rate multiplied by rollback_lr_factor, at most max_rollbacks times.
    c.nonfinite_policy = "stop"
    c.max_rollbacks = 3
    c.rollback_lr_factor = 0.5

    # Fault injection, for tests only: a NaN loss at that step (while the learning rate is not lowered), and a failed
    # checkpoint write (as a full disk would give) at that step.
    c.debug = ml_collections.ConfigDict({"inject_nan_at_step": -1, "fail_save_at_step": -1})
    return c


def conditional_section(**overrides) -> ml_collections.ConfigDict:
    """`config.conditional`: the settings of SNGAN's and BigGAN's class-conditional game (objectives/conditional.py)."""
    section = {
        "ortho_weight": 0.0,  # BigGAN's orthogonal regularization of G (paper: 1e-4); 0 = off
        "truncation": 0.0,  # sampling: z from N(0, 1) truncated to [-t, t] (BigGAN's truncation trick); 0 = off
    }
    unknown = sorted(set(overrides) - set(section))
    if unknown:
        raise ValueError(f"conditional_section has no field {unknown[0]!r}")
    section.update(overrides)
    return ml_collections.ConfigDict(section)


def validate(config: ml_collections.ConfigDict, num_devices: int = 1) -> None:
    """Raises ConfigError naming the first field whose value cannot work."""

    def need(cond: bool, field: str, msg: str) -> None:
        if not cond:
            raise ConfigError(f"config.{field}={config_get(config, field)!r}: {msg}")

    need(isinstance(config.seed, int), "seed", "must be an integer")
    need(config.num_train_steps >= 0, "num_train_steps", "must be >= 0")
    need(config.batch_size > 0, "batch_size", "must be positive")
    need(
        config.batch_size % num_devices == 0,
        "batch_size",
        f"must be divisible by the number of devices ({num_devices}) for data parallelism",
    )
    need(config.n_critic >= 1, "n_critic", "must be >= 1")
    need(config.grad_accum >= 1, "grad_accum", "must be >= 1 (1 = no accumulation)")
    need(
        config.batch_size % (config.grad_accum * num_devices) == 0,
        "grad_accum",
        f"batch_size ({config.batch_size}) must split into grad_accum micro-batches divisible by the number of "
        f"devices ({num_devices})",
    )
    need(config.loss in LOSSES, "loss", f"unknown loss; choose one of {', '.join(LOSSES)}")
    need(config.gp_weight >= 0, "gp_weight", "must be >= 0")
    need(config.r1_gamma >= 0, "r1_gamma", "must be >= 0")
    _validate_mitigations(config, need)
    need(config.lr_decay in LR_DECAYS, "lr_decay", f"choose one of {', '.join(LR_DECAYS)}")
    need(0.0 <= config.lr_decay_final <= 1.0, "lr_decay_final", "must be in [0, 1]")
    need(
        0 <= config.lr_decay_start < max(config.num_train_steps, 1),
        "lr_decay_start",
        f"must be a step in [0, num_train_steps={config.num_train_steps})",
    )
    need(0.0 <= config.ema_decay < 1.0, "ema_decay", "must be in [0, 1)")
    need(config.standing_stats >= 0, "standing_stats", "must be >= 0 (0 = off)")
    need(0.0 <= config.drs_percentile < 100.0, "drs_percentile", "is a percentile: in [0, 100) (0 = off)")
    need(config.drs_burn_in > 0, "drs_burn_in", "must be positive")
    need(config.drs_rule in ("soft", "hard"), "drs_rule", "choose 'soft' (the paper's rule) or 'hard'")
    need(
        config.drs_rule == "soft" or config.drs_percentile > 0,
        "drs_rule",
        "is the rule of discriminator rejection sampling: set drs_percentile > 0 too",
    )
    need(config.drs_calibrate_steps >= 0, "drs_calibrate_steps", "must be >= 0 (0 = D as trained)")
    need(
        config.drs_calibrate_steps == 0 or config.drs_percentile > 0,
        "drs_calibrate_steps",
        "calibrates D for discriminator rejection sampling: set drs_percentile > 0 too",
    )
    need(config.ema_kimg >= 0.0, "ema_kimg", "must be >= 0 (0 = use ema_decay)")
    need(config.ema_start >= 0, "ema_start", "must be >= 0")
    need(config.ema_start == 0 or config.ema_kimg == 0, "ema_start", "applies to ema_decay, not to ema_kimg's schedule")
    need(config.ema_rampup >= 0.0, "ema_rampup", "must be >= 0 (0 = no ramp-up)")
    need(config.model.z_dim > 0, "model.z_dim", "must be positive")
    need(config.model.z_dist in Z_DISTRIBUTIONS, "model.z_dist", f"choose one of {', '.join(Z_DISTRIBUTIONS)}")
    for player in ("g", "d"):
        opt = config.optim[player]
        need(opt.name in OPTIMIZERS, f"optim.{player}.name", f"choose one of {', '.join(OPTIMIZERS)}")
        need(opt.lr > 0, f"optim.{player}.lr", "must be positive")
        need(0 <= opt.b1 < 1 and 0 <= opt.b2 < 1, f"optim.{player}.b1", "b1 and b2 must be in [0, 1)")
    for field in ("log_every", "sample_every", "checkpoint_every", "keep_checkpoints", "num_grid_samples"):
        need(config[field] > 0, field, "must be positive")
    need(config.eval_batches > 0, "eval_batches", "must be positive")
    need(
        config.nonfinite_policy in NONFINITE_POLICIES,
        "nonfinite_policy",
        f"choose one of {', '.join(NONFINITE_POLICIES)}",
    )
    need(config.onednn_threads in ("openmp", "xla"), "onednn_threads", "choose 'openmp' or 'xla'")
    need(config.max_rollbacks >= 0, "max_rollbacks", "must be >= 0")
    need(0.0 < config.rollback_lr_factor < 1.0, "rollback_lr_factor", "must be in (0, 1)")
    need(config.data.prefetch >= 0, "data.prefetch", "must be >= 0")
    need(config.data.resize in ("pad", "resize"), "data.resize", "choose 'pad' or 'resize'")
    need(config.data.channels in (0, 1, 3), "data.channels", "must be 0 (native), 1 or 3")
    need(config.data.resolution >= 0, "data.resolution", "must be >= 0")
    _validate_evals(config, need)


def _validate_mitigations(config: ml_collections.ConfigDict, need) -> None:
    from gan_jax.objectives.augment import parse_policy

    need(config.pack >= 1, "pack", "must be >= 1 (1 = no packing)")
    need(config.unroll_steps >= 0, "unroll_steps", "must be >= 0 (0 = no unrolling)")
    need(0.0 < config.topk_keep <= 1.0, "topk_keep", "is the least fraction of the batch G learns from: in (0, 1]")
    need(0.0 < config.topk_decay <= 1.0, "topk_decay", "is the kept fraction's factor per epoch: in (0, 1]")
    need(config.batch_size % config.pack == 0, "pack", f"must divide the batch size ({config.batch_size})")
    try:
        parse_policy(config.diffaugment)
    except ValueError as e:
        need(False, "diffaugment", str(e))
    group = config.model.get("d_minibatch_std", 0)
    need(group >= 0, "model.d_minibatch_std", "is a group size and must be >= 0 (0 = off)")
    d_batch = config.batch_size // config.pack  # the examples in one D call
    need(
        group == 0 or d_batch % min(group, d_batch) == 0,
        "model.d_minibatch_std",
        f"the group size must divide D's batch (batch_size / pack = {d_batch}) or exceed it",
    )


def _validate_evals(config: ml_collections.ConfigDict, need) -> None:
    from gan_jax.metrics.evaluators import validate_spec

    for name, spec in config.evals.items():
        need(isinstance(spec, ml_collections.ConfigDict), f"evals.{name}", "must be an evaluator spec (ConfigDict)")
        problem = validate_spec(name, spec)
        field = problem.partition(":")[0] if problem else ""
        need(problem is None, f"evals.{name}.{field}", (problem or "").partition(": ")[2])
    need(config.best_mode in ("min", "max"), "best_mode", "choose 'min' or 'max'")
    if config.best_metric:
        name, _, score = config.best_metric.partition("/")
        need(
            name in config.evals and bool(score),
            "best_metric",
            f"must be '<eval name>/<score>' with an eval of config.evals ({', '.join(config.evals) or 'none'})",
        )


def config_get(config: ml_collections.ConfigDict, dotted: str):
    """The value at a dotted path, for error messages (None where the path does not exist)."""
    value = config
    for part in dotted.split("."):
        if not hasattr(value, "keys") or part not in value:
            return None
        value = value[part]
    return value


def load_config(spec: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
    """Loads `path/to/config.py[:arg]` the way `--config=` does, for tests, benchmarks and notebooks, then applies
    `overrides` ({dotted key: value}, a benchmark's `--set`) with `apply_overrides`, so a misspelled key is refused."""
    import importlib.util
    import os

    path, _, arg = spec.partition(":")
    if not os.path.exists(path):
        raise ConfigError(f"config file {path!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"_gan_jax_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
    apply_overrides(config, overrides or {})
    return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> None:
    """Sets {dotted key: value} in `config` (the benchmarks' `--set`), refusing a key the config does not have, which
    `update_from_flattened_dict` would silently add, and a value of the wrong type, with a ConfigError."""
    for key in overrides:
        parent, _, last = key.rpartition(".")
        node = config_get(config, parent) if parent else config
        if not hasattr(node, "keys") or last not in node:
            raise ConfigError(f"--set {key}: the config has no such key")
    try:
        config.update_from_flattened_dict(overrides)
    except TypeError as e:
        raise ConfigError(f"--set: {e}") from None


# Config keys that change only how a trained run is sampled (discriminator rejection sampling), not its training: the
# benchmarks keep one trained state per training setting and score it under each sampling setting in seconds.
SAMPLING_KEYS = ("drs_percentile", "drs_burn_in", "drs_calibrate_steps", "drs_rule")


def split_sampling(overrides: dict | None) -> tuple[dict, dict]:
    """(training changes, sampling changes) of `--set`'s {dotted key: value} overrides: see SAMPLING_KEYS."""
    overrides = overrides or {}
    train = {k: v for k, v in overrides.items() if k not in SAMPLING_KEYS}
    return train, {k: v for k, v in overrides.items() if k in SAMPLING_KEYS}


def add_set_flag(parser: argparse.ArgumentParser, help: str = "a config change (repeatable)") -> None:
    """Gives a benchmark's `parser` the repeatable `--set KEY=VALUE` flag: `dict(args.set)` is {dotted key: value}
    for `load_config` / `apply_overrides`, and a malformed item is argparse's own usage error."""
    parser.add_argument("--set", action="append", default=[], type=override, metavar="KEY=VALUE", help=help)


def override(item: str) -> tuple[str, Any]:
    """One `--set` item -> (dotted key, value), argparse's `type=` for the flag `add_set_flag` adds.

    A value is read as JSON where it parses (numbers, booleans, null, lists), else kept as the string itself.
    """
    import json

    key, sep, value = item.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{item!r}: use KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value
