"""Low-frequency fix: keep a restored image's detail, take its local colour and brightness from
the input (the "colour fix" of StableSR, Wang et al. 2023, and DiffBIR; here with a Gaussian
low-pass).

    out' = out − G_σ(out) + G_σ(bicubic(LQ))

``G_σ`` is a Gaussian blur of σ output pixels. The band below ~σ comes from the bicubic
upsampling of the input, everything above it from the network. It helps a network whose colour
and brightness drift with the input size: the compact ×4 model was trained on 96² crops and,
on whole 256² outputs, shifts them enough to cost several dB of PSNR (docs/reproduction.md).
"""
from __future__ import annotations

import cv2
import numpy as np


def low_freq_fix(out: np.ndarray, lq: np.ndarray, sigma: float) -> np.ndarray:
    """``out`` (sH, sW, 3) float with its low frequencies replaced by those of ``lq``
    (H, W, 3) upsampled bicubically to ``out``'s size; ``sigma`` in output pixels (> 0).

    Returns float32, not clamped.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    out = np.asarray(out, np.float32)
    ref = cv2.resize(np.asarray(lq, np.float32), (out.shape[1], out.shape[0]),
                     interpolation=cv2.INTER_CUBIC)

    def blur(x):
        return cv2.GaussianBlur(x, (0, 0), float(sigma), borderType=cv2.BORDER_REFLECT)

    return out - blur(out) + blur(ref)
