"""Restore real images with an AdaCode network: Python API and command line.

Command line::

    python -m adacode_jax.cli.restore --task sr --scale 4 -i FILE_OR_DIR -o DIR   # shipped model
    python -m adacode_jax.cli.restore --checkpoint CKPT --task sr --scale 4 -i FILE_OR_DIR -o DIR
    python -m adacode_jax.cli.restore --checkpoint CKPT --task inpaint -i DIR --mask MASKS -o DIR

``CKPT`` is an inference checkpoint directory (``python -m adacode_jax.cli.convert`` or training)
or an official ``.pth`` / ``.npz`` / ``.safetensors`` state dict (``--task``/``--scale`` then pick
the network; a ``.safetensors`` file written by ``adacode-export`` names its own, as a directory).

Python API::

    r = Restorer.from_checkpoint("ckpt/sr_x4")           # or (".pth", task="sr", scale=4)
    r = Restorer.from_checkpoint(None, "sr", scale=4)     # the shipped compact x4 model
    out = r.restore(image)          # (H, W[, C]) uint8/uint16/float -> same layout and dtype
    maps = r.weight_maps(image)     # (h, w, K) on the latent grid

What the official ``inference.py`` gets wrong and this tool does instead (docs/official.md#inference):

* greyscale in -> greyscale out (BT.601 luma of the restored RGB); RGBA: the colour channels
  are restored, the alpha channel is upscaled with bicubic interpolation (or, with
  ``alpha="network"``, restored as a grey image) and re-attached; inpainting keeps it as is;
* 8- and 16-bit PNG/TIFF (and float TIFF) come back at their own depth; the EXIF orientation
  is applied;
* any size: each side is mirror-padded to a *bucket* (:func:`adacode_jax.inference.tiling.bucket_size`;
  up to 16 × the network's pad multiple this is exactly the official ``test()`` padding),
  so a folder of different sizes compiles a few programs only;
* large images are cut into tiles on the host (only tiles go to the device) and blended with
  feathered overlaps; the tile size comes from ``tile=`` or, by default, from the memory the
  compiled program needs (XLA's memory analysis) against what the device has free; on an
  out-of-memory error the image is retried with tiles half as wide;
* outputs are clamped to [0, 1] (as the official ``tensor2img``) and rounded, not truncated.

Folders (job list, output names, never overwriting inputs, per-file errors) are handled by
:mod:`adacode_jax.inference.batch`; file formats by :mod:`adacode_jax.images`; the command line
by :mod:`adacode_jax.cli.restore`.
"""
from __future__ import annotations

import functools
import math
import os
import sys
from fractions import Fraction
from typing import Any

import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from absl import logging

from adacode_jax.models import checkpointing
from adacode_jax.inference.low_freq_fix import low_freq_fix
from adacode_jax.inference import convert, safetensors_file
from adacode_jax import errors
from adacode_jax import hostmem
from adacode_jax import images as imageio
from adacode_jax import models
from adacode_jax import resources
from adacode_jax.inference import tiling

TASKS = ("sr", "inpaint")
SR_SCALES = (2, 4)
DTYPES = ("auto", "float32", "bfloat16")
ALPHA_MODES = ("bicubic", "network")
# Fraction of the free memory a program may plan to use (XLA's analysis is not the whole story).
MEMORY_FRACTION = 0.5
# Default overlap of neighbouring tiles, in input pixels (at least one pad multiple).
DEFAULT_OVERLAP = 32
_STATE_DICT_ENDINGS = (".pth", ".pt", ".npz", ".safetensors")


# ---- networks ----------------------------------------------------------------------------

# Models trained by this package's compact recipe and shipped inside it (docs/reproduction.md,
# adacode_jax/pretrained/MODEL_CARD.md): inference checkpoints by network kind.
PRETRAINED_DIR = resources.PRETRAINED_DIR
SHIPPED = {"sr_x4": "compact_sr_x4"}


