"""Restoration API and CLI: buckets, tiles without seams, alpha, grey, 16-bit, bad files, OOM.

Tiny networks (random weights) on real photographs from scikit-image. Every image that goes
through the ×4 network is 128×128 (or 64×64 tiles of it), so the whole module compiles a
handful of programs.
"""
import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from PIL import Image

from adacode_jax.cli import restore as restore_cli
from adacode_jax.inference import batch as batch_restore, restorer as restore, tiling
from adacode_jax.models import checkpointing
from adacode_jax import images as imageio, models
from adacode_jax.evaluation import visualize

SIZE = 128          # LR side of the test images
TILE, OVERLAP = 64, 16


def _real(name="astronaut", size=SIZE):
    img = getattr(skimage.data, name)()
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def sr4():
    cfg = models.tiny_model_config("sr_x4")
    model = models.build(cfg)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    return cfg, model, {"params": variables["params"]}


@pytest.fixture(scope="module")
def whole(sr4):
    _, model, variables = sr4
    return restore.Restorer(model, variables, tile=0)


@pytest.fixture(scope="module")
def sr4_checkpoint(sr4, tmp_path_factory):
    cfg, _, variables = sr4
    return checkpointing.save_inference(str(tmp_path_factory.mktemp("ckpt") / "sr4"), cfg, variables,
                                        extra={"source": "tiny random sr_x4 (test)"})


# ---- shapes and tiles (numpy only) ----------------------------------------------------------

