"""Remote workdirs (``gs://`` on Cloud TPU): our own files go through ``tf.io.gfile`` and a
URL is never made "absolute". Exercised on TensorFlow's in-memory ``ram://`` filesystem (no
network here); Orbax and the TensorBoard writer read URLs themselves."""
from __future__ import annotations

import json
import os

from adacode_jax.models import checkpointing
from adacode_jax import paths
from adacode_jax.training import checkpoints, logs


def test_urls_stay_urls_and_local_paths_become_absolute():
    assert paths.absolute("gs://bucket/runs/x4") == "gs://bucket/runs/x4"
    assert paths.absolute("runs/x4") == os.path.join(os.getcwd(), "runs/x4")
    assert paths.is_url("ram://a/b") and not paths.is_url("/tmp/a")


def test_run_files_on_a_remote_filesystem():
    root = "ram://adacode-test/run"
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
    assert checkpoints.read_best("ram://adacode-test/none") is None


def test_missing_remote_export_names_the_path():
    import pytest

    with pytest.raises(FileNotFoundError, match="ram://adacode-test/nothing/model.json"):
        checkpointing.load_inference("ram://adacode-test/nothing")
