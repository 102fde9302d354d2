"""Free-form brush-stroke inpainting masks (the reference's ``brush_stroke_mask``,
docs/official.md#inpainting-masks).

Each mask has 1-3 strokes; a stroke is a polyline of 8-27 segments whose directions alternate
around 2*pi/5 (+-U(0, 2*pi/15) spread), with segment lengths ~ N(r, r // 2) clipped to
[0, 2r], r = diag/8, line width U(12, 80) px, and a disc at every vertex. The reference draws
x in [0, H) and y in [0, W) because it unpacks PIL's (W, H) size as (h, w); here x spans the
width and y the height, which is the same for square images and correct for others.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

NUM_STROKES = (1, 3)  # inclusive
NUM_VERTICES = (8, 27)  # inclusive
MEAN_ANGLE = 2 * math.pi / 5
ANGLE_RANGE = 2 * math.pi / 15
WIDTH_RANGE = (12, 80)


def brush_stroke_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Draws a random stroke mask.

    Returns:
      (height, width, 1) float32, 1 inside the strokes (the hole), 0 elsewhere.
    """
    avg_r = math.sqrt(height * height + width * width) / 8
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(NUM_STROKES[0], NUM_STROKES[1] + 1))):
        n = int(rng.integers(NUM_VERTICES[0], NUM_VERTICES[1] + 1))
        a_min = MEAN_ANGLE - rng.uniform(0, ANGLE_RANGE)
        a_max = MEAN_ANGLE + rng.uniform(0, ANGLE_RANGE)
        angles = [2 * math.pi - rng.uniform(a_min, a_max) if i % 2 == 0 else rng.uniform(a_min, a_max)
                  for i in range(n)]
        vertices = [(int(rng.integers(0, width)), int(rng.integers(0, height)))]
        for angle in angles:
            r = float(np.clip(rng.normal(avg_r, avg_r // 2), 0, 2 * avg_r))
            x = float(np.clip(vertices[-1][0] + r * math.cos(angle), 0, width))
            y = float(np.clip(vertices[-1][1] + r * math.sin(angle), 0, height))
            vertices.append((int(x), int(y)))
        line_width = int(rng.uniform(*WIDTH_RANGE))
        draw.line(vertices, fill=255, width=line_width)
        half = line_width // 2
        for vx, vy in vertices:
            draw.ellipse((vx - half, vy - half, vx + half, vy + half), fill=255)
    return (np.asarray(canvas, dtype=np.float32) / 255.0)[:, :, None]


def apply_mask(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fills the holes of a float RGB image white, as the reference network expects.

    Args:
      image: (H, W, 3) float32 in [0, 1].
      mask: (H, W, 1) float32, 1 = hole.
    Returns:
      (H, W, 3) float32 ``image * (1 - mask) + mask``.
    """
    return (image * (1.0 - mask) + mask).astype(np.float32)
