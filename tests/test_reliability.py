"""Training never runs on something it did not intend, and non-finite outputs are never written:
stage chaining checks, one config and one run per workdir, invalid values refused before
compiling, and NaN/Inf refused by restore, export and the inference-checkpoint loader."""
from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from adacode_jax.cli import export as export_cli
from adacode_jax.inference import batch as batch_restore, export, restorer as restore
from adacode_jax.models import checkpointing
from adacode_jax.configs import _base as config_lib
from adacode_jax import models
from adacode_jax.training import loop as train, stages
from adacode_jax.training import workdir as workdir_lib
from tests.test_train import get_config, losses_by_step, mechanics_config


# ---- stage chaining ---------------------------------------------------------------------------

def _stage2_variables(**model_overrides):
    cfg = models.tiny_model_config("stage2")
    cfg.gt_resolution, cfg.codebook_scale = 64, 8       # the :tiny configs' grid
    cfg.update(model_overrides)
    variables = jax.jit(models.build(cfg).init)(jax.random.key(1), jnp.zeros((1, 64, 64, 3)))
    return cfg, jax.device_get(variables)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Random-init tiny stage II exports: one that fits the :tiny stage III configs, one of
    another width (channels x 2, swin_dim 64), one without out_conv, and a D of another width."""
    root = tmp_path_factory.mktemp("exports")
    out = {}
    cfg, v = _stage2_variables()
    out["good"] = checkpointing.save_inference(str(root / "good" / "generator"), cfg, v)
    wide = models.tiny_model_config("stage2")
    cfg_w, v_w = _stage2_variables(channels=tuple(2 * c for c in wide.channels), swin_dim=64)
    out["wide"] = checkpointing.save_inference(str(root / "wide" / "generator"), cfg_w, v_w)
    params = dict(v["params"])
    del params["out_conv"]
    out["no_out_conv"] = checkpointing.save_inference(str(root / "cut" / "generator"), cfg,
                                                      {"params": params})
    d_cfg = models.tiny_model_config("disc")
    d_cfg.num_feat = 2 * d_cfg.num_feat
    d_vars = jax.device_get(jax.jit(models.build(d_cfg).init)(jax.random.key(2),
                                                               jnp.zeros((1, 64, 64, 3))))
    checkpointing.save_inference(str(root / "good" / "discriminator_wide"), d_cfg, d_vars)
    out["disc_wide"] = str(root / "good" / "discriminator_wide")
    return out


def _stage3(stage2: str, **train_overrides):
    c = get_config("stage3_sr", "x4,tiny")
    c.train.stage2_checkpoint = stage2
    c.train.update(train_overrides)
    return c


def test_stage2_without_stage1_codebooks_is_refused_unless_allowed():
    c = get_config("stage2_adacode", "tiny")
    with pytest.raises(config_lib.ConfigError) as e:      # a user's mistake: exit 2, one line
        stages.prepare_config(c)
    assert str(e.value) == (
        "train.stage1_checkpoints is empty: stage II would mix random, frozen codebooks; list "
        "the stage I exports (--config.train.stage1_checkpoints='(\"runs/s1_<class>/export/"
        "generator\", ...)') or set train.allow_random_codebooks=True for an experiment")
    c.train.allow_random_codebooks = True
    prepared, init = stages.prepare_config(c)
    assert init == {} and prepared.model.codebooks == c.model.codebooks


def test_stage2_refuses_a_stage1_checkpoint_that_is_not_stage1(exports):
    c = get_config("stage2_adacode", "tiny")
    c.train.stage1_checkpoints = (exports["good"], exports["good"])
    with pytest.raises(ValueError, match=r"^train.stage1_checkpoints: .*good/generator holds a "
                                         r"'stage2' network, not a stage I"):
        stages.prepare_config(c)


def test_which_stage3_leaves_come_from_stage2():
    """Everything but the LQ encoder's own Swin stack and up stages (tiny x4: depth 1)."""
    required, kept = stages.stage2_leaves(_stage3("x"))
    tops = {k.split("/")[0] for k in required}
    assert tops == {"quantize_group.0", "quantize_group.1", "after_quant_group.0",
                    "after_quant_group.1", "before_quant_group.0", "before_quant_group.1",
                    "decoder_group.0", "decoder_group.1", "decoder_group.2", "out_conv",
                    "weight_predictor", "multiscale_encoder"}
    for frozen in config_lib.FROZEN[3]:
        assert any(k.startswith(frozen) for k in required), frozen
    enc = {"/".join(k.split("/")[:3]) for k in required if k.startswith("multiscale_encoder")}
    # in_conv and the down stage; blocks.2/2, a ResBlock of the first up stage, has the name
    # and shape of the HQ encoder's third down stage's ResBlock (BasicSR's strict=False takes it)
    assert {e for e in enc if "blocks.0" not in e} == {"multiscale_encoder/in_conv/bias",
                                                       "multiscale_encoder/in_conv/kernel",
                                                       "multiscale_encoder/blocks.2/2"}
    assert {"/".join(k.split("/")[:3]) for k in kept} == {
        "multiscale_encoder/blocks.1/swin_blks.0", "multiscale_encoder/blocks.2/1",
        "multiscale_encoder/blocks.2/3", "multiscale_encoder/blocks.3/1",
        "multiscale_encoder/blocks.3/2", "multiscale_encoder/blocks.3/3"}


