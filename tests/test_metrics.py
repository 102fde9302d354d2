"""PSNR / SSIM on Y against scikit-image, on real photos with real degradations."""
import math

import numpy as np
import pytest
from skimage import color, data, filters
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from adacode_jax.evaluation import metrics


def _pairs():
    """(name, gt, pred) float64 RGB in [0, 1]: non-square crops of CC0 photos, degraded."""
    rng = np.random.default_rng(0)
    photos = {"astronaut": data.astronaut()[60:260, 150:390], "coffee": data.coffee()[50:230, 100:380],
              "chelsea": data.chelsea()[40:200, 120:330]}
    out = []
    for name, img in photos.items():
        gt = img / 255.0
        blur = filters.gaussian(gt, sigma=1.5, channel_axis=-1)
        noise = np.clip(gt + 0.05 * rng.normal(size=gt.shape), 0, 1)
        quantised = np.round(np.clip(blur + 0.02 * rng.normal(size=gt.shape), 0, 1) * 255) / 255
        out += [(f"{name}-blur", gt, blur), (f"{name}-noise", gt, noise), (f"{name}-blur-noise-u8", gt, quantised)]
    return out


PAIRS = _pairs()


def test_to_y_matches_skimage_colour_conversions():
    img = data.astronaut()[:64, :64] / 255.0
    np.testing.assert_allclose(metrics.to_y(img, "ycbcr"), color.rgb2ycbcr(img)[..., 0], atol=1e-9)
    np.testing.assert_allclose(metrics.to_y(img, "yiq"), 255.0 * color.rgb2yiq(img)[..., 0], atol=1e-9)
    np.testing.assert_allclose(metrics.to_y(data.astronaut()[:64, :64], "ycbcr"), metrics.to_y(img, "ycbcr"))
    assert metrics.to_y(np.zeros((1, 1, 3)))[0, 0] == 16.0
    assert metrics.to_y(np.ones((1, 1, 3)))[0, 0] == pytest.approx(235.0)
    assert metrics.to_y(np.ones((1, 1, 3)), "yiq")[0, 0] == pytest.approx(255.0)


@pytest.mark.parametrize("y_space", ["ycbcr", "yiq"])
@pytest.mark.parametrize("name,gt,pred", PAIRS, ids=[p[0] for p in PAIRS])
def test_psnr_and_ssim_match_skimage(name, gt, pred, y_space):
    crop = 4
    y_gt = metrics.to_y(gt, y_space)[crop:-crop, crop:-crop]
    y_pred = metrics.to_y(pred, y_space)[crop:-crop, crop:-crop]
    want_psnr = peak_signal_noise_ratio(y_gt, y_pred, data_range=255)
    got_psnr = metrics.psnr(pred=pred, gt=gt, crop_border=crop, y_space=y_space)
    assert abs(got_psnr - want_psnr) < 1e-3, name
    # skimage filters the whole (cropped) image with reflect padding and then averages the SSIM
    # map without its (11 − 1)/2 = 5-pixel border (truncate 3.5 · σ 1.5 → radius 5). Those interior
    # values never touch the padding, so this is exactly BasicSR's valid-region definition.
    want_ssim = structural_similarity(y_gt, y_pred, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=255)
    got_ssim = metrics.ssim(pred=pred, gt=gt, crop_border=crop, y_space=y_space)
    assert abs(got_ssim - want_ssim) < 1e-4, name
    assert 0.0 < got_ssim < 1.0


