"""Everything a run is built from, assembled once from the config: data, game, optimizers, mesh, checkpoints.

Training, evaluation and sampling all start here, so they agree on how a config becomes networks and how a workdir's
checkpoint becomes a state.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from gan_jax import data as data_lib
from gan_jax.config import ConfigError, config_get, validate
from gan_jax.env import quiet_library_logs
from gan_jax.layers import onednn
from gan_jax.models import build_networks
from gan_jax.objectives import get_loss
from gan_jax.objectives.game import UnconditionalGAN
from gan_jax.objectives.rejection import rejection_sample
from gan_jax.train import parallel
from gan_jax.train.checkpoint import Checkpoints, model_signature
from gan_jax.train.optim import ema_decay_schedule, lr_decay_factor, make_optimizer, make_optimizers
from gan_jax.train.state import TrainState, create_train_state
from gan_jax.train.step import make_train_step
from gan_jax.train.visualize import to_uint8

PyTree = Any
_SAMPLING_SALT = 0x5A3  # folded into a sampling seed's key for the game's preparation (standing statistics)
_REJECTION_SALT = 0xD25  # ... and for the uniforms of discriminator rejection sampling
_CALIBRATION_SALT = 0xCA1  # ... and for the latents that calibrate its D


@dataclasses.dataclass
class Experiment:
    config: ml_collections.ConfigDict
    workdir: str | None
    dataset: Any
    game: UnconditionalGAN
    optimizers: dict[str, optax.GradientTransformation]
    mesh: Mesh
    abstract_state: TrainState
    checkpoints: Checkpoints | None  # None when built without a workdir (`setup(..., workdir=None)`)
    _compiled_steps: dict = dataclasses.field(default_factory=dict, repr=False)
    last_rejection: dict | None = dataclasses.field(default=None, repr=False)  # see `_rejection_sample`

    @property
    def state_sharding(self):
        return parallel.replicated(self.mesh)

    @functools.cached_property
    def sample_fn(self):
        """jit(params, state, z, labels=None) -> samples of the sampler network in inference mode (labels: for a
        class-conditional game; None gives its default labels); compiled once per run."""

        def sample(params, state, z, labels=None):
            kwargs = {} if labels is None else {"labels": labels}
            return self.game.generate(params, state, z, **kwargs)[0]

        return jax.jit(sample)

    @functools.cached_property
    def critic_fn(self):
        """jit(params, state, x) -> D's logits, one per example (discriminator rejection sampling)."""
        return jax.jit(lambda params, state, x: self.game.critic(params, state, x).reshape(x.shape[0]))

    @property
    def num_classes(self) -> int:
        """The game's number of classes: > 0 for a class-conditional model, whose samples take labels."""
        return getattr(self.game, "num_classes", 0)

    def generate(self, state: TrainState, num_samples: int, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
        """`num_samples` samples of the EMA generator from latents of `seed`: uint8 NHWC images or float32 points.

        Latents are drawn per batch from fold_in(seed, offset), so the first k samples do not depend on num_samples.
        `labels` (int, one per sample) picks the classes of a class-conditional model; None gives the classes in
        turn (0, 1, ..., C-1, 0, ...), so every class is equally represented. Games with sampling options (BigGAN's
        truncation and standing statistics) apply them here.
        """
        batch = self.config.batch_size
        rng = jax.random.PRNGKey(seed)
        if labels is not None and not self.num_classes:
            raise ValueError("labels were given, but this model is not class-conditional")
        if self.num_classes:
            labels = np.arange(num_samples) % self.num_classes if labels is None else np.asarray(labels, np.int32)
            if labels.shape != (num_samples,) or labels.min(initial=0) < 0 or labels.max(initial=0) >= self.num_classes:
                raise ValueError(
                    f"labels must be {num_samples} integers in 0..{self.num_classes - 1}, got shape {labels.shape}"
                )
        params, model_state = state.ema_params, state.ema_state
        if hasattr(self.game, "sampling_state"):
            model_state = self.game.sampling_state(params, model_state, jax.random.fold_in(rng, _SAMPLING_SALT), batch)
        latents = getattr(self.game, "sampling_latents", self.game.sample_latents)
        if self.config.drs_percentile > 0:
            x = self._rejection_sample(state, params, model_state, latents, rng, num_samples)
        else:
            out = []
            for i in range(0, num_samples, batch):
                z = latents(jax.random.fold_in(rng, i), batch)
                y = None
                if labels is not None:  # the last batch is padded to the full size, so one compilation serves all
                    y = np.resize(labels[i : i + batch], batch) if i + batch > num_samples else labels[i : i + batch]
                out.append(np.asarray(self.sample_fn(params, model_state, z, y)))
            x = np.concatenate(out)[:num_samples]
        return to_uint8(x) if self.dataset.kind == "image" else x.astype(np.float32)

    def _rejection_sample(
        self,
        state: TrainState,
        params: PyTree,
        model_state: PyTree,
        latents: Callable[[jax.Array, int], jax.Array],
        rng: jax.Array,
        num_samples: int,
    ) -> np.ndarray:
        """`generate` under discriminator rejection sampling: candidates of the sampler judged by the run's D, as
        trained or calibrated (`_calibrated_critic`; see gan_jax/objectives/rejection.py). Candidate batch i has the
        latents of `generate`'s batch offset i * batch and its own uniforms, so a seed fixes the samples. The summary
        of the last call is kept in `last_rejection` (acceptance rate, M, gamma, candidates, and D's calibration loss
        before and after when calibrated), for reports."""
        batch, config = self.config.batch_size, self.config
        uniform_rng = jax.random.fold_in(rng, _REJECTION_SALT)
        critic_params, calibration = self._calibrated_critic(state, params, model_state, latents, rng)

        def draw(i: int) -> tuple[np.ndarray, np.ndarray]:
            x = self.sample_fn(params, model_state, latents(jax.random.fold_in(rng, i * batch), batch))
            return np.asarray(x), np.asarray(self.critic_fn(critic_params, state.model_state, x))

        x, summary = rejection_sample(
            draw,
            lambda i: np.asarray(jax.random.uniform(jax.random.fold_in(uniform_rng, i), (batch,))),
            num_samples,
            burn_in_batches=-(-config.drs_burn_in // batch),
            percentile=config.drs_percentile,
            max_batches=max(100, -(-100 * num_samples // batch)),  # room for an acceptance rate down to 1%
            hard=config.drs_rule == "hard",
        )
        self.last_rejection = {**summary, **calibration}
        return x

    def _calibrated_critic(
        self,
        state: TrainState,
        params: PyTree,
        model_state: PyTree,
        latents: Callable[[jax.Array, int], jax.Array],
        rng: jax.Array,
    ) -> tuple[PyTree, dict]:
        """The parameters D judges candidates with, and a summary: the trained ones, or with `drs_calibrate_steps` =
        K > 0 those after K Adam steps (config.optim.d, constant rate) of `game.critic_loss` on real batches 0..K-1
        against batches of the sampler itself (the EMA generator with its sampling state, latents from the seed), so
        that D approaches the optimal D for the distribution being corrected. A seed fixes the result."""
        steps, batch = self.config.drs_calibrate_steps, self.config.batch_size
        if not steps:
            return state.params, {}
        optimizer = make_optimizer(self.config.optim.d)
        d_state, game = state.model_state, self.game

        @jax.jit
        def update(d_params: PyTree, opt_state: PyTree, g: tuple[PyTree, PyTree], real: jax.Array, key: jax.Array):
            fake = game.generate(*g, latents(key, batch))[0]
            loss_fn = lambda d: game.critic_loss({"discriminator": d}, d_state, real, fake)  # noqa: E731
            loss, grads = jax.value_and_grad(loss_fn)(d_params)
            updates, opt_state = optimizer.update(grads, opt_state, d_params)
            return optax.apply_updates(d_params, updates), opt_state, loss

        d_params = state.params["discriminator"]
        opt_state, key = optimizer.init(d_params), jax.random.fold_in(rng, _CALIBRATION_SALT)
        losses = []
        sampler = (params, model_state)
        for i in range(steps):
            real = jnp.asarray(self.dataset.batch(i, batch)["x"])
            d_params, opt_state, loss = update(d_params, opt_state, sampler, real, jax.random.fold_in(key, i))
            losses.append(loss)
        losses = np.asarray(jax.device_get(losses))
        window = max(1, min(100, steps // 10))  # the loss before and after, each averaged over a few steps
        summary = {
            "calibrate_steps": steps,
            "calibrate_loss_first": float(losses[:window].mean()),
            "calibrate_loss_last": float(losses[-window:].mean()),
        }
        return {**state.params, "discriminator": d_params}, summary

    def make_train_step(self, phase: tuple | None = None):
        """The config's pure, un-jitted update (state, batch) -> (state, metrics); the caller jits it (the loop with
        shardings and donation, benchmarks vmapped over seeds), so every user steps exactly the same way.
        `phase`: the game's static phase of the steps it will run (`game.phase(step)`), or None to decide in-graph."""
        config = self.config
        step = make_train_step(
            self.game,
            self.optimizers,
            n_critic=config.n_critic,
            ema_decay=ema_decay_schedule(config),
            inject_nan_at_step=config.debug.inject_nan_at_step,
            skip_nonfinite=config.nonfinite_policy == "skip",
            unroll_steps=config.unroll_steps,
            unroll_optimizer=make_optimizer(config.optim.d, differentiable=True),
            lr_factor=lr_decay_factor(config),
            phase=phase,
            grad_accum=config.grad_accum,
            ema_start=config.ema_start,
            g_keep=top_k_schedule(config, self.dataset.steps_per_epoch(config.batch_size * config.n_critic)),
        )

        def threaded_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
            with onednn.threads(config.onednn_threads):  # a trace-time setting of the oneDNN convolutions
                return step(state, batch)

        return threaded_step

    def train_step(self, step: int):
        """The jitted update for training step `step` (0-based: the state's step before it), state donated, compiled
        once per phase of the game (one for most games; three for StyleGAN2's lazy regularization)."""
        phase = self.game.phase(step)
        if phase not in self._compiled_steps:
            replicated = parallel.replicated(self.mesh)
            self._compiled_steps[phase] = jax.jit(
                self.make_train_step(phase),
                in_shardings=(replicated, parallel.batch_sharding(self.mesh)),
                out_shardings=(replicated, replicated),
                donate_argnums=0,
            )
        return self._compiled_steps[phase]

    @property
    def initializer(self):
        """rng -> a fresh TrainState (pure: `jax.vmap` over keys gives many seeds' states at once)."""
        return _state_initializer(self.game, self.optimizers, self.config.batch_size, self.dataset.shape)

    def init_state(self) -> TrainState:
        """A fresh state, created directly with its replicated sharding."""
        return jax.jit(self.initializer, out_shardings=self.state_sharding)(jax.random.PRNGKey(self.config.seed))

    def restore_or_init(self) -> tuple[TrainState, bool]:
        """(state, resumed): the newest good checkpoint in the workdir, else a fresh state."""
        if self.checkpoints is None:
            raise ValueError("this experiment was set up without a workdir: it has no checkpoints to restore")
        restored = self.checkpoints.restore_latest(self.abstract_state)
        if restored is not None:
            return restored, True
        return self.init_state(), False


def top_k_schedule(config: ml_collections.ConfigDict, steps_per_epoch: float):
    """step -> the fraction of its batch G learns from under top-k training (Sinha et al. 2020):
    max(topk_keep, topk_decay ** epoch), epochs counted in steps as the data pipeline does; None when off."""
    if config.topk_keep >= 1.0:
        return None
    keep, decay, per_epoch = config.topk_keep, config.topk_decay, max(steps_per_epoch, 1e-9)

    def fraction(step: jax.Array) -> jax.Array:
        return jnp.maximum(keep, decay ** (step.astype(jnp.float32) / per_epoch))

    return fraction


def _state_initializer(game, optimizers, batch_size: int, data_shape: tuple[int, ...]):
    """rng -> a fresh TrainState; networks are initialized from a zero batch, since only its shape matters."""
    example = jnp.zeros((batch_size,) + tuple(data_shape), jnp.float32)
    return functools.partial(create_train_state, game, optimizers, example=example)


def build_game(config: ml_collections.ConfigDict, data_shape: tuple[int, ...], num_classes: int | None = None):
    """The game of `config.model.name`: StyleGAN2's own objective for "stylegan2", the generic one otherwise.
    `num_classes` is the dataset's (None: unknown, not checked)."""
    if config.model.name == "stylegan2":
        return _stylegan2_game(config, data_shape, num_classes)
    if config.model.name in ("sngan", "biggan"):
        return _conditional_game(config, data_shape, num_classes)
    if config.diffaugment and len(data_shape) != 3:
        raise ConfigError(
            f"config.diffaugment={config.diffaugment!r}: DiffAugment needs images (H, W, C), "
            f"not data of shape {tuple(data_shape)}"
        )
    if config.drs_percentile and config.pack > 1:
        raise ConfigError(
            f"config.drs_percentile={config.drs_percentile!r}: rejection sampling needs D's verdict on each sample, "
            f"and with config.pack={config.pack} D judges packs"
        )
    generator, discriminator = build_networks(config.model, data_shape)
    return UnconditionalGAN(
        generator=generator,
        discriminator=discriminator,
        loss=get_loss(config.loss),
        z_dim=config.model.z_dim,
        z_dist=config.model.z_dist,
        gp_weight=config.gp_weight,
        r1_gamma=config.r1_gamma,
        pack=config.pack,
        diffaugment=config.diffaugment,
        standing_stats=config.standing_stats,
    )


def _refuse(config: ml_collections.ConfigDict, why: str, supported: dict[str, bool]) -> None:
    """A ConfigError naming the first setting a game cannot honour: `supported` maps each field ("pack",
    "model.z_dist") to whether its value is one the game supports."""
    for field, ok in supported.items():
        if not ok:
            raise ConfigError(f"config.{field}={config_get(config, field)!r}: {why}")


def _stylegan2_game(config: ml_collections.ConfigDict, data_shape: tuple[int, ...], num_classes: int | None):
    """StyleGAN2's game from `config.stylegan` (see configs/stylegan.py); fields it cannot honour are refused."""
    from gan_jax.objectives.ada import parse_groups
    from gan_jax.objectives.stylegan2 import AUGMENTS, StyleGAN2Game

    s = config.get("stylegan")
    if s is None:
        raise ConfigError(
            "config.stylegan: model 'stylegan2' needs its objective's settings; start from configs/stylegan.py"
        )

    def need(cond: bool, field: str, msg: str) -> None:
        if not cond:
            raise ConfigError(f"config.{field}: {msg}")

    _refuse(
        config,
        "StyleGAN2's objective supports only its own setting here (see configs/stylegan.py)",
        {
            "loss": config.loss == "non_saturating",
            "gp_weight": config.gp_weight == 0,
            "pack": config.pack == 1,
            "unroll_steps": config.unroll_steps == 0,
            "n_critic": config.n_critic == 1,
            "topk_keep": config.topk_keep == 1.0,
            "drs_percentile": config.drs_percentile == 0,
            "grad_accum": config.grad_accum == 1,  # its step counters count player steps
            "model.z_dist": config.model.z_dist == "normal",
        },
    )
    need(s.augment in AUGMENTS, f"stylegan.augment={s.augment!r}", f"choose one of {', '.join(AUGMENTS)}")
    need(
        not config.diffaugment or s.augment == "diffaugment",
        f"diffaugment={config.diffaugment!r}",
        "is StyleGAN2's augmentation policy only with stylegan.augment='diffaugment'",
    )
    try:
        parse_groups(s.ada_groups)
    except ValueError as e:
        need(False, f"stylegan.ada_groups={s.ada_groups!r}", str(e))
    for field in ("r1_interval", "pl_interval", "pl_batch_shrink", "ada_interval"):
        need(s[field] >= 1, f"stylegan.{field}={s[field]!r}", "must be >= 1")
    need(s.pl_weight >= 0, f"stylegan.pl_weight={s.pl_weight!r}", "must be >= 0")
    need(0 <= s.style_mixing_prob <= 1, f"stylegan.style_mixing_prob={s.style_mixing_prob!r}", "must be in [0, 1]")
    need(0 <= s.ada_p_init <= 1, f"stylegan.ada_p_init={s.ada_p_init!r}", "must be in [0, 1]")
    need(s.ada_kimg > 0, f"stylegan.ada_kimg={s.ada_kimg!r}", "must be positive")
    classes = _check_classes(config, num_classes)
    group = config.model.get("d_mbstd_group", 4)
    need(
        group == 0 or config.batch_size % min(group, config.batch_size) == 0,
        f"model.d_mbstd_group={group}",
        f"the group size must divide the batch ({config.batch_size}) or exceed it",
    )
    need(
        s.pl_weight == 0 or config.batch_size // s.pl_batch_shrink >= 1,
        f"stylegan.pl_batch_shrink={s.pl_batch_shrink}",
        f"leaves no examples of the batch of {config.batch_size}",
    )
    generator, discriminator = build_networks(config.model, data_shape)
    return StyleGAN2Game(
        generator=generator,
        discriminator=discriminator,
        z_dim=config.model.z_dim,
        num_classes=classes,
        r1_gamma=config.r1_gamma,
        r1_interval=s.r1_interval,
        pl_weight=s.pl_weight,
        pl_interval=s.pl_interval,
        pl_decay=s.pl_decay,
        pl_batch_shrink=s.pl_batch_shrink,
        style_mixing_prob=s.style_mixing_prob,
        augment=s.augment,
        diffaugment_policy=config.diffaugment or "color,translation,cutout",
        ada_groups=s.ada_groups,
        ada_target=s.ada_target,
        ada_interval=s.ada_interval,
        ada_kimg=s.ada_kimg,
        ada_p_init=s.ada_p_init,
    )


def _check_classes(config: ml_collections.ConfigDict, num_classes: int | None) -> int:
    """config.model.num_classes, checked against the dataset's `num_classes` (None: unknown, not checked)."""
    classes = config.model.get("num_classes", 0)
    if classes and num_classes is not None:
        if num_classes <= 0:
            raise ConfigError(
                f"config.model.num_classes={classes}: class conditioning needs a labelled dataset; "
                f"{config.data.name!r} has no labels"
            )
        if classes < num_classes:
            raise ConfigError(f"config.model.num_classes={classes}: the dataset has {num_classes} classes")
    return classes


def _conditional_game(config: ml_collections.ConfigDict, data_shape: tuple[int, ...], num_classes: int | None):
    """SNGAN's and BigGAN's class-conditional game from `config.conditional` (see configs/biggan.py)."""
    from gan_jax.objectives.conditional import ConditionalGAN

    c = config.get("conditional")
    if c is None:
        raise ConfigError(
            f"config.conditional: model {config.model.name!r} needs the conditional game's settings; start from "
            f"configs/{config.model.name}.py"
        )
    _refuse(
        config,
        "the conditional game (SNGAN, BigGAN) supports only the default here",
        {
            "pack": config.pack == 1,
            "unroll_steps": config.unroll_steps == 0,
            "gp_weight": config.gp_weight == 0,
            "topk_keep": config.topk_keep == 1.0,
            "drs_percentile": config.drs_percentile == 0,
            "r1_gamma": config.r1_gamma == 0,
            "model.z_dist": config.model.z_dist == "normal",
        },
    )
    for field in ("ortho_weight", "truncation"):
        if c[field] < 0:
            raise ConfigError(f"config.conditional.{field}={c[field]!r}: must be >= 0")
    classes = _check_classes(config, num_classes)
    generator, discriminator = build_networks(config.model, data_shape)
    return ConditionalGAN(
        generator=generator,
        discriminator=discriminator,
        loss=get_loss(config.loss),
        z_dim=config.model.z_dim,
        num_classes=classes,
        ortho_weight=c.ortho_weight,
        diffaugment=config.diffaugment,
        truncation=c.truncation,
        standing_stats=config.standing_stats,
    )


def setup(config: ml_collections.ConfigDict, workdir: str | None) -> Experiment:
    """Validates `config` and builds its experiment; `workdir=None` builds one without checkpoints (in-memory runs)."""
    quiet_library_logs()
    validate(config, jax.device_count())
    try:
        dataset = data_lib.get_dataset(config.data, seed=config.seed)
    except data_lib.DatasetNotFoundError:
        raise
    except ValueError as e:  # the data layer names the field (config.data.<field>=...)
        raise ConfigError(str(e)) from e
    game = build_game(config, dataset.shape, dataset.num_classes)
    optimizers = make_optimizers(config)
    mesh = parallel.make_mesh()
    sharding = parallel.replicated(mesh)
    init = _state_initializer(game, optimizers, config.batch_size, dataset.shape)
    abstract = jax.eval_shape(init, jax.ShapeDtypeStruct((2,), jnp.uint32))
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), abstract)
    if config.standing_stats and "batch_stats" not in abstract.ema_state:  # StyleGAN2, the MLP G without BN
        hint = " (set model.g_batch_norm=True to give it one)" if config.model.name == "mlp" else ""
        raise ConfigError(
            f"config.standing_stats={config.standing_stats}: the {config.model.name} generator has no batch norm{hint}"
        )
    checkpoints = None
    if workdir is not None:
        checkpoints = Checkpoints(
            os.path.join(workdir, "checkpoints"),
            model_signature(config.model.name, dataset.shape, abstract),
            keep=config.keep_checkpoints,
            async_save=config.async_checkpoints,
        )
    return Experiment(config, workdir, dataset, game, optimizers, mesh, abstract, checkpoints)
