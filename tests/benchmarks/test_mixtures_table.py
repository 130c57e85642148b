"""The 2-D mixtures table script, in a quick variant: every row trained over seeds, scored, written out."""

import json

import numpy as np
import pytest

from benchmarks import mixtures_table as table  # the repository is on pytest's path (pyproject)


def test_paper_rows_are_configured_as_in_the_paper():
    gan, pac = table.row_config("grid", "GAN", 400), table.row_config("grid", "PacGAN4", 400)
    assert (gan.batch_size, gan.pack, gan.data.num_examples, gan.num_train_steps) == (100, 1, 100_000, 400_000)
    # PacGAN's code: 100,000 packs of 4 points, batches of 100 packs, 1,000 updates an epoch.
    assert (pac.batch_size, pac.pack, pac.data.num_examples, pac.num_train_steps) == (400, 4, 400_000, 400_000)
    assert gan.data.name == "grid" and gan.model.d_pieces == 5 and tuple(gan.model.g_hidden) == (400,) * 4
    assert gan.optim.d.lr == 1e-4 and gan.optim.g.b1 == 0.8


def test_set_changes_every_row_and_names_it():
    changes = {"r1_gamma": 0.1, "optim.g.lr": 1e-3}
    config = table.row_config("grid", "PacGAN4", 1, changes)
    assert (config.r1_gamma, config.optim.g.lr, config.optim.d.lr, config.pack) == (0.1, 1e-3, 1e-4, 4)
    assert table.label("GAN", changes) == "GAN (optim.g.lr=0.001, r1_gamma=0.1)" and table.label("GAN", {}) == "GAN"
    # A row with changes keeps its state apart from the same row without them.
    plain, changed = (table.row_dir("w", "grid", "GAN", [0], 20, o) for o in (None, changes))
    assert plain == "w/grid_GAN_1seeds_20ep" and changed != plain


def test_quick_table(tmp_path):
    out = table.main(
        [
            "--mixtures=ring",
            "--methods=GAN,PacGAN2",
            "--seeds=2",
            "--epochs=0.03",
            "--chunk=10",
            "--num_samples=500",
            "--measure_vmap=5",
            f"--out_dir={tmp_path}",
            "--name=quick",
        ]
    )
    assert out["vmap"]["seeds"] == 2 and out["vmap"]["vmapped_seed_steps_per_s"] > 0
    rows = out["rows"]
    assert [(r["method"], r["steps"], r["batch_size"]) for r in rows] == [("GAN", 30, 100), ("PacGAN2", 30, 200)]
    for r in rows:
        assert [s["seed"] for s in r["per_seed"]] == [0, 1]
        for name in table.SCORES:
            values = [s[name] for s in r["per_seed"]]
            assert r[f"{name}_mean"] == pytest.approx(np.mean(values))
            assert r[f"{name}_sem"] == pytest.approx(np.std(values, ddof=1) / np.sqrt(2))
        assert all(0 <= s["modes"] <= 8 and 0 <= s["high_quality_pct"] <= 100 for s in r["per_seed"])
    saved = json.loads((tmp_path / "quick.json").read_text())
    assert saved["rows"][0]["per_seed"] == rows[0]["per_seed"]
    md = (tmp_path / "quick.md").read_text()
    assert "gan_jax GAN" in md and "paper: PacGAN4 (PacGAN Table 1) | 7.8 | 95.9 | 0.07" in md
    assert (tmp_path / "quick.png").stat().st_size > 10_000


def test_bad_arguments_are_refused(capsys):
    with pytest.raises(SystemExit):
        table.main(["--methods=WGAN"])
    assert "unknown method 'WGAN'" in capsys.readouterr().err
    for item, message in (("r1_gama=0.1", "--set r1_gama: the config has no such key"), ("r1_gamma=x", "cannot")):
        with pytest.raises(SystemExit):
            table.main([f"--set={item}"])
        assert message in capsys.readouterr().err


