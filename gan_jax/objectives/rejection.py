"""Discriminator rejection sampling (DRS; Azadi et al. 2019, "Discriminator Rejection Sampling", Algorithm 1).

Why: a generator that is a continuous map of a unimodal latent must put some mass between the modes of the data
(the "bridges" of the 2-D grid, the blends between digits), and training only narrows those regions. At the optimum
of the standard GAN loss D's logit is log p_data(x) / p_g(x), so rejection sampling with acceptance
p_data / (M p_g) = exp(logit - max logit) turns G's distribution into the data's where D is right, at the price of
drawing more candidates. It needs no retraining: the trained D of the same run is the critic.

As in the paper, the exact acceptance exp(logit - M) is replaced by sigmoid(F(x) - gamma) with
F(x) = d - log(1 - exp(d - eps)), d = logit - M: F is the logit of exp(d), so gamma = 0 is the exact rule, and a larger
gamma accepts fewer samples. Here M and gamma come once from a burn-in of candidates (M their largest logit, gamma
the `percentile`-th percentile of their F), so the acceptance rule is fixed before sampling and a seed fixes the
samples; the paper updates M during sampling and takes gamma per batch.

`drs_rule="hard"` replaces the sigmoid with its zero-temperature limit: a sample is kept if and only if F(x) >= gamma,
that is, if D's logit is at least the burn-in's `percentile`-th percentile. Why: the soft rule rejects everywhere in
proportion to D's logit, so a small offset of D's logit between modes (D is not optimal) becomes a difference of the
modes' acceptance rates, and the kept samples are less evenly spread over the modes than G's (on the 2-D grid, the
reverse KL rises from 0.008 to 0.02-0.06 while the share of high-quality samples rises). A low threshold rejects
only what D ranks lowest, the bridges between modes, and keeps every sample D ranks above it, whatever its mode's
offset: on the grid (three training seeds, README) p = 3 took the high-quality share from 96.2% to 98.9% with
reverse KL 0.007, where the soft rule at p = 25 gave 98.2% and 0.023. A threshold above the bridges' share cuts into
the mode D rates lowest (p = 8 lost a mode), so p must stay small. It is a filter, not the exact rule: it does not
reweight G's distribution where D's logit is high.

The rule is exact only for the optimal D of the G being sampled. The D at the end of training is not that: it was
trained against a moving G (and sampling uses G's EMA), and penalties such as R1 keep it smooth, so on a narrow mode
its logit barely separates a sample on the mode from one just off it. `drs_calibrate_steps` trains a copy of D
further against the fixed sampler with the plain classification loss first (`Experiment._calibrated_critic`); the
paper calibrates a fine-tuned last layer on held-out data instead, with the same aim.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

EPS = 1e-6  # keeps log(1 - exp(d - eps)) finite at d = 0 (the paper's epsilon)


def drs_scores(logits: jax.Array, max_logit: jax.Array | float) -> jax.Array:
    """F(x) of every sample: the logit of min(exp(logit - M), 1 - eps). Larger means more like the data."""
    d = jnp.minimum(logits - max_logit, 0.0)  # a logit above the burn-in's maximum is accepted as surely as M
    return d - jnp.log1p(-jnp.exp(d - EPS))


@dataclasses.dataclass(frozen=True)
class RejectionRule:
    """The fixed acceptance rule of one sampling call: sigmoid(F(x; max_logit) - gamma), or with `hard` the step
    function F(x; max_logit) >= gamma."""

    max_logit: float
    gamma: float
    hard: bool = False

    @classmethod
    def from_burn_in(cls, logits: np.ndarray, percentile: float, hard: bool = False) -> RejectionRule:
        """M = the largest burn-in logit; gamma = the `percentile`-th percentile of the burn-in's F values."""
        logits = np.asarray(logits, np.float64).reshape(-1)
        if logits.size == 0 or not np.all(np.isfinite(logits)):
            raise ValueError("discriminator rejection sampling: the burn-in's logits must be finite and non-empty")
        max_logit = float(logits.max())
        gamma = float(np.percentile(np.asarray(drs_scores(jnp.asarray(logits), max_logit)), percentile))
        return cls(max_logit, gamma, hard)

    def accept_prob(self, logits: jax.Array) -> jax.Array:
        """The probability of keeping each sample (exactly 0 or 1 with `hard`)."""
        f = drs_scores(logits, self.max_logit)
        if self.hard:
            return (f >= self.gamma).astype(f.dtype)
        return jax.nn.sigmoid(f - self.gamma)


def rejection_sample(
    draw: Callable[[int], tuple[np.ndarray, np.ndarray]],
    uniforms: Callable[[int], np.ndarray],
    num_samples: int,
    burn_in_batches: int,
    percentile: float,
    max_batches: int,
    hard: bool = False,
) -> tuple[np.ndarray, dict]:
    """`num_samples` samples kept by DRS, and a summary (acceptance rate, M, gamma, candidates drawn).

    draw(i) -> (samples, D logits) of candidate batch i; uniforms(i) -> one U(0, 1) per sample of batch i. Batches
    0 .. burn_in_batches-1 are the burn-in (they set the rule and are not kept), so the samples are a function of the
    seeds behind `draw` and `uniforms` alone, and the first k do not depend on num_samples. Raises RuntimeError when
    `max_batches` batches do not give enough samples (D rejects nearly everything: a D far from its optimum).
    `hard` selects the step-function rule (see the module's docstring).
    """
    burn = [np.asarray(draw(i)[1]) for i in range(burn_in_batches)]
    rule = RejectionRule.from_burn_in(np.concatenate(burn), percentile, hard)
    kept, count, drawn, i = [], 0, 0, burn_in_batches
    while count < num_samples:
        if i >= burn_in_batches + max_batches:
            raise RuntimeError(
                f"discriminator rejection sampling kept {count} of {drawn} candidates ({max_batches} batches), "
                f"fewer than the {num_samples} asked for: lower config.drs_percentile"
            )
        x, logits = draw(i)
        keep = np.asarray(uniforms(i)) < np.asarray(rule.accept_prob(jnp.asarray(logits)))  # U in [0, 1)
        kept.append(np.asarray(x)[keep])
        count += int(keep.sum())
        drawn += len(keep)
        i += 1
    summary = {
        "acceptance": count / drawn,
        "max_logit": rule.max_logit,
        "gamma": rule.gamma,
        "candidates": drawn,
    }
    return np.concatenate(kept)[:num_samples], summary
