"""Restoring many files: the job list, output names, overwrite protection, per-file errors.

Used by ``python -m adacode_jax.restore`` and the ``benchmark`` mode of
``python -m adacode_jax.evaluate``. A folder is read recursively and mirrored under the output
folder; an image's output keeps its stem (plus ``suffix``) and, with ``ext="auto"``, its
format unless that format cannot hold the result (:func:`adacode_jax.imageio.output_extension`).
A file that fails is recorded with its path and the reason, and the others go on.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time
from typing import TYPE_CHECKING, Callable

import jax
import numpy as np
import tqdm

from adacode_jax import imageio
from adacode_jax import visualize

if TYPE_CHECKING:   # restore.py imports this module
    from adacode_jax.restore import Restorer


@dataclasses.dataclass
class Job:
    """One file to restore: where it comes from and goes to."""
    source: str
    rel: str                      # path relative to the input folder (or the file name)
    mask: str | None = None       # inpainting: the hole mask file


def list_inputs(input_path: str, output_dir: str) -> list[Job]:
    """Jobs for a file or every image under a folder (recursive), skipping the output folder."""
    from adacode_jax.data import sources

    if os.path.isfile(input_path):
        return [Job(input_path, os.path.basename(input_path))]
    if not os.path.isdir(input_path):
        raise FileNotFoundError(f"input {input_path} does not exist")
    # Outputs written into a folder inside the input folder are not inputs of the next run.
    # (An output folder equal to the input folder is allowed: inputs are never overwritten.)
    out_real = os.path.realpath(output_dir)
    skip = out_real + os.sep if out_real != os.path.realpath(input_path) else None
    jobs = []
    for f in sources.list_images(input_path):
        if skip is None or not os.path.realpath(f).startswith(skip):
            jobs.append(Job(f, os.path.relpath(f, input_path)))
    return jobs


def find_mask(mask_path: str | None, job: Job, single_input: bool) -> str | None:
    """The mask file of a job: ``mask_path`` itself (a file, single input) or the file with the
    same relative path and stem under ``mask_path`` (any image ending); None if absent."""
    if mask_path is None:
        return None
    if os.path.isfile(mask_path):
        return mask_path if single_input else None
    stem = os.path.splitext(job.rel)[0]
    for ext in imageio.IMAGE_EXTENSIONS + tuple(e.upper() for e in imageio.IMAGE_EXTENSIONS):
        candidate = os.path.join(mask_path, stem + ext)
        if os.path.isfile(candidate):
            return candidate
    return None


def output_path(output_dir: str, job: Job, image: np.ndarray, *, suffix: str = "",
                ext: str = "auto") -> str:
    stem = os.path.splitext(job.rel)[0]
    return os.path.join(output_dir, stem + suffix + imageio.output_extension(job.source, image, ext))


def check_finite_input(image: np.ndarray) -> None:
    """Refuse a float image holding NaN or Inf (its file is named by the caller's report)."""
    if np.issubdtype(image.dtype, np.floating):
        bad = int(image.size - np.count_nonzero(np.isfinite(image)))
        if bad:
            raise ValueError(f"the float image holds {bad} NaN/Inf sample(s); pixel values must "
                             "be finite, in [0, 1]: fix or re-export the image")


@dataclasses.dataclass
class RunReport:
    """What a folder run did."""
    written: list[str] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0


def restore_files(restorer: Restorer, jobs: list[Job], output_dir: str, *, suffix: str = "",
                  ext: str = "auto", save_weight_maps: bool = False, progress: bool = True,
                  note: Callable[[str], None] | None = None, weight_map_title: str = "") -> RunReport:
    """Restore every job into ``output_dir``; a failing file is recorded and the rest go on.

    Never overwrites an input or mask file, nor an output written earlier in the same run.
    """
    note = note or (lambda msg: tqdm.tqdm.write(msg, file=sys.stderr))
    protected = {os.path.realpath(j.source) for j in jobs}
    protected |= {os.path.realpath(j.mask) for j in jobs if j.mask}
    report, claimed, start = RunReport(), {}, time.perf_counter()
    for job in tqdm.tqdm(jobs, desc="restore", unit="file", disable=not progress):
        try:
            image = imageio.read_image_raw(job.source)
            check_finite_input(image)
            out_path = output_path(output_dir, job, image, suffix=suffix, ext=ext)
            if ext != "auto" and not out_path.lower().endswith("." + ext):
                report.notes.append(f"{job.source}: written as {os.path.splitext(out_path)[1]}, "
                                    f"since .{ext} cannot hold its alpha channel")
                note(f"note: {report.notes[-1]}")
            real = os.path.realpath(out_path)
            if real in protected:
                raise FileExistsError(f"the output {out_path} would overwrite an input; choose "
                                      "another -o or a --suffix")
            if real in claimed:
                raise FileExistsError(f"the output {out_path} was already written for "
                                      f"{claimed[real]}; rename one of the inputs or use --ext")
            mask = None
            if job.mask:
                mask = imageio.read_mask(job.mask, image.shape[:2])
            elif restorer.scale == 1 and restorer.model.lq_stage:
                report.notes.append(f"{job.source}: no mask, nothing painted; white pixels already "
                                    "in the image are treated as holes")
                note(f"note: {report.notes[-1]}")
            out, maps = restorer.restore_with_maps(image, mask)   # refuses NaN/Inf outputs
            if np.issubdtype(out.dtype, np.floating) and not np.isfinite(out).all():
                raise ValueError("the output holds NaN/Inf values and was not written; "
                                 "try --dtype float32 or another checkpoint")
            imageio.write_image_raw(out_path, out)
            claimed[real] = job.source
            report.written.append(out_path)
            if save_weight_maps:
                if maps.shape[-1] == 0:
                    raise ValueError("this network has a single codebook and no weight maps")
                rgb = imageio.split_channels(image)[0]
                fig = visualize.weight_map_figure(rgb, maps, title=weight_map_title or None)
                fig_path = os.path.join(output_dir, "weight_maps", os.path.splitext(job.rel)[0] + ".png")
                imageio.write_image_raw(fig_path, fig)
        except Exception as e:  # pylint: disable=broad-except
            # One bad file must not stop a folder; it is named in the summary.
            report.failed.append((job.source, f"{type(e).__name__}: {e}"))
            note(f"FAILED {job.source}: {type(e).__name__}: {e}")
    report.seconds = time.perf_counter() - start
    return report


def benchmark_speed(restorer: Restorer, jobs: list[Job], repeats: int,
                    print_fn: Callable[[str], None] = print) -> list[dict]:
    """Time ``repeats`` restorations of each input after one warm-up (compilation); writes
    nothing. Returns per-file ``{file, input, output, median_s, s_per_output_mp, s_per_input_mp}``."""
    rows = []
    for job in jobs:
        image = imageio.read_image_raw(job.source)
        try:
            check_finite_input(image)
            rgb = imageio.split_channels(image)[0]
            restorer.restore_rgb(rgb)   # compile and warm up; refuses NaN/Inf
        except ValueError as e:
            raise ValueError(f"{job.source}: {e}") from None
        times = []
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            restorer.restore_rgb(rgb)
            times.append(time.perf_counter() - t0)
        h, w = rgb.shape[:2]
        med = statistics.median(times)
        out_mp = h * w * restorer.scale ** 2 / 1e6
        row = {"file": job.source, "input": f"{w}x{h}", "output": f"{w * restorer.scale}x{h * restorer.scale}",
               "median_s": med, "min_s": min(times), "s_per_output_mp": med / out_mp,
               "s_per_input_mp": med / (h * w / 1e6)}
        rows.append(row)
        print_fn(f"{job.source}: {row['input']} -> {row['output']}: median {med:.2f} s "
                 f"(min {min(times):.2f}, {len(times)} runs) = {row['s_per_output_mp']:.1f} s per output "
                 f"megapixel, {row['s_per_input_mp']:.0f} s per input megapixel "
                 f"[{jax.default_backend()}, {jax.device_count()} device(s), {os.cpu_count()} CPUs]")
    return rows
