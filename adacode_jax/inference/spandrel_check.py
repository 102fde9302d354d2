"""Whether spandrel can load one of our networks from its official-layout file (decided from the
network config alone: no torch, no spandrel needed).

spandrel 0.4.2 with spandrel_extra_arches 0.2.0 picks the architecture by key names (``AdaCode``:
a ``weight_predictor``; ``FeMaSR``: ``after_quant_group.0.conv``, our stage I layout) and reads
from the tensors' shapes: the input channels, the decoder depth and the width of its last
block (-> gt_resolution, the codebook level), each codebook's ``n_e x e_dim``, where the LQ
encoder's Swin stack sits (-> LQ stage and scale) and the norm type. It hard-codes the rest:
the official channel table, the Swin stacks (4 RSTBs of 6 blocks, width 256, 8 heads, window 8,
MLP ratio 4, a 32 x 32 grid), SiLU, quantisation, the residual shortcuts (on) and no softmax on
the weight maps. A network that differs in a hard-coded size fails spandrel's strict load; one
without shortcuts or with the softmax would load and compute something else. Both are named
here, so that no file spandrel would load wrongly is written silently.
"""
from __future__ import annotations

import ml_collections

from adacode_jax import models

SPANDREL = "spandrel 0.4.2 + spandrel_extra_arches 0.2.0"
_SWIN = ("swin_dim", "swin_num_rstb", "swin_depth", "swin_heads", "window_size", "mlp_ratio")


def hard_coded(kind: str) -> tuple[str, ...]:
    """The config fields spandrel fixes at their official values for a network of ``kind``."""
    if kind == "stage1":                                   # FeMaSR: no Swin, no weight predictor
        return ("channels",)
    fields = ("channels",) + _SWIN + ("weight_softmax",)
    return fields + ("use_residual",) if kind in ("sr_x4", "sr_x2", "inpaint") else fields


def architecture(kind: str) -> str | None:
    """spandrel's architecture for ``kind``, None where it has none."""
    return {"stage1": "FeMaSR", "disc": None}.get(kind, "AdaCode")


def _plain(v):
    if isinstance(v, (list, tuple)):
        return tuple(_plain(x) for x in v)
    return float(v) if isinstance(v, float) else v


def _spandrel_gt_resolution(cfg: ml_collections.ConfigDict) -> int:
    """gt_resolution as spandrel reads it: the largest resolution whose official width is that
    of the last decoder block."""
    table = dict(zip(models.RESOLUTIONS, models.model_config("stage2").channels))
    width = table.get(int(cfg.gt_resolution))
    return max((r for r, c in table.items() if c == width), default=0)


def problems(cfg: ml_collections.ConfigDict) -> list[str]:
    """What keeps spandrel from loading this network right: ``field=ours (spandrel: value)``
    per hard-coded field that differs; ``[]`` when it loads it as it is."""
    if architecture(cfg.kind) is None:
        return [f"it has no architecture for the {cfg.kind!r} network"]
    official = models.model_config(cfg.kind)
    out = [f"{f}={_plain(cfg[f])} (spandrel: {_plain(official[f])})"
           for f in hard_coded(cfg.kind) if _plain(cfg[f]) != _plain(official[f])]
    gt = _spandrel_gt_resolution(cfg)
    if gt != int(cfg.gt_resolution):
        out.append(f"gt_resolution={cfg.gt_resolution} (spandrel reads {gt})")
    return out


def message(path: str, cfg: ml_collections.ConfigDict) -> str | None:
    """One line saying that spandrel cannot load the file at ``path`` and why; None if it can."""
    found = problems(cfg)
    if not found:
        return None
    arch = architecture(cfg.kind)
    why = (f"its {arch} architecture hard-codes {', '.join(found)}" if arch
           else found[0])
    return (f"spandrel cannot load {path} ({SPANDREL}): {why}; adacode-convert "
            "(and Restorer, for generators) reads it")
