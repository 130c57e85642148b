"""The evaluator registry in training: when evals run, what they write, the best checkpoint, and that evaluating never
changes the course of training."""

import json
import os
import tempfile

import pytest

from gan_jax.config import ConfigError, load_config
from gan_jax.metrics.evaluators import evaluator_spec
from gan_jax.train.checkpoint import state_digest
from gan_jax.train.loop import train


def _rows(workdir):
    return [json.loads(line) for line in open(os.path.join(workdir, "evals.jsonl"))]


@pytest.fixture(scope="module")
def mog_run():
    workdir = tempfile.mkdtemp()
    state = train(load_config("configs/gan_mog.py:smoke"), workdir)
    return workdir, state


def test_evals_run_when_due_with_their_protocol(mog_run):
    workdir, _ = mog_run
    rows = _rows(workdir)
    assert [(r["step"], r["eval"]) for r in rows] == [(10, "modes"), (20, "modes")]
    for r in rows:
        assert set(r["scores"]) == {"modes", "num_modes", "high_quality_pct", "reverse_kl", "num_samples"}
        assert r["scores"]["num_samples"] == 2500 and r["scores"]["num_modes"] == 8
        assert r["protocol"]["evaluator"] == "modes" and r["protocol"]["fake_seed"] == 0
        assert r["protocol"]["modes"]["mixture"] == "ring" and r["protocol"]["modes"]["num_fake"] == 2500


def test_best_checkpoint_is_the_best_score(mog_run):
    workdir, _ = mog_run
    rows = _rows(workdir)
    best_row = min(rows, key=lambda r: r["scores"]["reverse_kl"])
    best = json.load(open(os.path.join(workdir, "best.json")))
    assert best["step"] == best_row["step"] and best["value"] == best_row["scores"]["reverse_kl"]
    assert best["metric"] == "modes/reverse_kl" and best["mode"] == "min"
    assert os.listdir(os.path.join(workdir, "checkpoints_best")) == [str(best_row["step"])]


def test_evaluating_does_not_change_training(mog_run):
    _, with_evals = mog_run
    config = load_config("configs/gan_mog.py:smoke")
    config.evals = {}
    config.best_metric = ""
    without = train(config, tempfile.mkdtemp())
    assert state_digest(without) == state_digest(with_evals)


def test_resume_trims_the_eval_log_and_keeps_the_best_record(mog_run, tmp_path):
    workdir, _ = mog_run
    config = load_config("configs/gan_mog.py:smoke")
    config.num_train_steps = 30
    train(config, workdir)
    steps = [r["step"] for r in _rows(workdir)]
    assert steps == [10, 20, 30]
    best = json.load(open(os.path.join(workdir, "best.json")))
    assert best["value"] == min(r["scores"]["reverse_kl"] for r in _rows(workdir))


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("evals.modes.type", "bogus", "config.evals.modes.type"),
        ("evals.modes.every", -1, "config.evals.modes.every"),
        ("evals.modes.num_samples", 1, "config.evals.modes.num_samples"),
        ("best_metric", "nothing/fid", "config.best_metric"),
        ("best_mode", "lowest", "config.best_mode"),
    ],
)
def test_bad_eval_fields_are_named(field, value, message):
    from gan_jax.config import validate

    config = load_config("configs/gan_mog.py:smoke")
    config.update_from_flattened_dict({field: value})
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        validate(config)


def test_inception_score_without_a_logits_file_is_refused_at_start(monkeypatch):
    from gan_jax.config import validate

    monkeypatch.delenv("GAN_JAX_INCEPTION_LOGITS", raising=False)
    config = load_config("configs/dcgan.py:smoke")
    config.evals.fid.metrics = "fid,is"
    with pytest.raises(ConfigError, match=r"config\.evals\.fid\.inception_logits=''.*logits layer"):
        validate(config)


def test_evaluator_spec_rejects_unknown_fields_and_types():
    with pytest.raises(ValueError, match="no field 'num_smaples'"):
        evaluator_spec("modes", num_smaples=10)
    with pytest.raises(ValueError, match="unknown evaluator type"):
        evaluator_spec("fidd")
    spec = evaluator_spec("inception", num_samples=50)
    assert spec.metrics == "fid,kid,pr" and spec.num_samples == 50 and spec.every == 0


def test_inception_scores_during_training_keep_the_best_by_fid(tmp_path, monkeypatch):
    monkeypatch.setenv("GAN_JAX_CACHE", str(tmp_path / "cache"))
    config = load_config("configs/dcgan.py:smoke")
    config.evals.fid.every = 3  # the smoke variant scores 16 samples against 16 test digits
    workdir = str(tmp_path / "run")
    train(config, workdir)
    rows = _rows(workdir)
    assert [(r["step"], r["eval"]) for r in rows] == [(3, "fid"), (6, "fid")]
    for r in rows:
        assert set(r["scores"]) == {"fid", "kid", "kid_std", "precision", "recall"}
        assert r["scores"]["fid"] > 0 and 0 <= r["scores"]["precision"] <= 1 and 0 <= r["scores"]["recall"] <= 1
        fid = r["protocol"]["fid"]
        assert fid["num_real"] == 16 and fid["num_fake"] == 16 and fid["reference"] == "mnist:test"
        assert len(fid["weights_sha256"]) == 64
    best = json.load(open(os.path.join(workdir, "best.json")))
    assert best["value"] == min(r["scores"]["fid"] for r in rows)
    assert (tmp_path / "cache" / "reference").is_dir()  # the real features were cached for the next run


def test_stacked_mnist_evaluator_on_real_stacked_digits():
    """The evaluator scores what it is given: 2,000 real Stacked MNIST test images cover most of the 1,000 modes."""
    import ml_collections
    import numpy as np

    from gan_jax.data import get_dataset
    from gan_jax.metrics.evaluators import EvalContext, run_evaluator
    from gan_jax.train.visualize import to_uint8

    data = load_config("configs/dcgan.py:smoke").data
    data.name, data.split, data.channels, data.resolution = "stacked_mnist", "test", 0, 0
    real = get_dataset(data, seed=0)

    def generate(n, seed):
        return to_uint8(real.get(np.arange(n))["x"])

    spec = evaluator_spec("stacked_mnist", num_samples=2000)
    result = run_evaluator(spec, EvalContext(generate=generate, data=ml_collections.ConfigDict(data)))
    assert result.scores["num_modes"] == 1000 and result.scores["num_samples"] == 2000
    assert 800 <= result.scores["modes"] <= 1000  # 2,000 draws from 1,000 uniform modes see about 865
    assert result.protocol["evaluator"] == "stacked_mnist" and result.protocol["classifier_test_accuracy"] >= 0.99
