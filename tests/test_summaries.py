"""The TensorBoard writer of a run (``adacode_jax.training.summaries``): what it writes is read
back by TensorBoard's own loader, and it needs no TensorFlow."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto.event_pb2 import Event

from adacode_jax.configs._base import REPO
from adacode_jax.training import summaries


def _events(logdir) -> list:
    """The events as written (the raw loader: no conversion of scalars to tensors)."""
    return [Event.FromString(r) for f in sorted(logdir.glob("events.out.tfevents*"))
            for r in RawEventFileLoader(str(f)).Load()]


def test_scalars_images_and_hparams_read_back(tmp_path):
    w = summaries.Writer(str(tmp_path), enabled=True)
    w.write_hparams({"train.lr_g": 1e-4, "model.kind": "sr_x4", "data.batch_size": 8})
    w.write_scalars(3, {"loss/pix": 0.25, "val/psnr": 21.5})
    w.write_images(3, {"panel": np.linspace(0, 1, 2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)})
    w.close()
    events = _events(tmp_path)
    scalars = {(v.tag, e.step): v.simple_value for e in events for v in e.summary.value
               if v.HasField("simple_value")}
    assert scalars == {("loss/pix", 3): 0.25, ("val/psnr", 3): 21.5}
    (image,) = [v.image for e in events for v in e.summary.value if v.HasField("image")]
    assert image.encoded_image_string.startswith(b"\x89PNG")
    assert image.height == 4 and image.width >= 2 * 6       # the two images side by side
    plugins = {v.metadata.plugin_data.plugin_name for e in events for v in e.summary.value}
    assert "hparams" in plugins


def test_flush_puts_every_event_in_the_file_and_each_process_has_its_own(tmp_path,
                                                                         monkeypatch):
    # what the loop relies on before a checkpoint: after flush, with the writer still open (a
    # kill -9 would come next), every event written is in the file; a second writer in the
    # same second (a resumed run) opens another file instead of truncating the first
    w = summaries.Writer(str(tmp_path), enabled=True)
    for step in range(1, 31):
        w.write_scalars(step, {"loss/pix": step / 10, "loss/g_gan": 0.5})
    w.flush()
    steps = [e.step for e in _events(tmp_path) for v in e.summary.value if v.tag == "loss/pix"]
    assert steps == list(range(1, 31))
    pid = os.getpid()
    monkeypatch.setattr(summaries.os, "getpid", lambda: pid + 1)   # another process
    w2 = summaries.Writer(str(tmp_path), enabled=True)
    w2.write_scalars(31, {"loss/pix": 3.1})
    w2.flush()
    assert len(list(tmp_path.glob("events.out.tfevents*"))) == 2
    steps = [e.step for e in _events(tmp_path) for v in e.summary.value if v.tag == "loss/pix"]
    assert sorted(steps) == list(range(1, 32))
    w.close()
    w2.close()


def test_other_processes_only_log(tmp_path):
    w = summaries.Writer(str(tmp_path / "tb"), enabled=False)
    w.write_scalars(1, {"loss/pix": 1.0})
    w.write_images(1, {"panel": np.zeros((1, 2, 2, 3), np.uint8)})
    w.close()
    assert not (tmp_path / "tb").exists()


def test_rate_hook_writes_steps_per_second_after_its_interval(tmp_path, monkeypatch):
    clock = iter([100.0, 101.0, 130.0])
    monkeypatch.setattr(summaries.time, "monotonic", lambda: next(clock))
    written = []

    class _W:
        def write_scalars(self, step, scalars):
            written.append((step, scalars))

    hook = summaries.RateHook(_W(), every_secs=20)
    hook(1)            # starts the clock (after the compilation)
    hook(2)            # 1 s later: too soon
    hook(61)           # 30 s after the start: 60 steps
    assert written == [(61, {"steps_per_sec": 2.0})]


def test_the_writer_imports_no_tensorflow():
    code = ("import sys; sys.modules['tensorflow'] = None; "
            "from adacode_jax.training import loop, summaries, workdir; "
            "print('tensorflow' in {m.split('.')[0] for m, v in sys.modules.items() if v})")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": REPO})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "False"
