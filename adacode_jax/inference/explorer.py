"""Codebook explorer: what each of AdaCode's K basis codebooks contributes to a restoration.

The latent a restoration network decodes is ``Σ_k w_k · after_quant_k(z_q,k)`` (paper Eq. 6).
This module re-decodes an image with some codebooks switched off (their weight ``w_k`` set to
0; ``codebook_mask`` of :class:`adacode_jax.models.AdaCodeNet`) and summarises the weight maps
``w`` (``(h, w, K)`` on the latent grid, unnormalised as the network computes them):

    out, maps = restore_with_codebooks(restorer, image, drop=(0,))    # without codebook 0
    out, maps = restore_with_codebooks(restorer, image, keep=(2,))    # codebook 2 alone
    stats = weight_map_stats(maps)     # per-codebook mean, min, max, share where dominant

Exactness (tests/test_explorer.py): dropping nothing runs the plain network (bit-for-bit the
output of :meth:`Restorer.restore_with_maps`), and ``keep=(k,)`` is the same mask, so the same
output, as dropping every other codebook. The maps returned are always the predicted ones.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Iterable

import numpy as np

from adacode_jax import errors
from adacode_jax.evaluation import visualize


def num_codebooks(restorer) -> int:
    """K: the basis codebooks a restorer's network mixes (0 for a single-codebook stage I net)."""
    model = restorer.model
    return 0 if model.single_codebook else len(model.codebooks)


def _indices(values: int | Iterable[int] | None, k: int, what: str) -> tuple[int, ...]:
    if values is None:
        return ()
    values = (values,) if isinstance(values, (int, np.integer)) else tuple(values)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < k:
            raise errors.UserError(f"{what} {v!r}: no such codebook; this network has {k} "
                                   f"(0 to {k - 1})", f"give {what} a number from 0 to {k - 1}")
    return tuple(int(v) for v in values)


def codebook_mask(k: int, *, drop: int | Iterable[int] = (),
                  keep: int | Iterable[int] | None = None) -> np.ndarray | None:
    """The ``(k,)`` float32 factors on the weights: 1 where a codebook is used, 0 where it is
    dropped. ``keep`` (if given) uses only those codebooks; ``drop`` then removes codebooks.
    Returns None when every codebook is used (the plain network, not an all-ones mask).

    Raises:
      UserError: an index outside ``0 .. k-1``, a network without K codebooks, or a choice
        that drops every codebook (the latent would be all zeros).
    """
    if k < 1:
        raise errors.UserError("this network has a single codebook and no weight maps",
                               "the codebook explorer needs an AdaCode network (K >= 2)")
    keep_set = _indices(keep, k, "keep")
    drop_set = _indices(drop, k, "drop")
    mask = np.ones((k,), np.float32)
    if keep is not None:
        mask[:] = 0.0
        mask[list(keep_set)] = 1.0
    mask[list(drop_set)] = 0.0
    if not mask.any():
        raise errors.UserError("every codebook would be dropped", "keep at least one codebook")
    return None if mask.all() else mask


def restore_with_codebooks(restorer, image: np.ndarray, *, drop: int | Iterable[int] = (),
                           keep: int | Iterable[int] | None = None,
                           mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`Restorer.restore_with_maps` with some codebooks switched off.

    Args:
      restorer: a :class:`adacode_jax.inference.restorer.Restorer` (not modified: a copy runs).
      image: as :meth:`Restorer.restore` takes it (any layout, uint8/uint16/float).
      drop: codebook indices whose weight is set to 0.
      keep: if given, only these codebooks are used (then ``drop`` is applied too).
      mask: inpainting hole mask, as for :meth:`Restorer.restore`.

    Returns:
      ``(restored image, predicted weight maps (h, w, K))``; same tiling, padding, low-frequency fix
      and output layout as the restorer's plain output.
    """
    factors = codebook_mask(num_codebooks(restorer), drop=drop, keep=keep)
    if factors is None:
        return restorer.restore_with_maps(image, mask)
    masked = copy.copy(restorer)   # shares the compiled programs and memory plan
    masked.codebook_mask = factors
    return masked.restore_with_maps(image, mask)


@dataclasses.dataclass(frozen=True)
class CodebookStats:
    """Per-codebook statistics of weight maps ``(h, w, K)``."""
    mean: tuple[float, ...]          # mean of w_k over the image
    minimum: tuple[float, ...]
    maximum: tuple[float, ...]
    dominant_share: tuple[float, ...]  # fraction of latent pixels where k has the largest w
    scale: tuple[float, float]       # the shared colour scale (1st, 99th percentile of all maps)

    def table(self) -> str:
        """A Markdown table, one row per codebook."""
        rows = ["| codebook | mean w | min | max | dominant in |", "|---|---|---|---|---|"]
        for k, (m, lo, hi, share) in enumerate(zip(self.mean, self.minimum, self.maximum,
                                                   self.dominant_share)):
            rows.append(f"| w{k} | {m:+.3f} | {lo:+.3f} | {hi:+.3f} | {100 * share:.1f} % |")
        return "\n".join(rows)


def shared_scale(maps: np.ndarray) -> tuple[float, float]:
    """``(lo, hi)``: one colour scale for all K maps (1st to 99th percentile, as
    :func:`adacode_jax.evaluation.visualize.weight_map_figure`)."""
    maps = np.asarray(maps, np.float32)
    lo, hi = (float(v) for v in np.percentile(maps, [1.0, 99.0]))
    if hi <= lo:
        lo, hi = float(maps.min()), float(maps.max()) + 1e-6
    return lo, hi


def dominant_codebook(maps: np.ndarray) -> np.ndarray:
    """``(h, w)`` int: the codebook with the largest weight at each latent pixel."""
    return np.argmax(np.asarray(maps), axis=-1)


def weight_map_stats(maps: np.ndarray) -> CodebookStats:
    """Statistics of weight maps ``(h, w, K)`` (K >= 1)."""
    maps = np.asarray(maps, np.float32)
    if maps.ndim != 3 or maps.shape[-1] < 1:
        raise ValueError(f"maps must be (h, w, K) with K >= 1, got {maps.shape}")
    k = maps.shape[-1]
    flat = maps.reshape(-1, k)
    share = np.bincount(dominant_codebook(flat), minlength=k) / flat.shape[0]
    return CodebookStats(
        mean=tuple(float(v) for v in flat.mean(axis=0)),
        minimum=tuple(float(v) for v in flat.min(axis=0)),
        maximum=tuple(float(v) for v in flat.max(axis=0)),
        dominant_share=tuple(float(v) for v in share),
        scale=shared_scale(maps))


def dominant_picture(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(height, width, 3)`` uint8 RGB: each latent pixel in its dominant codebook's colour
    (:data:`adacode_jax.evaluation.visualize.PALETTE`, the colours of the weight-map figure's legend)."""
    import cv2

    pic = visualize.PALETTE[dominant_codebook(maps) % len(visualize.PALETTE)]
    return cv2.resize(pic, (width, height), interpolation=cv2.INTER_NEAREST)
