"""Image files for the restoration tools: what a file holds goes back out the same way.

:func:`adacode_jax.data.io.read_image` serves training and evaluation: it always returns RGB
float in [0, 1], composites alpha over white and forgets the bit depth. The restoration CLI
must instead give back what it was given, so this module keeps

- the channel layout: grey ``(H, W)``, grey + alpha ``(H, W, 2)``, RGB ``(H, W, 3)`` and
  RGBA ``(H, W, 4)``, channels in RGB(A) order;
- the sample type: ``uint8``, ``uint16`` or ``float32`` (float TIFF);

and applies the EXIF orientation (the result is what a viewer shows; it is written without an
orientation tag). :func:`split_channels` / :func:`merge_channels` turn such an array into the
RGB float a network takes (plus alpha and a :class:`Layout`) and back. Decoding, the EXIF transform and the error type are those of
:mod:`adacode_jax.data.io`; a file that cannot be read raises
:class:`adacode_jax.data.io.ImageReadError` naming the file.
"""
from __future__ import annotations

import dataclasses
import io
import os

import cv2
import numpy as np
from PIL import Image

from adacode_jax import files
from adacode_jax.data import io as data_io

ImageReadError = data_io.ImageReadError
IMAGE_EXTENSIONS = data_io.IMAGE_EXTENSIONS

# Output formats and what they can hold.
_SIXTEEN_BIT = (".png", ".tif", ".tiff")
_FLOAT = (".tif", ".tiff")
_ALPHA = (".png", ".tif", ".tiff", ".webp")
_EXIF_ORIENTATION_TAG = 0x0112
# BT.601 luma, used to turn a restored RGB image back into grey.
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _pil_header(path: str) -> tuple[str | None, int]:
    """(PIL mode, EXIF orientation) from the file header; (None, 1) where PIL cannot parse it."""
    try:
        with Image.open(path) as im:
            return im.mode, int(im.getexif().get(_EXIF_ORIENTATION_TAG, 1))
    except Exception:  # pylint: disable=broad-except
        # PIL cannot parse every file OpenCV can; those carry no mode hint and no orientation.
        return None, 1


