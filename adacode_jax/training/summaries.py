"""What a run writes for TensorBoard, without TensorFlow.

- :class:`Writer`: scalars, image panels and the run's hyperparameters as TensorBoard events
  through tensorboardX (local paths, and ``gs://``/``s3://`` where its storage clients are
  installed); every scalar write is also a line of ``train.log``. Other processes than 0 only
  log.
- :class:`RateHook`: the training rate (``steps_per_sec``) as a scalar once a minute.
- :class:`ProfileHook`: a ``jax.profiler`` trace of a few steps into the work directory.

The hooks are called with the step just finished, after the step.
"""
from __future__ import annotations

import os
import time
from typing import Mapping

import jax
import numpy as np
from absl import logging

from adacode_jax.training import console


def _scalar_line(step: int, scalars: Mapping[str, float]) -> str:
    return f"[{step}] " + ", ".join(f"{k}={float(v):.6g}" for k, v in sorted(scalars.items()))


class Writer:
    """TensorBoard events in ``logdir`` (process 0, ``enabled``), log lines everywhere.

    Events are written in the calling thread (tensorboardX's synchronous ``EventsWriter``, not
    its ``SummaryWriter``, whose ``flush`` leaves events queued for a background thread), so
    :meth:`flush` before a checkpoint puts every event up to it in the file, and a kill -9
    after the checkpoint loses none of them. The file name carries the process id: a run
    resumed within the same second as the last one started opens a new file, not the old one.
    """

    def __init__(self, logdir: str, enabled: bool):
        self._events = None
        if enabled:
            from tensorboardX.event_file_writer import EventsWriter   # the train extra
            from tensorboardX.record_writer import directory_check

            directory_check(logdir)
            self._events = EventsWriter(os.path.join(logdir, "events"),
                                        filename_suffix=f".{os.getpid()}")

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        logging.info("%s", _scalar_line(step, scalars), extra=console.FILE_ONLY)
        if self._events is not None:
            from tensorboardX.summary import scalar

            for k, v in scalars.items():
                self._write(step, scalar(k, float(v)))

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """``images``: name -> (N, H, W, C) uint8, or float in [0, 1]; one grid per name."""
        if self._events is None:
            return
        from tensorboardX.summary import image

        for k, v in images.items():
            v = np.asarray(v)
            if v.dtype != np.uint8:
                v = np.round(np.clip(v, 0.0, 1.0) * 255.0).astype(np.uint8)
            self._write(step, image(k, v, dataformats="NHWC"))

    def write_hparams(self, hparams: Mapping[str, int | float | str | bool]) -> None:
        """The config's flat fields, in the run's own event file (TensorBoard's HParams tab)."""
        if self._events is None:
            return
        from tensorboardX.summary import hparams as hparams_summaries

        for summary in hparams_summaries(dict(hparams), {}):
            self._write(0, summary)

    def flush(self) -> None:
        if self._events is not None:
            self._events.flush()

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None

    def _write(self, step: int, summary) -> None:
        from tensorboardX.proto.event_pb2 import Event

        self._events.write_event(Event(wall_time=time.time(), step=int(step), summary=summary))


class RateHook:
    """Writes ``steps_per_sec`` over the last ``every_secs`` (the first call only starts the
    clock: it follows the compilation)."""

    def __init__(self, writer: Writer, every_secs: float = 60.0):
        self._writer, self._every = writer, float(every_secs)
        self._t0 = self._step0 = None

    def __call__(self, step: int) -> None:
        now = time.monotonic()
        if self._t0 is None:
            self._t0, self._step0 = now, step
            return
        if now - self._t0 >= self._every and step > self._step0:
            self._writer.write_scalars(step, {"steps_per_sec": (step - self._step0)
                                              / (now - self._t0)})
            self._t0, self._step0 = now, step


class ProfileHook:
    """One ``jax.profiler`` trace of ``num_steps`` steps, starting ``first`` steps after the
    first call (past compilation), written under ``logdir/plugins/profile``."""

    def __init__(self, logdir: str, num_steps: int = 5, first: int = 10):
        self._logdir, self._num, self._first = logdir, int(num_steps), int(first)
        self._start_at = self._stop_at = None

    def __call__(self, step: int) -> None:
        if self._start_at is None:
            self._start_at = step + self._first
        if step == self._start_at:
            jax.profiler.start_trace(self._logdir)
            self._stop_at = step + self._num
        elif step == self._stop_at:
            jax.profiler.stop_trace()
            self._stop_at = None
            logging.info("profile of steps %d-%d written to %s", self._start_at + 1, step,
                         self._logdir)

    def close(self) -> None:
        """Ends a trace that the run's end cut short."""
        if self._stop_at is not None:
            jax.profiler.stop_trace()
            self._stop_at = None