def test_degradation_order_and_colour_space_difference():
    gt = data.astronaut()[100:300, 100:300] / 255.0
    mild = filters.gaussian(gt, sigma=1.0, channel_axis=-1)
    strong = filters.gaussian(gt, sigma=3.0, channel_axis=-1)
    assert metrics.psnr(pred=mild, gt=gt) > metrics.psnr(pred=strong, gt=gt)
    assert metrics.ssim(pred=mild, gt=gt) > metrics.ssim(pred=strong, gt=gt)
    # The two lumas differ (YCbCr compresses to 219/255 of the range, so its errors are smaller
    # and its PSNR is higher by 20·log10(255/219) ≈ 1.32 dB for the same image pair).
    diff = metrics.psnr(pred=mild, gt=gt, y_space="ycbcr") - metrics.psnr(pred=mild, gt=gt, y_space="yiq")
    assert diff == pytest.approx(20 * math.log10(255 / 219), abs=1e-9)


def test_identical_images_and_uint8_inputs():
    img = data.coffee()[:80, :96]
    assert metrics.psnr(pred=img, gt=img) == math.inf
    assert metrics.ssim(pred=img, gt=img) == pytest.approx(1.0, abs=1e-12)
    noisy = np.clip(img.astype(np.int16) + np.random.default_rng(1).integers(-8, 9, img.shape), 0, 255).astype(np.uint8)
    as_float = dict(pred=noisy / 255.0, gt=img / 255.0)
    assert metrics.psnr(pred=noisy, gt=img) == pytest.approx(metrics.psnr(**as_float), abs=1e-12)
    assert metrics.ssim(pred=noisy, gt=img) == pytest.approx(metrics.ssim(**as_float), abs=1e-12)


def test_rgb_mode_and_pyiqa_switches():
    gt = data.chelsea()[50:150, 100:220] / 255.0
    pred = filters.gaussian(gt, sigma=1.2, channel_axis=-1)
    c = 4
    g8, p8 = gt[c:-c, c:-c] * 255, pred[c:-c, c:-c] * 255
    # y_space=None: all channels (PSNR over every value, SSIM averaged per channel, as BasicSR).
    assert metrics.psnr(pred=pred, gt=gt, y_space=None) == pytest.approx(
        peak_signal_noise_ratio(g8, p8, data_range=255), abs=1e-9)
    assert metrics.ssim(pred=pred, gt=gt, y_space=None) == pytest.approx(structural_similarity(
        g8, p8, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
        channel_axis=-1), abs=1e-9)
    # round_y: SSIM of integer-rounded Y, as pyiqa computes it.
    y_gt = np.round(metrics.to_y(gt, "yiq")[c:-c, c:-c])
    y_pred = np.round(metrics.to_y(pred, "yiq")[c:-c, c:-c])
    assert metrics.ssim(pred=pred, gt=gt, y_space="yiq", round_y=True) == pytest.approx(structural_similarity(
        y_gt, y_pred, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255), abs=1e-9)
    # clip_cs only matters where local structure is anti-correlated: an inverted image.
    inverted = 1.0 - gt
    plain = metrics.ssim(pred=inverted, gt=gt)
    clipped = metrics.ssim(pred=inverted, gt=gt, clip_cs=True)
    assert plain < 0.0 <= clipped
    assert metrics.ssim(pred=pred, gt=gt, clip_cs=True) == pytest.approx(metrics.ssim(pred=pred, gt=gt), abs=1e-3)


def test_describe_protocol_and_input_errors():
    p = metrics.describe_protocol()
    assert p["crop_border"] == 4 and p["y_space"] == "ycbcr" and p["data_range"] == 255.0
    assert "65.481" in p["channel"] and "11x11" in p["ssim"] and "AlexNet" in p["lpips"]
    assert "pyiqa" in metrics.describe_protocol(y_space="yiq")["channel"]
    with pytest.raises(ValueError):
        metrics.describe_protocol(y_space="lab")
    with pytest.raises(ValueError, match="one shape"):
        metrics.psnr(pred=np.zeros((16, 16, 3)), gt=np.zeros((16, 17, 3)))
    with pytest.raises(ValueError, match="crop_border"):
        metrics.ssim(pred=np.zeros((8, 8, 3)), gt=np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="space"):
        metrics.to_y(np.zeros((4, 4, 3)), "lab")