def read_image_raw(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Reads an image file keeping its channels and sample type.

    Returns:
      ``(H, W)`` grey, ``(H, W, 2)`` grey + alpha, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA, of
      dtype uint8, uint16 or float32, in displayed (EXIF) orientation.

    Args:
      max_pixels: pixel cap checked on the file header (:func:`adacode_jax.data.io.max_pixels`).

    Raises:
      ImageReadError: missing, empty, corrupt, truncated, animated, too large (above the pixel
        cap) or unsupported file, or a float image with NaN/Inf; the message names it.
    """
    path = os.fspath(path)
    image, _ = data_io.decode_file(path, max_pixels=max_pixels)
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        raise ImageReadError(f"{path}: unsupported pixel type {image.dtype} (use 8/16-bit or float32)")
    mode, orientation = _pil_header(path)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if mode == "LA":
        if image.ndim == 3 and image.shape[2] == 4:      # OpenCV expands LA PNGs to BGRA
            image = np.ascontiguousarray(image[:, :, [0, 3]])
        else:                                             # and drops the alpha of LA TIFFs
            with Image.open(path) as im:
                image = np.asarray(im)
    elif image.ndim == 3 and image.shape[2] in (3, 4):
        code = cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
        image = cv2.cvtColor(image, code)
    elif image.ndim != 2:
        raise ImageReadError(f"{path}: unsupported image shape {image.shape}")
    if image.ndim == 2:
        return np.ascontiguousarray(
            data_io.apply_exif_orientation(image[:, :, None], orientation)[:, :, 0])
    return np.ascontiguousarray(data_io.apply_exif_orientation(image, orientation))


def read_mask(path: str | os.PathLike, shape: tuple[int, int]) -> np.ndarray:
    """A hole mask ``(H, W)`` bool (white = hole, threshold 0.5 on the channel mean).

    Raises:
      ImageReadError: unreadable file, or its size is not ``shape`` (the image's size).
    """
    rgb = data_io.read_image(path)
    if rgb.shape[:2] != tuple(shape):
        raise ImageReadError(f"{os.fspath(path)}: mask is {rgb.shape[1]}x{rgb.shape[0]} (WxH), "
                             f"the image is {shape[1]}x{shape[0]}; give a mask of the image's size")
    return rgb.mean(axis=2) > 0.5


def output_extension(input_path: str, image: np.ndarray, requested: str = "auto") -> str:
    """The file ending to write ``image`` with: the input's (``requested="auto"``) or the one
    asked for, switched to ``.png`` where that format cannot hold the alpha channel or (for
    ``auto``) the 16-bit / float samples."""
    ext = os.path.splitext(input_path)[1].lower() if requested == "auto" else "." + requested.lstrip(".").lower()
    has_alpha = image.ndim == 3 and image.shape[2] in (2, 4)
    if has_alpha and ext not in _ALPHA:
        return ".png"
    if requested == "auto" and image.dtype != np.uint8 and ext not in _SIXTEEN_BIT:
        return ".png"
    return ext


def to_dtype(x: np.ndarray, dtype) -> np.ndarray:
    """Float in [0, 1] -> ``dtype`` (uint8 / uint16 rounded, float32 clipped)."""
    x, dtype = np.asarray(x, np.float32), np.dtype(dtype)
    if dtype == np.uint8:
        return data_io.to_uint8(x)
    if dtype == np.uint16:
        return np.round(np.clip(x, 0.0, 1.0) * 65535.0).astype(np.uint16)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / float array -> float32 in [0, 1] (same shape)."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255.0)
    if image.dtype == np.uint16:
        return image.astype(np.float32) / np.float32(65535.0)
    if np.issubdtype(image.dtype, np.floating):
        return np.clip(image.astype(np.float32), 0.0, 1.0)
    raise TypeError(f"images must be uint8, uint16 or float in [0, 1], got {image.dtype}")


def write_image_raw(path: str | os.PathLike, image: np.ndarray) -> str:
    """Writes an array laid out as :func:`read_image_raw` returns it; returns the path.

    The format follows the file ending. Samples the format cannot hold are converted: float
    becomes 16-bit in PNG and 8-bit in JPEG/WebP/BMP, 16-bit becomes 8-bit in those three.
    Grey + alpha is written as an LA PNG/TIFF when 8-bit, otherwise as RGBA with equal colour
    channels (OpenCV and PIL cannot write 16-bit LA). The file is encoded in memory and
    written atomically (:func:`adacode_jax.files.atomic_write_bytes`).
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    image = np.asarray(image)
    if image.dtype == np.float32 and ext not in _FLOAT:
        image = to_dtype(image, np.uint16 if ext in _SIXTEEN_BIT else np.uint8)
    elif image.dtype == np.uint16 and ext not in _SIXTEEN_BIT:
        image = np.round(image.astype(np.float32) / 257.0).astype(np.uint8)
    elif image.dtype not in (np.uint8, np.uint16, np.float32):
        raise TypeError(f"{path}: cannot write pixel type {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 2:
        if image.dtype == np.uint8 and ext in (".png", ".tif", ".tiff"):
            buf = io.BytesIO()
            Image.fromarray(image, "LA").save(buf, format="PNG" if ext == ".png" else "TIFF")
            return files.atomic_write_bytes(path, buf.getvalue())
        image = image[:, :, [0, 0, 0, 1]]
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    elif image.ndim != 2:
        raise ValueError(f"{path}: cannot write an image of shape {image.shape}")
    ok, buf = cv2.imencode(ext, image)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode a {image.dtype} image as {ext}")
    return files.atomic_write_bytes(path, buf.tobytes())


# ---- channel layouts of image arrays --------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Layout:
    """How an image array stores its pixels, to give a restored image back the same way."""
    ndim: int           # 2 for (H, W), else 3
    channels: int       # 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA
    dtype: np.dtype

    @property
    def grey(self) -> bool:
        return self.channels in (1, 2)

    @property
    def alpha(self) -> bool:
        return self.channels in (2, 4)


def split_channels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, Layout]:
    """``(rgb (H, W, 3) float32, alpha (H, W) float32 or None, layout)`` of an image array:
    ``(H, W)`` / ``(H, W, 1)`` grey (repeated to RGB), ``(H, W, 2)`` grey + alpha, RGB or
    RGBA; uint8, uint16 or float in [0, 1]."""
    image = np.asarray(image)
    if image.ndim == 2:
        image3 = image[:, :, None]
    elif image.ndim == 3 and image.shape[2] in (1, 2, 3, 4):
        image3 = image
    else:
        raise ValueError(f"expected an (H, W) or (H, W, C) image with C in 1..4, got {image.shape}")
    layout = Layout(image.ndim, image3.shape[2], image.dtype)
    x = to_float(image3)
    alpha = x[:, :, -1] if layout.alpha else None
    colour = x[:, :, : 1 if layout.grey else 3]
    rgb = np.repeat(colour, 3, axis=2) if layout.grey else colour
    return np.ascontiguousarray(rgb), alpha, layout


def merge_channels(rgb: np.ndarray, alpha: np.ndarray | None, layout: Layout) -> np.ndarray:
    """Inverse of :func:`split_channels` for a restored ``rgb`` (and alpha) in [0, 1]: grey
    layouts get the BT.601 luma of ``rgb``; the dtype is the layout's (float -> float32)."""
    colour = rgb @ LUMA if layout.grey else rgb
    colour = colour[:, :, None] if colour.ndim == 2 else colour
    out = np.concatenate([colour, alpha[:, :, None]], axis=2) if layout.alpha else colour
    if layout.ndim == 2:
        out = out[:, :, 0]
    return to_dtype(out, layout.dtype if layout.dtype in (np.uint8, np.uint16) else np.float32)


def holes_of(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` bool hole mask from a bool, uint8, uint16 or float mask, ``(H, W)`` or
    ``(H, W, C)`` (True / white = hole; numbers above half the range are holes)."""
    m = np.asarray(mask)
    if m.dtype == bool:
        holes = m.any(axis=2) if m.ndim == 3 else m
    else:
        f = to_float(m)
        holes = (f.mean(axis=2) if f.ndim == 3 else f) > 0.5
    if holes.shape != tuple(shape):
        raise ValueError(f"mask is {holes.shape[1]}x{holes.shape[0]} (WxH), the image is "
                         f"{shape[1]}x{shape[0]}")
    return holes
