"""The command-line tools: frozen test sets and the semantic split for stage I."""
import json
import os

import numpy as np
from PIL import Image
import pytest
import skimage

from adacode_jax.cli import make_testset as make_testset_cli, split_by_class as split_by_class_cli
from adacode_jax.tools import ade20k
from adacode_jax import images as io
from adacode_jax.tools import make_testset
from adacode_jax.tools import segmenters
from adacode_jax.tools import split_by_class

SKIMAGE_DATA = os.path.join(os.path.dirname(skimage.__file__), "data")


@pytest.fixture(scope="module")
def gt_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("gt")
    io.write_png(str(d / "astronaut.png"), io.read_image(os.path.join(SKIMAGE_DATA, "astronaut.png"))[:130, :99])
    os.makedirs(d / "sub")
    io.write_png(str(d / "sub" / "coffee.png"), io.read_image(os.path.join(SKIMAGE_DATA, "coffee.png"))[:64, :80])
    return str(d)


def _read_u8(path):
    return np.asarray(Image.open(path))


def test_make_testset_sr_is_deterministic_rounded_and_sized(gt_dir, tmp_path):
    out1, out2 = str(tmp_path / "a"), str(tmp_path / "b")
    assert make_testset_cli.main(["--input", gt_dir, "--output", out1, "--task", "sr_x4", "--seed", "123",
                              "--no-progress"]) == 0
    make_testset_cli.main(["--input", gt_dir, "--output", out2, "--task", "sr_x4", "--no-progress"])
    manifest = json.load(open(os.path.join(out1, "manifest.json")))
    assert manifest["files"] == ["astronaut.png", "sub/coffee.png"] and manifest["seed"] == 123
    for rel in manifest["files"]:
        for kind in ("gt", "lq"):
            a, b = (open(os.path.join(o, kind, rel), "rb").read() for o in (out1, out2))
            assert a == b  # same seed, same bytes
    gt = _read_u8(os.path.join(out1, "gt", "astronaut.png"))
    lq = _read_u8(os.path.join(out1, "lq", "astronaut.png"))
    assert gt.shape == (128, 96, 3) and lq.shape == (32, 24, 3)  # mod-cropped GT = 4 x LR
    # The written LR is the in-memory result rounded to 8 bits.
    image = io.read_image(os.path.join(gt_dir, "astronaut.png"))
    pair = make_testset.make_pair(image, "sr_x4", make_testset.image_rng(123, "astronaut.png"))
    np.testing.assert_array_equal(lq, io.to_uint8(pair["lq"]))
    other = str(tmp_path / "c")
    make_testset_cli.main(["--input", gt_dir, "--output", other, "--task", "sr_x4", "--seed", "7",
                       "--no-progress"])
    assert not np.array_equal(_read_u8(os.path.join(other, "lq", "astronaut.png")), lq)


def test_make_testset_inpaint_writes_masks_with_white_holes(gt_dir, tmp_path):
    out = str(tmp_path / "inp")
    make_testset_cli.main(["--input", gt_dir, "--output", out, "--task", "inpaint", "--no-progress"])
    gt = _read_u8(os.path.join(out, "gt", "sub", "coffee.png"))
    lq = _read_u8(os.path.join(out, "lq", "sub", "coffee.png"))
    mask = _read_u8(os.path.join(out, "mask", "sub", "coffee.png"))
    assert gt.shape == lq.shape == (64, 80, 3) and mask.shape == (64, 80)
    assert set(np.unique(mask)) <= {0, 255} and (mask == 255).any()
    np.testing.assert_array_equal(lq[mask == 255], 255)
    np.testing.assert_array_equal(lq[mask == 0], gt[mask == 0])