def test_stage3_accepts_a_fitting_stage2_export(exports):
    config, init = stages.prepare_config(_stage3(exports["good"]))
    assert "teacher" in init and "disc" not in init


def test_stage3_refuses_a_stage2_export_of_another_width(exports):
    with pytest.raises(ValueError) as e:
        stages.prepare_config(_stage3(exports["wide"]))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"train.stage2_checkpoint: {exports['wide']} does not fit the stage III "
                          "network (")
    assert "other shapes (export vs network) " in msg
    assert "after_quant_group.0/" in msg and " (+" in msg     # named, then the count of the rest
    assert msg.endswith("use the stage II export trained with the same model.* sizes, or make "
                        "model.* match it")


def test_stage3_refuses_a_stage2_export_missing_leaves(exports):
    with pytest.raises(ValueError, match=r"does not fit the stage III network \(2 of \d+ leaves "
                                         r"it must take\): missing out_conv/bias, out_conv/kernel;"):
        stages.prepare_config(_stage3(exports["no_out_conv"]))


def test_stage3_refuses_a_discriminator_of_another_width(exports):
    c = _stage3(exports["good"], stage2_disc_checkpoint=exports["disc_wide"])
    with pytest.raises(ValueError, match=r"^train.stage2_disc_checkpoint: .*discriminator_wide "
                                         r"does not fit disc.\* \(\d+ leaves missing, extra or of "
                                         r"another shape: params/"):
        stages.prepare_config(c)


# ---- invalid values ---------------------------------------------------------------------------

@pytest.mark.parametrize("section,field,value,message", [
    ("train", "keep_checkpoints", 0, "train.keep_checkpoints=0 must be an integer >= 1"),
    ("train", "log_every", 0, "train.log_every=0 must be an integer >= 1"),
    ("train", "checkpoint_every", -5, "train.checkpoint_every=-5 must be an integer >= 1"),
    ("train", "eval_every", -1, "train.eval_every=-1 must be an integer >= 0 (0 = never)"),
    ("train", "image_every", -1, "train.image_every=-1 must be an integer >= 0 (0 = never)"),
    ("mesh", "num_devices", 0, "mesh.num_devices=0 must be -1 (all devices) or a positive count"),
    ("model", "dtype", "float64",
     "model.dtype='float64' is not supported; use one of bfloat16, float16, float32"),
    ("disc", "param_dtype", "int8",
     "disc.param_dtype='int8' is not supported; use one of bfloat16, float16, float32"),
])
def test_invalid_values_are_refused(section, field, value, message):
    c = mechanics_config()
    c[section][field] = value
    with pytest.raises(ValueError) as e:
        config_lib.validate(c)
    assert str(e.value) == f"invalid config: {message}"


