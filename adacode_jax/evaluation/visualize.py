"""Pictures of AdaCode's weight maps (the paper's Fig. 5), drawn with OpenCV and PIL.

The K weight maps ``w_k`` (paper Eq. 6) live on the latent grid (input / 2 for ×4, / 4 for
×2, / 8 for inpainting). They are unnormalised real numbers (no softmax,
docs/official.md#weight-predictor-and-mixing), so the picture shows the raw values on **one
shared colour scale** (viridis, 1st to 99th percentile over all K maps, printed under the
panels), which keeps the maps comparable with each other, plus a panel of the dominant codebook ``argmax_k w_k``.
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Distinct colours (RGB) for the dominant-codebook panel; cycled past 8 codebooks.
PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                    (145, 30, 180), (70, 240, 240), (240, 50, 230)], np.uint8)
_LABEL_H = 18
_GAP = 4


def colorize(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``(h, w)`` values -> ``(h, w, 3)`` uint8 RGB, viridis from ``lo`` to ``hi``."""
    t = np.clip((np.asarray(x, np.float64) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    bgr = cv2.applyColorMap(np.round(t * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _fit(h: int, w: int, panel: int) -> tuple[int, int]:
    s = panel / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def shared_scale(maps: np.ndarray) -> tuple[float, float]:
    """The colour scale of weight maps: their 1st to 99th percentile over all K maps (and all
    images given), widened to a non-empty interval."""
    lo, hi = (float(v) for v in np.percentile(np.asarray(maps, np.float32), [1.0, 99.0]))
    if hi <= lo:
        lo, hi = float(np.min(maps)), float(np.max(maps)) + 1e-6
    return lo, hi


def weight_map_figure(image: np.ndarray, maps: np.ndarray, *, panel: int = 256,
                      title: str | None = None, columns: int = 4,
                      scale: tuple[float, float] | None = None) -> np.ndarray:
    """A grid: the input, the K weight maps, the dominant codebook, and a colour bar.

    Args:
      image: ``(H, W, 3)`` RGB float in [0, 1] (or ``(H, W)`` grey): the network input.
      maps: ``(h, w, K)`` weight maps on the latent grid.
      panel: longest side of a panel in pixels.
      title: a line drawn above the grid (e.g. the checkpoint, or that weights are untrained).
      columns: panels per row.
      scale: ``(lo, hi)`` of the colour scale; default :func:`shared_scale` of ``maps`` (pass
        one scale to make several figures comparable).

    Returns:
      ``(Hf, Wf, 3)`` uint8 RGB picture.
    """
    maps = np.asarray(maps, np.float32)
    if maps.ndim != 3 or maps.shape[-1] < 1:
        raise ValueError(f"maps must be (h, w, K) with K >= 1, got {maps.shape}")
    img = np.asarray(image, np.float32)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    ph, pw = _fit(img.shape[0], img.shape[1], panel)
    k = maps.shape[-1]
    lo, hi = shared_scale(maps) if scale is None else (float(scale[0]), float(scale[1]))

    def up(a: np.ndarray) -> np.ndarray:
        return cv2.resize(a, (pw, ph), interpolation=cv2.INTER_NEAREST)

    panels = [(np.round(np.clip(cv2.resize(img, (pw, ph), interpolation=cv2.INTER_AREA), 0, 1) * 255)
               .astype(np.uint8), "input")]
    for i in range(k):
        m = maps[..., i]
        panels.append((up(colorize(m, lo, hi)), f"w{i}  mean {m.mean():+.2f}"))
    dominant = PALETTE[np.argmax(maps, axis=-1) % len(PALETTE)]
    panels.append((up(dominant), "dominant codebook"))

    columns = max(1, min(columns, len(panels)))
    rows = -(-len(panels) // columns)
    title_h = _LABEL_H + _GAP if title else 0
    bar_h = 2 * _LABEL_H + _GAP
    fig_w = columns * (pw + _GAP) + _GAP
    fig_h = title_h + rows * (ph + _LABEL_H + _GAP) + _GAP + bar_h
    fig = np.full((fig_h, fig_w, 3), 255, np.uint8)
    labels = []
    for n, (pic, label) in enumerate(panels):
        r, c = divmod(n, columns)
        y = title_h + r * (ph + _LABEL_H + _GAP) + _GAP + _LABEL_H
        x = _GAP + c * (pw + _GAP)
        fig[y:y + ph, x:x + pw] = pic
        labels.append((x, y - _LABEL_H + 3, label))
    # Colour bar of the shared scale, and the codebook colours of the dominant panel.
    y_bar = fig_h - bar_h
    bar_w = min(fig_w - 2 * _GAP, 2 * pw)
    fig[y_bar:y_bar + _LABEL_H // 2, _GAP:_GAP + bar_w] = colorize(
        np.tile(np.linspace(lo, hi, bar_w), (_LABEL_H // 2, 1)), lo, hi)
    x_sw = _GAP + bar_w + 3 * _GAP
    for i in range(k):
        x0 = x_sw + i * 3 * _LABEL_H
        if x0 + _LABEL_H <= fig_w:
            fig[y_bar:y_bar + _LABEL_H // 2, x0:x0 + _LABEL_H] = PALETTE[i % len(PALETTE)]
            labels.append((x0, y_bar + _LABEL_H // 2 + 2, f"w{i}"))

    labels += [(_GAP, y_bar + _LABEL_H // 2 + 2, f"{lo:+.3f}"),
               (_GAP + bar_w - 48, y_bar + _LABEL_H // 2 + 2, f"{hi:+.3f}")]
    return _draw_text(fig, title, labels)


def _draw_text(fig: np.ndarray, title: str | None, labels) -> np.ndarray:
    """``fig`` with ``title`` at the top left and each ``(x, y, text)`` label, in black."""
    pil = Image.fromarray(fig)
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default(size=12)
    if title:
        draw.text((_GAP, 3), title, fill=(0, 0, 0), font=font)
    for x, y, text in labels:
        draw.text((x, y), text, fill=(0, 0, 0), font=font)
    return np.asarray(pil)


def labelled_row(pictures, *, panel: int = 256, title: str | None = None) -> np.ndarray:
    """Pictures side by side at one height, each with its label above (LQ | bicubic | ours |
    GT panels).

    Args:
      pictures: ``[(label, (H, W, 3) RGB float in [0, 1]), ...]``; each is resized (nearest
        neighbour, so an LQ input shows its pixels) to ``panel`` pixels high.
      title: a line above the row.
    Returns:
      ``(Hf, Wf, 3)`` uint8 RGB.
    """
    tiles = []
    for label, img in pictures:
        img = np.asarray(img, np.float32)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        w = max(1, round(img.shape[1] * panel / img.shape[0]))
        pic = cv2.resize(img, (w, panel), interpolation=cv2.INTER_NEAREST)
        tiles.append((label, np.round(np.clip(pic, 0, 1) * 255).astype(np.uint8)))
    title_h = _LABEL_H + _GAP if title else 0
    fig_w = sum(t.shape[1] + _GAP for _, t in tiles) + _GAP
    fig = np.full((title_h + _LABEL_H + panel + 2 * _GAP, fig_w, 3), 255, np.uint8)
    x, labels = _GAP, []
    for label, t in tiles:
        fig[title_h + _LABEL_H + _GAP:title_h + _LABEL_H + _GAP + panel, x:x + t.shape[1]] = t
        labels.append((x, title_h + 3, label))
        x += t.shape[1] + _GAP
    return _draw_text(fig, title, labels)


def stack_rows(*figures: np.ndarray) -> np.ndarray:
    """uint8 RGB figures one below the other, left-aligned, padded with white."""
    w = max(f.shape[1] for f in figures)
    return np.concatenate([np.pad(f, ((0, 0), (0, w - f.shape[1]), (0, 0)), constant_values=255)
                           for f in figures], axis=0)


def training_panels(gt: np.ndarray, out: np.ndarray, lq: np.ndarray | None = None, *,
                    n: int = 4) -> np.ndarray:
    """TensorBoard pictures of a training batch: per example a labelled ``LQ | output | GT``
    row at GT size (LQ nearest-upsampled; ``input`` instead of LQ for reconstruction).

    Args:
      gt, out: ``(B, H, W, 3)`` float in [0, 1]; lq: ``(B, h, w, 3)`` or None.
    Returns:
      ``(n, Hf, Wf, 3)`` uint8.
    """
    gt, out = np.asarray(gt[:n], np.float32), np.asarray(out[:n], np.float32)
    first = "LQ" if lq is not None else "input"
    lq = gt if lq is None else np.asarray(lq[:n], np.float32)
    size = gt.shape[1]
    return np.stack([labelled_row([(first, lq[i]), ("output", out[i]), ("GT", gt[i])], panel=size)
                     for i in range(gt.shape[0])])


def training_weight_maps(images: np.ndarray, maps: np.ndarray, *, n: int = 2) -> np.ndarray:
    """TensorBoard pictures of the weight maps, the same figure as ``restore
    --save-weight-maps``: the network input, each ``w_k`` labelled and upsampled to the
    image's size, the dominant codebook and a colour bar, on **one** colour scale shared by all
    ``n`` examples.

    Args:
      images: ``(B, H, W, 3)`` network inputs; maps: ``(B, h, w, K)``.
    Returns:
      ``(n, Hf, Wf, 3)`` uint8.
    """
    images, maps = np.asarray(images[:n], np.float32), np.asarray(maps[:n], np.float32)
    scale = shared_scale(maps)
    side = max(images.shape[1], images.shape[2], 96)
    k = maps.shape[-1]
    return np.stack([weight_map_figure(images[i], maps[i], panel=side, columns=k + 2, scale=scale)
                     for i in range(images.shape[0])])
