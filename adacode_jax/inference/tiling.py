"""Tiles, shape buckets and feathered blending for restoring images of any size (numpy only).

A restoration network compiled by XLA runs one program per input shape. Two tools keep the
number of shapes small while accepting any image:

* **Buckets** (:func:`bucket_size`): a side of ``n`` pixels is mirror-padded to a length on a
  ladder of multiples, so a folder of different sizes compiles a handful of programs.
* **Tiles** (:func:`tiled_apply`): a large image is cut on the host into overlapping tiles of
  one size; only tiles go to the device. Each tile's output is weighted by a window that
  ramps linearly from ~0 at an inner tile edge to 1 across the overlap (*feathering*), and the
  weighted sum is divided by the summed weights. GroupNorm statistics differ per tile, so tiles
  never agree exactly; the ramp turns their disagreement into a smooth transition instead of a
  seam. ``blend="none"`` pastes the centre parts instead (the official ``test_tile`` and
  Real-ESRGAN behaviour), for comparison.

Coordinates are in input pixels; an output of ``fn`` may be at another resolution (``scales``),
e.g. ×4 for super-resolution or ×1/2 for the ×4 network's latent weight maps.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Callable, Sequence

import numpy as np

BLENDS = ("feather", "none")
# Above this many steps the bucket step doubles: padding stays at most 1/8 of a side.
_BUCKET_STEPS = 16


def round_up(n: int, multiple: int) -> int:
    return -(-int(n) // int(multiple)) * int(multiple)


def official_padded_size(n: int, multiple: int) -> int:
    """The official ``test()`` size: ``(n // m + 1)·m``, always at least one pixel of padding."""
    return (int(n) // int(multiple) + 1) * int(multiple)


def bucket_size(n: int, multiple: int) -> int:
    """Padded length of a side of ``n`` pixels: a multiple of ``multiple`` that is ≥ n + 1.

    Up to ``16·multiple`` this is exactly the official ``test()`` size, so small images are
    restored bit-for-bit as the reference does. Beyond, the step doubles whenever the length
    passes 16 steps: 8 to 16 buckets per octave, and padding at most 1/8 of the side
    (1 + step pixels; about 1/16 on average).
    """
    need = int(n) + 1
    step = int(multiple)
    while need > _BUCKET_STEPS * step:
        step *= 2
    return round_up(need, step)


def axis_starts(size: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``[0, size)``, neighbours sharing at
    least ``overlap`` pixels, spread evenly.

    Starts are multiples of ``align``; the last tile may be shorter than ``tile`` when its
    start is rounded up. One tile (start 0) when ``size <= tile``.
    """
    if tile <= 0 or overlap < 0 or 2 * overlap > tile or tile - overlap < align:
        raise ValueError(f"need 0 <= 2*overlap <= tile and tile - overlap >= align, got tile {tile}, "
                         f"overlap {overlap}, align {align}")
    if size <= tile:
        return [0]
    n = max(2, math.ceil((size - overlap) / (tile - overlap)))
    while True:
        starts: list[int] = []
        for i in range(n):
            s = i * (size - tile) / (n - 1)
            s = round_up(math.ceil(s), align) if i == n - 1 else int(s) // align * align
            if not starts or s > starts[-1]:
                starts.append(s)
        # Alignment can widen a gap by up to 2·(align − 1); add a tile until every overlap holds.
        if all(a + tile - b >= overlap for a, b in zip(starts, starts[1:])):
            return starts
        n += 1


def _axis_windows(size: int, starts: Sequence[int], tile: int, scale: Fraction,
                  blend: str) -> list[tuple[int, int, np.ndarray]]:
    """Per tile along one axis: (output start, output stop, weights) at ``scale``."""
    out_size = math.ceil(size * scale)
    spans = []
    for k, s in enumerate(starts):
        e = min(s + tile, size)
        o0, o1 = int(s * scale), min(math.ceil(e * scale), out_size)
        before = int((min(starts[k - 1] + tile, size) - s) * scale) if k > 0 else 0
        after = int((e - starts[k + 1]) * scale) if k + 1 < len(starts) else 0
        spans.append((o0, o1, _window(o1 - o0, max(before, 0), max(after, 0), blend)))
    return spans


def _window(length: int, before: int, after: int, blend: str) -> np.ndarray:
    """1-D weights of one tile of ``length`` output samples.

    feather: linear ramps ``(i + ½)/L`` over the ``before`` / ``after`` samples shared with
    the neighbouring tiles; none: 1 between the midpoints of those overlaps, 0 outside.
    """
    before, after = min(before, length), min(after, length)
    w = np.ones(length, np.float64)
    if blend == "feather":
        if before:
            w[:before] = np.minimum(w[:before], (np.arange(before) + 0.5) / before)
        if after:
            w[length - after:] = np.minimum(w[length - after:], (np.arange(after)[::-1] + 0.5) / after)
    elif blend == "none":
        w[: before // 2] = 0.0
        if after:
            w[length - (after - after // 2):] = 0.0
    else:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
    return w


def tile_boxes(height: int, width: int, tile: int, overlap: int,
               align: int = 1) -> list[tuple[int, int, int, int]]:
    """``(y0, y1, x0, x1)`` of every tile, row-major."""
    ys = axis_starts(height, tile, overlap, align)
    xs = axis_starts(width, tile, overlap, align)
    return [(y, min(y + tile, height), x, min(x + tile, width)) for y in ys for x in xs]


def tiled_apply(image: np.ndarray, fn: Callable[[np.ndarray], Sequence[np.ndarray]], *,
                tile: int, overlap: int, scales: Sequence[Fraction | int] = (1,),
                align: int = 1, blend: str = "feather",
                progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """Apply ``fn`` tile by tile and blend the results.

    Args:
      image: ``(H, W, C)`` host array.
      fn: maps a tile ``(h, w, C)`` to one array per entry of ``scales``, the i-th of shape
        ``(ceil(h·scales[i]), ceil(w·scales[i]), C_i)``.
      tile, overlap: tile side and minimum overlap in input pixels (``2·overlap <= tile``).
      scales: output resolution / input resolution of each output (``Fraction`` for < 1).
      align: tile starts are multiples of this; ``align·scale`` must be an integer for every
        scale (e.g. 2 for the ×4 network's latent maps at scale 1/2).
      blend: ``"feather"`` (default) or ``"none"`` (hard cut in the middle of each overlap).
      progress: called with 1 after each tile.

    Returns:
      One float32 ``(ceil(H·s), ceil(W·s), C_i)`` array per scale.
    """
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
    scales = [Fraction(s) for s in scales]
    for s in scales:
        if (align * s).denominator != 1:
            raise ValueError(f"align {align} × scale {s} is not an integer")
    h, w = image.shape[:2]
    ys = axis_starts(h, tile, overlap, align)
    xs = axis_starts(w, tile, overlap, align)
    wy = [_axis_windows(h, ys, tile, s, blend) for s in scales]
    wx = [_axis_windows(w, xs, tile, s, blend) for s in scales]
    acc: list[np.ndarray | None] = [None] * len(scales)
    wsum = [np.zeros((math.ceil(h * s), math.ceil(w * s)), np.float64) for s in scales]
    for iy, y0 in enumerate(ys):
        for ix, x0 in enumerate(xs):
            outs = fn(image[y0:min(y0 + tile, h), x0:min(x0 + tile, w)])
            for i, out in enumerate(outs):
                oy0, oy1, win_y = wy[i][iy]
                ox0, ox1, win_x = wx[i][ix]
                out = np.asarray(out, np.float64)
                if out.shape[:2] != (oy1 - oy0, ox1 - ox0):
                    raise ValueError(f"fn returned {out.shape[:2]} for output {i}, expected "
                                     f"{(oy1 - oy0, ox1 - ox0)} (tile at y={y0}, x={x0})")
                if acc[i] is None:
                    acc[i] = np.zeros(wsum[i].shape + out.shape[2:], np.float64)
                weight = np.outer(win_y, win_x)
                acc[i][oy0:oy1, ox0:ox1] += out * weight.reshape(weight.shape + (1,) * (out.ndim - 2))
                wsum[i][oy0:oy1, ox0:ox1] += weight
            if progress is not None:
                progress(1)
    results = []
    for a, ws in zip(acc, wsum):
        ws = ws.reshape(ws.shape + (1,) * (a.ndim - 2))
        results.append((a / np.maximum(ws, 1e-12)).astype(np.float32))
    return results


def seam_lines(size: int, tile: int, overlap: int, align: int = 1, scale: int = 1) -> list[int]:
    """Output rows (or columns) ``r`` where a tile edge or an overlap midpoint lies between
    ``r − 1`` and ``r``: the places a seam would show."""
    starts = axis_starts(size, tile, overlap, align)
    lines = set()
    for k in range(1, len(starts)):
        prev_end = min(starts[k - 1] + tile, size)
        for p in (starts[k], prev_end, (starts[k] + prev_end) // 2):
            lines.add(int(p * scale))
    return sorted(r for r in lines if 0 < r < size * scale)


def seam_statistics(image: np.ndarray, rows: Sequence[int], cols: Sequence[int],
                    period: int = 1) -> dict[str, float]:
    """Mean absolute difference between neighbouring pixels across the given boundaries and
    across all other boundaries of the same phase modulo ``period``.

    A boundary ``r`` lies between rows ``r − 1`` and ``r`` (columns alike). ``period`` is the
    network's own repeat (8 for the AdaCode decoder's three ×2 nearest upsamplings): pixels
    of one phase are compared with the same phase elsewhere, so the upsampling pattern is not
    mistaken for a seam.

    Returns:
      ``{"across": ..., "elsewhere": ..., "ratio": across / elsewhere}``.
    """
    x = np.asarray(image, np.float64)
    dy = np.abs(np.diff(x, axis=0)).mean(axis=tuple(range(1, x.ndim)))   # boundary r at index r-1
    dx = np.abs(np.diff(x, axis=1)).mean(axis=(0,) + tuple(range(2, x.ndim)))
    across, elsewhere = [], []
    for d, lines in ((dy, rows), (dx, cols)):
        lines = set(lines)
        phases = {r % period for r in lines}
        for r in range(1, d.shape[0] + 1):
            if r in lines:
                across.append(d[r - 1])
            elif r % period in phases:
                elsewhere.append(d[r - 1])
    a, e = float(np.mean(across)), float(np.mean(elsewhere))
    return {"across": a, "elsewhere": e, "ratio": a / e}
