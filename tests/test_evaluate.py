"""Evaluation tool: numbers agree with scikit-image, files are written as documented, the
benchmark mode restores a frozen test set and evaluates it."""
import csv
import json
import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import skimage.color
import skimage.data
import skimage.metrics

from adacode_jax.cli import evaluate as evaluate_cli
from adacode_jax.models import checkpointing, perceptual
from adacode_jax.evaluation import evaluate
from adacode_jax import models


def _write(path, rgb):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))


def _distort(img, seed):
    rng = np.random.default_rng(seed)
    blurred = cv2.GaussianBlur(img, (5, 5), 1.2).astype(np.float64)
    return np.clip(np.round(blurred + rng.normal(0, 4, img.shape)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    crops = {"astronaut": skimage.data.astronaut()[40:200, 120:320],
             "chelsea": skimage.data.chelsea()[60:220, 100:300],
             "coffee": skimage.data.coffee()[100:260, 200:400]}
    for i, (name, img) in enumerate(crops.items()):
        _write(root / "gt" / f"{name}.png", img)
        _write(root / "pred" / f"{name}.png", _distort(img, i))
    return root


def _skimage_y(path, space):
    rgb = cv2.imread(str(path))[..., ::-1].astype(np.float64) / 255
    if space == "ycbcr":
        return skimage.color.rgb2ycbcr(rgb)[..., 0]
    return skimage.color.rgb2yiq(rgb)[..., 0] * 255


@pytest.mark.parametrize("space", ["ycbcr", "yiq"])
def test_psnr_and_ssim_match_scikit_image(folders, tmp_path, space):
    out = tmp_path / "res"
    rc = evaluate_cli.main(["--pred", str(folders / "pred"), "--gt", str(folders / "gt"), "--y", space,
                        "--crop-border", "4", "--no-lpips", "--output", str(out), "--quiet"])
    assert rc == 0
    res = json.loads((out / "metrics.json").read_text())
    assert set(res) >= {"protocol", "mean", "per_image"} and res["protocol"]["y_space"] == space
    assert sorted(res["per_image"]) == ["astronaut", "chelsea", "coffee"]
    for stem, row in res["per_image"].items():
        c = 4
        p = _skimage_y(folders / "pred" / f"{stem}.png", space)[c:-c, c:-c]
        g = _skimage_y(folders / "gt" / f"{stem}.png", space)[c:-c, c:-c]
        ref_psnr = skimage.metrics.peak_signal_noise_ratio(g, p, data_range=255)
        ref_ssim = skimage.metrics.structural_similarity(g, p, data_range=255, gaussian_weights=True,
                                                         sigma=1.5, use_sample_covariance=False)
        print(f"{space} {stem}: psnr {row['psnr']:.6f} (skimage {ref_psnr:.6f}), "
              f"ssim {row['ssim']:.6f} (skimage {ref_ssim:.6f})")
        assert abs(row["psnr"] - ref_psnr) < 1e-3
        assert abs(row["ssim"] - ref_ssim) < 1e-4
    assert res["mean"]["psnr"] == pytest.approx(np.mean([r["psnr"] for r in res["per_image"].values()]))
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["stem"] for r in rows] == ["astronaut", "chelsea", "coffee"]
    assert float(rows[1]["ssim"]) == res["per_image"]["chelsea"]["ssim"]


def test_lpips_alex_and_vgg_and_identical_images(tmp_path):
    gt = cv2.resize(skimage.data.chelsea(), (96, 64), interpolation=cv2.INTER_AREA)
    _write(tmp_path / "gt" / "cat.png", gt)
    _write(tmp_path / "gt" / "same.png", gt[::-1])
    _write(tmp_path / "pred" / "cat.png", _distort(gt, 3))
    _write(tmp_path / "pred" / "same.png", gt[::-1])
    res = evaluate.evaluate_folders(str(tmp_path / "pred"), str(tmp_path / "gt"), progress=False)
    x = jnp.asarray(_distort(gt, 3)[None] / 255.0, jnp.float32)
    y = jnp.asarray(gt[None] / 255.0, jnp.float32)
    for net in ("alex", "vgg"):
        module, variables = perceptual.load_lpips(net)
        direct = float(perceptual.lpips_distance(module, variables, x, y)[0])
        assert res["per_image"]["cat"][f"lpips_{net}"] == pytest.approx(direct, abs=1e-6)
        assert 0.01 < direct < 1.0
        assert abs(res["per_image"]["same"][f"lpips_{net}"]) < 1e-6
    assert res["per_image"]["same"]["psnr"] is None          # infinite: stored as null
    assert res["mean"]["psnr"] is None and res["per_image"]["same"]["ssim"] == pytest.approx(1.0)
    assert "AlexNet" in res["protocol"]["lpips_alex"] and "VGG16" in res["protocol"]["lpips_vgg"]
    paths = evaluate.write_results(res, str(tmp_path / "out"))
    assert json.loads(open(paths[0]).read())["per_image"]["same"]["psnr"] is None
    print(evaluate.format_results(res))


def test_missing_predictions_and_size_mismatch_are_named(folders, tmp_path, capsys):
    pred = tmp_path / "pred"
    _write(pred / "astronaut.png", cv2.imread(str(folders / "pred" / "astronaut.png"))[..., ::-1])
    rc = evaluate_cli.main(["--pred", str(pred), "--gt", str(folders / "gt"), "--no-lpips"])
    err = capsys.readouterr().err
    assert rc == 2 and "chelsea" in err and "coffee" in err and "--allow-missing" in err
    rc = evaluate_cli.main(["--pred", str(pred), "--gt", str(folders / "gt"), "--no-lpips",
                        "--allow-missing", "--quiet"])
    assert rc == 0
    _write(pred / "chelsea.png", np.zeros((10, 12, 3), np.uint8))
    rc = evaluate_cli.main(["--pred", str(pred), "--gt", str(folders / "gt"), "--no-lpips", "--allow-missing"])
    err = capsys.readouterr().err
    assert rc == 2 and str(pred / "chelsea.png") in err and "12x10" in err


def test_console_says_what_is_not_scored_and_what_is_grey_against_colour(folders, tmp_path,
                                                                         capsys):
    pred = tmp_path / "pred"
    os.makedirs(pred)
    astronaut = cv2.imread(str(folders / "pred" / "astronaut.png"))
    cv2.imwrite(str(pred / "astronaut.png"), cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY))  # grey
    _write(pred / "chelsea.png", cv2.imread(str(folders / "pred" / "chelsea.png"))[..., ::-1])
    _write(pred / "stray.png", np.zeros((16, 16, 3), np.uint8))      # no ground truth
    rc = evaluate_cli.main(["--pred", str(pred), "--gt", str(folders / "gt"), "--no-lpips",
                            "--allow-missing", "--quiet", "--output", str(tmp_path / "out")])
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("note:")]
    assert rc == 0
    assert err == [
        "note: 1 ground-truth image(s) have no prediction and are not scored: coffee",
        f"note: 1 prediction(s) in {pred} have no ground truth in {folders / 'gt'} and are not "
        "scored: stray",
        f"note: {pred / 'astronaut.png'} is grey and its ground truth "
        f"{folders / 'gt' / 'astronaut.png'} is colour: scored with the grey one repeated to R, "
        "G and B"]
    with open(tmp_path / "out" / "metrics.json") as f:
        inputs = json.load(f)["inputs"]
    assert [m["pred_is"] for m in inputs["colour_mismatch"]] == ["grey"]
    assert evaluate.is_grey(np.repeat(np.linspace(0, 1, 6).reshape(2, 3, 1), 3, axis=2))
    assert not evaluate.is_grey(np.linspace(0, 1, 18).reshape(2, 3, 3))