@pytest.mark.parametrize("section,field,value", [
    ("train", "lr_g", float("nan")), ("train", "w_lpips", float("inf")),
    ("train", "b2", float("-inf"))])
def test_non_finite_numbers_are_refused_by_name(section, field, value):
    c = mechanics_config()
    assert isinstance(c[section][field], float)
    c[section][field] = value
    with pytest.raises(config_lib.ConfigError, match=rf"^invalid config: {section}\.{field} must "
                                                     r"be a finite number \(got NaN or infinity\)$"):
        config_lib.validate(c)


def test_non_finite_entries_of_tuples_are_named():
    import ml_collections

    c = ml_collections.ConfigDict({"a": {"b": (0.5, float("nan")), "c": 1.0}, "d": float("inf")})
    assert config_lib.non_finite_fields(c) == ["a.b[1]", "d"]


def test_zero_means_never_for_eval_and_images():
    c = mechanics_config(eval_every=0, image_every=0)
    config_lib.validate(c)


def test_more_devices_than_available_is_refused_before_compiling(tmp_path):
    c = mechanics_config(num_steps=1)
    c.mesh.num_devices = jax.device_count() + 1
    with pytest.raises(ValueError) as e:
        train.train_and_evaluate(c, str(tmp_path / "w"))
    assert str(e.value) == (f"invalid config: mesh.num_devices={jax.device_count() + 1} but only "
                            f"{jax.device_count()} cpu device(s) are available; lower "
                            "mesh.num_devices or use -1 (all)")
    assert not os.path.exists(tmp_path / "w")


# ---- one run per workdir ------------------------------------------------------------------------

def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _write_lock(workdir, pid, host):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, workdir_lib.LOCK_FILE), "w") as f:
        json.dump({"pid": pid, "host": host, "started": "2026-01-01T00:00:00+0000"}, f)


def test_lock_names_its_holder_and_is_released(tmp_path):
    wd = str(tmp_path)
    path = workdir_lib.acquire_lock(wd)
    with open(path) as f:
        holder = json.load(f)
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    assert set(holder) == {"pid", "host", "started"}
    with pytest.raises(workdir_lib.WorkdirBusyError) as e:
        workdir_lib.acquire_lock(wd)
    assert str(e.value) == (f"{wd} is in use by process {os.getpid()} on {socket.gethostname()} "
                            f"(started {holder['started']}, lock {path}); wait for that run, use "
                            "another workdir, or delete the lock if that run is dead")
    workdir_lib.release_lock(path)
    assert not os.path.exists(path)


def test_a_stale_lock_of_this_host_is_taken_over(tmp_path, caplog):
    dead = _dead_pid()
    _write_lock(tmp_path, dead, socket.gethostname())
    with caplog.at_level(logging.WARNING):
        path = workdir_lib.acquire_lock(str(tmp_path))
    with open(path) as f:
        assert json.load(f)["pid"] == os.getpid()
    assert f"taking over the lock of process {dead}" in caplog.text
    workdir_lib.release_lock(path)


def test_a_lock_of_another_host_is_refused(tmp_path):
    _write_lock(tmp_path, 1234, "elsewhere")
    with pytest.raises(workdir_lib.WorkdirBusyError, match=r"is in use by process 1234 on elsewhere "):
        workdir_lib.acquire_lock(str(tmp_path))


def test_second_launch_on_a_held_workdir_is_refused(tmp_path):
    _write_lock(tmp_path, os.getpid(), socket.gethostname())
    with pytest.raises(workdir_lib.WorkdirBusyError, match=f"in use by process {os.getpid()}"):
        train.train_and_evaluate(mechanics_config(num_steps=1), str(tmp_path))
    assert os.listdir(tmp_path) == [workdir_lib.LOCK_FILE]        # nothing else was started


