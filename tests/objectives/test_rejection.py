"""Discriminator rejection sampling (Azadi et al. 2019): the acceptance rule, the sampling loop and `generate`'s
switch, with its refusals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax.config import ConfigError, load_config
from gan_jax.objectives.rejection import RejectionRule, drs_scores, rejection_sample
from gan_jax.train.experiment import setup


def test_gamma_zero_is_exact_rejection_sampling():
    d = jnp.array([-6.0, -2.0, -0.5, -0.01])
    accept = RejectionRule(max_logit=0.0, gamma=0.0).accept_prob(d)
    np.testing.assert_allclose(accept, np.exp(d), rtol=1e-4)
    assert float(drs_scores(jnp.array(3.0), 1.0)) == pytest.approx(float(drs_scores(jnp.array(1.0), 1.0)))
    assert np.isfinite(float(drs_scores(jnp.array(1.0), 1.0)))


def test_the_exact_rule_turns_the_proposal_into_the_data_distribution():
    """Proposal U(0, 1), data density 2x on [0, 1]: a D at its optimum has logit log(2x), and the kept samples must
    have the data's mean 2/3 and second moment 1/2 (the proposal's are 1/2 and 1/3)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=400_000)
    keep = rng.uniform(size=x.size) <= np.asarray(RejectionRule(np.log(2.0), 0.0).accept_prob(jnp.log(2 * x)))
    assert keep.mean() == pytest.approx(0.5, abs=0.01)  # 1 / M
    assert x[keep].mean() == pytest.approx(2 / 3, abs=0.003)
    assert (x[keep] ** 2).mean() == pytest.approx(1 / 2, abs=0.003)


def test_rule_from_the_burn_in():
    logits = np.array([-3.0, -1.0, 0.5, 2.0])
    rule = RejectionRule.from_burn_in(logits, 50.0)
    assert rule.max_logit == 2.0
    assert rule.gamma == pytest.approx(float(np.median(np.asarray(drs_scores(jnp.asarray(logits), 2.0)))))
    with pytest.raises(ValueError, match="finite"):
        RejectionRule.from_burn_in(np.array([0.0, np.nan]), 50.0)


def _loop(batch=64):
    """Candidates x ~ N(0, 1) with logit -x^2 (a D that prefers samples near 0), drawn per batch from its index."""

    def draw(i):
        x = np.random.default_rng(1000 + i).standard_normal(batch)
        return x, -(x**2)

    return draw, lambda i: np.random.default_rng(i).uniform(size=batch)


def test_sampling_is_a_function_of_the_seeds_and_prefers_high_logits():
    draw, uniforms = _loop()
    few, summary = rejection_sample(draw, uniforms, 50, burn_in_batches=4, percentile=50.0, max_batches=100)
    many, _ = rejection_sample(draw, uniforms, 300, burn_in_batches=4, percentile=50.0, max_batches=100)
    assert few.shape == (50,) and many.shape == (300,)
    np.testing.assert_array_equal(few, many[:50])  # the first k do not depend on how many are asked for
    burn_in = np.concatenate([draw(i)[0] for i in range(4)])
    assert not np.isin(many, burn_in).any()  # the burn-in sets the rule and is not kept
    assert 0.0 < summary["acceptance"] < 1.0 and summary["max_logit"] <= 0.0
    stricter, strict = rejection_sample(draw, uniforms, 300, burn_in_batches=4, percentile=90.0, max_batches=200)
    assert strict["acceptance"] < summary["acceptance"]
    assert np.mean(stricter**2) < np.mean(many**2) < 1.0  # the proposal's is 1


def test_running_out_of_candidates_is_a_clear_error():
    draw, uniforms = _loop()
    with pytest.raises(RuntimeError, match="kept .* fewer than the 10000 asked for: lower config.drs_percentile"):
        rejection_sample(draw, uniforms, 10_000, burn_in_batches=2, percentile=50.0, max_batches=3)


def test_generate_with_rejection_sampling():
    config = load_config("configs/gan_mog.py:smoke")
    exp = setup(config, None)
    state = exp.init_state()
    plain = exp.generate(state, 200, seed=0)
    assert exp.last_rejection is None
    config.drs_percentile, config.drs_burn_in = 50.0, 500
    drs = setup(config, None)
    a, b = drs.generate(state, 200, seed=0), drs.generate(state, 200, seed=0)
    assert a.shape == plain.shape == (200, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, plain)
    assert 0.0 < drs.last_rejection["acceptance"] < 1.0 and drs.last_rejection["candidates"] >= 200
    # The kept samples are those the run's D rates higher than the proposal's average.
    logits = lambda x: np.asarray(drs.critic_fn(state.params, state.model_state, jnp.asarray(x)))  # noqa: E731
    assert logits(a).mean() > logits(plain).mean()