@pytest.mark.parametrize("size,crop", [(8, 4), (16, 4)])
def test_images_too_small_for_the_crop_or_the_ssim_window_are_named(tmp_path, capsys, size, crop):
    """8 px: the 4 px border crop leaves nothing; 16 px: 8 px are left, under SSIM's 11 px."""
    for d in ("pred", "gt"):
        _write(tmp_path / d / "tiny.png", np.full((size, size, 3), 100, np.uint8))
    rc = evaluate_cli.main(["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                            "--no-lpips", "--quiet", "--crop-border", str(crop)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert str(tmp_path / "pred" / "tiny.png") in err[0] and f"{size}x{size}" in err[0]
    assert "internal error" not in err[0] and "--crop-border" in err[0]


def test_frechet_distance_matches_the_matrix_square_root():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 8)), rng.normal(size=(40, 8)) @ rng.normal(size=(8, 8)) + 0.3
    mu1, c1 = evaluate.gaussian_stats(a)
    mu2, c2 = evaluate.gaussian_stats(b)
    root = scipy.linalg.sqrtm(c1 @ c2).real
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * root)
    assert evaluate.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(ref, rel=1e-9)
    assert abs(evaluate.frechet_distance(mu1, c1, mu1, c1)) < 1e-9
    # Two diagonal Gaussians: |Δμ|² + Σ (σ1 − σ2)².
    s1, s2 = np.array([1.0, 4.0]), np.array([9.0, 1.0])
    fd = evaluate.frechet_distance(np.zeros(2), np.diag(s1), np.ones(2), np.diag(s2))
    assert fd == pytest.approx(2 + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2))


def test_benchmark_restores_a_frozen_test_set_and_evaluates_it(tmp_path):
    from adacode_jax.tools import make_testset

    src = tmp_path / "hq"
    _write(src / "astronaut.png", skimage.data.astronaut()[100:228, 150:278])
    _write(src / "coffee.png", skimage.data.coffee()[100:228, 150:278])
    make_testset.make_testset(str(src), str(tmp_path / "set"), "sr_x4", seed=123, progress=False)
    cfg = models.tiny_model_config("sr_x4")
    model = models.build(cfg)
    variables = {"params": model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]}
    ckpt = checkpointing.save_inference(str(tmp_path / "ckpt"), cfg, variables)
    out = tmp_path / "bench"
    rc = evaluate_cli.main(["benchmark", "--checkpoint", ckpt, "--testset", str(tmp_path / "set"),
                        "--output", str(out), "--no-lpips", "--quiet"])
    assert rc == 0
    res = json.loads((out / "metrics.json").read_text())
    assert sorted(res["per_image"]) == ["astronaut", "coffee"]
    assert res["protocol"]["benchmark"]["task"] == "sr_x4" and res["protocol"]["benchmark"]["seed"] == 123
    assert cv2.imread(str(out / "pred" / "coffee.png")).shape == (128, 128, 3)
    assert 0 < res["mean"]["psnr"] < 30          # untrained network: low, but a real number
    with open(out / "metrics.csv") as f:
        assert len(f.read().strip().splitlines()) == 3