def inference_hints(path: str) -> dict | None:
    """How an inference checkpoint directory asks to be run (``model.json`` key ``inference``,
    written by training from ``train.inference_*``): ``tile``/``overlap`` (input pixels) and
    ``low_freq_fix`` (:mod:`adacode_jax.inference.low_freq_fix`); None when it asks nothing."""
    import json

    meta = os.path.join(os.fspath(path), checkpointing.MODEL_JSON)
    if not os.path.isfile(meta):
        return None
    with open(meta, encoding="utf-8") as f:
        hints = json.load(f).get("inference")
    if not isinstance(hints, dict) or not hints:
        return None
    if "low_freq_sigma" in hints:   # the key's name in model.json files written before 0.2.0
        hints = dict(hints)
        hints.setdefault("low_freq_fix", hints.pop("low_freq_sigma"))
    return hints


def shipped_model(task: str = "sr", scale: int | None = 4) -> str:
    """The directory of the shipped model for ``task``/``scale``.

    Raises:
      FileNotFoundError: no model of that kind is shipped (the message lists those that are).
    """
    kind = kind_for(task, scale)
    path = os.path.join(PRETRAINED_DIR, SHIPPED.get(kind, "-"))
    if kind not in SHIPPED or not os.path.isfile(os.path.join(path, checkpointing.MODEL_JSON)):
        have = sorted(k for k, v in SHIPPED.items()
                      if os.path.isfile(os.path.join(PRETRAINED_DIR, v, checkpointing.MODEL_JSON)))
        raise FileNotFoundError(f"no shipped model for {kind} (shipped: {', '.join(have) or 'none'}); "
                                "pass --checkpoint with an inference checkpoint or official file")
    return path

def kind_for(task: str, scale: int | None = None) -> str:
    """Network kind of a CLI task: ``("sr", 4)`` -> ``"sr_x4"``, ``("inpaint", _)`` ->
    ``"inpaint"``. A kind (``"sr_x2"`` ...) is returned as is."""
    if task in models.GENERATOR_KINDS:
        return task
    if task == "inpaint":
        if scale not in (None, 1):
            raise ValueError(f"inpainting keeps the size (scale 1), got scale {scale}")
        return "inpaint"
    if task == "sr":
        scale = 4 if scale is None else int(scale)
        if scale not in SR_SCALES:
            raise ValueError(f"super-resolution scale must be one of {SR_SCALES}, got {scale}")
        return f"sr_x{scale}"
    raise ValueError(f"task must be one of {TASKS} or a network kind {models.GENERATOR_KINDS}, "
                     f"got {task!r}")


def resolve_dtype(dtype: str | None) -> str:
    """``"auto"``/None -> bfloat16 on GPU/TPU, float32 on CPU; else the name itself."""
    if dtype in (None, "auto"):
        return "float32" if jax.default_backend() == "cpu" else "bfloat16"
    if dtype not in models.DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return dtype


def _names_its_kind(path: str) -> bool:
    """Whether a checkpoint says which network it holds: a directory (``model.json``) or a
    ``.safetensors`` file whose header names the kind."""
    return os.path.isdir(path) or safetensors_file.stored_kind(path) is not None


def requested_kind(checkpoint: str, task: str | None, scale: int | None) -> str | None:
    """The network kind a task and scale ask for; None where the checkpoint directory (or a
    ``.safetensors`` header) decides (no task, or ``sr`` without a scale). Other state dicts
    default to ×4 for ``sr``."""
    if task is None and scale is None:
        return None
    task = task or "sr"
    if task == "sr" and scale is None and _names_its_kind(checkpoint):
        return None
    return kind_for(task, scale if task == "sr" else None)


