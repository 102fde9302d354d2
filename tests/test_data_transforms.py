"""Crops, flips, resizes and small-image handling of training examples."""
import numpy as np
import pytest

from adacode_jax.data import examples
from adacode_jax.data import transforms


def test_flips_are_the_reference_ops():
    x = np.arange(2 * 3 * 1, dtype=np.float32).reshape(2, 3, 1)
    f = transforms.Flips(hflip=True, vflip=False, transpose=False)
    np.testing.assert_array_equal(transforms.apply_flips(x, f)[..., 0], x[:, ::-1, 0])
    f = transforms.Flips(hflip=False, vflip=True, transpose=True)
    np.testing.assert_array_equal(transforms.apply_flips(x, f)[..., 0], x[::-1, :, 0].T)


def test_flip_probabilities_and_switches():
    draws = [transforms.sample_flips(np.random.default_rng(i), True, True) for i in range(2000)]
    rates = np.mean(np.array(draws, dtype=float), axis=0)
    np.testing.assert_allclose(rates, 0.5, atol=0.04)
    off = {transforms.sample_flips(np.random.default_rng(i), False, False) for i in range(50)}
    assert off == {transforms.Flips(False, False, False)}


def test_resize_height_rule_keeps_both_sides_above_the_crop():
    for size in [(300, 451), (451, 300), (256, 256), (1356, 2040)]:
        heights = [transforms.sample_resize_height(np.random.default_rng(i), size, 256) for i in range(300)]
        assert max(heights) <= size[0]
        for h in heights[:50]:
            out = transforms.scaled_size(size, h, 256)
            assert min(out) >= 256
        if size[1] >= size[0]:
            assert min(heights) <= 256 + (size[0] - 256) * 0.1  # reaches down to the crop size


def test_scaled_size_rounds_down_to_the_scale():
    assert transforms.scaled_size((400, 600), 300, 64, multiple=4) == (300, 448)  # 450 -> 448


def test_small_image_policy():
    assert transforms.fit_min_size((100, 50), 64, "upscale") == (128, 64)
    assert transforms.fit_min_size((300, 300), 64, "reject") == (300, 300)
    with pytest.raises(transforms.SmallImageError, match=r"tiny.png: 100x50 is smaller than the 64x64 crop"):
        transforms.fit_min_size((100, 50), 64, "reject", "tiny.png")


def test_make_example_shapes_ranges_and_determinism():
    rng = np.random.default_rng(0)
    img = rng.random((90, 70, 3)).astype(np.float32)
    for task, scale, keys in [("recon", 1, {"gt"}), ("sr", 4, {"gt", "lq"}),
                              ("sr", 2, {"gt", "lq"}), ("inpaint", 1, {"gt", "lq", "mask"})]:
        cfg = examples.ExampleConfig(task=task, scale=scale, crop_size=64)
        a = examples.make_example(img, None, np.random.default_rng(3), cfg)
        b = examples.make_example(img, None, np.random.default_rng(3), cfg)
        assert set(a) == keys
        assert a["gt"].shape == (64, 64, 3)
        if task == "sr":
            assert a["lq"].shape == (64 // scale, 64 // scale, 3)
        if task == "inpaint":
            assert a["mask"].shape == (64, 64, 1)
            np.testing.assert_array_equal(a["lq"][a["mask"][..., 0] == 1], 1.0)
        for k in keys:
            assert a[k].dtype == np.float32 and a[k].min() >= 0 and a[k].max() <= 1
            assert a[k].tobytes() == b[k].tobytes()


def test_crop_without_resize_is_an_exact_window():
    img = np.random.default_rng(1).random((80, 100, 3)).astype(np.float32)
    cfg = examples.ExampleConfig(task="recon", crop_size=32, use_resize_crop=False,
                                 use_flip=False, use_rot=False)
    out = examples.make_example(img, None, np.random.default_rng(2), cfg)["gt"]
    hits = [(t, l) for t in range(49) for l in range(69)
            if np.array_equal(img[t:t + 32, l:l + 32], out)]
    assert len(hits) == 1


def test_paired_example_keeps_lr_aligned_with_gt():
    # LR = exact 2x2 block average of GT, so alignment survives crop, flips and transpose
    # (the random resize is off: it resamples GT and LR separately).
    rng = np.random.default_rng(0)
    gt = rng.random((96, 80, 3)).astype(np.float32)
    lq = gt.reshape(48, 2, 40, 2, 3).mean(axis=(1, 3))
    cfg = examples.ExampleConfig(task="sr", scale=2, crop_size=32, use_resize_crop=False)
    for seed in range(10):
        ex = examples.make_example(gt, lq, np.random.default_rng(seed), cfg)
        np.testing.assert_allclose(ex["gt"].reshape(16, 2, 16, 2, 3).mean(axis=(1, 3)), ex["lq"],
                                   atol=1e-6)


def test_paired_size_mismatch_is_a_bad_record():
    cfg = examples.ExampleConfig(task="sr", scale=4, crop_size=32)
    with pytest.raises(examples.BadRecordError, match="LR size"):
        examples.make_example(np.zeros((64, 64, 3), np.float32), np.zeros((20, 16, 3), np.float32),
                              np.random.default_rng(0), cfg, "pair.png")


def test_config_validation():
    with pytest.raises(ValueError, match="scale 2 or 4"):
        examples.ExampleConfig(task="sr", scale=3)
    with pytest.raises(ValueError, match="multiple of scale"):
        examples.ExampleConfig(task="sr", scale=4, crop_size=66)
    with pytest.raises(ValueError, match="task must be"):
        examples.ExampleConfig(task="denoise")