@pytest.mark.parametrize("loss", ["non_saturating", "wasserstein"])
def test_calibrating_d_on_the_fixed_sampler(loss):
    """drs_calibrate_steps trains a copy of D against the sampler: its loss falls, the run's D is untouched, and a
    seed still fixes the samples. The calibration's loss is the logistic one whatever the game's (a Wasserstein
    critic without its penalty would diverge instead)."""
    config = load_config("configs/gan_mog.py:smoke")
    config.loss = loss
    config.drs_percentile, config.drs_burn_in = 50.0, 500
    exp = setup(config, None)
    state = exp.init_state()
    before = jax.tree.map(np.array, state.params)
    plain = exp.generate(state, 200, seed=0)
    assert "calibrate_steps" not in exp.last_rejection
    config.drs_calibrate_steps, config.optim.d.lr = 1000, 1e-3
    cal = setup(config, None)
    a, b = cal.generate(state, 200, seed=0), cal.generate(state, 200, seed=0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, plain)
    summary = cal.last_rejection
    assert summary["calibrate_steps"] == 1000 and 0.0 < summary["acceptance"] < 1.0
    # An untrained G is easy to tell from the data once D studies it alone: the classification loss falls to a
    # fraction of its start (log 4 = 1.386 for a D that cannot tell them apart).
    assert 0.0 < summary["calibrate_loss_last"] < 0.25 * summary["calibrate_loss_first"]
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, state.params))


@pytest.mark.parametrize(
    "spec, changes, message",
    [
        ("configs/gan_mog.py:smoke", {"drs_percentile": 100.0}, "drs_percentile=100.0: is a percentile"),
        ("configs/gan_mog.py:smoke", {"drs_percentile": -1.0}, "drs_percentile=-1.0: is a percentile"),
        ("configs/gan_mog.py:smoke", {"drs_percentile": 50.0, "drs_burn_in": 0}, "drs_burn_in=0: must be positive"),
        ("configs/gan_mog.py:smoke", {"drs_percentile": 50.0, "pack": 2}, "with config.pack=2 D judges packs"),
        ("configs/gan_mog.py:smoke", {"drs_calibrate_steps": 10}, "drs_calibrate_steps=10: .*set drs_percentile > 0"),
        ("configs/gan_mog.py:smoke", {"drs_percentile": 5.0, "drs_calibrate_steps": -1}, "must be >= 0"),
        ("configs/gan_mog.py:smoke", {"drs_percentile": 5.0, "drs_rule": "cold"}, "drs_rule='cold': choose 'soft'"),
        ("configs/gan_mog.py:smoke", {"drs_rule": "hard"}, "drs_rule='hard': .*set drs_percentile > 0"),
        ("configs/stylegan.py:smoke", {"drs_percentile": 50.0}, "drs_percentile=50.0: StyleGAN2's objective"),
        ("configs/biggan.py:smoke", {"drs_percentile": 50.0}, "drs_percentile=50.0: the conditional game"),
    ],
)
def test_refusals(spec, changes, message):
    config = load_config(spec)
    for key, value in changes.items():
        config[key] = value
    with pytest.raises(ConfigError, match=message):
        setup(config, None)


def test_evaluators_report_the_acceptance(tmp_path):
    from gan_jax.train.evaluation import Evaluations

    config = load_config("configs/gan_mog.py:smoke")
    config.drs_percentile, config.drs_burn_in = 80.0, 500
    exp = setup(config, str(tmp_path))
    results = Evaluations(exp, record=False).run(exp.init_state())
    assert set(results) == {"modes"} and 0.0 < results["modes"]["rejection"]["acceptance"] < 1.0
    assert results["modes"]["rejection"]["candidates"] >= config.evals.modes.num_samples


def test_hard_rule_keeps_exactly_the_samples_at_or_above_the_percentile():
    """drs_rule='hard': the step function F >= gamma, so a sample is kept if and only if its logit reaches the
    burn-in's percentile (F is increasing in the logit); the uniforms play no part and the acceptance is 1 - p."""
    logits = np.linspace(-4.0, 0.0, 1001)
    rule = RejectionRule.from_burn_in(logits, 20.0, hard=True)
    accept = np.asarray(rule.accept_prob(jnp.asarray(logits)))
    assert set(np.unique(accept)) == {0.0, 1.0}
    threshold = np.percentile(logits, 20.0)
    np.testing.assert_array_equal(accept == 1.0, logits >= threshold - 1e-5)
    assert accept.mean() == pytest.approx(0.8, abs=0.002)

    draw, uniforms = _loop()
    kept, summary = rejection_sample(
        draw, uniforms, 500, burn_in_batches=8, percentile=25.0, max_batches=100, hard=True
    )
    burn_in = np.concatenate([draw(i)[0] for i in range(8)])
    cut = np.sqrt(np.percentile(burn_in**2, 75.0))  # logit -x^2 >= its 25th percentile  <=>  |x| <= cut
    assert np.all(np.abs(kept) <= cut + 1e-6)
    assert summary["acceptance"] == pytest.approx(0.75, abs=0.05)
    never_uniforms = lambda i: np.full(64, 0.999999)  # noqa: E731  (the largest U: kept all the same)
    same, _ = rejection_sample(
        draw, never_uniforms, 500, burn_in_batches=8, percentile=25.0, max_batches=100, hard=True
    )
    np.testing.assert_array_equal(same, kept)


def test_generate_with_the_hard_rule_differs_from_the_soft_one():
    config = load_config("configs/gan_mog.py:smoke")
    config.drs_percentile, config.drs_burn_in = 30.0, 5000  # a burn-in large enough to place the percentile well
    exp = setup(config, None)
    state = exp.init_state()
    soft = exp.generate(state, 300, seed=0)
    config.drs_rule = "hard"
    hard = setup(config, None)
    a, b = hard.generate(state, 300, seed=0), hard.generate(state, 300, seed=0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, soft)
    assert hard.last_rejection["acceptance"] == pytest.approx(0.7, abs=0.03)  # 1 - p
