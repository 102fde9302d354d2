"""The shipped compact ×4 model on real pixels: the frozen held-out set (assets/evalset, 23 real
photos never trained on, BSRGAN ×4 seed 123), scored against bicubic with the evaluation
protocol of ``python -m adacode_jax.cli.compare``, and against the figures in its model card."""
from __future__ import annotations

import json
import os

import pytest

from adacode_jax.cli import restore as restore_cli
from adacode_jax.evaluation import compare
from adacode_jax.configs import _base as config_lib
from adacode_jax.inference import restorer as restore

CARD_METRICS = os.path.join(restore.PRETRAINED_DIR, "compact_sr_x4_evalset.json")


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("compare"))
    res = compare.compare(config_lib.EVALSET, out, {"ours": restore.shipped_model("sr", 4)},
                          peer=False, panels=1, progress=False)
    return {k: v["mean"] for k, v in res["methods"].items()}, out


def test_shipped_model_beats_bicubic_on_the_held_out_set(scores):
    means, _ = scores
    ours, bic = means["ours"], means["bicubic"]
    # the bar of the compact recipe: LPIPS-Alex at least 0.05 below bicubic's, PSNR-Y no more
    # than 1.5 dB below
    assert ours["lpips_alex"] <= bic["lpips_alex"] - 0.05, (ours, bic)
    assert ours["psnr"] >= bic["psnr"] - 1.5, (ours, bic)


def test_shipped_model_scores_as_its_model_card_says(scores):
    means, out = scores
    with open(CARD_METRICS) as f:
        card = json.load(f)
    for method in ("ours", "bicubic"):
        for metric, tol in (("psnr", 0.02), ("ssim", 5e-4), ("lpips_alex", 2e-3)):
            assert abs(means[method][metric] - card[method][metric]) <= tol, (
                method, metric, means[method][metric], card[method][metric])
    assert os.path.isfile(os.path.join(out, "panels", sorted(os.listdir(
        os.path.join(out, "panels")))[0]))


def test_restore_defaults_to_the_shipped_model(tmp_path):
    from adacode_jax import images as data_io

    lq = os.path.join(config_lib.EVALSET, "lq")
    name = sorted(os.listdir(lq))[0]
    rc = restore_cli.main(["--task", "sr", "--scale", "4", "-i", os.path.join(lq, name),
                       "-o", str(tmp_path), "--no-progress"])
    assert rc == 0
    out = data_io.read_image(os.path.join(tmp_path, name))
    assert out.shape == (256, 256, 3)
    r = restore.Restorer.from_checkpoint(None, "sr", scale=4)
    assert "compact_sr_x4" in r.description


def test_no_shipped_model_for_other_tasks_names_the_fix():
    with pytest.raises(FileNotFoundError, match="--checkpoint"):
        restore.shipped_model("inpaint")


def test_the_shipped_model_runs_with_the_low_freq_fix_it_recommends():
    hints = restore.inference_hints(restore.shipped_model("sr", 4))
    assert hints["low_freq_fix"] == 4.0
    r = restore.Restorer.from_checkpoint(None, "sr", scale=4)
    assert r.low_freq_fix == 4.0
    raw = restore.Restorer.from_checkpoint(None, "sr", scale=4, low_freq_fix=0.0)
    assert raw.low_freq_fix == 0.0                 # an explicit value wins over the hint
