"""The minimax update: one pure function (state, batch) -> (state, metrics), jit-compiled with the state donated.

Order per step: the first player of the game (the discriminator) takes `n_critic` steps, each on its own slice of the
real batch; then every other player takes one step. A step whose losses or gradients are not finite applies no update
and reports `nonfinite=1`: with `skip_nonfinite` it still advances the step counter and the rng (and counts the skip),
so the run moves past it; without, it leaves the state exactly as it was, so the host can stop or roll back.

Unrolled GAN (Metz et al. 2017), `unroll_steps` = k > 0: every later player's (the generator's) loss is taken against
a copy of the first player (the discriminator) advanced k more steps by its optimizer (`unroll_optimizer`: the same
update, made safe to differentiate, see `optim.make_optimizer`), written with `lax.scan` and differentiated through,
so G is pushed towards samples that D's *reaction* cannot exploit, which discourages collapsing onto the modes D
currently misjudges. The look-ahead steps use G's real batch with fresh latents each, start from D's parameters and
optimizer state after this step's real update, and are then discarded: D's real update is the same as without.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from gan_jax.train.state import TrainState

PyTree = Any
Metrics = dict[str, jax.Array]


# The look-ahead's keys are folded from the player's rng, so unrolling leaves the player's own random stream as it is.
_UNROLL_SALT = 0x5C0

Lookahead = Callable[[dict[str, PyTree], dict[str, PyTree]], tuple[dict[str, PyTree], dict[str, PyTree]]]


def _update_player(
    game,
    tx,
    player,
    nets,
    params,
    model_state,
    opt_state,
    batch,
    rng,
    lr_scale=1.0,
    lookahead: Lookahead | None = None,
    phase=None,
    accum: int = 1,
):
    """One optimizer step for `player` on the networks it owns; returns new params, state, opt state and metrics.

    `lr_scale` multiplies the optimizer's updates, which is the same as multiplying the learning rate for Adam, RMSProp
    and SGD; divergence rollbacks lower it without rebuilding the optimizer or changing its state's structure.
    `lookahead` (params, model state) -> (params, model state) maps the networks the loss is evaluated with (an
    unrolled opponent) and is differentiated through; the model state it returns is used for the loss only.
    `phase` is the game's static phase of this step (see `make_train_step`). `accum` > 1 splits the batch into that
    many micro-batches and steps on the mean of their gradients (a batch larger than fits in memory at once).
    """
    own = {n: params[n] for n in nets}

    def grads_of(model_state, batch, rng):
        def loss_fn(own_params):
            full, states = {**params, **own_params}, model_state
            if lookahead is not None:
                full, states = lookahead(full, model_state)
            return game.player_loss(player, full, states, batch, rng, phase=phase)

        (_, (new_model_state, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(own)
        return grads, {**model_state, **new_model_state}, metrics

    if accum == 1:
        grads, model_state, metrics = grads_of(model_state, batch, rng)
    else:
        # Gradient accumulation: the mean of the gradients of `accum` micro-batches, each a loss on its own slice
        # with its own key; model state (batch statistics, power iterations) advances micro-batch by micro-batch.
        micro = jax.tree.map(lambda a: a.reshape((accum, -1) + a.shape[1:]), batch)

        def one(carry, xs):
            grad_sum, ms = carry
            grads, ms, metrics = grads_of(ms, *xs)
            return (jax.tree.map(jnp.add, grad_sum, grads), ms), metrics

        zeros = jax.tree.map(jnp.zeros_like, own)
        (grad_sum, model_state), metrics = jax.lax.scan(
            one, (zeros, model_state), (micro, jax.random.split(rng, accum)), unroll=True
        )
        grads = jax.tree.map(lambda g: g / accum, grad_sum)
        metrics = jax.tree.map(jnp.mean, metrics)
    updates, opt_state = tx.update(grads, opt_state, own)
    updates = jax.tree.map(lambda u: lr_scale * u, updates)
    own = optax.apply_updates(own, updates)
    metrics = dict(metrics)
    metrics[f"{player}_grad_norm"] = optax.global_norm(grads)
    return {**params, **own}, model_state, opt_state, metrics


def unrolled(game, tx, player, nets, opt_state, batch, rng, steps: int, lr_scale=1.0) -> Lookahead:
    """A look-ahead that advances `player`'s networks `steps` optimizer steps from `opt_state` (Metz et al. 2017).

    The returned function is differentiable in every parameter it is given, the other players' included, since each
    unrolled step's gradient depends on them; its optimizer state is thrown away.
    """
    keys = jax.random.split(rng, steps)

    def lookahead(params, model_state):
        def one_step(carry, key):
            p, ms, opt = carry
            p, ms, opt, _ = _update_player(game, tx, player, nets, p, ms, opt, batch, key, lr_scale)
            return (p, ms, opt), None

        (params, model_state, _), _ = jax.lax.scan(one_step, (params, model_state, opt_state), keys, unroll=True)
        return params, model_state

    return lookahead


# Every `lax.scan` here is fully unrolled (`unroll=True`): XLA:CPU runs convolutions inside a while loop far slower
# than the same ops in straight-line code (SNGAN's default step at batch 16 took 7.0 s with its two critic steps in a
# loop and 0.18 s unrolled), so the loops are written as scans for their structure and compiled as straight-line code.


def make_train_step(
    game,
    optimizers: dict[str, optax.GradientTransformation],
    *,
    n_critic: int = 1,
    ema_decay: float | Callable[[jax.Array], jax.Array] = 0.999,
    inject_nan_at_step: int = -1,
    skip_nonfinite: bool = False,
    unroll_steps: int = 0,
    unroll_optimizer: optax.GradientTransformation | None = None,
    lr_factor: Callable[[jax.Array], jax.Array] | None = None,
    phase: tuple | None = None,
    grad_accum: int = 1,
    ema_start: int = 0,
    g_keep: Callable[[jax.Array], jax.Array] | None = None,
) -> Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, Metrics]]:
    """Builds the pure update step for `game`. The batch holds n_critic * batch_size real examples.

    `unroll_optimizer` advances the first player in the look-ahead (default: its own optimizer); it must take the
    same state and be safe to differentiate through (`optim.make_optimizer(..., differentiable=True)`).
    `lr_factor(step)` multiplies every player's updates on top of `state.lr_scale` (a decay schedule).
    `ema_decay`: a number (warmed up as min(ema_decay, (1 + t) / (10 + t))) or a function of the step.
    `phase`: what `game.phase(step)` returns for the steps this function will run, which lets a game leave out work
    that only some steps do (StyleGAN2's lazy regularization) at trace time; None makes the game decide from the
    traced state instead (with `lax.cond`, which XLA:CPU runs far slower than straight-line code, so the trainer
    compiles one step per phase; None is for vmapped or scanned uses, where a cond becomes a select anyway).
    `grad_accum`: every player's step averages the gradients of this many micro-batches of its batch.
    `ema_start`: before this step the EMA is a copy of the sampler's parameters (BigGAN's `ema_start`).
    `g_keep(step)`: top-k training (Sinha et al. 2020), the fraction of its batch's samples, the ones D rates most
    real, that every later player (the generator) learns from; it reaches the game as the batch's "g_keep" (one value
    per example, so that gradient accumulation splits it like the rest of the batch).
    """
    (first, first_nets), *others = game.players

    def train_step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, Metrics]:
        rng, step_rng = jax.random.split(state.rng)
        lr_scale = state.lr_scale if lr_factor is None else state.lr_scale * lr_factor(state.step)
        if inject_nan_at_step >= 0:
            # Test hook: a NaN that flows through losses and gradients at that step, as a divergence would, unless a
            # rollback has lowered the learning rate (so a rollback can be seen to cure it).
            hit = (state.step == inject_nan_at_step) & (state.lr_scale >= 1.0)
            batch = dict(batch, x=batch["x"] * jnp.where(hit, jnp.nan, 1.0))
        # (n_critic, B, ...) slices of the real batch for the critic's steps.
        sliced = jax.tree.map(lambda a: a.reshape((n_critic, -1) + a.shape[1:]), batch)
        critic_rngs = jax.random.split(jax.random.fold_in(step_rng, 0), n_critic)

        def critic_step(carry, xs):
            params, model_state, opt_state = carry
            sub_batch, key = xs
            params, model_state, opt_state, metrics = _update_player(
                game,
                optimizers[first],
                first,
                first_nets,
                params,
                model_state,
                opt_state,
                sub_batch,
                key,
                lr_scale,
                phase=phase,
                accum=grad_accum,
            )
            return (params, model_state, opt_state), metrics

        carry = (state.params, state.model_state, state.opt_state[first])
        if n_critic == 1:
            carry, metrics = critic_step(carry, jax.tree.map(lambda a: a[0], (sliced, critic_rngs)))
        else:
            carry, metrics = jax.lax.scan(critic_step, carry, (sliced, critic_rngs), unroll=True)
            metrics = jax.tree.map(jnp.mean, metrics)
        params, model_state, first_opt = carry
        opt_state = dict(state.opt_state, **{first: first_opt})

        last_batch = jax.tree.map(lambda a: a[-1], sliced)
        player_batch = last_batch
        if g_keep is not None:
            n = jax.tree.leaves(last_batch)[0].shape[0]
            player_batch = {**last_batch, "g_keep": jnp.full((n,), g_keep(state.step), jnp.float32)}
        for i, (player, nets) in enumerate(others, start=1):
            player_rng = jax.random.fold_in(step_rng, i)
            lookahead = None
            if unroll_steps > 0:
                unroll_rng = jax.random.fold_in(player_rng, _UNROLL_SALT)
                d_tx, d_opt = unroll_optimizer or optimizers[first], opt_state[first]
                lookahead = unrolled(
                    game, d_tx, first, first_nets, d_opt, last_batch, unroll_rng, unroll_steps, lr_scale
                )
            params, model_state, opt_state[player], player_metrics = _update_player(
                game,
                optimizers[player],
                player,
                nets,
                params,
                model_state,
                opt_state[player],
                player_batch,
                player_rng,
                lr_scale,
                lookahead,
                phase=phase,
                accum=grad_accum,
            )
            metrics.update(player_metrics)

        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in metrics.values()]))
        # Early steps average over fewer updates, so the EMA is not dominated by the random initialisation.
        if callable(ema_decay):
            decay = ema_decay(state.step)
        else:
            # Counted from ema_start: before it the average is a copy of the parameters (decay 0).
            t = (state.step - ema_start).astype(jnp.float32)
            decay = jnp.where(t < 0, 0.0, jnp.minimum(ema_decay, (1.0 + t) / (10.0 + t)))
        ema = lambda avg, new: decay * avg + (1.0 - decay) * new  # noqa: E731
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            model_state=model_state,
            opt_state=opt_state,
            ema_params=jax.tree.map(ema, state.ema_params, params[game.sampler]),
            ema_state=jax.tree.map(ema, state.ema_state, model_state[game.sampler]),
            rng=rng,
        )
        # A non-finite step applies no update. Skipping moves past it (counted); otherwise nothing changes at all.
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        fallback = state
        if skip_nonfinite:
            fallback = state.replace(step=state.step + 1, rng=rng, skipped_steps=state.skipped_steps + 1)
        new_state = jax.tree.map(keep, new_state, fallback)
        for name in ("generator", "discriminator"):
            if name in params:
                metrics[f"{name}_param_norm"] = optax.global_norm(new_state.params[name])
        metrics["nonfinite"] = (~finite).astype(jnp.float32)
        return new_state, metrics

    return train_step
