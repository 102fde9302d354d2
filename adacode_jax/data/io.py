"""Robust image reading and writing.

Every image that enters a pipeline goes through :func:`read_image` (a file) or
:func:`to_float_rgb` (an array, e.g. from TFDS) and comes out as float32 RGB, HWC, in [0, 1]:

- 8-bit images are divided by 255, 16-bit ones by 65535, float images are clipped to [0, 1];
- greyscale (H, W) or (H, W, 1) is repeated to three channels;
- RGBA is **composited over a white background** (``rgb * a + (1 - a)``): the colour stored
  under fully transparent pixels is arbitrary (often black), and a white backdrop is what
  viewers show, so no dark fringes enter the training data as if they were a degradation;
- the EXIF orientation tag is applied, so photos come out the way viewers show them.

A file that cannot be read raises :class:`ImageReadError`, whose message names the file:
missing, empty, corrupt or truncated files, animated images (several frames), images with more
pixels than the cap (:func:`max_pixels`: ``max_pixels=`` argument, else the environment
variable ``ADACODE_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`; the size is read from the file
header before anything is decoded) and float images holding NaN or Inf (refused, not repaired).
Writers go through :func:`adacode_jax.files.atomic_write_bytes`: a file appears complete or not
at all.
"""
from __future__ import annotations

import io as _bytes_io
import os
import re
import struct
import warnings

import cv2
import numpy as np
from PIL import Image

from adacode_jax import errors
from adacode_jax import files

# File name endings the folder sources pick up (lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

_EXIF_ORIENTATION_TAG = 0x0112


# Largest image (width x height) decoded unless a caller or ADACODE_MAX_PIXELS allows more:
# 2**28 = 268 M pixels (16384 x 16384), already 3 GiB as float32 RGB.
DEFAULT_MAX_PIXELS = 2 ** 28
MAX_PIXELS_ENV = "ADACODE_MAX_PIXELS"
# Formats whose extra frames are an animation (refused: which frame would be meant?).
_ANIMATED = ("PNG", "GIF", "WEBP")


class ImageReadError(errors.UserError, ValueError):
    """A file is missing, unreadable, corrupt or of an unsupported type; the message names it."""


class ImageTooLargeError(ImageReadError):
    """An image has more pixels than the cap (:func:`max_pixels`); nothing was decoded."""


def max_pixels(requested: int | None = None) -> int | None:
    """The pixel cap: ``requested`` if given (0 = no cap), else ``$ADACODE_MAX_PIXELS``, else
    :data:`DEFAULT_MAX_PIXELS`. None means no cap."""
    if requested is None:
        env = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if env:
            try:
                requested = int(float(env))
            except ValueError:
                raise errors.UserError(f"{MAX_PIXELS_ENV}={env!r}: not a number",
                                       "set it to a pixel count such as 268435456, or 0 for no cap"
                                       ) from None
        else:
            requested = DEFAULT_MAX_PIXELS
    requested = int(requested)
    if requested < 0:
        raise errors.UserError(f"max pixels {requested}: must be >= 0", "give 0 for no cap")
    return requested or None


def _header_info(data: np.ndarray) -> tuple[int | None, int | None, int]:
    """``(width, height, frames)`` from an encoded file's header, without decoding pixels;
    ``(None, None, 1)`` where PIL cannot parse the header."""
    head = data[:24].tobytes()
    png = len(head) == 24 and head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR"
    if png:
        width, height = struct.unpack(">II", head[16:24])     # PIL may refuse before saying
        if data.tobytes().find(b"acTL") < 0:                   # not animated: no need for PIL
            return int(width), int(height), 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # DecompressionBombWarning: we apply our own cap
        try:
            with Image.open(_bytes_io.BytesIO(data.tobytes())) as im:
                # animations only: the extra pages of a TIFF are often thumbnails
                frames = int(getattr(im, "n_frames", 1) or 1) if im.format in _ANIMATED else 1
                return int(im.size[0]), int(im.size[1]), frames
        except Image.DecompressionBombError as e:
            # Pillow refuses above twice its own MAX_IMAGE_PIXELS before showing the size; its
            # message has the pixel count.
            if png:
                return int(width), int(height), 1
            m = re.search(r"\((\d+) pixels\)", str(e))
            n = int(m.group(1)) if m else 2 * int(Image.MAX_IMAGE_PIXELS or 0) + 1
            return n, 1, 1
        except Exception:  # pylint: disable=broad-except
            return None, None, 1


