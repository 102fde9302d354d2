"""Export: inference-only params with Orbax and a serialized jax.export that reloads and gives
identical outputs."""
import json
import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data

from adacode_jax.cli import export as export_cli
from adacode_jax.models import checkpointing
from adacode_jax.inference import export, restorer as restore
from adacode_jax import models


@pytest.fixture(scope="module")
def sr2(tmp_path_factory):
    cfg = models.tiny_model_config("sr_x2")
    model = models.build(cfg)
    variables = {"params": model.init(jax.random.key(2), jnp.zeros((1, 32, 32, 3)))["params"]}
    ckpt = checkpointing.save_inference(str(tmp_path_factory.mktemp("ckpt") / "sr2"), cfg, variables)
    return cfg, model, variables, ckpt


def _image(h, w, batch=1):
    img = cv2.resize(skimage.data.astronaut(), (w, h), interpolation=cv2.INTER_AREA)
    x = np.stack([img, img[::-1, ::-1]][:batch]).astype(np.float32) / 255
    return jnp.asarray(x)


def test_fixed_shape_export_reloads_with_identical_outputs(sr2, tmp_path):
    cfg, model, variables, ckpt = sr2
    out_dir = tmp_path / "exp"
    assert export_cli.main(["--checkpoint", ckpt, "--output", str(out_dir), "--shape", "40x56"]) == 0
    exported, reloaded, meta = export.load_export(str(out_dir))
    assert meta["scale"] == 2 and meta["input"]["shape"] == ["1", "40", "56", "3"]
    assert set(meta["platforms"]) == {"cpu", "cuda", "tpu"}
    # (a) inference-only params: exactly the network's params, nothing else.
    assert set(reloaded) == {"params"}
    jax.tree.map(np.testing.assert_array_equal, reloaded, variables)
    # (b) the serialized function: identical to the padded restore path of the original.
    x = _image(40, 56)
    got = np.asarray(exported.call(reloaded, x))
    want = np.asarray(jax.jit(export.restore_function(model))(variables, x))
    assert got.shape == (1, 80, 112, 3)
    np.testing.assert_array_equal(got, want)
    # The params directory is a normal inference checkpoint.
    r = restore.Restorer.from_checkpoint(str(out_dir), "sr", scale=2, tile=0)
    assert r.scale == 2 and json.loads((out_dir / "model.json").read_text())["inference_only"] is True


def test_symbolic_height_and_width_export_reloads_with_identical_outputs(sr2, tmp_path):
    cfg, model, variables, _ = sr2
    exported = export.export_restore(model, variables, platforms=("cpu",))
    export.save_export(str(tmp_path / "sym"), cfg, variables, exported, source="test")
    reloaded_exp, reloaded, meta = export.load_export(str(tmp_path / "sym"))
    assert meta["input"]["shape"] == ["b", "h", "w", "3"]
    assert meta["output"]["shape"] == ["b", "2*h", "2*w", "3"]
    fn = jax.jit(export.restore_function(model))
    for shape, batch in (((37, 50), 1), ((64, 33), 2)):     # sizes, batch: one artefact for all
        x = _image(*shape, batch=batch)
        got = np.asarray(reloaded_exp.call(reloaded, x))
        assert got.shape == (batch, 2 * shape[0], 2 * shape[1], 3)
        np.testing.assert_array_equal(got, np.asarray(fn(variables, x)))
    assert os.path.getsize(tmp_path / "sym" / export.EXPORT_FILE) < 2_000_000   # params not baked in


@pytest.mark.parametrize("value,message", [
    ("foo", "unknown platform 'foo'"), ("cpu,metal", "unknown platform 'metal'"),
    (",", "none given")])
def test_unknown_platforms_are_usage_errors_before_any_work(value, message, tmp_path, capsys):
    rc = export_cli.main(["--checkpoint", str(tmp_path / "missing"), "--output",
                          str(tmp_path / "o"), "--platforms", value])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "cpu, cuda, rocm, tpu" in err, err
    assert not (tmp_path / "o").exists()


def test_export_refuses_a_state_dict_without_task(tmp_path, capsys):
    np.savez(tmp_path / "w.npz", a=np.zeros(1))
    assert export_cli.main(["--checkpoint", str(tmp_path / "w.npz"), "--output", str(tmp_path / "o")]) == 2
    assert "--task" in capsys.readouterr().err
