"""gan_jax.train.writers: TensorBoard event files read back record by record, the progress report, and no TensorFlow.

Run: .venv/bin/python -m pytest tests/train/test_writers.py -q
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

from gan_jax.train import writers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_events(path: str) -> list[event_pb2.Event]:
    """The records of a TFRecord file (length, its CRC, data, its CRC), checksums verified, parsed as Events."""
    events = []
    with open(path, "rb") as f:
        while header := f.read(12):
            (length,) = struct.unpack("<Q", header[:8])
            assert struct.unpack("<I", header[8:])[0] == masked_crc32c(header[:8])
            data = f.read(length)
            assert struct.unpack("<I", f.read(4))[0] == masked_crc32c(data)
            events.append(event_pb2.Event.FromString(data))
    return events


def test_scalars_and_images_read_back(tmp_path) -> None:
    writer = writers.TensorBoardWriter(str(tmp_path))
    writer.write_scalars(3, {"g_loss": 1.25, "steps_per_sec": np.float32(7.5)})
    assert len(read_events(writer.path)) == 2  # on disk before close: TensorBoard shows a running job
    rgb = np.random.default_rng(0).integers(0, 256, (2, 5, 4, 3), dtype=np.uint8)
    grey = np.linspace(0, 1, 12, dtype=np.float32).reshape(1, 3, 4, 1)
    writer.write_images(4, {"samples": rgb, "grid": grey})
    with pytest.raises(ValueError, match="want \\(N, H, W, 1\\|3\\|4\\)"):
        writer.write_images(5, {"bad": rgb[0]})
    writer.close()
    assert os.listdir(tmp_path) == [os.path.basename(writer.path)]
    assert os.path.basename(writer.path).startswith("events.out.tfevents.")

    first, scalars, images = read_events(writer.path)
    assert first.file_version == "brain.Event:2"
    assert scalars.step == 3 and {v.tag: v.simple_value for v in scalars.summary.value} == {
        "g_loss": 1.25,
        "steps_per_sec": 7.5,
    }
    assert images.step == 4
    by_tag = {v.tag: v.image for v in images.summary.value}
    assert sorted(by_tag) == ["grid", "samples/image/0", "samples/image/1"]
    for i in range(2):
        image = by_tag[f"samples/image/{i}"]
        assert (image.height, image.width, image.colorspace) == (5, 4, 3)
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(image.encoded_image_string))), rgb[i])
    decoded = np.asarray(Image.open(io.BytesIO(by_tag["grid"].encoded_image_string)))
    np.testing.assert_array_equal(decoded, (grey[0, ..., 0] * 255 + 0.5).astype(np.uint8))


class Recorder:
    def __init__(self) -> None:
        self.scalars: list[tuple[int, dict]] = []

    def write_scalars(self, step, scalars) -> None:
        self.scalars.append((step, dict(scalars)))


def test_progress_reports_every_n_steps_and_at_the_end(caplog) -> None:
    recorder = Recorder()
    progress = writers.Progress(num_train_steps=7, writer=recorder, every_steps=3, every_secs=1e9)
    with caplog.at_level("INFO", logger="gan_jax.train.writers"):
        for step in range(1, 8):  # step 1 starts the clock (it includes compilation); then 3, 6 and the last, 7
            progress(step)
    assert [s for s, _ in recorder.scalars] == [3, 6, 7]
    assert all(v["steps_per_sec"] > 0 and v["uptime"] >= 0 for _, v in recorder.scalars)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and "(3/7), ETA: " in lines[0] and "100.0% (7/7), ETA: 0s" in lines[2]


def test_training_does_not_import_tensorflow(tmp_path) -> None:
    """TensorFlow takes about 10 s to import on two cores; run.py's training path must not pay it."""
    code = (
        "import sys, gan_jax.train.loop, gan_jax.train.writers as w; w.create_writer(sys.argv[1]).close(); "
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [n.startswith("events.out.tfevents.") for n in os.listdir(tmp_path)] == [True]
