"""The image tables script, in a quick variant: runs trained, resumed, scored once, the table written."""

import json
import os

import pytest

from benchmarks import image_table as table  # the repository is on pytest's path (pyproject)
from benchmarks import stacked_digits

TINY = ["--set=model.g_width=8", "--set=model.d_width=8"]


def test_protocol_configs():
    stacked = table.TABLES["stacked_mnist"]
    dcgan = table.row_config(stacked, "DCGAN", 0)
    pac = table.row_config(stacked, "PacDCGAN2", 3)
    assert (dcgan.data.name, dcgan.data.channels, dcgan.batch_size, dcgan.num_train_steps) == (
        "stacked_mnist",
        3,
        64,
        100_000,
    )
    assert (pac.pack, pac.batch_size, pac.seed) == (2, 128, 3)
    assert dict(dcgan.evals).keys() == {"modes"} and dcgan.evals.modes.num_samples == 26_000
    fid = table.row_config(table.TABLES["fid_mnist"], "NS GAN (DCGAN)", 0)
    assert (fid.batch_size, fid.num_train_steps, fid.evals.fid.num_samples, fid.evals.fid.split) == (
        64,
        18_750,
        10_000,
        "test",
    )
    assert not [r for t in table.TABLES.values() for r in t.rows if "," in r]  # --rows is comma-separated
    hour = table.row_config(table.TABLES["fid_fashion_mnist"], "NS GAN (DCGAN-64) in one hour", 0)
    assert (hour.data.name, hour.batch_size, hour.model.g_width, hour.model.d_width, hour.num_train_steps) == (
        "fashion_mnist",
        64,
        64,
        64,
        27_000,
    )
    assert (hour.lr_decay, hour.lr_decay_start, hour.lr_decay_final, hour.ema_decay) == ("linear", 13_500, 0.0, 0.999)
    assert (hour.optim.g.lr, hour.standing_stats) == (2e-4, 0)  # Fashion-MNIST: the plain recipe (FID 10.31)
    mnist_hour = table.row_config(table.TABLES["fid_mnist"], "NS GAN (DCGAN-64) in one hour", 0)
    assert (mnist_hour.optim.g.lr, mnist_hour.optim.d.lr, mnist_hour.standing_stats) == (8e-4, 2e-4, 16)  # FID 4.89
    assert (mnist_hour.num_train_steps, mnist_hour.model.g_width) == (27_000, 64)
    # An explicit --set wins over the row's own value; the rest of the row stays.
    short = table.row_config(
        table.TABLES["fid_mnist"],
        "NS GAN (DCGAN-64) in one hour",
        0,
        overrides={"num_train_steps": 18_000, "lr_decay_start": 9_000, "optim.g.lr": 8e-4},
    )
    assert (short.num_train_steps, short.lr_decay_start, short.optim.g.lr, short.model.g_width) == (
        18_000,
        9_000,
        8e-4,
        64,
    )
    stacked_hour = table.row_config(stacked, "DCGAN-64 in one hour", 0)
    assert (stacked_hour.data.name, stacked_hour.model.g_width, stacked_hour.model.d_width) == ("stacked_mnist", 64, 64)
    assert (stacked_hour.num_train_steps, stacked_hour.lr_decay_start, stacked_hour.optim.g.lr) == (12_000, 6_000, 8e-4)
    assert stacked_hour.standing_stats == 16 and stacked_hour.evals.modes.num_samples == 26_000
    packed = table.row_config(table.TABLES["stacked_mnist"], "PacDCGAN2", 0, overrides={"batch_size": 32})
    assert (packed.pack, packed.batch_size) == (2, 64)