def test_make_testset_reports_bad_files_and_exits_1(gt_dir, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    io.write_png(str(src / "ok.png"), io.read_image(os.path.join(gt_dir, "astronaut.png")))
    (src / "bad.jpg").write_bytes(b"nope")
    assert make_testset_cli.main(["--input", str(src), "--output", str(tmp_path / "o"), "--task", "sr_x2",
                              "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 1 file(s) failed; the others were written")
    assert f"  {src / 'bad.jpg'}: corrupt" in err
    assert os.path.exists(tmp_path / "o" / "lq" / "ok.png")


# ----------------------------------------------------------------------------- split_by_class

# A colour-keyed "segmenter": every pixel gets the ADE20K class of the nearest palette colour.
PALETTE = {  # colour (0-255) -> ADE20K id
    (70, 130, 180): 2,    # sky -> natural
    (34, 139, 34): 4,     # tree -> natural
    (150, 75, 60): 1,     # building -> architecture
    (128, 64, 128): 6,    # road -> street
    (200, 200, 150): 3,   # floor -> indoor
    (250, 170, 30): 12,   # person -> street
}


def colour_segmenter(image):
    cols = np.array(list(PALETTE), np.float32) / 255
    ids = np.array(list(PALETTE.values()))
    d = ((image[:, :, None, :] - cols[None, None]) ** 2).sum(-1)
    return ids[d.argmin(-1)]


def _scene(rng, layout):
    """A 64 x (64 * len(layout)) image; each 64 x 64 patch is painted by (main, other, share)."""
    tiles = []
    for main, other, share in layout:
        tile = np.empty((64, 64, 3), np.float32)
        tile[:] = np.array(other, np.float32) / 255
        rows = int(64 * share)
        tile[:rows] = np.array(main, np.float32) / 255
        tile += rng.normal(0, 0.02, tile.shape).astype(np.float32)  # texture, keeps the key
        tiles.append(np.clip(tile, 0, 1))
    return np.concatenate(tiles, axis=1)


def test_split_by_class_labels_patches_by_the_largest_class(tmp_path):
    rng = np.random.default_rng(0)
    sky, tree, building, road, floor, person = list(PALETTE)
    inp = tmp_path / "in"
    io.write_png(str(inp / "city.png"), _scene(rng, [(building, sky, 0.7), (road, building, 0.6),
                                                     (person, road, 0.55)]))
    io.write_png(str(inp / "park" / "p.png"), _scene(rng, [(sky, building, 0.6), (tree, road, 0.8)]))
    io.write_png(str(inp / "room.png"), _scene(rng, [(floor, building, 0.9)]))
    io.write_png(str(inp / "small.png"), np.zeros((40, 40, 3), np.float32))
    (inp / "broken.png").write_bytes(b"xx")
    out = tmp_path / "out"
    faces = tmp_path / "faces"
    io.write_png(str(faces / "f0.png"), np.zeros((8, 8, 3), np.float32))
    seg_spec = f"{__name__}:colour_segmenter"
    assert split_by_class_cli.main(["--input", str(inp), "--output", str(out), "--segmenter", seg_spec,
                                "--patch-size", "64", "--portraits", str(faces), "--no-progress"]) == 0

    def listed(name):
        return (out / f"{name}.txt").read_text().split()

    assert listed("architecture") == ["patches/city_0_0.png"]
    assert listed("street") == ["patches/city_0_64.png", "patches/city_0_128.png"]
    assert listed("natural") == ["patches/park/p_0_0.png", "patches/park/p_0_64.png"]
    assert listed("indoor") == ["patches/room_0_0.png"]
    assert listed("portrait") == [str(faces / "f0.png")]
    assert len(listed("all")) == 6
    for rel in listed("all"):
        assert _read_u8(out / rel).shape == (64, 64, 3)
    summary = (out / "summary.tsv").read_text()
    assert "1\tbuilding\tarchitecture\t1" in summary and "natural\t2" in summary
    assert "12\tperson\tstreet\t1" in summary
    # A list written here drives a training source directly.
    from adacode_jax.data import sources  # pylint: disable=g-import-not-at-top
    keys = sources.open_source({"type": "folder", "list_file": str(out / "natural.txt")}).keys()
    assert all(os.path.exists(k) for k in keys)


def test_split_result_reports_small_and_broken_images(tmp_path):
    inp = tmp_path / "in"
    io.write_png(str(inp / "small.png"), np.zeros((40, 40, 3), np.float32))
    (inp / "broken.png").write_bytes(b"xx")
    io.write_png(str(inp / "ok.png"), np.full((64, 64, 3), 0.5, np.float32))
    result = split_by_class.split_by_class(str(inp), str(tmp_path / "o"),
                                           lambda x: np.full(x.shape[:2], 255), 64, progress=False)
    msgs = " | ".join(result["skipped"])
    assert "small.png: 40x40 is smaller than a 64 patch" in msgs
    assert "broken.png: corrupt" in msgs and "no ADE20K label" in msgs


def test_ade20k_table_is_complete_and_documented():
    assert len(ade20k.CLASS_NAMES) == 150 and len(set(ade20k.CLASS_NAMES)) == 150
    assert ade20k.CLASS_NAMES[:3] == ("wall", "building", "sky") and ade20k.CLASS_NAMES[-1] == "flag"
    assert set(ade20k.SUPER_CLASS_OF) == set(ade20k.SUPER_CLASSES)
    counts = {c: ade20k.SUPER_CLASS_OF.count(c) for c in ade20k.SUPER_CLASSES}
    assert min(counts.values()) >= 15
    # Classes whose super-class is not evident from the name carry a reason.
    for name in ("wall", "sky", "windowpane", "person", "door", "boat", "fence", "railing"):
        row = ade20k.ADE20K_TABLE[ade20k.CLASS_NAMES.index(name)]
        assert len(row[3]) > 20, name
    assert ade20k.dominant_class(np.array([[1, 2, 2], [255, 255, 255]])) == 2
    assert ade20k.dominant_class(np.full((3, 3), 255)) is None


def test_segmenter_specs_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="SegFormer weights not found .*save_pretrained"):
        segmenters.load_segmenter(f"segformer:{tmp_path}/missing")
    with pytest.raises(ValueError, match="segformer:PATH"):
        segmenters.load_segmenter("no-colon")
    with pytest.raises(ImportError, match="cannot import segmenter module"):
        segmenters.load_segmenter("no_such_module_xyz:fn")
    with pytest.raises(AttributeError, match="has no function 'nope'"):
        segmenters.load_segmenter("numpy:nope")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "config.json").write_text("{}")
    try:
        import transformers  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
        with pytest.raises(ImportError, match="needs torch and transformers"):
            segmenters.load_segmenter(f"segformer:{tmp_path / 'w'}")
    assert segmenters.load_segmenter(f"{__name__}:colour_segmenter") is colour_segmenter
