"""Frozen evaluation sets: degrade or mask a folder of images once, deterministically.

    python -m adacode_jax.cli.make_testset --input DIR --output DIR --task sr_x4 --seed 123

For every image under ``--input`` (recursive) it writes, under ``--output`` with the same
relative path and a ``.png`` ending:

- ``gt/``: the ground truth as 8-bit RGB PNG (for SR mod-cropped to a multiple of the scale,
  so that GT = scale x LR exactly);
- ``lq/``: the BSRGAN-degraded LR (sr_x2, sr_x4) or the masked image with white holes
  (inpaint);
- ``mask/`` (inpaint): the hole mask, 255 = hole;
- ``manifest.json``: task, seed and the file list.

Each image's generator is seeded by (seed, CRC32 of its relative path), so adding or removing
files never changes the others. Pixels are rounded to 8 bits (the reference's
``generate_dataset.py`` truncates). A file that cannot be read is reported by path; the tool
writes the others and exits with status 1.
"""
from __future__ import annotations

import json
import os
import zlib

from absl import logging
import numpy as np
import tqdm

from adacode_jax import errors
from adacode_jax import files as filetools
from adacode_jax.data import degradations
from adacode_jax import images as io
from adacode_jax.data import masks
from adacode_jax.data import transforms

TASKS = {"sr_x2": 2, "sr_x4": 4, "inpaint": 1}


def image_rng(seed: int, rel_path: str) -> np.random.Generator:
    """The generator of one test image: (seed, CRC32 of its relative path)."""
    return np.random.default_rng([int(seed), zlib.crc32(rel_path.replace(os.sep, "/").encode())])


def make_pair(image: np.ndarray, task: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """GT and degraded/masked input of one full image (float32 RGB in [0, 1]).

    Returns:
      {'gt', 'lq'} and for inpaint 'mask' ((H, W, 1), 1 = hole).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    if task == "inpaint":
        mask = masks.brush_stroke_mask(rng, image.shape[0], image.shape[1])
        return {"gt": image, "lq": masks.apply_mask(image, mask), "mask": mask}
    sf = TASKS[task]
    gt = transforms.mod_crop(image, sf)
    if min(gt.shape[:2]) < sf:
        raise ValueError(f"image {image.shape[:2]} is smaller than the scale {sf}")
    return {"gt": gt, "lq": degradations.degrade_bsrgan(gt, sf, rng)}


def make_testset(input_dir: str, output_dir: str, task: str, seed: int = 123,
                 progress: bool = True, *, overwrite: bool = False,
                 max_pixels: int | None = None) -> dict:
    """Writes the frozen test set (see the module docstring); returns the manifest dict.

    The input folder is walked by :func:`adacode_jax.files.walk` (an output folder inside it is
    not read; skipped entries are logged and listed in the manifest's ``skipped``); every file
    is written atomically.

    Raises:
      UserError: no images; ``output_dir`` already holds a test set (``gt/``, ``lq/``,
        ``mask/`` or ``manifest.json``) and ``overwrite`` is False.
    """
    if not os.path.isdir(input_dir):
        raise errors.UserError(f"{input_dir}: not a folder", "give the folder of ground-truth images")
    present = [n for n in ("gt", "lq", "mask", "manifest.json")
               if os.path.lexists(os.path.join(output_dir, n))]
    if present and not overwrite:
        raise errors.UserError(f"{output_dir}: holds a test set already ({', '.join(present)})",
                               "pass --overwrite to replace its files or choose another --output")
    walked = filetools.walk(input_dir, io.IMAGE_EXTENSIONS, exclude=[output_dir])
    for message in walked.messages():
        logging.warning("make_testset: %s", message)
    files = walked.files
    if not files:
        raise errors.UserError(f"{input_dir}: no images (extensions {', '.join(io.IMAGE_EXTENSIONS)})",
                               "give a folder holding images")
    rels = [os.path.relpath(f, input_dir) for f in files]
    outs = [os.path.splitext(r)[0] + ".png" for r in rels]
    dupes = sorted({o for o in outs if outs.count(o) > 1})
    if dupes:
        raise ValueError(f"several inputs would be written as {dupes[:3]} (same name, different "
                         "extensions); rename them")
    written, failed = [], []
    for f, rel, out in tqdm.tqdm(list(zip(files, rels, outs)), desc=f"make_testset {task}",
                                 disable=not progress):
        try:
            image = io.read_image(f, max_pixels=max_pixels)
            pair = make_pair(image, task, image_rng(seed, rel))
        except (io.ImageReadError, ValueError) as e:
            msg = str(e) if f in str(e) else f"{f}: {e}"
            logging.error("make_testset: skipping %s", msg)
            failed.append({"file": f, "error": msg})
            continue
        for kind, x in pair.items():
            io.write_png(os.path.join(output_dir, kind, out), x)
        written.append(out.replace(os.sep, "/"))
    manifest = {"task": task, "scale": TASKS[task], "seed": int(seed),
                "input": os.path.abspath(input_dir), "files": written, "failed": failed,
                "skipped": [{"file": p, "reason": r} for p, r in walked.skipped],
                "rounding": "round(x * 255)"}
    filetools.mark_output_folder(output_dir)
    filetools.atomic_write_bytes(os.path.join(output_dir, "manifest.json"),
                                 json.dumps(manifest, indent=1).encode("utf-8"))
    return manifest
