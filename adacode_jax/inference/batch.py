"""Restoring many files: the job list, output names, overwrite protection, per-file errors.

Used by ``python -m adacode_jax.cli.restore`` and the ``benchmark`` mode of
``python -m adacode_jax.cli.evaluate``. A folder is read recursively and mirrored under the output
folder; an image's output keeps its stem (plus ``suffix``) and, with ``ext="auto"``, its
format unless that format cannot hold the result (:func:`adacode_jax.images.output_extension`).
A file that fails is recorded with its path and the reason, and the others go on.

Folders are walked by :func:`adacode_jax.files.walk` (symlink loops cut, FIFOs and devices never
opened, unreadable folders reported in :attr:`Jobs.skipped`). Outputs are never read back as
inputs: the output tree is not entered, folders the tool wrote into carry
:data:`adacode_jax.files.OUTPUT_MARKER`, and with ``-o`` equal to ``-i`` files ending in the
suffix are left out (a suffix is then required). Existing outputs are refused before any work
unless ``existing="overwrite"`` or ``"skip"`` (:func:`plan_outputs`). Every file is written
atomically.
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

from adacode_jax import errors
from adacode_jax import files
from adacode_jax import images as imageio
from adacode_jax.evaluation import visualize

if TYPE_CHECKING:   # restore.py imports this module
    from adacode_jax.inference.restorer import Restorer


@dataclasses.dataclass
class Job:
    """One file to restore: where it comes from and goes to."""
    source: str
    rel: str                      # path relative to the input folder (or the file name)
    mask: str | None = None       # inpainting: the hole mask file


# Folder under the output folder for the weight-map figures (never an image output's place).
WEIGHT_MAPS_DIR = "weight_maps"
EXISTING = ("refuse", "overwrite", "skip")


class Jobs(list):
    """A list of :class:`Job` with what the folder walk skipped: ``(path, reason)`` pairs."""

    def __init__(self, jobs=(), skipped=()):
        super().__init__(jobs)
        self.skipped: list[tuple[str, str]] = list(skipped)


join_suffix = files.join_suffix


def list_inputs(input_path: str, output_dir: str, *, suffix: str = "") -> Jobs:
    """Jobs for a file or every image under a folder (recursive; see the module docstring).

    Raises:
      UserError: the input does not exist or is not a regular file/folder; ``output_dir`` is
        the input folder and no ``suffix`` is given (outputs would replace the inputs).
    """
    if os.path.isfile(input_path):
        return Jobs([Job(input_path, os.path.basename(input_path))])
    if os.path.exists(input_path) and not os.path.isdir(input_path):
        raise errors.UserError(f"{input_path}: not a regular file or folder (a FIFO, socket or "
                               "device)", "give an image file or a folder")
    if not os.path.isdir(input_path):
        raise errors.UserError(f"{input_path}: no such file or folder", "check the -i path")
    same = files.same_file(output_dir, input_path)
    if same and not suffix:
        raise errors.UserError(
            f"{output_dir}: the output folder is the input folder, so outputs would overwrite an "
            "input", "pass --suffix (e.g. --suffix x4) or another -o")
    exclude = [output_dir] if not same else [os.path.join(output_dir, WEIGHT_MAPS_DIR)]

    def earlier_output(path: str) -> bool:
        # with -o == -i, files named like this run's outputs are outputs of earlier runs
        return same and os.path.splitext(os.path.basename(path))[0].endswith(join_suffix("", suffix))

    found = files.walk(input_path, imageio.IMAGE_EXTENSIONS, exclude=exclude,
                       exclude_file=earlier_output)
    return Jobs([Job(f, os.path.relpath(f, input_path)) for f in found.files], found.skipped)


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


def output_path(output_dir: str, job: Job, image: np.ndarray | None, *, suffix: str = "",
                ext: str = "auto") -> str:
    """Where a job's restored image goes. Without ``image`` (before reading it) the ending is
    the input's (``ext="auto"``) or the requested one: the likely path, for planning."""
    stem = join_suffix(os.path.splitext(job.rel)[0], suffix)
    if image is None:
        ending = (os.path.splitext(job.source)[1].lower() if ext == "auto"
                  else "." + ext.lstrip(".").lower())
    else:
        ending = imageio.output_extension(job.source, image, ext)
    return os.path.join(output_dir, stem + ending)


def weight_map_path(output_dir: str, job: Job, *, suffix: str = "") -> str:
    """Where a job's weight-map figure goes: ``OUT/weight_maps/<rel stem><suffix>.png``."""
    stem = join_suffix(os.path.splitext(job.rel)[0], suffix)
    return os.path.join(output_dir, WEIGHT_MAPS_DIR, stem + ".png")


