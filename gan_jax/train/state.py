"""The training state: one pytree holding everything that decides the future of a run.

Saving this pytree (plus the step-indexed data pipeline, which needs only `step`) is enough for a resumed run to end
bit-identical to an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

PyTree = Any


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: generator updates done so far
    params: dict[str, PyTree]  # network name -> parameters
    model_state: dict[str, PyTree]  # network name -> non-parameter collections (batch statistics)
    opt_state: dict[str, PyTree]  # player name -> optax state
    ema_params: PyTree  # exponential moving average of the sampler's parameters
    ema_state: PyTree  # ... and of its non-parameter state
    rng: jax.Array  # raw uint32 PRNG key, split once per step
    lr_scale: jax.Array  # float32 multiplier of every player's updates; lowered by each divergence rollback
    skipped_steps: jax.Array  # int32: non-finite steps skipped under nonfinite_policy="skip"
    rollbacks: jax.Array  # int32: divergence rollbacks done so far


def create_train_state(game, optimizers: dict[str, optax.GradientTransformation], rng: jax.Array, example: jax.Array):
    """A fresh state for `game`; `example` is one batch of real data (only its shape matters)."""
    init_rng, rng = jax.random.split(rng)
    params, model_state = game.init(init_rng, example)
    opt_state = {player: optimizers[player].init({n: params[n] for n in nets}) for player, nets in game.players}
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        model_state=model_state,
        opt_state=opt_state,
        ema_params=params[game.sampler],
        ema_state=model_state[game.sampler],
        rng=rng,
        lr_scale=jnp.ones((), jnp.float32),
        skipped_steps=jnp.zeros((), jnp.int32),
        rollbacks=jnp.zeros((), jnp.int32),
    )