def load_network(path: str, kind: str | None = None, *, task: str | None = None,
                 dtype: str | None = None) -> tuple[ml_collections.ConfigDict, dict, str]:
    """``(model config, {"params": ...}, description)`` from a checkpoint.

    Args:
      path: an inference checkpoint directory, or an official ``.pth``/``.pt``/``.npz``/
        ``.safetensors``.
      kind: the network kind wanted; required for state dicts, checked against directories
        (and ``.safetensors`` files whose header names the kind).
      task: ``"sr"`` or ``"inpaint"``: checked against a directory's network when no kind is given.
      dtype: compute dtype (see :func:`resolve_dtype`); parameters stay float32.
    """
    path = os.fspath(path)
    names_kind = _names_its_kind(path)
    if kind is None and task is not None and not names_kind:
        kind = kind_for(task)
    if os.path.isdir(path):
        cfg, variables, meta = checkpointing.load_inference(path)
        source = meta.get("source", path)
    elif path.endswith(_STATE_DICT_ENDINGS):
        if kind is None and not names_kind:
            raise ValueError(f"{path} is an official state dict: say which network it holds "
                             "(--task sr --scale 4, --task inpaint, ...)")
        cfg, variables, _ = convert.load_file(path, kind or safetensors_file.stored_kind(path))
        source = path
    elif os.path.exists(path):
        raise ValueError(f"{path} is neither an inference checkpoint directory nor an official "
                         f"state dict ({', '.join(_STATE_DICT_ENDINGS)})")
    else:
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    family = None if task is None else ("sr_x" if task == "sr" else task)
    if names_kind and ((kind is not None and cfg.kind != kind)
                       or (family and not cfg.kind.startswith(family))):
        raise ValueError(f"{path} holds a {cfg.kind!r} network, but {kind or task!r} was asked "
                         "for; pass the matching --task/--scale or another checkpoint")
    if cfg.kind not in models.GENERATOR_KINDS:
        raise ValueError(f"{path} holds a {cfg.kind!r} network, which does not restore images")
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    cfg.dtype = resolve_dtype(dtype)
    return cfg, {"params": variables["params"]}, str(source)


