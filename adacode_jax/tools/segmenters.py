"""Pluggable ADE20K-150 segmenters for :mod:`adacode_jax.tools.split_by_class`.

A segmenter is any function ``image -> label map``: float32 RGB (H, W, 3) in [0, 1] ->
integer (H, W) ADE20K ids 0..149 (other values count as unlabelled). :func:`load_segmenter`
turns a command-line spec into one:

- ``segformer:PATH``: a SegFormer ADE20K checkpoint saved with HuggingFace ``save_pretrained``
  (e.g. ``nvidia/segformer-b5-finetuned-ade-640-640``, downloaded beforehand: nothing is
  fetched at run time). Needs ``torch`` and ``transformers``, imported only here.
- ``package.module:function``: any importable function with the signature above.
"""
from __future__ import annotations

import importlib
import os
from typing import Callable

import numpy as np

from adacode_jax.tools import ade20k

Segmenter = Callable[[np.ndarray], np.ndarray]

_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class SegformerAde20k:
    """SegFormer (HuggingFace ``SegformerForSemanticSegmentation``) from a local folder.

    The image is normalised with ImageNet mean/std (SegFormer's processor), segmented at its
    own resolution, and the 1/4-resolution logits are upsampled bilinearly before the argmax.
    """

    def __init__(self, path: str, device: str = "cpu"):
        if not os.path.isdir(path) or not os.path.exists(os.path.join(path, "config.json")):
            raise FileNotFoundError(
                f"SegFormer weights not found at {path!r}: expected a folder with config.json and the "
                "model weights, as written by transformers' save_pretrained (e.g. the "
                "'nvidia/segformer-b5-finetuned-ade-640-640' checkpoint, downloaded beforehand). "
                "Alternatively pass --segmenter package.module:function for your own segmenter.")
        try:
            import torch  # pylint: disable=g-import-not-at-top
            import transformers  # pylint: disable=g-import-not-at-top
        except ImportError as e:
            raise ImportError(
                f"the SegFormer segmenter needs torch and transformers ({e}); install them, e.g. "
                "`pip install torch==2.13.0 transformers==5.23.0`, or pass --segmenter "
                "package.module:function") from e
        self._torch = torch
        self.model = transformers.SegformerForSemanticSegmentation.from_pretrained(path)
        self.model.eval().to(device)
        self.device = device
        n = int(self.model.config.num_labels)
        if n != ade20k.NUM_CLASSES:
            raise ValueError(f"{path!r} predicts {n} classes, not the 150 of ADE20K")

    def __call__(self, image: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = (np.asarray(image, np.float32) - _IMAGENET_MEAN) / _IMAGENET_STD
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(self.device)
        with torch.no_grad():
            logits = self.model(pixel_values=x).logits
            logits = torch.nn.functional.interpolate(logits, size=image.shape[:2], mode="bilinear",
                                                     align_corners=False)
        return logits.argmax(1)[0].cpu().numpy().astype(np.int32)


def load_segmenter(spec: str) -> Segmenter:
    """``'segformer:PATH'`` or ``'package.module:function'`` -> a segmenter function."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ValueError("--segmenter must be 'segformer:PATH' or 'package.module:function', "
                         f"got {spec!r}")
    if kind == "segformer":
        return SegformerAde20k(rest)
    try:
        module = importlib.import_module(kind)
    except ImportError as e:
        raise ImportError(f"cannot import segmenter module {kind!r} from {spec!r}: {e}") from e
    fn = getattr(module, rest, None)
    if not callable(fn):
        raise AttributeError(f"{kind!r} has no function {rest!r} (from --segmenter {spec!r})")
    return fn