def test_quick_stacked_mnist_table_resumes_and_reuses_scores(tmp_path):
    # Four short training runs in all (each costs a compilation): one seed of each row, a second seed of the packed
    # row beside the kept first, then one run resumed.
    args = [
        "--table=stacked_mnist",
        "--num_samples=100",
        f"--root={tmp_path / 'runs'}",
        f"--out_dir={tmp_path / 'out'}",
        "--name=quick",
        *TINY,
    ]
    first = table.main([*args, "--steps=2", "--seeds=1", "--rows=DCGAN,PacDCGAN2"])  # the third: a DCGAN too
    assert [r["method"] for r in first["rows"]] == ["DCGAN", "PacDCGAN2"]
    for r in first["rows"]:
        assert r["steps"] == 2 and r["protocol_steps"] == 100_000
        assert [k["seed"] for k in r["per_seed"]] == [0]
        assert all(1 <= k["scores"]["modes"] <= 100 for k in r["per_seed"])
        assert r["evaluation_protocol"]["num_fake"] == 100
    md = (tmp_path / "out" / "quick.md").read_text()
    assert "SHORTENED: 2 training steps per run instead of the protocol's 100000" in md
    assert "paper: PacDCGAN2 (PacGAN Table 2) | 1000 | 0.06" in md
    assert (tmp_path / "out" / "quick_pacdcgan2.png").exists()

    # A second seed reuses the first one's kept score; more steps resume a run from its checkpoint.
    again = table.main([*args, "--steps=2", "--seeds=2", "--rows=PacDCGAN2"])
    assert [k["seed"] for k in again["rows"][0]["per_seed"]] == [0, 1]
    assert again["rows"][0]["per_seed"][0] == first["rows"][1]["per_seed"][0]
    assert all(1 <= k["scores"]["modes"] <= 100 for k in again["rows"][0]["per_seed"])
    second = table.main([*args, "--steps=2", "--seeds=1", "--first_seed=1", "--rows=PacDCGAN2"])  # seed 1 alone
    assert second["rows"][0]["seeds"] == [1] and second["rows"][0]["per_seed"] == again["rows"][0]["per_seed"][1:]
    assert "One seed (1)." in (tmp_path / "out" / "quick.md").read_text()
    longer = table.main([*args, "--steps=4", "--seeds=1", "--rows=PacDCGAN2"])
    seed0 = tmp_path / "runs" / "stacked_mnist" / "pacdcgan2" / "seed0"
    assert sorted(os.listdir(seed0 / "checkpoints")) == ["2", "4"]
    assert longer["rows"][0]["per_seed"][0]["steps"] == 4
    assert json.loads((seed0 / "table_scores.json").read_text())["steps"] == 4

    # A sampling-only change (rejection sampling) scores a trained run again without training it, kept in its own file
    # beside the plain scores, and the table says what share of G's samples it kept.
    drs = ["--set=drs_percentile=10", "--set=drs_burn_in=256"]
    rescored = table.main([*args, "--steps=2", "--seeds=1", "--rows=DCGAN", *drs])
    dcgan0 = tmp_path / "runs" / "stacked_mnist" / "dcgan" / "seed0"
    assert sorted(os.listdir(dcgan0 / "checkpoints")) == ["2"]
    row = rescored["rows"][0]
    assert row["per_seed"][0]["steps"] == 2 and 0 < row["acceptance_mean"] <= 1
    assert row["sampling"] == {"drs_percentile": 10, "drs_burn_in": 256}
    assert row["per_seed"][0]["rejection"]["candidates"] >= 100
    assert json.loads((dcgan0 / "table_scores.json").read_text()) == first["rows"][0]["per_seed"][0]
    assert (dcgan0 / "table_scores_drs_burn_in=256_drs_percentile=10.json").exists()
    assert "gan_jax DCGAN (drs_burn_in=256, drs_percentile=10; " in (tmp_path / "out" / "quick.md").read_text()

    # The digits behind the KL: the same samples as the table's, so the same scores.
    digits = stacked_digits.main(["--row=DCGAN", f"--root={tmp_path / 'runs'}", "--num_samples=100", *TINY])
    assert digits["samples_scores"] == first["rows"][0]["per_seed"][0]["scores"]
    assert [sum(ratios) for ratios in digits["samples_ratio_rgb"]] == pytest.approx([10, 10, 10], abs=0.01)
    assert digits["real_scores"]["num_samples"] == 100


def test_quick_fid_table(tmp_path):
    out = table.main(
        [
            "--table=fid_mnist",
            "--rows=NS GAN (DCGAN)",
            "--seeds=1",
            "--steps=2",
            "--num_samples=32",
            f"--root={tmp_path}",
            f"--out_dir={tmp_path}",
            *TINY,
            "--set=evals.fid.batch_size=16",
        ]
    )
    scores = out["rows"][0]["per_seed"][0]["scores"]
    assert scores["fid"] > 0 and 0 <= scores["precision"] <= 1
    protocol = out["rows"][0]["evaluation_protocol"]
    assert protocol["fid"]["num_fake"] == protocol["fid"]["num_real"] == 32
    assert out["rows"][0]["wall_s_mean"] > 0
    md = (tmp_path / "fid_mnist.md").read_text()
    assert "| wall per run (train + score) |" in md and " min |" in md


def test_unknown_row_is_refused(capsys):
    with pytest.raises(SystemExit):
        table.main(["--table=fid_mnist", "--rows=WGAN"])
    assert "fid_mnist has no row 'WGAN'" in capsys.readouterr().err


def test_stacked_digits_refuses_an_untrained_run(tmp_path, capsys):
    with pytest.raises(SystemExit):
        stacked_digits.main(["--row=DCGAN", f"--root={tmp_path}"])
    assert "no trained run in" in capsys.readouterr().err