@functools.partial(jax.jit, static_argnums=0)
def _forward(model: models.AdaCodeNet, variables, x, codebook_mask=None):
    """(out (B, sH, sW, 3) float32, weight maps (B, h, w, K) float32) of padded ``x``;
    ``codebook_mask`` (K,) scales the mixing weights (None: the plain network)."""
    out, aux = model.apply(variables, x, codebook_mask=codebook_mask)
    maps = aux.get("weight_maps")
    if maps is None:   # stage I network: one codebook, no weight predictor
        f = x.shape[1] // aux["indices"].shape[2]
        maps = jnp.zeros((x.shape[0], x.shape[1] // f, x.shape[2] // f, 0), jnp.float32)
    return out, maps.astype(jnp.float32)


def available_memory() -> int | None:
    """Bytes free on the default device: the allocator's limit minus use on GPU/TPU,
    ``MemAvailable`` of the host on CPU; None if unknown."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # pylint: disable=broad-except
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return host_memory_available()


def resize_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` (any layout and dtype :meth:`Restorer.restore` returns) resized to
    ``height × width``: Lanczos when enlarging, area averaging when shrinking; float images
    stay in [0, 1]. A no-op at the same size."""
    height, width = max(1, int(height)), max(1, int(width))
    if image.shape[:2] == (height, width):
        return image
    shrink = height * width < image.shape[0] * image.shape[1]
    out = cv2.resize(image, (width, height),
                     interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)
    if image.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    if np.issubdtype(out.dtype, np.floating):
        out = np.clip(out, 0.0, 1.0)
    return out


def is_out_of_memory(error: BaseException) -> bool:
    """Whether an exception from running a program says the device ran out of memory."""
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


# ---- the restorer ---------------------------------------------------------------------------

class NonFiniteError(errors.UserError, ValueError):
    """NaN or Inf in an input image or in a network's output; nothing is written."""


class HostMemoryError(errors.UserError, MemoryError):
    """The restored image would not fit in host memory; refused before any work."""


# Host bytes per output pixel while restoring: float64 tile accumulator (RGB) and blend weights,
# then the float32 result, its clamp and the output array; one piece needs no accumulators.
HOST_BYTES_PER_OUTPUT_PIXEL = {"tiled": 3 * 8 + 8 + 3 * 4 * 3, "whole": 3 * 4 * 4}


host_memory_available = hostmem.available   # a module attribute: tests replace it


def check_host_memory(height: int, width: int, scale: int, tiled: bool,
                      available: int | None = None) -> None:
    """Refuses (:class:`HostMemoryError`) an image whose restored result would not fit in host
    memory, instead of failing with a bare MemoryError halfway."""
    available = host_memory_available() if available is None else available
    need = height * width * scale * scale * HOST_BYTES_PER_OUTPUT_PIXEL["tiled" if tiled else "whole"]
    if available is not None and need > available:
        raise HostMemoryError(
            f"a {width}x{height} image restored x{scale} is {width * scale}x{height * scale}: it "
            f"needs about {need / 2**30:.1f} GiB of host memory, {available / 2**30:.1f} GiB are "
            "available", "restore a smaller image or cut it into parts; --max-pixels limits the "
            "input size")


class Restorer:
    """Restores images of any size with one network; compiled once per shape bucket.

    Attributes:
      model, variables: a generator from :func:`adacode_jax.models.build` and its variables.
      tile: ``"auto"`` (tiles only when the whole image would not fit in memory), an int
        (tile side in input pixels, rounded down to a multiple of ``model.pad_multiple``;
        tiles when a side is larger) or 0 (never tile).
      overlap: tile overlap in input pixels (default ``max(32, pad_multiple)``).
      blend: ``"feather"`` or ``"none"`` (see :mod:`adacode_jax.inference.tiling`).
      buckets: pad to shape buckets (True) or to the exact official ``test()`` size (False,
        one compilation per image size).
      alpha: ``"bicubic"`` or ``"network"``: how an SR alpha channel is upscaled.
      memory_budget: bytes a program may use; default half of :func:`available_memory`.
      progress: show a progress bar over the tiles of an image.
      low_freq_fix: SR only: take the output's band below this Gaussian σ (output pixels)
        from the bicubic upsampling of the input (:mod:`adacode_jax.inference.low_freq_fix`); 0 = off.
      outscale: the final size as a multiple of the input's (Real-ESRGAN's ``--outscale``):
        the network's output is resized to it (Lanczos up, area down); None: the network's
        own scale.
    """

    def __init__(self, model: models.AdaCodeNet, variables: Any, *, tile: int | str = "auto",
                 overlap: int | None = None, blend: str = "feather", buckets: bool = True,
                 alpha: str = "bicubic", memory_budget: int | None = None, progress: bool = False,
                 description: str = "", low_freq_fix: float = 0.0,
                 outscale: float | None = None):
        if not isinstance(model, models.AdaCodeNet):
            raise TypeError(f"Restorer needs an AdaCodeNet generator, got {type(model).__name__}")
        if alpha not in ALPHA_MODES:
            raise ValueError(f"alpha must be one of {ALPHA_MODES}, got {alpha!r}")
        if blend not in tiling.BLENDS:
            raise ValueError(f"blend must be one of {tiling.BLENDS}, got {blend!r}")
        if low_freq_fix < 0:
            raise ValueError(f"low_freq_fix must be >= 0, got {low_freq_fix}")
        self.low_freq_fix = float(low_freq_fix)
        if outscale is not None and not (math.isfinite(outscale) and outscale > 0):
            raise ValueError(f"outscale must be a positive number, got {outscale!r}")
        self.outscale = None if outscale is None else float(outscale)
        self.model = model
        self.variables = jax.device_put({"params": variables["params"]})
        self.scale = int(model.scale)
        self.multiple = int(model.pad_multiple)
        self.latent_factor = 2 ** int(model.encode_depth)   # input pixels per latent pixel
        self.overlap = int(overlap) if overlap is not None else max(DEFAULT_OVERLAP, self.multiple)
        self.overlap = tiling.round_up(self.overlap, self.latent_factor)
        self.min_tile = max(tiling.round_up(2 * self.overlap, self.multiple), 2 * self.multiple)
        if tile == "auto" or tile == 0:
            self.tile = tile
        elif isinstance(tile, int) and tile > 0:
            self.tile = max(self.multiple, (tile // self.multiple) * self.multiple)
            if self.tile < 2 * self.overlap:
                raise ValueError(f"tile {tile} is too small for the overlap {self.overlap}: use a tile "
                                 f"of at least {self.min_tile} or a smaller overlap")
        else:
            raise ValueError(f"tile must be 'auto', 0 or a positive int, got {tile!r}")
        self.blend, self.buckets, self.alpha_mode = blend, bool(buckets), alpha
        self.memory_budget, self.progress, self.description = memory_budget, progress, description
        self._tile_cap: int | None = None     # set after an out-of-memory error
        self._memory_cache: dict[tuple[int, int], tuple[int, float, int] | None] = {}
        # (K,) float32 factors on the codebook weights, 0 = codebook dropped; None = the plain
        # network. Set on a copy by adacode_jax.inference.explorer.restore_with_codebooks.
        self.codebook_mask: np.ndarray | None = None

    @classmethod
    def from_checkpoint(cls, path: str, task: str | None = None, *, scale: int | None = None,
                        dtype: str | None = None, **kwargs) -> "Restorer":
        """A restorer from an inference checkpoint directory or an official state dict.

        Args:
          path: checkpoint directory or ``.pth``/``.pt``/``.npz``/``.safetensors``; None: the
            model shipped with the package for ``task``/``scale`` (:func:`shipped_model`; ×4 SR
            today).
          task: ``"sr"`` (with ``scale`` 2 or 4; a directory's own scale when omitted, 4 for a
            state dict), ``"inpaint"``, or a kind such as ``"sr_x4"``; needed for state dicts,
            checked against directories.
          dtype: ``"auto"`` (bfloat16 on accelerators, float32 on CPU), ``"float32"``,
            ``"bfloat16"``.
          **kwargs: :class:`Restorer` options (tile, overlap, alpha, ...).
        """
        if path is None:
            path = shipped_model(task or "sr", scale if scale is not None else 4)
        hints = inference_hints(path) or {}
        if int(hints.get("tile", 0)) > 0 and kwargs.get("tile", "auto") == "auto":
            # the checkpoint's own tiling (it was trained on small crops), unless a tile is asked
            kwargs["tile"] = int(hints["tile"])
            if kwargs.get("overlap") is None:
                kwargs["overlap"] = int(hints.get("overlap") or 0) or None
        if kwargs.get("low_freq_fix") is None:
            kwargs["low_freq_fix"] = float(hints.get("low_freq_fix", 0.0))
        family = task if task in TASKS else None
        kind = requested_kind(path, task, scale) if family or task is None else kind_for(task)
        cfg, variables, source = load_network(path, kind, task=family, dtype=dtype)
        return cls(models.build(cfg), variables, description=f"{cfg.kind} from {source}", **kwargs)

    # ---- shapes and memory ----
    def padded(self, n: int) -> int:
        """Length a whole-image side of ``n`` pixels is mirror-padded to."""
        if self.buckets:
            return tiling.bucket_size(n, self.multiple)
        return tiling.official_padded_size(n, self.multiple)

    def _tile_pad(self, n: int, tile: int) -> int:
        return tile if n > tile else tiling.round_up(n, self.multiple)

    def program_memory(self, height: int, width: int) -> tuple[int, float, int] | None:
        """``(bytes needed, bytes per input pixel, fixed bytes)`` of the compiled program for a
        padded ``(height, width)`` input, from XLA's memory analysis; None if unavailable.
        Compiles the program (cached; it is the one that will run)."""
        key = (height, width)
        if key not in self._memory_cache:
            spec = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
            try:
                stats = _forward.lower(self.model, self.variables, spec).compile().memory_analysis()
            except Exception as e:  # pylint: disable=broad-except
                if not is_out_of_memory(e):
                    raise
                stats = None
            if stats is None:
                self._memory_cache[key] = None
            else:
                varying = int(stats.temp_size_in_bytes) + int(stats.output_size_in_bytes)
                fixed = int(stats.argument_size_in_bytes) + int(stats.generated_code_size_in_bytes)
                self._memory_cache[key] = (varying + fixed, varying / (height * width), fixed)
        return self._memory_cache[key]

    def _budget(self) -> int | None:
        if self.memory_budget is not None:
            return int(self.memory_budget)
        free = available_memory()
        return None if free is None else int(free * MEMORY_FRACTION)

    def plan(self, height: int, width: int) -> int | None:
        """Tile side for an image of ``height × width`` input pixels, or None for one piece."""
        cap = self._tile_cap
        if isinstance(self.tile, int) and self.tile > 0:
            t = self.tile if cap is None else min(self.tile, cap)
            return t if max(height, width) > t else None
        if cap is not None:
            return cap if max(height, width) > cap else None
        if self.tile == 0:
            return None
        budget = self._budget()
        whole = None if budget is None else self.program_memory(self.padded(height), self.padded(width))
        if whole is None or whole[0] <= budget:
            return None
        _, per_px, fixed = whole
        side = int(math.sqrt(max(budget - fixed, 0) / per_px)) // self.multiple * self.multiple
        while side >= self.min_tile:
            need = self.program_memory(self._tile_pad(height, side), self._tile_pad(width, side))
            if need is None or need[0] <= budget:
                return side
            side = int(side * 0.8) // self.multiple * self.multiple
        raise MemoryError(f"even {self.min_tile}-pixel tiles need more than the memory budget of "
                          f"{budget / 2**20:.0f} MiB; free memory or pass a smaller --tile-overlap")

    def _shrink(self, tile: int | None, height: int, width: int) -> int | None:
        base = tile if tile is not None else max(height, width)
        side = (base // 2) // self.multiple * self.multiple
        return side if side >= self.min_tile else None

    # ---- running ----
    def _run(self, x: np.ndarray, pad_to: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Network on one piece ``(h, w, 3)``, mirror-padded bottom/right to ``pad_to``:
        ``(out (s·h, s·w, 3), maps (ceil(h/f), ceil(w/f), K))``, both float32, unclamped."""
        h, w = x.shape[:2]
        ph, pw = pad_to[0] - h, pad_to[1] - w
        if ph or pw:
            x = np.pad(x, ((0, ph), (0, pw), (0, 0)), mode="symmetric")
        out, maps = _forward(self.model, self.variables, jnp.asarray(x[None], jnp.float32),
                             self.codebook_mask)
        f = self.latent_factor
        out = np.asarray(out[0, : h * self.scale, : w * self.scale])
        maps = np.asarray(maps[0, : -(-h // f), : -(-w // f)])
        return out, maps

    def _restore_planned(self, rgb: np.ndarray, tile: int | None) -> tuple[np.ndarray, np.ndarray]:
        h, w = rgb.shape[:2]
        if tile is None:
            return self._run(rgb, (self.padded(h), self.padded(w)))
        pad_to = (self._tile_pad(h, tile), self._tile_pad(w, tile))
        n = len(tiling.tile_boxes(h, w, tile, self.overlap, self.latent_factor))
        with tqdm.tqdm(total=n, desc=f"tiles {tile}px", leave=False, disable=not self.progress) as bar:
            out, maps = tiling.tiled_apply(
                rgb, lambda piece: self._run(piece, pad_to), tile=tile, overlap=self.overlap,
                scales=(self.scale, Fraction(1, self.latent_factor)), align=self.latent_factor,
                blend=self.blend, progress=bar.update)
        return out, maps

    def restore_rgb(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Core restoration of ``(H, W, 3)`` float RGB in [0, 1].

        Returns:
          ``(out (s·H, s·W, 3) float32 clamped to [0, 1], maps (ceil(H/f), ceil(W/f), K))``
          where ``f`` is :attr:`latent_factor`.
        """
        rgb = np.asarray(rgb, np.float32)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"restore_rgb expects (H, W, 3), got {rgb.shape}")
        bad = imageio.count_non_finite(rgb)
        if bad:
            raise NonFiniteError(f"the input has {bad} NaN/Inf sample(s); pixel values must be "
                                 "finite, in [0, 1]: fix or re-export the image")
        h, w = rgb.shape[:2]
        check_host_memory(h, w, self.scale, False)      # the least it can take, before planning
        tile = self.plan(h, w)
        if tile is not None:
            check_host_memory(h, w, self.scale, True)
        while True:
            try:
                out, maps = self._restore_planned(rgb, tile)
                bad = imageio.count_non_finite(out)
                if bad:
                    # checked before the clamp, which would hide an Inf as 1.0
                    raise NonFiniteError(
                        f"the network produced {bad} NaN/Inf output sample(s) from finite input: "
                        f"the weights are broken or {self.model.dtype.__name__} overflowed; "
                        "try --dtype float32 or another checkpoint")
                if self.low_freq_fix > 0 and self.scale > 1:
                    out = low_freq_fix(out, rgb, self.low_freq_fix)
                return np.clip(out, 0.0, 1.0), maps
            except Exception as e:  # pylint: disable=broad-except
                if not is_out_of_memory(e):
                    raise
                smaller = self._shrink(tile, h, w)
                if smaller is None:
                    raise MemoryError(f"out of memory restoring a {w}x{h} image even with "
                                      f"{tile}-pixel tiles") from e
                logging.warning("out of memory with %s; retrying with %d-pixel tiles",
                                f"{tile}-pixel tiles" if tile else "the whole image", smaller)
                self._tile_cap = tile = smaller

    def restore_with_maps(self, image: np.ndarray, mask: np.ndarray | None = None
                          ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`restore` and :meth:`weight_maps` from one run of the network."""
        rgb, alpha, layout = imageio.split_channels(image)
        if alpha is not None and not np.isfinite(alpha).all():
            raise NonFiniteError("the input's alpha channel holds NaN/Inf samples; pixel values "
                                 "must be finite, in [0, 1]: fix or re-export the image")
        if mask is not None:
            if self.scale != 1:
                raise ValueError("a hole mask is for inpainting; this network super-resolves")
            rgb = np.where(imageio.holes_of(mask, rgb.shape[:2])[:, :, None], np.float32(1.0), rgb)
        out, maps = self.restore_rgb(rgb)
        if alpha is not None and self.scale != 1:
            if self.alpha_mode == "network":
                alpha = self.restore_rgb(np.repeat(alpha[:, :, None], 3, axis=2))[0].mean(axis=2)
            else:
                h, w = alpha.shape
                alpha = np.clip(cv2.resize(alpha, (w * self.scale, h * self.scale),
                                           interpolation=cv2.INTER_CUBIC), 0.0, 1.0)
        merged = imageio.merge_channels(out, alpha, layout)
        if self.outscale is not None:
            h, w = rgb.shape[:2]
            merged = resize_to(merged, round(h * self.outscale), round(w * self.outscale))
        return merged, maps

    def restore(self, image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Restore one image.

        Args:
          image: ``(H, W)`` / ``(H, W, 1)`` grey, ``(H, W, 2)`` grey + alpha, ``(H, W, 3)`` RGB
            or ``(H, W, 4)`` RGBA; uint8, uint16 or float in [0, 1].
          mask: inpainting only: ``(H, W)`` hole mask (True / white = hole), painted white into
            the image before restoring (the network sees holes as white pixels). Without a
            mask, white regions already in the image are the holes.

        Returns:
          The restored image, ``scale ×`` larger, with the input's channel layout and dtype.
        """
        return self.restore_with_maps(image, mask)[0]

    def weight_maps(self, image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """The K codebook weight maps ``(ceil(H/f), ceil(W/f), K)`` of an image (paper Eq. 6),
        unnormalised as the network computes them."""
        return self.restore_with_maps(image, mask)[1]
