"""Metric writers (console and TensorBoard) and the progress report of the training loop.

Why not `clu.metric_writers` and `clu.periodic_actions`, which these follow (the same `write_scalars(step, values)` /
`write_images(step, images)` / `flush()` interface, the same console lines, the same `steps_per_sec` and `uptime`
scalars): importing either package imports TensorFlow for clu's TensorBoard writer, about 10 s on two CPU cores, paid
by every `run.py` process (a `--mode=sample` run included) and by each test that starts one. The TensorBoard event
files are written here with the `tensorboard` package alone (its record writer and protocol buffers), which imports
in half a second. Scalars are written as TF1-style `simple_value`s and images as PNGs, both of which
TensorBoard's scalar and image dashboards read.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)
_FILE_IDS = itertools.count()  # tells apart two event files one process opens in the same second


class MetricWriter(Protocol):
    """What the loop and the evaluators write to."""

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None: ...

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class LoggingWriter:
    """Scalars to the console, one line per call (`[step] name=value, ...`); images only by shape."""

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        values = [f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(scalars.items())]
        log.info("[%d] %s", step, ", ".join(values))

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        log.info("[%d] Got images: %s.", step, {k: np.shape(v) for k, v in images.items()})

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()


class TensorBoardWriter:
    """An `events.out.tfevents.*` file in `logdir`, as TensorBoard reads it, written through `tensorboard`'s record
    format and flushed after every write (a few records per logged step), so a running job shows up at once. Its
    `EventFileWriter` is not used because it opens files through `tf.io.gfile`, which imports TensorFlow when it is
    installed.

    `write_images` takes, per name, a batch (N, H, W, C) of uint8 images (or floats in [0, 1]) with 1, 3 or 4
    channels, as clu's writer does; image i of a batch is tagged `name/image/i` when N > 1, `name` otherwise.
    """

    def __init__(self, logdir: str) -> None:
        import socket

        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        os.makedirs(logdir, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_FILE_IDS)}"
        self.path = os.path.join(logdir, name)
        self._records = RecordWriter(open(self.path, "wb"))  # closed by close()
        self._records.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())

    def _add(self, step: int, values: Sequence[Any]) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        summary = summary_pb2.Summary(value=list(values))
        self._records.write(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary).SerializeToString())
        self._records.flush()

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        from tensorboard.compat.proto import summary_pb2

        self._add(step, [summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()])

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        from tensorboard.compat.proto import summary_pb2

        values = []
        for name, batch in images.items():
            batch = np.asarray(batch)
            if batch.ndim != 4 or batch.shape[-1] not in (1, 3, 4):
                raise ValueError(f"images[{name!r}]: want (N, H, W, 1|3|4), got shape {batch.shape}")
            for i, image in enumerate(batch):
                height, width, channels = image.shape
                encoded = summary_pb2.Summary.Image(
                    height=height, width=width, colorspace=channels, encoded_image_string=_png(image)
                )
                tag = name if len(batch) == 1 else f"{name}/image/{i}"
                values.append(summary_pb2.Summary.Value(tag=tag, image=encoded))
        self._add(step, values)

    def flush(self) -> None:
        self._records.flush()

    def close(self) -> None:
        if not self._records.closed:
            self._records.close()


class MultiWriter:
    """Writes everything to each of `writers`."""

    def __init__(self, writers: Sequence[MetricWriter]) -> None:
        self._writers = list(writers)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        for w in self._writers:
            w.write_scalars(step, scalars)

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        for w in self._writers:
            w.write_images(step, images)

    def flush(self) -> None:
        for w in self._writers:
            w.flush()

    def close(self) -> None:
        for w in self._writers:
            w.close()


def create_writer(logdir: str, *, just_logging: bool = False) -> MetricWriter:
    """The console, plus TensorBoard in `logdir` unless `just_logging` (processes other than the first)."""
    return LoggingWriter() if just_logging else MultiWriter([LoggingWriter(), TensorBoardWriter(logdir)])


def _format_secs(secs: float) -> str:
    s = int(round(secs))
    h, m = divmod(s // 60, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s % 60:02d}s" if m else f"{s}s"


class Progress:
    """Every `every_steps` steps, every `every_secs` seconds and at the last step: logs the speed since the previous
    report, the fraction done and the ETA, and writes `steps_per_sec` and `uptime` (seconds since construction)."""

    def __init__(
        self, *, num_train_steps: int, writer: MetricWriter | None, every_steps: int, every_secs: float = 60.0
    ) -> None:
        self._total, self._writer = num_train_steps, writer
        self._every_steps, self._every_secs = max(1, every_steps), every_secs
        self._t0 = time.monotonic()
        self._last: tuple[int, float] | None = None  # (step, time) of the previous report, None before the first call

    def __call__(self, step: int) -> None:
        now = time.monotonic()
        if self._last is None:  # the first step sets the clock: it includes compilation
            self._last = (step, now)
            return
        last_step, last_time = self._last
        due = step % self._every_steps == 0 or now - last_time >= self._every_secs
        if step <= last_step or not (due or step == self._total):
            return
        steps_per_sec = (step - last_step) / max(now - last_time, 1e-9)
        eta = (self._total - step) / steps_per_sec
        log.info(
            "%.1f steps/s, %.1f%% (%d/%d), ETA: %s",
            steps_per_sec,
            100 * step / self._total,
            step,
            self._total,
            _format_secs(eta),
        )
        if self._writer is not None:
            self._writer.write_scalars(step, {"steps_per_sec": steps_per_sec, "uptime": now - self._t0})
        self._last = (step, now)