def test_buckets_equal_official_padding_up_to_16_multiples_then_grow_geometrically():
    m = 16
    for n in range(1, 16 * m):
        assert tiling.bucket_size(n, m) == tiling.official_padded_size(n, m) == (n // m + 1) * m
    sizes = range(1, 4097)
    buckets = [tiling.bucket_size(n, m) for n in sizes]
    assert all(b > n and b % m == 0 for n, b in zip(sizes, buckets))
    assert max((b - n) / n for n, b in zip(sizes, buckets) if n >= 16 * m) <= 1 / 8
    # 4096 sizes share 49 padded lengths (the official padding would need 257).
    assert len(set(buckets)) == 49


@pytest.mark.parametrize("size,tile,overlap,align", [(128, 64, 16, 2), (1000, 256, 32, 2),
                                                     (257, 64, 32, 8), (65, 64, 16, 1), (64, 64, 16, 2)])
def test_tiles_cover_the_axis_with_the_overlap(size, tile, overlap, align):
    starts = tiling.axis_starts(size, tile, overlap, align)
    assert starts[0] == 0 and all(s % align == 0 for s in starts)
    assert min(starts[-1] + tile, size) == size
    for a, b in zip(starts, starts[1:]):
        assert a < b and a + tile - b >= overlap


@pytest.mark.parametrize("blend", tiling.BLENDS)
def test_blending_weights_sum_to_one(blend):
    img = _real("coffee", 100).astype(np.float32) / 255
    up2 = lambda t: np.repeat(np.repeat(t, 2, 0), 2, 1)  # noqa: E731
    out, = tiling.tiled_apply(img, lambda t: (up2(t),), tile=40, overlap=12, scales=(2,), blend=blend)
    np.testing.assert_allclose(out, up2(img), atol=1e-6)


def test_feathering_hides_per_tile_normalisation_on_a_real_image():
    # A stand-in for GroupNorm: each tile normalised by its own statistics, as a network
    # normalises each tile by its own mean and variance.
    img = _real("astronaut", 256).astype(np.float32) / 255
    norm = lambda t: ((t - t.mean()) / t.std() * 0.2 + 0.5,)  # noqa: E731
    lines = tiling.seam_lines(256, 96, 24)
    ratios = {}
    for blend in tiling.BLENDS:
        out, = tiling.tiled_apply(img, norm, tile=96, overlap=24, blend=blend)
        ratios[blend] = tiling.seam_statistics(out, lines, lines)["ratio"]
    print("per-tile normalisation, seam ratio:", ratios)
    assert ratios["none"] > 1.3                    # a hard paste shows the seams
    assert abs(ratios["feather"] - 1.0) <= 0.10    # feathering does not


# ---- the network --------------------------------------------------------------------------------

def test_whole_image_is_the_official_padded_path(sr4, whole):
    _, model, variables = sr4
    x = _real().astype(np.float32) / 255
    out, maps = whole.restore_rgb(x)
    ref_out, ref_aux = model.apply(variables, jnp.asarray(x[None]), method="restore_padded")
    assert out.shape == (4 * SIZE, 4 * SIZE, 3)
    np.testing.assert_allclose(out, np.clip(np.asarray(ref_out[0]), 0, 1), atol=1e-4)
    # Weight maps on the latent grid (LR / 2 for ×4), K = 2 tiny codebooks.
    assert maps.shape == (SIZE // 2, SIZE // 2, 2)
    np.testing.assert_allclose(maps, np.asarray(ref_aux["weight_maps"][0, :SIZE // 2, :SIZE // 2]),
                               atol=1e-4)


def test_tiled_network_output_has_no_seams(sr4, whole, record_property):
    _, model, variables = sr4
    x = _real().astype(np.float32) / 255
    ref = whole.restore_rgb(x)[0]
    boxes = tiling.tile_boxes(SIZE, SIZE, TILE, OVERLAP, 2)
    assert len(boxes) >= 4                               # at least 2×2 tiles
    lines = tiling.seam_lines(SIZE, TILE, OVERLAP, align=2, scale=4)
    stats = {}
    for blend in tiling.BLENDS:
        r = restore.Restorer(model, variables, tile=TILE, overlap=OVERLAP, blend=blend)
        out = r.restore_rgb(x)[0]
        # Period 8: the decoder's three ×2 nearest upsamplings repeat every 8 output pixels.
        stats[blend] = tiling.seam_statistics(out, lines, lines, period=8)
        stats[blend]["psnr_vs_whole"] = 10 * np.log10(1.0 / np.mean((out - ref) ** 2))
    print(f"{len(boxes)} tiles; seams {stats}")
    # plain floats: pytest-xdist workers cannot send numpy scalars back
    record_property("seam_stats", {b: {k: float(v) for k, v in d.items()} for b, d in stats.items()})
    assert abs(stats["feather"]["ratio"] - 1.0) <= 0.10
    assert stats["none"]["ratio"] > 1.2                  # the measure does see pasted seams
    assert np.isfinite(stats["feather"]["psnr_vs_whole"])


def test_rgba_keeps_alpha_and_restores_the_colour(whole):
    rgb = _real("chelsea")
    alpha = np.tile(np.linspace(0, 255, SIZE), (SIZE, 1)).astype(np.uint8)
    alpha[:20] = 0                                       # fully transparent band
    out = whole.restore(np.dstack([rgb, alpha]))
    assert out.shape == (4 * SIZE, 4 * SIZE, 4) and out.dtype == np.uint8
    expected_alpha = np.clip(cv2.resize(alpha.astype(np.float32) / 255, (4 * SIZE, 4 * SIZE),
                                        interpolation=cv2.INTER_CUBIC), 0, 1)
    np.testing.assert_array_equal(out[..., 3], np.round(expected_alpha * 255).astype(np.uint8))
    assert out[:76, :, 3].max() == 0                     # transparent stays transparent
    np.testing.assert_array_equal(out[..., :3], whole.restore(rgb))
    by_network = restore.Restorer(whole.model, whole.variables, tile=0, alpha="network").restore(
        np.dstack([rgb, alpha]))
    assert by_network.shape == out.shape and not np.array_equal(by_network[..., 3], out[..., 3])


def test_grey_in_grey_out_and_16_bit_round_trip(whole, tmp_path):
    grey = _real("camera")                                          # (128, 128) uint8
    out = whole.restore(grey)
    rgb_out = whole.restore_rgb(np.repeat(grey[:, :, None], 3, 2).astype(np.float32) / 255)[0]
    assert out.shape == (4 * SIZE, 4 * SIZE) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.round(rgb_out @ imageio.LUMA * 255).astype(np.uint8))

    # 16-bit colour PNG and TIFF through files: 16 bits come back, not 8 bits scaled up.
    deep = (_real("coffee").astype(np.uint16) * 257 + np.arange(SIZE)[None, :, None] % 200).astype(np.uint16)
    jobs = []
    for ext in (".png", ".tif"):
        path = str(tmp_path / f"deep{ext}")
        imageio.write_image_raw(path, deep)
        np.testing.assert_array_equal(imageio.read_image_raw(path), deep)
        jobs.append(batch_restore.Job(path, os.path.basename(path)))
    la = np.dstack([grey, np.full_like(grey, 200)])                 # grey + alpha
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    Image.fromarray(grey).save(tmp_path / "grey.png")
    jobs += [batch_restore.Job(str(tmp_path / n), n) for n in ("la.png", "grey.png")]
    report = batch_restore.restore_files(whole, jobs, str(tmp_path / "out"), progress=False)
    assert not report.failed, report.failed
    for ext in (".png", ".tif"):
        back = cv2.imread(str(tmp_path / "out" / f"deep{ext}"), cv2.IMREAD_UNCHANGED)
        assert back.dtype == np.uint16 and back.shape == (4 * SIZE, 4 * SIZE, 3)
        inside = (back > 0) & (back < 65535)            # the random network saturates many
        assert np.mean(back[inside] % 257 != 0) > 0.9   # not 8-bit values scaled by 257
        expected = whole.restore(deep)
        np.testing.assert_array_equal(back[..., ::-1], expected)
    with Image.open(tmp_path / "out" / "grey.png") as im:
        assert im.mode == "L" and im.size == (4 * SIZE, 4 * SIZE)
    with Image.open(tmp_path / "out" / "la.png") as im:
        assert im.mode == "LA"
        assert np.asarray(im)[..., 1].min() == np.asarray(im)[..., 1].max() == 200


def test_exif_orientation_is_applied(tmp_path):
    img = _real("astronaut")[:, :96]                     # 128 tall, 96 wide
    exif = Image.Exif()
    exif[0x0112] = 6                                     # stored turned; show rotated 90° clockwise
    Image.fromarray(img).save(tmp_path / "o.png", exif=exif)
    raw = imageio.read_image_raw(tmp_path / "o.png")
    assert raw.shape == (96, 128, 3)
    np.testing.assert_array_equal(raw, np.rot90(img, k=-1))


def test_out_of_memory_is_retried_with_smaller_tiles(sr4):
    _, model, variables = sr4

    class SmallDevice(restore.Restorer):
        """Raises the XLA out-of-memory message for pieces wider than the tile."""
        calls = []

        def _run(self, x, pad_to):
            self.calls.append(pad_to)
            if max(pad_to) > TILE:
                raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
            return super()._run(x, pad_to)

    r = SmallDevice(model, variables, tile=0, overlap=OVERLAP)
    x = _real().astype(np.float32) / 255
    out = r.restore_rgb(x)[0]
    assert r.calls[0] == (144, 144) and r._tile_cap == TILE
    tiled = restore.Restorer(model, variables, tile=TILE, overlap=OVERLAP).restore_rgb(x)[0]
    np.testing.assert_array_equal(out, tiled)


def test_auto_tile_size_fits_the_memory_budget(sr4):
    _, model, variables = sr4
    r = restore.Restorer(model, variables, tile="auto", overlap=OVERLAP, memory_budget=1 << 40)
    whole_need = r.program_memory(144, 144)[0]
    assert r.plan(SIZE, SIZE) is None
    tile_need = r.program_memory(TILE, TILE)[0]
    r.memory_budget = (whole_need + tile_need) // 2
    side = r.plan(SIZE, SIZE)
    assert side is not None and side % r.multiple == 0 and r.min_tile <= side < SIZE
    assert r.program_memory(side, side)[0] <= r.memory_budget
    print(f"whole 144² needs {whole_need / 2**20:.1f} MiB; budget {r.memory_budget / 2**20:.1f} MiB "
          f"-> tiles of {side}")


def test_weight_map_picture(whole):
    img = _real("coffee")
    maps = whole.weight_maps(img)
    fig = visualize.weight_map_figure(img.astype(np.float32) / 255, maps, panel=96, title="untrained")
    assert maps.shape == (SIZE // 2, SIZE // 2, 2)
    assert fig.dtype == np.uint8 and fig.ndim == 3 and fig.shape[1] == 4 * (96 + 4) + 4
    # Panel 2 (w0) shows w0 on the shared viridis scale.
    lo, hi = np.percentile(maps, [1, 99])
    y0 = (18 + 4) + 4 + 18                               # title band, gap, label
    panel = fig[y0:y0 + 96, 4 + 100: 4 + 100 + 96]
    expected = cv2.resize(visualize.colorize(maps[..., 0], lo, hi), (96, 96), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(panel, expected)


# ---- command line ------------------------------------------------------------------------------

def test_cli_folder_with_a_corrupt_file(sr4_checkpoint, tmp_path, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    cv2.imwrite(str(src / "astro.png"), _real()[..., ::-1])
    cv2.imwrite(str(src / "sub" / "cat.jpg"), _real("chelsea")[..., ::-1])
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    out = tmp_path / "out"
    rc = restore_cli.main(["--checkpoint", sr4_checkpoint, "-i", str(src), "-o", str(out),
                       "--save-weight-maps", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1
    assert str(src / "broken.png") in err and "corrupt" in err
    assert cv2.imread(str(out / "astro.png")).shape == (4 * SIZE, 4 * SIZE, 3)
    assert cv2.imread(str(out / "sub" / "cat.jpg")).shape == (4 * SIZE, 4 * SIZE, 3)
    assert cv2.imread(str(out / "weight_maps" / "astro.png")) is not None
    assert not (out / "broken.png").exists()


def test_cli_never_overwrites_inputs(sr4_checkpoint, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), _real()[..., ::-1])
    before = (src / "a.png").read_bytes()
    rc = restore_cli.main(["--checkpoint", sr4_checkpoint, "--task", "sr", "--scale", "4",
                       "-i", str(src), "-o", str(src), "--no-progress"])
    assert rc == 2 and "would overwrite an input" in capsys.readouterr().err   # before any work
    assert (src / "a.png").read_bytes() == before
    rc = restore_cli.main(["--checkpoint", sr4_checkpoint, "--task", "sr", "-i", str(src), "-o", str(src),
                       "--suffix", "_x4", "--no-progress"])          # the directory's own scale
    assert rc == 0 and cv2.imread(str(src / "a_x4.png")).shape == (4 * SIZE, 4 * SIZE, 3)
    # A checkpoint of another kind is refused with the reason.
    rc = restore_cli.main(["--checkpoint", sr4_checkpoint, "--task", "sr", "--scale", "2",
                       "-i", str(src), "-o", str(tmp_path / "o2"), "--no-progress"])
    assert rc == 2 and "'sr_x4' network" in capsys.readouterr().err
    rc = restore_cli.main(["--checkpoint", sr4_checkpoint, "--task", "inpaint",
                       "-i", str(src), "-o", str(tmp_path / "o3"), "--no-progress"])
    assert rc == 2 and "'inpaint' was asked" in capsys.readouterr().err


def test_cli_inpainting_with_and_without_mask(tmp_path, capsys):
    cfg = models.tiny_model_config("inpaint")
    model = models.build(cfg)
    variables = {"params": model.init(jax.random.key(1), jnp.zeros((1, 64, 64, 3)))["params"]}
    ckpt = checkpointing.save_inference(str(tmp_path / "inp"), cfg, variables)
    img = _real("astronaut", 64)
    mask = np.zeros((64, 64), np.uint8)
    mask[20:40, 10:30] = 255
    (tmp_path / "in").mkdir()
    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), img[..., ::-1])
    cv2.imwrite(str(tmp_path / "in" / "b.png"), img[::-1, :, ::-1])
    cv2.imwrite(str(tmp_path / "masks" / "a.png"), mask)
    def run(*extra, out="out"):
        rc = restore_cli.main(["--checkpoint", ckpt, "--task", "inpaint", "-i", str(tmp_path / "in"),
                               "-o", str(tmp_path / out), "--no-progress", *extra])
        return rc, capsys.readouterr().err.strip().splitlines()

    # refused before any image is restored: a mask folder lacking b's mask, or no mask at all
    rc, err = run("--mask", str(tmp_path / "masks"))
    assert rc == 2 and err[-1] == (
        f"error: {tmp_path / 'masks'}: no mask for 1 of 2 input(s) (b.png); add masks with the "
        "same relative path and stem, or pass --white-holes instead of --mask")
    assert not (tmp_path / "out").exists()
    rc, err = run()
    assert rc == 2 and err[-1].startswith("error: inpainting needs the holes: give --mask")
    rc, err = run("--mask", str(tmp_path / "masks" / "a.png"))
    assert rc == 2 and "a single mask file is for a single input image" in err[-1]
    rc, err = run("--white-holes", "--mask", str(tmp_path / "masks"))
    assert rc == 2 and err[-1] == ("error: --white-holes is for inpainting without --mask; drop "
                                   "it or --mask")
    # asked for: the white pixels of the images are the holes
    rc, _ = run("--white-holes", out="white")
    assert rc == 0
    cv2.imwrite(str(tmp_path / "masks" / "b.png"), mask)
    rc, _ = run("--mask", str(tmp_path / "masks"))
    assert rc == 0
    r = restore.Restorer(model, variables, tile=0)
    painted = img.copy()
    painted[mask > 0] = 255
    got = cv2.imread(str(tmp_path / "out" / "a.png"))[..., ::-1]
    np.testing.assert_array_equal(got, r.restore(painted))
    np.testing.assert_array_equal(got, r.restore(img, mask=mask > 0))
    np.testing.assert_array_equal(got, r.restore(img, mask=np.dstack([mask] * 3)))   # RGB uint8 mask
    assert not np.array_equal(got, r.restore(img))
    white = cv2.imread(str(tmp_path / "white" / "a.png"))[..., ::-1]
    np.testing.assert_array_equal(white, r.restore(img))
