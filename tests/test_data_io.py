"""Image reading: formats, bit depths, alpha, EXIF orientation, corrupt files, PNG writing."""
import os

import cv2
import numpy as np
from PIL import Image, ImageOps
import pytest
import skimage

from adacode_jax import images as io

SKIMAGE_DATA = os.path.join(os.path.dirname(skimage.__file__), "data")


def test_reads_real_rgb_png_as_float_rgb():
    x = io.read_image(os.path.join(SKIMAGE_DATA, "astronaut.png"))
    ref = np.asarray(Image.open(os.path.join(SKIMAGE_DATA, "astronaut.png")).convert("RGB"))
    assert x.dtype == np.float32 and x.shape == (512, 512, 3)
    np.testing.assert_array_equal(np.round(x * 255).astype(np.uint8), ref)  # RGB, not BGR


def test_grey_becomes_three_equal_channels():
    x = io.read_image(os.path.join(SKIMAGE_DATA, "camera.png"))
    ref = np.asarray(Image.open(os.path.join(SKIMAGE_DATA, "camera.png")))
    assert x.shape == (512, 512, 3)
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    np.testing.assert_allclose(x[..., 1], ref / 255.0, atol=1e-7)


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0] = 200  # red 200, green/blue 0
    rgba[:, :2, 3] = 255  # opaque
    rgba[:, 2:4, 3] = 0  # transparent -> white
    rgba[:, 4, 3] = 102  # 40% -> 0.4 * colour + 0.6
    p = str(tmp_path / "a.png")
    Image.fromarray(rgba, "RGBA").save(p)
    x = io.read_image(p)
    np.testing.assert_allclose(x[0, 0], [200 / 255, 0, 0], atol=1e-6)
    np.testing.assert_allclose(x[0, 2], [1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(x[0, 4], [0.4 * 200 / 255 + 0.6, 0.6, 0.6], atol=1e-6)


def test_sixteen_bit_png_keeps_precision(tmp_path):
    rgb16 = np.array([[[0, 65535, 257], [1, 32768, 65534]]], np.uint16)  # RGB
    p = str(tmp_path / "deep.png")
    cv2.imwrite(p, rgb16[..., ::-1])  # cv2 writes BGR
    x = io.read_image(p)
    np.testing.assert_allclose(x, rgb16 / 65535.0, atol=1e-7)
    assert x[0, 1, 0] > 0  # 1/65535 survives: not reduced to 8 bits


def test_sixteen_bit_grey(tmp_path):
    g = np.array([[0, 1000, 65535]], np.uint16)
    p = str(tmp_path / "g16.png")
    cv2.imwrite(p, g)
    x = io.read_image(p)
    np.testing.assert_allclose(x[0, :, 1], g[0] / 65535.0, atol=1e-7)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pil(tmp_path, orientation):
    rng = np.random.default_rng(orientation)
    img = (rng.random((16, 24, 3)) * 255).astype(np.uint8)
    img[:4, :4] = 255  # an asymmetric marker; JPEG blurs values, positions stay
    p = str(tmp_path / f"o{orientation}.jpg")
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(img).save(p, exif=exif, quality=95)
    want = np.asarray(ImageOps.exif_transpose(Image.open(p)).convert("RGB"))
    got = io.read_image(p)
    assert got.shape == want.shape
    assert np.abs(got * 255 - want).max() <= 1.0


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"),
    (b"this is not an image", "corrupt"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "corrupt"),  # truncated PNG header
])
def test_bad_files_raise_naming_the_path(tmp_path, content, reason):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(io.ImageReadError, match=reason) as e:
        io.read_image(p)
    assert str(p) in str(e.value)


def test_missing_file_raises_naming_the_path(tmp_path):
    with pytest.raises(io.ImageReadError, match="nope.png"):
        io.read_image(tmp_path / "nope.png")


def test_write_png_rounds_not_truncates(tmp_path):
    # 0.999 * 255 = 254.745: rounds to 255 (truncation would give 254); 1/255 stored as float32.
    x = np.array([[[0.999, np.float32(1 / 255), 0.5]]], np.float32)
    p = str(tmp_path / "r.png")
    io.write_png(p, x)
    back = np.asarray(Image.open(p))
    np.testing.assert_array_equal(back, [[[255, 1, 128]]])
    np.testing.assert_array_equal(io.read_image(p) * 255, back.astype(np.float32))
