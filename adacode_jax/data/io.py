"""Robust image reading and writing.

Every image that enters a pipeline goes through :func:`read_image` (a file) or
:func:`to_float_rgb` (an array, e.g. from TFDS) and comes out as float32 RGB, HWC, in [0, 1]:

- 8-bit images are divided by 255, 16-bit ones by 65535, float images are clipped to [0, 1];
- greyscale (H, W) or (H, W, 1) is repeated to three channels;
- RGBA is **composited over a white background** (``rgb * a + (1 - a)``): the colour stored
  under fully transparent pixels is arbitrary (often black), and a white backdrop is what
  viewers show, so no dark fringes enter the training data as if they were a degradation;
- the EXIF orientation tag is applied, so photos come out the way viewers show them.

A file that cannot be read raises :class:`ImageReadError`, whose message names the file.
"""
from __future__ import annotations

import os

import cv2
import numpy as np
from PIL import Image

# File name endings the folder sources pick up (lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

_EXIF_ORIENTATION_TAG = 0x0112


class ImageReadError(ValueError):
    """A file is missing, unreadable, corrupt or of an unsupported type; the message names it."""


def to_float_rgb(image: np.ndarray, name: str = "<array>", *, bgr: bool = False) -> np.ndarray:
    """Converts a decoded image array to float32 RGB in [0, 1].

    Args:
      image: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array of uint8, uint16 or float.
      name: what to call the image in error messages (usually its path).
      bgr: whether colour channels are in OpenCV's BGR(A) order.

    Returns:
      (H, W, 3) float32 array in [0, 1].
    """
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or min(image.shape[:2]) < 1:
        raise ImageReadError(f"{name}: unsupported image shape {image.shape}")
    if image.dtype == np.uint8:
        scale = np.float32(255.0)
    elif image.dtype == np.uint16:
        scale = np.float32(65535.0)
    elif np.issubdtype(image.dtype, np.floating):
        scale = None
    else:
        raise ImageReadError(f"{name}: unsupported pixel type {image.dtype} (use 8/16-bit or float)")
    if scale is None:
        image = image.astype(np.float32, copy=False)
    c = image.shape[2]
    if bgr and c in (3, 4):
        # Reorder on the integer data (cheap) before the float conversion.
        code = cv2.COLOR_BGR2RGB if c == 3 else cv2.COLOR_BGRA2RGBA
        image = cv2.cvtColor(np.ascontiguousarray(image), code)
    if scale is None:
        x = np.clip(image, 0.0, 1.0)
    else:
        x = np.divide(image, scale, dtype=np.float32)  # one pass, same values as astype / 255
    if c == 1:
        return np.repeat(x, 3, axis=2)
    if c == 4:
        alpha = x[:, :, 3:4]
        x = x[:, :, :3] * alpha + (1.0 - alpha)
    return np.ascontiguousarray(x, dtype=np.float32)


def _exif_orientation(path: str, data: np.ndarray) -> int:
    """The EXIF orientation (1..8) of an encoded file, 1 when absent or unreadable by PIL."""
    head = data[:16].tobytes()
    if head.startswith(b"\x89PNG") and data.tobytes().find(b"eXIf") < 0:
        # PIL would decode the whole PNG to look for an eXIf chunk; most PNGs have none.
        return 1
    try:
        with Image.open(path) as im:
            return int(im.getexif().get(_EXIF_ORIENTATION_TAG, 1))
    except Exception:  # pylint: disable=broad-except
        # PIL cannot parse every file cv2 can (e.g. some TIFFs); those carry no orientation for us.
        return 1


def apply_exif_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turns a stored (H, W, C) image into its displayed orientation (EXIF tag values 1..8)."""
    if orientation == 2:
        return image[:, ::-1]
    if orientation == 3:
        return image[::-1, ::-1]
    if orientation == 4:
        return image[::-1, :]
    if orientation == 5:
        return image.transpose(1, 0, 2)
    if orientation == 6:  # stored image must be turned 90 degrees clockwise
        return np.rot90(image, k=-1)
    if orientation == 7:  # transverse: mirror across the anti-diagonal
        return image[::-1, ::-1].transpose(1, 0, 2)
    if orientation == 8:
        return np.rot90(image, k=1)
    return image


def decode_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(decoded, file bytes)``: the file as OpenCV decodes it with ``IMREAD_UNCHANGED``
    (BGR channel order, bit depth and alpha kept, EXIF orientation not applied).

    Raises:
      ImageReadError: the file is missing, empty, corrupt, or not an image; the message names it.
    """
    path = os.fspath(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read file ({e.strerror or e})") from e
    if data.size == 0:
        raise ImageReadError(f"{path}: empty file")
    # IMREAD_UNCHANGED keeps 16-bit depth and alpha (cv2 would drop both otherwise); it also
    # skips cv2's EXIF handling, which the callers do themselves.
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageReadError(f"{path}: corrupt or not a supported image (OpenCV could not decode it)")
    return image, data


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads an image file as float32 RGB (H, W, 3) in [0, 1].

    Raises:
      ImageReadError: the file is missing, empty, corrupt, or not an image; the message names it.
    """
    path = os.fspath(path)
    image, data = decode_file(path)
    image = to_float_rgb(image, path, bgr=True)
    return np.ascontiguousarray(apply_exif_orientation(image, _exif_orientation(path, data)))


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8, **rounded** (the reference truncates, which darkens by ~0.5/255)."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Writes a float RGB (H, W, 3) or single-channel (H, W[, 1]) image in [0, 1] as 8-bit PNG."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    x = to_uint8(image)
    if x.ndim == 3 and x.shape[2] == 3:
        x = x[:, :, ::-1]
    elif x.ndim == 3:
        x = x[:, :, 0]
    ok, buf = cv2.imencode(".png", x)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    buf.tofile(path)
