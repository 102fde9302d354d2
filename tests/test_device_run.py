"""launch/device_run.sh: the CPU smoke run (``ADACODE_DEVICE_SMOKE=1``) goes through every step
on tiny sizes and writes a summary with real figures, within the limits on what comes back
from a lent machine; a failing step is one line and the others still run."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from adacode_jax.configs._base import EVALSET, REPO
from adacode_jax.tools import device_check

SCRIPT = os.path.join(REPO, "launch", "device_run.sh")
STEPS = ("env", "parity", "speed", "train", "score", "limits")


def _run(out, **env):
    full = {**os.environ, "JAX_PLATFORMS": "cpu", "ADACODE_DEVICE_SMOKE": "1", "OUT": str(out),
            "PY": sys.executable, **env}
    return subprocess.run(["bash", SCRIPT], env=full, cwd=REPO, capture_output=True, text=True,
                          timeout=1200)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("device_out")
    res = _run(out)
    path = os.path.join(out, "summary.json")
    if not os.path.exists(path):
        pytest.fail(f"no summary.json (exit {res.returncode}):\n{res.stdout}\n{res.stderr}")
    with open(path) as f:
        return res, out, json.load(f)


def test_smoke_run_passes_every_step_within_the_file_limits(smoke):
    res, out, summary = smoke
    assert res.returncode == 0, res.stdout + res.stderr
    files = sorted(os.listdir(out))
    assert files == ["device_run.log", "sr_x4_run.tar.gz", "summary.json"]
    assert len(files) <= 8
    assert all(0 < os.path.getsize(os.path.join(out, f)) <= 16 * 2**20 for f in files)
    assert summary["mode"] == "smoke" and summary["failed_steps"] == 0
    assert set(summary["steps"]) == set(STEPS)
    for name in STEPS:
        step = summary["steps"][name]
        assert step["status"] == "ok" and step["rc"] == 0 and step["seconds"] >= 0, name
        assert f"[{name}] ok" in res.stdout
    env = summary["steps"]["env"]["result"]
    assert env["platform"] == "cpu" and env["missing_modules"] == []
    assert env["versions"]["jax"] and env["line"] == summary["headline"]["environment"]


def test_parity_errors_are_within_the_bounds_of_the_parity_tests(smoke):
    cases = smoke[2]["steps"]["parity"]["result"]["cases"]
    assert set(cases) == {"stage1_float32", "disc_float32", "disc_bfloat16"}
    # tests/test_parity.py (float32) and tests/test_mixed_precision.py (bfloat16)
    assert device_check.PARITY_BOUNDS == {"float32": 1e-3, "bfloat16": 0.05}
    for name, c in cases.items():
        assert c["ok"] and 0 < c["max_rel_err"] <= c["bound"], name
        assert c["bound"] == device_check.PARITY_BOUNDS[c["dtype"]]
    assert cases["stage1_float32"]["precision"] == "highest"
    assert cases["stage1_float32"]["max_rel_err"] < 1e-4       # float32: noise, not a bug
    assert cases["stage1_float32"]["index_agreement"] >= 0.99
    assert cases["disc_bfloat16"]["max_rel_err"] > cases["disc_float32"]["max_rel_err"]


def test_speed_figures_are_measured(smoke):
    speed = smoke[2]["steps"]["speed"]["result"]
    cases = speed["cases"]
    step, fwd, data = (cases["train_sr_x4_b2_float32"], cases["forward_sr_x4_16_float32"],
                       cases["data_sr_x4"])
    assert step["ms_per_step"] > 0 and step["gflops"] > 0 and step["compile_s"] > 0
    assert step["images_per_s"] == pytest.approx(2 / step["ours_s"], rel=0.01)
    assert fwd["ms_per_image"] > 0 and fwd["output"] == [64, 64] and fwd["gflops"] > 0
    assert data["pairs_per_s_per_core"] > 0
    demand = speed["data_demand"]["train_sr_x4_b2_float32"]
    assert demand["data_cores_needed"] == pytest.approx(
        step["images_per_s"] / data["pairs_per_s_per_core"], abs=0.01)


def test_training_stops_on_sigterm_and_its_export_is_the_archive(smoke, tmp_path):
    _, out, summary = smoke
    train = summary["steps"]["train"]["result"]
    # asked to stop after its first step: saved and exported long before the 1200 steps
    assert 2 <= train["exported_step"] < train["num_steps"] == 1200 and train["stage"] == 3
    assert train["signals"].startswith("SIGTERM after ")
    assert train["train_images"] == "adacode_jax/assets/images"
    assert train["train_images_count"] == 11
    assert train["logged_steps"][-1] <= train["exported_step"]
    assert all(math.isfinite(v) for v in train["last_losses"].values())
    with tarfile.open(os.path.join(out, "sr_x4_run.tar.gz")) as tar:
        tar.extractall(tmp_path, filter="data")
    with open(tmp_path / "export" / "generator" / "model.json") as f:
        meta = json.load(f)
    assert meta["step"] == train["exported_step"] and meta["model"]["kind"] == "sr_x4"
    assert (tmp_path / "metrics.jsonl").exists() and (tmp_path / "train.log").exists()


def test_held_out_scores_match_bicubic_computed_here(smoke):
    from adacode_jax import images
    from adacode_jax.evaluation import compare, metrics

    score = smoke[2]["steps"]["score"]["result"]
    assert score["images"] == 2 and set(score["methods"]) == {"bicubic", "trained"}
    names = sorted(os.listdir(os.path.join(EVALSET, "lq")))[:2]
    psnr = []
    for name in names:
        lq = images.read_image(os.path.join(EVALSET, "lq", name))
        gt = images.read_image(os.path.join(EVALSET, "gt", name))
        pred = (np.round(compare.bicubic_x4(lq) * 255) / 255).astype(np.float32)
        psnr.append(metrics.psnr(pred=pred, gt=gt, crop_border=4, y_space="ycbcr"))
    assert score["methods"]["bicubic"]["psnr"] == pytest.approx(np.mean(psnr), abs=1e-6)
    trained = score["methods"]["trained"]
    assert 0 < trained["psnr"] < 60 and 0 <= trained["lpips_alex"] <= 1


def test_failed_steps_are_one_line_each_and_counted_in_the_exit_code(tmp_path):
    """With an interpreter that fails at once, every Python step fails and the rest still
    run: the exit code is their number (env, parity, speed, train, score, summary)."""
    res = _run(tmp_path, PY="false")
    assert res.returncode == 6, res.stdout + res.stderr
    failed = [line for line in res.stdout.splitlines() if "FAILED" in line]
    assert [line.split("]")[0] for line in failed] == [
        "[env", "[parity", "[speed", "[train", "[score"]
    assert "[limits] ok" in res.stdout and "6 failed step(s)" in res.stdout
    assert os.listdir(tmp_path) == ["device_run.log"]