def check_image_header(path: str, data: np.ndarray, cap: int | None = None) -> None:
    """Refuses, before decoding, an image above the pixel cap or with several frames."""
    width, height, frames = _header_info(data)
    limit = max_pixels(cap)
    if width is not None and limit is not None and width * height > limit:
        size = f"a {width}x{height} image" if height != 1 else "an image"
        raise ImageTooLargeError(
            f"{path}: {size} ({width * height:,} pixels) is larger than the cap of "
            f"{limit:,} pixels",
            f"pass --max-pixels {width * height} (or set {MAX_PIXELS_ENV}) if the file is "
            "genuine and memory allows")
    if frames > 1:
        raise ImageReadError(f"{path}: an animated image ({frames} frames)",
                             "save the frame to use as a still image (PNG) and pass that")


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
        check_finite(image, name)
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


def check_finite(image: np.ndarray, name: str = "<array>") -> None:
    """Refuses a float image holding NaN or Inf (they are not repaired: any value put in their
    place would be a guess)."""
    if np.issubdtype(image.dtype, np.floating):
        bad = int(image.size - np.count_nonzero(np.isfinite(image)))
        if bad:
            raise ImageReadError(f"{name}: the float image holds {bad} NaN/Inf sample(s)",
                                 "pixel values must be finite, in [0, 1]; fix or re-export it")


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


def decode_file(path: str | os.PathLike, *, max_pixels: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """``(decoded, file bytes)``: the file as OpenCV decodes it with ``IMREAD_UNCHANGED``
    (BGR channel order, bit depth and alpha kept, EXIF orientation not applied).

    Args:
      max_pixels: the pixel cap (see :func:`max_pixels`; 0 = none), checked on the header.

    Raises:
      ImageReadError: the file is missing, empty, not a regular file, corrupt or truncated, not
        an image, animated, above the pixel cap (:class:`ImageTooLargeError`) or a float image
        with NaN/Inf; the message names it.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isfile(path):
        # never open a FIFO (it would block) or a device
        raise ImageReadError(f"{path}: not a regular file", "give an image file")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageReadError(errors.describe_os_error(e)) from e
    if data.size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)", "replace it with a valid image")
    check_image_header(path, data, max_pixels)
    # IMREAD_UNCHANGED keeps 16-bit depth and alpha (cv2 would drop both otherwise); it also
    # skips cv2's EXIF handling, which the callers do themselves.
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ImageReadError(f"{path}: OpenCV could not decode it ({reason})",
                             "check that the file is a complete, supported image") from e
    except MemoryError as e:
        raise ImageReadError(f"{path}: not enough memory to decode it",
                             "use a smaller image or free memory") from e
    if image is None:
        raise ImageReadError(f"{path}: corrupt, truncated or not a supported image (OpenCV "
                             "could not decode it)", "check or re-export the file")
    check_finite(image, path)
    return image, data


def read_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Reads an image file as float32 RGB (H, W, 3) in [0, 1].

    Raises:
      ImageReadError: see :func:`decode_file`; the message names the file.
    """
    path = os.fspath(path)
    image, data = decode_file(path, max_pixels=max_pixels)
    image = to_float_rgb(image, path, bgr=True)
    return np.ascontiguousarray(apply_exif_orientation(image, _exif_orientation(path, data)))


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8, **rounded** (the reference truncates, which darkens by ~0.5/255)."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Writes a float RGB (H, W, 3) or single-channel (H, W[, 1]) image in [0, 1] as 8-bit PNG."""
    path = os.fspath(path)
    x = to_uint8(image)
    if x.ndim == 3 and x.shape[2] == 3:
        x = x[:, :, ::-1]
    elif x.ndim == 3:
        x = x[:, :, 0]
    ok, buf = cv2.imencode(".png", x)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    files.atomic_write_bytes(path, buf.tobytes())
