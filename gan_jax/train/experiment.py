"""Everything a run is built from, assembled once from the config: data, game, optimizers, mesh, checkpoints.

Training, evaluation and sampling all start here, so they agree on how a config becomes networks and how a workdir's
checkpoint becomes a state.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from gan_jax import data as data_lib
from gan_jax.config import ConfigError, validate
from gan_jax.env import quiet_library_logs
from gan_jax.models import build_networks
from gan_jax.objectives import get_loss
from gan_jax.objectives.game import UnconditionalGAN
from gan_jax.train import parallel
from gan_jax.train.checkpoint import Checkpoints, model_signature
from gan_jax.train.optim import lr_decay_factor, make_optimizer, make_optimizers
from gan_jax.train.state import TrainState, create_train_state
from gan_jax.train.step import make_train_step
from gan_jax.train.visualize import to_uint8

PyTree = Any


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

    @property
    def state_sharding(self):
        return parallel.replicated(self.mesh)

    @functools.cached_property
    def sample_fn(self):
        """jit(params, state, z) -> samples of the sampler network in inference mode; compiled once per run."""
        return jax.jit(lambda params, state, z: self.game.generate(params, state, z)[0])

    def generate(self, state: TrainState, num_samples: int, seed: int) -> np.ndarray:
        """`num_samples` samples of the EMA generator from latents of `seed`: uint8 NHWC images or float32 points.

        Latents are drawn per batch from fold_in(seed, offset), so the first k samples do not depend on num_samples.
        """
        batch = self.config.batch_size
        rng = jax.random.PRNGKey(seed)
        out = []
        for i in range(0, num_samples, batch):
            z = self.game.sample_latents(jax.random.fold_in(rng, i), batch)
            out.append(np.asarray(self.sample_fn(state.ema_params, state.ema_state, z)))
        x = np.concatenate(out)[:num_samples]
        return to_uint8(x) if self.dataset.kind == "image" else x.astype(np.float32)

    def make_train_step(self):
        """The config's pure, un-jitted update (state, batch) -> (state, metrics); the caller jits it (the loop with
        shardings and donation, benchmarks vmapped over seeds), so every user steps exactly the same way."""
        config = self.config
        return make_train_step(
            self.game,
            self.optimizers,
            n_critic=config.n_critic,
            ema_decay=config.ema_decay,
            inject_nan_at_step=config.debug.inject_nan_at_step,
            skip_nonfinite=config.nonfinite_policy == "skip",
            unroll_steps=config.unroll_steps,
            unroll_optimizer=make_optimizer(config.optim.d, differentiable=True),
            lr_factor=lr_decay_factor(config),
        )

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


def _state_initializer(game, optimizers, batch_size: int, data_shape: tuple[int, ...]):
    """rng -> a fresh TrainState; networks are initialized from a zero batch, since only its shape matters."""
    example = jnp.zeros((batch_size,) + tuple(data_shape), jnp.float32)
    return functools.partial(create_train_state, game, optimizers, example=example)


def build_game(config: ml_collections.ConfigDict, data_shape: tuple[int, ...]) -> UnconditionalGAN:
    if config.diffaugment and len(data_shape) != 3:
        raise ConfigError(
            f"config.diffaugment={config.diffaugment!r}: DiffAugment needs images (H, W, C), "
            f"not data of shape {tuple(data_shape)}"
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
    game = build_game(config, dataset.shape)
    optimizers = make_optimizers(config)
    mesh = parallel.make_mesh()
    sharding = parallel.replicated(mesh)
    init = _state_initializer(game, optimizers, config.batch_size, dataset.shape)
    abstract = jax.eval_shape(init, jax.ShapeDtypeStruct((2,), jnp.uint32))
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), abstract)
    checkpoints = None
    if workdir is not None:
        checkpoints = Checkpoints(
            os.path.join(workdir, "checkpoints"),
            model_signature(config.model.name, dataset.shape, abstract),
            keep=config.keep_checkpoints,
            async_save=config.async_checkpoints,
        )
    return Experiment(config, workdir, dataset, game, optimizers, mesh, abstract, checkpoints)