def test_an_interrupted_row_resumes_exactly_and_a_finished_one_is_read_back(tmp_path, capsys):
    args = [
        "--mixtures=ring",
        "--methods=GAN+EMA+decay",  # the learning-rate schedule and the EMA are part of what must resume exactly
        "--seeds=2",
        "--epochs=0.03",
        "--chunk=10",
        "--checkpoint_every=0.01",  # every 10 steps
        "--num_samples=300",
    ]
    straight = table.main([*args, f"--out_dir={tmp_path}", "--name=straight", f"--workdir={tmp_path / 'w1'}"])
    resumable = [*args, f"--out_dir={tmp_path}", "--name=resumed", f"--workdir={tmp_path / 'w2'}"]
    stopped = table.main([*resumable, "--stop_at_step=20"])
    assert stopped["rows"] == [] and not (tmp_path / "resumed.json").exists()
    row_dir = tmp_path / "w2" / "ring_GAN_EMA_decay_2seeds_0.03ep"
    assert sorted(int(p.name) for p in (row_dir / "checkpoints").iterdir() if p.name.isdigit()) == [10, 20]
    assert not (row_dir / "row.json").exists()
    capsys.readouterr()

    resumed = table.main(resumable)
    assert "resumed from step 20" in capsys.readouterr().err
    want, got = straight["rows"][0], resumed["rows"][0]
    assert (want["steps_this_invocation"], got["steps_this_invocation"]) == (30, 10)
    assert got["per_seed"] == want["per_seed"]
    np.testing.assert_array_equal(
        np.load(row_dir / "samples_seed0.npy"),
        np.load(tmp_path / "w1" / "ring_GAN_EMA_decay_2seeds_0.03ep" / "samples_seed0.npy"),
    )

    again = table.main(resumable)  # finished: read back, not trained again
    assert "finished earlier, read back" in capsys.readouterr().err
    assert again["rows"][0]["per_seed"] == want["per_seed"]
    # The table's time is the rows' time over every invocation, not just the seconds it took to read them back.
    assert again["wall_s"] >= again["rows"][0]["wall_s"] == resumed["rows"][0]["wall_s"] > 0
    assert (tmp_path / "resumed.png").stat().st_size > 10_000

    # A sampling-only change (rejection sampling) re-scores the finished row's final state instead of retraining it,
    # and keeps its own scores beside the plain ones.
    drs = table.main([*resumable, "--set=drs_percentile=50", "--set=drs_burn_in=300"])
    assert "resumed from step 30" in capsys.readouterr().err
    row = drs["rows"][0]
    assert row["steps_this_invocation"] == 0 and row["overrides"] == {"drs_percentile": 50, "drs_burn_in": 300}
    assert 0 < row["drs_acceptance_mean"] < 1 and all(0 < s["drs_acceptance"] < 1 for s in row["per_seed"])
    assert row["per_seed"] != want["per_seed"]
    assert (row_dir / "row_drs_burn_in_300_drs_percentile_50.json").exists() and (row_dir / "row.json").exists()
    assert "of G's samples" in (tmp_path / "resumed.md").read_text()
    assert table.main(resumable)["rows"][0]["per_seed"] == want["per_seed"]  # the plain row is still read back

    # Another evaluation seed re-scores the same final state with a fresh draw of samples.
    other = table.main([*resumable, "--eval_seed=3"])["rows"][0]
    assert other["steps_this_invocation"] == 0 and other["eval_seed"] == 3
    assert other["per_seed"] != want["per_seed"] and (row_dir / "row_eval_seed_3.json").exists()
    assert "scored on evaluation seed 3" in (tmp_path / "resumed.md").read_text()


def test_first_seed_trains_a_later_seed_apart(tmp_path):
    """`--first_seed` adds training seeds to a table from another invocation: its own state folder, and the seed's
    run is the one the same seed gets among others."""
    args = ["--mixtures=ring", "--methods=GAN", "--epochs=0.02", "--chunk=10", "--num_samples=300"]
    both = table.main([*args, "--seeds=2", f"--out_dir={tmp_path}", "--name=both", f"--workdir={tmp_path}"])
    alone = table.main(
        [*args, "--seeds=1", "--first_seed=1", f"--out_dir={tmp_path}", "--name=s1", f"--workdir={tmp_path}"]
    )
    assert alone["rows"][0]["seeds"] == [1]
    assert alone["rows"][0]["per_seed"] == [both["rows"][0]["per_seed"][1]]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "ring_GAN_2seeds_0.02ep",
        "ring_GAN_seeds1-1_0.02ep",
    ]
    assert "1 seeds (1-1)" in (tmp_path / "s1.md").read_text()
