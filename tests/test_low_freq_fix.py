"""The low-frequency fix (adacode_jax.inference.low_freq_fix) and how the restorer applies it."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from adacode_jax.inference.low_freq_fix import low_freq_fix


def test_a_colour_cast_is_removed_and_detail_kept():
    rng = np.random.default_rng(0)
    lq = cv2.GaussianBlur(rng.random((32, 32, 3)).astype(np.float32), (0, 0), 2)
    ref = cv2.resize(lq, (128, 128), interpolation=cv2.INTER_CUBIC)
    detail = 0.05 * np.sign(rng.standard_normal((128, 128, 3))).astype(np.float32)
    out = ref + detail + np.array([0.2, -0.1, 0.05], np.float32)      # cast + fine detail
    fixed = low_freq_fix(out, lq, sigma=4.0)
    assert abs(float(np.mean(fixed - ref - detail))) < 5e-3          # the cast is gone
    kept = np.corrcoef((fixed - ref).ravel(), detail.ravel())[0, 1]
    assert kept > 0.97, kept                                          # the detail stays
    assert np.abs(fixed - ref - detail).mean() < 0.01


def test_sigma_must_be_positive():
    with pytest.raises(ValueError, match="sigma"):
        low_freq_fix(np.zeros((8, 8, 3)), np.zeros((2, 2, 3)), 0.0)


def test_restorer_takes_the_fix_from_the_checkpoint_unless_told(tmp_path):
    import json
    import jax
    import jax.numpy as jnp

    from adacode_jax.models import checkpointing
    from adacode_jax import models
    from adacode_jax.inference import restorer as restore

    cfg = models.tiny_model_config("sr_x4")
    net = models.build(cfg)
    v = net.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    d = checkpointing.save_inference(str(tmp_path / "ckpt"), cfg, {"params": v["params"]},
                                     extra={"inference": {"low_freq_fix": 4.0}})
    assert restore.inference_hints(d) == {"low_freq_fix": 4.0}
    r = restore.Restorer.from_checkpoint(d, "sr", scale=4, tile=0)
    raw = restore.Restorer.from_checkpoint(d, "sr", scale=4, tile=0, low_freq_fix=0.0)
    assert r.low_freq_fix == 4.0 and raw.low_freq_fix == 0.0
    lq = np.random.default_rng(1).random((16, 16, 3)).astype(np.float32)
    a, b = r.restore_rgb(lq)[0], raw.restore_rgb(lq)[0]
    expect = np.clip(low_freq_fix(
        raw._restore_planned(lq, None)[0], lq, 4.0), 0, 1)
    np.testing.assert_allclose(a, expect, atol=1e-6)
    assert not np.allclose(a, b)
    with open(f"{d}/model.json") as f:
        assert json.load(f)["inference"]["low_freq_fix"] == 4.0


def test_a_model_json_written_before_the_rename_keeps_its_fix(tmp_path):
    """``low_freq_sigma`` was the key's name before 0.2.0; such a file still asks for its σ."""
    import json

    d = tmp_path / "old"
    d.mkdir()
    (d / "model.json").write_text(json.dumps({"inference": {"low_freq_sigma": 4.0, "tile": 0}}))
    from adacode_jax.inference import restorer
    assert restorer.inference_hints(str(d)) == {"low_freq_fix": 4.0, "tile": 0}
