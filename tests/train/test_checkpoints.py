"""The Checkpoints wrapper around Orbax, directly: what it guarantees as soon as it is made."""

from pathlib import Path

from gan_jax.train.checkpoint import Checkpoints


def test_an_earlier_runs_temporary_directories_are_gone_before_the_constructor_returns(tmp_path: Path) -> None:
    """Orbax removes them on a background thread; a run that then stops at once (every checkpoint corrupt, evaluation
    only) must not leave that thread to die at interpreter exit with a traceback under its clear error."""
    directory = tmp_path / "checkpoints"
    stale = directory / "30.orbax-checkpoint-tmp-1700000000000000"  # a save killed before its atomic rename
    (stale / "state").mkdir(parents=True)
    (stale / "state" / "half_written").write_bytes(b"\0" * 16)
    checkpoints = Checkpoints(str(directory), {"model": "test"}, keep=2, async_save=False)
    assert not stale.exists() and checkpoints.steps() == []
    checkpoints.close()