def test_the_lock_is_released_when_the_run_fails(tmp_path, monkeypatch):
    seen = {}

    def failing_run(config, init, workdir):
        seen["held"] = os.path.exists(os.path.join(workdir, workdir_lib.LOCK_FILE))
        raise RuntimeError("boom")

    monkeypatch.setattr(train, "_run", failing_run)
    with pytest.raises(RuntimeError, match="boom"):
        train.train_and_evaluate(mechanics_config(num_steps=1), str(tmp_path))
    assert seen["held"] and not os.path.exists(tmp_path / workdir_lib.LOCK_FILE)


# ---- one config per workdir ---------------------------------------------------------------------

def test_resume_refuses_another_config_and_allows_cadences(tmp_path):
    wd = str(tmp_path / "run")
    train.train_and_evaluate(mechanics_config(num_steps=1, checkpoint_every=1), wd)
    assert not os.path.exists(os.path.join(wd, workdir_lib.LOCK_FILE))
    c = mechanics_config(num_steps=2, checkpoint_every=1)
    c.seed = 1
    c.data.batch_size = 8
    c.model.mlp_ratio = 2.0
    with pytest.raises(ValueError) as e:
        train.train_and_evaluate(c, wd)
    assert str(e.value) == (
        f"{wd} belongs to another config: its checkpoint at step 1 differs in "
        "data.batch_size: 4 → 8; model.mlp_ratio: 4.0 → 2.0; seed: 0 → 1; resume with the "
        "saved values or start a new workdir")
    assert not os.path.exists(os.path.join(wd, workdir_lib.LOCK_FILE))
    # cadences, length, retention and loader settings may change
    c = mechanics_config(num_steps=2, checkpoint_every=2, log_every=2, keep_checkpoints=5,
                         async_checkpoints=True, profile=False)
    c.data.worker_buffer_size = 2
    c.eval.num_images = 3
    train.train_and_evaluate(c, wd)
    assert sorted(losses_by_step(wd)) == [1, 2]


def test_check_resume_config_lists_every_fixed_field():
    saved = json.loads(mechanics_config().to_json())
    c = mechanics_config(lr_g=5e-4)
    c.data.crop_size = 32
    c.data.read_threads = 4
    c.disc.num_feat = 8
    c.train.frozen = ()
    workdir_lib.check_resume_config(saved, mechanics_config(), "wd", 3)     # same config: fine
    with pytest.raises(ValueError) as e:
        workdir_lib.check_resume_config(saved, c, "wd", 3)
    assert str(e.value) == ("wd belongs to another config: its checkpoint at step 3 differs in "
                            "data.crop_size: 64 → 32; disc.num_feat: 16 → 8; "
                            "train.frozen: [\"quantize\"] → []; resume with the saved values or "
                            "start a new workdir")


# ---- non-finite weights, inputs and outputs -----------------------------------------------------

@pytest.fixture(scope="module")
def sr2(tmp_path_factory):
    cfg = models.tiny_model_config("sr_x2")
    model = models.build(cfg)
    variables = jax.device_get(
        {"params": model.init(jax.random.key(2), jnp.zeros((1, 32, 32, 3)))["params"]})
    flat = traverse_util.flatten_dict(variables["params"], sep="/")
    k = sorted(n for n in flat if n.startswith("out_conv"))[-1]          # out_conv/kernel
    flat[k] = np.array(flat[k])
    flat[k].flat[0] = np.nan
    broken = {"params": traverse_util.unflatten_dict(flat, sep="/")}
    root = tmp_path_factory.mktemp("sr2")
    ckpt = checkpointing.save_inference(str(root / "broken"), cfg, broken)
    return cfg, model, variables, broken, ckpt, k


