"""Codebook explorer: dropping / keeping codebooks re-decodes exactly; weight-map statistics.

The shipped compact ×4 model (K = 3, real weights) on a 32×32 crop of an embedded photo, and
one tiled run (16-pixel tiles), so the module compiles a few small programs.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacode_jax import errors, images as imageio, models
from adacode_jax.inference import explorer, restorer as restore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = os.path.join(ROOT, "assets", "images", "chelsea.png")


@pytest.fixture(scope="module")
def shipped():
    return restore.Restorer.from_checkpoint(None, "sr", scale=4, dtype="float32")


@pytest.fixture(scope="module")
def image():
    return imageio.read_image_raw(IMAGE)[96:128, 96:128]     # (32, 32, 3) uint8


@pytest.fixture(scope="module")
def plain(shipped, image):
    return shipped.restore_with_maps(image)


def test_codebook_mask_values_and_errors():
    assert explorer.codebook_mask(3) is None
    assert explorer.codebook_mask(3, drop=()) is None
    assert explorer.codebook_mask(3, keep=(0, 1, 2)) is None
    np.testing.assert_array_equal(explorer.codebook_mask(3, drop=1), [1, 0, 1])
    np.testing.assert_array_equal(explorer.codebook_mask(3, keep=2), [0, 0, 1])
    np.testing.assert_array_equal(explorer.codebook_mask(3, keep=(0, 2), drop=(0,)), [0, 0, 1])
    with pytest.raises(errors.UserError, match="drop 3: no such codebook; this network has 3"):
        explorer.codebook_mask(3, drop=(3,))
    with pytest.raises(errors.UserError, match="keep -1"):
        explorer.codebook_mask(3, keep=-1)
    with pytest.raises(errors.UserError, match="every codebook would be dropped"):
        explorer.codebook_mask(3, drop=(0, 1, 2))
    with pytest.raises(errors.UserError, match="single codebook"):
        explorer.codebook_mask(0)


def test_dropping_nothing_is_the_plain_output_bit_for_bit(shipped, image, plain):
    for kwargs in ({}, {"drop": ()}, {"keep": (0, 1, 2)}):
        out, maps = explorer.restore_with_codebooks(shipped, image, **kwargs)
        np.testing.assert_array_equal(out, plain[0])
        np.testing.assert_array_equal(maps, plain[1])
    assert shipped.codebook_mask is None       # the caller's restorer is not modified


def test_dropping_a_codebook_changes_the_output_and_keeps_the_maps(shipped, image, plain):
    assert explorer.num_codebooks(shipped) == 3
    outs = []
    for k in range(3):
        out, maps = explorer.restore_with_codebooks(shipped, image, drop=(k,))
        assert out.shape == plain[0].shape and out.dtype == plain[0].dtype == np.uint8
        np.testing.assert_array_equal(maps, plain[1])        # the predicted weights
        diff = np.abs(out.astype(int) - plain[0].astype(int))
        assert diff.mean() > 0.5, (k, diff.mean())
        outs.append(out)
    assert not np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[1], outs[2])


def test_keep_only_k_equals_dropping_all_others(shipped, image):
    for k in range(3):
        kept, _ = explorer.restore_with_codebooks(shipped, image, keep=(k,))
        others = tuple(j for j in range(3) if j != k)
        dropped, _ = explorer.restore_with_codebooks(shipped, image, drop=others)
        np.testing.assert_array_equal(kept, dropped)


def test_tiled_restorer_drops_per_tile_like_the_whole_image_path(shipped, image):
    tiled = restore.Restorer(shipped.model, shipped.variables, tile=16, overlap=0,
                             low_freq_fix=shipped.low_freq_fix)
    plain_tiled = tiled.restore(image)
    np.testing.assert_array_equal(explorer.restore_with_codebooks(tiled, image)[0], plain_tiled)
    dropped = explorer.restore_with_codebooks(tiled, image, drop=1)[0]
    assert np.abs(dropped.astype(int) - plain_tiled.astype(int)).mean() > 0.5


def test_model_mask_none_is_eq6_and_zero_mask_removes_a_codebooks_term():
    cfg = models.tiny_model_config("sr_x4")
    model = models.build(cfg)
    x = jax.random.uniform(jax.random.key(1), (1, 32, 32, 3))
    variables = model.init(jax.random.key(0), x)
    _, aux = model.apply(variables, x)
    _, aux_none = model.apply(variables, x, codebook_mask=None)
    np.testing.assert_array_equal(aux["feat_before_decoder"], aux_none["feat_before_decoder"])
    k = len(cfg.codebooks)
    # The mixed latent is linear in the mask: the K single-codebook latents sum to the full one.
    parts = [model.apply(variables, x, codebook_mask=jnp.eye(k)[i])[1]["feat_before_decoder"]
             for i in range(k)]
    np.testing.assert_allclose(sum(parts), aux["feat_before_decoder"], rtol=1e-5, atol=1e-5)
    _, aux_half = model.apply(variables, x, codebook_mask=jnp.full((k,), 0.5))
    np.testing.assert_allclose(aux_half["feat_before_decoder"], 0.5 * aux["feat_before_decoder"],
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(aux_half["weight_maps"], aux["weight_maps"])


def test_weight_map_stats_numbers():
    maps = np.zeros((2, 2, 3), np.float32)
    maps[..., 0] = [[1.0, 0.0], [0.0, 0.0]]
    maps[..., 1] = [[0.0, 2.0], [2.0, 0.0]]
    maps[..., 2] = [[0.5, 0.5], [0.5, 3.0]]
    stats = explorer.weight_map_stats(maps)
    np.testing.assert_allclose(stats.mean, [0.25, 1.0, 1.125])
    np.testing.assert_allclose(stats.minimum, [0.0, 0.0, 0.5])
    np.testing.assert_allclose(stats.maximum, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(stats.dominant_share, [0.25, 0.5, 0.25])
    assert stats.scale == explorer.shared_scale(maps)
    assert stats.table().splitlines()[2] == "| w0 | +0.250 | +0.000 | +1.000 | 25.0 % |"
    np.testing.assert_array_equal(explorer.dominant_codebook(maps), [[0, 1], [1, 2]])
    pic = explorer.dominant_picture(maps, 4, 4)
    assert pic.shape == (4, 4, 3) and pic.dtype == np.uint8
    np.testing.assert_array_equal(pic[3, 3], explorer.visualize.PALETTE[2])


def test_restore_cli_drop_and_keep_codebook(shipped, image, tmp_path, capsys):
    from adacode_jax.cli import restore as restore_cli

    src = tmp_path / "cat.png"
    imageio.write_image_raw(src, image)
    expected = explorer.restore_with_codebooks(shipped, image, drop=(1,))[0]
    for i, flags in enumerate((["--drop-codebook", "1"],
                               ["--keep-codebook", "0", "--keep-codebook", "2"])):
        out = tmp_path / f"out{i}"
        assert restore_cli.main(["-i", str(src), "-o", str(out), "--no-progress"] + flags) == 0
        assert "decoding with codebook(s) 0, 2 of 3" in capsys.readouterr().err
        np.testing.assert_array_equal(imageio.read_image_raw(out / "cat.png"), expected)
    rc = restore_cli.main(["-i", str(src), "-o", str(tmp_path / "bad"), "--no-progress",
                           "--drop-codebook", "3"])
    assert rc == 2
    assert "error: drop 3: no such codebook; this network has 3" in capsys.readouterr().err