def plan_outputs(jobs: list[Job], output_dir: str, *, suffix: str = "", ext: str = "auto",
                 save_weight_maps: bool = False, existing: str = "refuse") -> tuple[list[Job], list[str]]:
    """``(jobs to run, their outputs that exist already)`` for an ``existing`` policy.

    ``"refuse"`` raises before any work when an output exists, ``"skip"`` leaves those jobs out,
    ``"overwrite"`` keeps them. Checked again, per file, when writing.

    Raises:
      UserError: ``existing="refuse"`` and outputs exist (the message counts them and names the
        flags).
    """
    if existing not in EXISTING:
        raise ValueError(f"existing must be one of {EXISTING}, got {existing!r}")
    todo, found = [], []
    for job in jobs:
        outs = [output_path(output_dir, job, None, suffix=suffix, ext=ext)]
        if save_weight_maps:
            outs.append(weight_map_path(output_dir, job, suffix=suffix))
        there = [o for o in outs if os.path.lexists(o)]
        found += there
        if not (there and existing == "skip"):
            todo.append(job)
    if found and existing == "refuse":
        shown = ", ".join(found[:3]) + (" ..." if len(found) > 3 else "")
        raise errors.UserError(
            f"{output_dir}: {len(found)} output file(s) exist already ({shown})",
            "pass --overwrite to replace them or --skip-existing to restore only the others")
    return todo, found


def _failure(source: str, e: BaseException) -> str:
    """The reason of a failed file: a user error's own line (its file name left out when it is
    the source), else ``<ExceptionType>: <message>``."""
    if isinstance(e, errors.UserError):
        text = str(e)
        return text[len(source) + 2:] if text.startswith(source + ": ") else text
    if isinstance(e, OSError) and e.strerror:
        return errors.describe_os_error(e)
    return f"{type(e).__name__}: {e}"


@dataclasses.dataclass
class RunReport:
    """What a folder run did."""
    written: list[str] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0


def restore_files(restorer: Restorer, jobs: list[Job], output_dir: str, *, suffix: str = "",
                  ext: str = "auto", save_weight_maps: bool = False, progress: bool = True,
                  note: Callable[[str], None] | None = None, weight_map_title: str = "",
                  existing: str = "refuse", max_pixels: int | None = None) -> RunReport:
    """Restore every job into ``output_dir``; a failing file is recorded and the rest go on.

    Never overwrites an input or mask file, nor an output written earlier in the same run; an
    output that exists already is refused before any work (``existing="refuse"``, raising
    UserError), kept (``"skip"``: the job is left out, with a note) or replaced
    (``"overwrite"``). ``max_pixels`` caps the decoded size of each input
    (:func:`adacode_jax.images.max_pixels`). Files the walk skipped (``jobs.skipped``) are
    noted.
    """
    note = note or (lambda msg: tqdm.tqdm.write(msg, file=sys.stderr))
    report, claimed, start = RunReport(), {}, time.perf_counter()
    for path, reason in getattr(jobs, "skipped", ()):
        report.notes.append(f"{path}: skipped, {reason}")
        note(f"note: {report.notes[-1]}")
    jobs, found = plan_outputs(jobs, output_dir, suffix=suffix, ext=ext,
                               save_weight_maps=save_weight_maps, existing=existing)
    if found and existing == "skip":
        report.notes.append(f"{output_dir}: {len(found)} existing output(s) kept (--skip-existing)")
        note(f"note: {report.notes[-1]}")
    protected = {os.path.realpath(j.source) for j in jobs}
    protected |= {os.path.realpath(j.mask) for j in jobs if j.mask}
    if jobs and not any(files.is_inside(j.source, output_dir) for j in jobs):
        files.mark_output_folder(output_dir)       # later walks from above do not read it
    if jobs and save_weight_maps:
        files.mark_output_folder(os.path.join(output_dir, WEIGHT_MAPS_DIR))
    for job in tqdm.tqdm(jobs, desc="restore", unit="file", disable=not progress):
        try:
            image = imageio.read_image_raw(job.source, max_pixels=max_pixels)
            imageio.check_finite(image, job.source)
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
            if existing != "overwrite" and os.path.lexists(out_path):
                # the planned ending was not the one written (e.g. 16-bit JPEG -> PNG)
                if existing == "skip":
                    report.notes.append(f"{out_path}: exists already, kept (--skip-existing)")
                    note(f"note: {report.notes[-1]}")
                    continue
                raise FileExistsError(f"the output {out_path} exists already; pass --overwrite "
                                      "to replace it")
            mask = None
            if job.mask:
                mask = imageio.read_mask(job.mask, image.shape[:2])
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
                fig_path = weight_map_path(output_dir, job, suffix=suffix)
                if os.path.realpath(fig_path) in claimed or os.path.realpath(fig_path) in protected:
                    raise FileExistsError(f"the weight-map figure {fig_path} would replace a "
                                          f"restored image or an input; choose another -o")
                imageio.write_image_raw(fig_path, fig)
                claimed[os.path.realpath(fig_path)] = job.source
        except Exception as e:  # pylint: disable=broad-except
            # One bad file must not stop a folder; it is named in the summary.
            report.failed.append((job.source, _failure(job.source, e)))
            note(f"FAILED {job.source}: {report.failed[-1][1]}")
    report.seconds = time.perf_counter() - start
    return report


def benchmark_speed(restorer: Restorer, jobs: list[Job], repeats: int,
                    print_fn: Callable[[str], None] = print) -> list[dict]:
    """Time ``repeats`` restorations of each input after one warm-up (compilation); writes
    nothing. Returns per-file ``{file, input, output, median_s, s_per_output_mp, s_per_input_mp}``."""
    rows = []
    for job in jobs:
        image = imageio.read_image_raw(job.source)
        imageio.check_finite(image, job.source)
        try:
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
