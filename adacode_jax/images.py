"""Image files: reading, checking and writing, for training, evaluation and the restoration tools.

Two ways in:

- :func:`read_image` (a file) and :func:`to_float_rgb` (an array, e.g. from TFDS) serve
  training and evaluation. They always return float32 RGB, HWC, in [0, 1]:
  - 8-bit images are divided by 255, 16-bit ones by 65535, float images are clipped to [0, 1];
  - greyscale (H, W) or (H, W, 1) is repeated to three channels;
  - RGBA is **composited over a white background** (``rgb * a + (1 - a)``): the colour stored
    under fully transparent pixels is arbitrary (often black), and a white backdrop is what
    viewers show, so no dark fringes enter the training data as if they were a degradation;
  - the EXIF orientation tag is applied, so photos come out the way viewers show them.
- :func:`read_image_raw` serves the restoration tools, which must give back what they were given:
  it keeps the channel layout (grey ``(H, W)``, grey + alpha ``(H, W, 2)``, RGB, RGBA, channels
  in RGB(A) order) and the sample type (``uint8``, ``uint16``, or ``float32`` for float TIFF),
  and applies the EXIF orientation (written back without an orientation tag).
  :func:`split_channels` / :func:`merge_channels` turn such an array into the RGB float a
  network takes (plus alpha and a :class:`Layout`) and back; :func:`write_image_raw` writes it.

A file that cannot be read raises :class:`ImageReadError`, whose message names the file:
missing, empty, corrupt or truncated files, animated images (several frames), images with more
pixels than the cap (:func:`max_pixels`: ``max_pixels=`` argument, else the environment
variable ``ADACODE_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`; the size is read from the file
header before anything is decoded) and float images holding NaN or Inf (refused, not repaired).
Writers go through :func:`adacode_jax.files.atomic_write_bytes`: a file appears complete or not
at all.
"""
from __future__ import annotations

import dataclasses
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


def count_non_finite(a: np.ndarray) -> int:
    """How many samples of ``a`` are NaN or Inf (0 for integer arrays)."""
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.inexact):
        return 0
    return int(a.size - np.count_nonzero(np.isfinite(a)))


def check_finite(image: np.ndarray, name: str = "<array>") -> None:
    """Refuses a float image holding NaN or Inf (they are not repaired: any value put in their
    place would be a guess); the one check of every image read from a file."""
    if np.issubdtype(image.dtype, np.floating):
        bad = count_non_finite(image)
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


# The restoration tools' layer: files come back out as they came in.

# Output formats and what they can hold.
_SIXTEEN_BIT = (".png", ".tif", ".tiff")
_FLOAT = (".tif", ".tiff")
_ALPHA = (".png", ".tif", ".tiff", ".webp")
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
      max_pixels: pixel cap checked on the file header (:func:`adacode_jax.images.max_pixels`).

    Raises:
      ImageReadError: missing, empty, corrupt, truncated, animated, too large (above the pixel
        cap) or unsupported file, or a float image with NaN/Inf; the message names it.
    """
    path = os.fspath(path)
    image, _ = decode_file(path, max_pixels=max_pixels)
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
            apply_exif_orientation(image[:, :, None], orientation)[:, :, 0])
    return np.ascontiguousarray(apply_exif_orientation(image, orientation))


def read_mask(path: str | os.PathLike, shape: tuple[int, int]) -> np.ndarray:
    """A hole mask ``(H, W)`` bool (white = hole, threshold 0.5 on the channel mean).

    Raises:
      ImageReadError: unreadable file, or its size is not ``shape`` (the image's size).
    """
    rgb = read_image(path)
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
        return to_uint8(x)
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
            buf = _bytes_io.BytesIO()
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