def test_load_inference_refuses_non_finite_weights(sr2):
    _, _, _, _, ckpt, leaf = sr2
    with pytest.raises(ValueError) as e:
        checkpointing.load_inference(ckpt)
    assert str(e.value) == (f"{ckpt}: the weights are broken: params/{leaf} holds NaN/Inf "
                            "values; re-export them from a training checkpoint saved before the "
                            "loss diverged")


def test_restorer_refuses_non_finite_inputs_and_outputs(sr2):
    _, model, variables, broken, _, _ = sr2
    x = np.full((32, 32, 3), 0.5, np.float32)
    x[3, 4, 1] = np.inf
    with pytest.raises(restore.NonFiniteError) as e:
        restore.Restorer(model, variables, tile=0).restore_rgb(x)
    assert str(e.value) == ("the input has 1 NaN/Inf sample(s); pixel values must be finite, "
                            "in [0, 1]: fix or re-export the image")
    with pytest.raises(restore.NonFiniteError, match=r"^the network produced \d+ NaN/Inf output "
                       r"sample\(s\) from finite input: the weights are broken or float32 "
                       r"overflowed; try --dtype float32 or another checkpoint$"):
        restore.Restorer(model, broken, tile=0).restore_rgb(np.full((32, 32, 3), 0.5, np.float32))


def test_batch_restore_writes_nothing_non_finite(sr2, tmp_path):
    _, model, variables, broken, _, _ = sr2
    src = tmp_path / "in"
    src.mkdir()
    bad = np.full((32, 32, 3), 0.5, np.float32)
    bad[0, 0, 0] = np.nan
    assert cv2.imwrite(str(src / "nan.tiff"), bad)
    cv2.imwrite(str(src / "ok.png"), np.full((32, 32, 3), 128, np.uint8))
    jobs = batch_restore.list_inputs(str(src), str(tmp_path / "out"))
    notes = []
    report = batch_restore.restore_files(restore.Restorer(model, variables, tile=0), jobs,
                                         str(tmp_path / "out"), progress=False, note=notes.append)
    assert [os.path.basename(p) for p in report.written] == ["ok.png"]
    assert report.failed == [(str(src / "nan.tiff"),
                              "the float image holds 1 NaN/Inf sample(s); pixel "
                              "values must be finite, in [0, 1]; fix or re-export it")]
    assert notes == [f"FAILED {src / 'nan.tiff'}: {report.failed[0][1]}"]
    report = batch_restore.restore_files(restore.Restorer(model, broken, tile=0), jobs[1:],
                                         str(tmp_path / "out2"), progress=False, note=notes.append)
    assert report.written == [] and not os.path.exists(tmp_path / "out2" / "ok.png")
    assert report.failed[0][1].startswith("the network produced ")


def test_export_refuses_non_finite_weights_and_outputs(sr2, tmp_path, capsys):
    cfg, model, variables, broken, ckpt, leaf = sr2
    assert export_cli.main(["--checkpoint", ckpt, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {ckpt}: the weights are broken: params/{leaf}") and err.count("\n") == 1
    assert not os.path.exists(tmp_path / "o")
    exported = export.export_restore(model, variables, shape=(32, 32), platforms=("cpu",))
    with pytest.raises(ValueError, match=rf"^src: the weights are broken: {leaf} holds NaN/Inf"):
        export.check_finite(model, broken, exported, "src", (32, 32))
    export.check_finite(model, variables, exported, "src", (32, 32))        # finite: fine
    huge = jax.tree.map(lambda a: np.full_like(a, 3e38), variables)         # overflows to NaN
    with pytest.raises(ValueError, match=r"^src: the exported function returns NaN/Inf on a grey "
                                         r"32x32 probe image \(float32 compute\); nothing was "
                                         r"exported: try --dtype float32 or another checkpoint$"):
        export.check_finite(model, huge, exported, "src", (32, 32))
