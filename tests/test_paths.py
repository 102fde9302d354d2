"""Remote workdirs (``gs://`` on Cloud TPU): our own files go through fsspec and a URL is never
made "absolute". Exercised on fsspec's in-memory ``memory://`` filesystem (no network here);
Orbax and the TensorBoard writer read URLs themselves."""
from __future__ import annotations

import json
import os

from adacode_jax.models import checkpointing
from adacode_jax import paths
from adacode_jax.training import checkpoints, logs


def test_urls_stay_urls_and_local_paths_become_absolute():
    assert paths.absolute("gs://bucket/runs/x4") == "gs://bucket/runs/x4"
    assert paths.absolute("runs/x4") == os.path.join(os.getcwd(), "runs/x4")
    assert paths.is_url("memory://a/b") and not paths.is_url("/tmp/a")


def test_run_files_on_a_remote_filesystem():
    root = "memory://adacode-test/run"
    assert not paths.exists(root + "/metrics.jsonl")
    paths.makedirs(root + "/best/generator")
    writer = logs.JsonlWriter(root + "/metrics.jsonl", enabled=True)
    writer.write(5, {"loss/pix": 0.25})
    writer.write(10, {"loss/pix": 0.125})
    with paths.open_file(root + "/metrics.jsonl") as f:
        lines = [json.loads(line) for line in f.read().splitlines()]
    assert all(isinstance(line.pop("wall_time"), float) for line in lines)
    assert lines == [{"step": 5, "loss/pix": 0.25}, {"step": 10, "loss/pix": 0.125}]
    # the best-so-far score of a resumed run is read back from best/generator/model.json
    with paths.open_file(root + "/best/generator/" + checkpointing.MODEL_JSON, "w") as f:
        json.dump({"val/lpips_alex": 0.3125}, f)
    assert checkpoints.read_best(root) == 0.3125
    assert checkpoints.read_best("memory://adacode-test/none") is None


def test_missing_remote_export_names_the_path():
    import pytest

    with pytest.raises(FileNotFoundError, match="memory://adacode-test/nothing/model.json"):
        checkpointing.load_inference("memory://adacode-test/nothing")


def test_a_resume_rewrites_remote_logs(tmp_path):
    """``drop_logs_after`` on a URL: metrics.jsonl lines and TensorBoard events beyond the
    resumed step go, through fsspec and TensorBoard's TensorFlow-free record reader."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboardX import SummaryWriter

    from adacode_jax.training import workdir

    with SummaryWriter(str(tmp_path)) as w:
        for step in (1, 2, 3):
            w.add_scalar("loss/pix", 1.0 / step, global_step=step)
    (local,) = [p for p in tmp_path.iterdir() if p.name.startswith("events.out.tfevents")]
    root = "memory://adacode-test/resumed"
    paths.makedirs(root + "/tensorboard")
    with paths.open_file(f"{root}/tensorboard/{local.name}", "wb") as f:
        f.write(local.read_bytes())
    writer = logs.JsonlWriter(root + "/metrics.jsonl", enabled=True)
    for step in (1, 2, 3):
        writer.write(step, {"loss/pix": 1.0 / step})
    assert workdir.drop_logs_after(root, 2) == {"metrics.jsonl": 1, "tensorboard": 1}
    with paths.open_file(root + "/metrics.jsonl") as f:
        assert [json.loads(line)["step"] for line in f.read().splitlines()] == [1, 2]
    back = tmp_path / "back" / local.name
    back.parent.mkdir()
    with paths.open_file(f"{root}/tensorboard/{local.name}", "rb") as f:
        back.write_bytes(f.read())
    assert [e.step for e in EventFileLoader(str(back)).Load() if e.HasField("summary")] == [1, 2]
