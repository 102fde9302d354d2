"""Frozen evaluation sets: degrade or mask a folder of images once, deterministically.

    python -m adacode_jax.data.make_testset --input DIR --output DIR --task sr_x4 --seed 123

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

import argparse
import json
import os
import sys
import zlib

from absl import logging
import numpy as np
import tqdm

from adacode_jax.data import degradations
from adacode_jax.data import io
from adacode_jax.data import masks
from adacode_jax.data import sources
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
                 progress: bool = True) -> dict:
    """Writes the frozen test set (see the module docstring); returns the manifest dict."""
    files = sources.list_images(input_dir)
    if not files:
        raise ValueError(f"no images under {input_dir!r} (extensions {', '.join(io.IMAGE_EXTENSIONS)})")
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
            image = io.read_image(f)
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
                "rounding": "round(x * 255)"}
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "manifest.json"), "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adacode_jax.data.make_testset",
        description="Write a deterministic degraded (SR) or masked (inpainting) test set as PNG.")
    parser.add_argument("--input", required=True, help="folder of ground-truth images (recursive)")
    parser.add_argument("--output", required=True, help="output folder (gt/, lq/, mask/)")
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--seed", type=int, default=123,
                        help="base seed (default 123, the reference's)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.input):
        parser.error(f"--input {args.input!r} is not a folder")
    manifest = make_testset(args.input, args.output, args.task, args.seed, not args.no_progress)
    print(f"wrote {len(manifest['files'])} {args.task} pairs to {args.output}")
    if manifest["failed"]:
        for item in manifest["failed"]:
            print(f"FAILED {item['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
