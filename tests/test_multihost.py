"""Multi-host training for real: two processes on localhost, joined by ``jax.distributed``.

Each process is the real entry point (``python -m adacode_jax.main``) with 4 fake CPU devices,
so the mesh is 4 (data) x 2 (fsdp) over 8 devices in 2 processes and every collective crosses
the process boundary through gloo. Each host reads its own Grain shard (ShardByJaxProcess) of
the embedded images; a tiny stage III x4 run takes 3 steps, checkpoints at 2, and a second
launch resumes from that checkpoint.

What "matches" means here:

* resumed vs uninterrupted, both 2-process: the losses of step 3 are bit-identical (same
  programs, same data order, same collectives);
* 2-process vs 1-process: one process with 8 devices fed the same global batches (it reads the
  two hosts' shards itself and concatenates them in process order, which is how
  ``make_array_from_process_local_data`` assembles the global batch), from the same
  initialisation: losses equal to float32 reduction-order noise. A plain one-process run would
  read the whole data set in a different order, so its losses could not be compared.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import grain
import jax
import jax.numpy as jnp
import numpy as np
import portpicker
import pytest

from adacode_jax.models import checkpointing
from adacode_jax import models
from adacode_jax.training import loop as train
from adacode_jax.configs._base import REPO
from adacode_jax.data import pipeline
from tests.conftest import TEST_XLA_FLAGS
from tests.test_train import get_config, losses_by_step

# The run: tiny stage III x4 without LPIPS (the mechanics are the point, not the loss mix),
# global batch 8 = 4 per host, FSDP pairs inside a host and data parallelism across hosts.
OVERRIDES = {
    "train.num_steps": 3, "train.checkpoint_every": 2, "train.eval_every": 0,
    "train.eval_at_start": False, "train.image_every": 3, "train.log_every": 1,
    "train.w_lpips": 0.0, "data.batch_size": 8, "mesh.num_devices": -1, "mesh.fsdp": 2,
}
LAUNCH_TIMEOUT_S = 420


def _config(stage2: str):
    c = get_config("stage3_sr", "x4,tiny")
    for key, value in {**OVERRIDES, "train.stage2_checkpoint": stage2}.items():
        section, field = key.split(".")
        c[section][field] = value
    return c


def _launch(workdir: str, stage2: str, logs: str) -> None:
    """Runs the 2-process job to completion; kills both processes if one fails or hangs."""
    port = portpicker.pick_unused_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO,
           "XLA_FLAGS": f"--xla_force_host_platform_device_count=4 {TEST_XLA_FLAGS}"}
    settings = {**OVERRIDES, "train.stage2_checkpoint": stage2}
    flags = [f"--config.{k}={v}" for k, v in settings.items()]
    procs, outs = [], []
    for i in range(2):
        out = open(os.path.join(logs, f"{os.path.basename(workdir)}_{i}.log"), "w")
        outs.append(out)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "adacode_jax.main",
             f"--config={os.path.join(REPO, 'configs', 'stage3_sr.py')}:x4,tiny",
             f"--workdir={workdir}", f"--coordinator_address=127.0.0.1:{port}",
             "--num_processes=2", f"--process_id={i}", *flags],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    try:
        while any(p.poll() is None for p in procs):
            failed = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
        for out in outs:
            out.close()
    codes = [p.returncode for p in procs]
    if codes != [0, 0]:
        tails = []
        for i in range(2):
            with open(outs[i].name) as f:
                tail = "".join(f.readlines()[-40:])
            tails.append(f"--- process {i} (exit {codes[i]}) ---\n{tail}")
        pytest.fail(f"2-process run in {workdir} failed or timed out after {LAUNCH_TIMEOUT_S} s:\n"
                    + "\n".join(tails))


class _TwoHostStream:
    """The host batches of both hosts, read in one process and concatenated in process order:
    the global batch the 2-process run assembles. Saves its state like a Grain iterator."""

    def __init__(self, data_cfg):
        self._its = [iter(pipeline.build_dataset(
            data_cfg, shard_options=grain.sharding.ShardOptions(i, 2, drop_remainder=True)))
            for i in range(2)]

    def __next__(self):
        parts = [next(it) for it in self._its]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def get_state(self) -> bytes:
        return json.dumps([it.get_state() for it in self._its]).encode()

    def set_state(self, state: bytes) -> None:
        for it, s in zip(self._its, json.loads(state)):
            it.set_state(s)

    def close(self) -> None:
        for it in self._its:
            it.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("multihost")
    cfg = models.tiny_model_config("stage2")
    cfg.gt_resolution, cfg.codebook_scale = 64, 8      # the :tiny configs' grid
    net = models.build(cfg)
    variables = jax.jit(net.init)(jax.random.key(1), jnp.zeros((1, 64, 64, 3)))
    stage2 = checkpointing.save_inference(str(root / "s2" / "generator"), cfg, variables)

    logs = str(root / "logs")
    os.makedirs(logs)
    dirs = {name: str(root / name) for name in ("two", "resumed", "one")}
    _launch(dirs["two"], stage2, logs)

    # the resumed run: the same work directory as it was after step 2
    shutil.copytree(dirs["two"], dirs["resumed"])
    shutil.rmtree(os.path.join(dirs["resumed"], "checkpoints", "3"))
    os.remove(os.path.join(dirs["resumed"], "metrics.jsonl"))
    _launch(dirs["resumed"], stage2, logs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "make_iterator", lambda data_cfg: _TwoHostStream(data_cfg))
        one = _config(stage2)
        one.train.checkpoint_every = 100        # only the final save: the losses are the point
        train.train_and_evaluate(one, dirs["one"])
    return dirs


def test_two_processes_checkpoint_per_host_state_and_export(runs):
    step2 = os.path.join(runs["two"], "checkpoints", "2")
    assert sorted(f for f in os.listdir(os.path.join(step2, "data")) if f.endswith(".json")) == [
        "process_0-of-2.json", "process_1-of-2.json"]
    for i in range(2):                                  # each host's position in its own shard
        with open(os.path.join(step2, "data", f"process_{i}-of-2.json")) as f:
            assert json.load(f)["next_index"] == 2 * 4  # 2 steps of 4 examples per host
    export = os.path.join(runs["two"], "export", "generator")
    assert os.path.exists(os.path.join(export, checkpointing.MODEL_JSON))
    assert sorted(losses_by_step(runs["two"])) == [1, 2, 3]


def test_resume_on_two_processes_is_bit_identical(runs):
    full, resumed = losses_by_step(runs["two"]), losses_by_step(runs["resumed"])
    assert sorted(resumed) == [3]
    assert resumed[3] == full[3]


def test_two_processes_match_one_process_fed_the_same_global_batches(runs):
    two, one = losses_by_step(runs["two"]), losses_by_step(runs["one"])
    assert sorted(one) == sorted(two) == [1, 2, 3]
    for s in (1, 2, 3):
        assert set(one[s]) == set(two[s])
        for k in one[s]:
            np.testing.assert_allclose(two[s][k], one[s][k], rtol=2e-3, atol=1e-5,
                                       err_msg=f"step {s} {k}")
