"""Semantic subsets for stage I (paper §3.1): 512x512 patches labelled by super-class.

    python -m adacode_jax.cli.split_by_class --input DIR --output DIR \\
        --segmenter segformer:/path/to/segformer-ade [--portraits FFHQ_DIR]

Every image under ``--input`` (recursive) is cut into non-overlapping ``--patch-size``
patches (a grid from the top-left; the right/bottom remainder is not used). Each patch is
segmented, labelled by the ADE20K class covering the most pixels, and that class is mapped to
a super-class by :data:`adacode_jax.tools.ade20k.ADE20K_TABLE`. Written under ``--output``:

- ``patches/<relative path>_<top>_<left>.png``: the patches;
- ``architecture.txt``, ``indoor.txt``, ``natural.txt``, ``street.txt``: one list per
  super-class, paths relative to ``--output`` (the folder the lists are in), ready for a
  ``{'type': 'folder', 'list_file': ...}`` source; ``all.txt`` with every patch;
- ``portrait.txt`` with ``--portraits DIR``: every image of a face set (absolute paths);
  portraits are not made from ADE20K labels;
- ``summary.tsv``: per ADE20K class, its super-class and patch count, then per super-class
  totals; the same table is printed.

Images smaller than a patch and unreadable files are reported by path and skipped.
"""
from __future__ import annotations

import collections
import os

from absl import logging
import numpy as np
import tqdm

from adacode_jax.tools import ade20k
from adacode_jax import images as io
from adacode_jax.tools import segmenters
from adacode_jax.data import sources


def iter_patches(image: np.ndarray, patch: int, stride: int):
    """Yields (top, left, view) for a grid of patch x patch windows."""
    h, w = image.shape[:2]
    for top in range(0, h - patch + 1, stride):
        for left in range(0, w - patch + 1, stride):
            yield top, left, image[top: top + patch, left: left + patch]


def split_by_class(input_dir: str, output_dir: str, segment: segmenters.Segmenter,
                   patch_size: int = 512, stride: int | None = None,
                   portraits_dir: str | None = None, progress: bool = True) -> dict:
    """Writes the patches, per-class lists and summary (see the module docstring).

    Returns:
      {'counts': {ade_id: n}, 'lists': {super_class: [relative paths]}, 'skipped': [messages]}.
    """
    stride = stride or patch_size
    files = sources.list_images(input_dir)
    if not files:
        raise ValueError(f"no images under {input_dir!r}")
    lists: dict[str, list[str]] = {c: [] for c in ade20k.SUPER_CLASSES}
    counts: collections.Counter = collections.Counter()
    skipped: list[str] = []
    for f in tqdm.tqdm(files, desc="split_by_class", disable=not progress):
        try:
            image = io.read_image(f)
        except io.ImageReadError as e:
            logging.warning("split_by_class: %s", e)
            skipped.append(str(e))
            continue
        if min(image.shape[:2]) < patch_size:
            msg = f"{f}: {image.shape[0]}x{image.shape[1]} is smaller than a {patch_size} patch"
            logging.warning("split_by_class: %s", msg)
            skipped.append(msg)
            continue
        stem = os.path.splitext(os.path.relpath(f, input_dir))[0]
        for top, left, patch in iter_patches(image, patch_size, stride):
            labels = np.asarray(segment(patch))
            if labels.shape != patch.shape[:2]:
                raise ValueError(f"the segmenter returned a {labels.shape} label map for a "
                                 f"{patch.shape[:2]} patch of {f}")
            cls = ade20k.dominant_class(labels)
            if cls is None:
                skipped.append(f"{f} patch ({top}, {left}): no ADE20K label")
                continue
            rel = os.path.join("patches", f"{stem}_{top}_{left}.png")
            io.write_png(os.path.join(output_dir, rel), patch)
            lists[ade20k.super_class(cls)].append(rel.replace(os.sep, "/"))
            counts[cls] += 1
    os.makedirs(output_dir, exist_ok=True)
    for name, items in lists.items():
        _write_list(os.path.join(output_dir, f"{name}.txt"), items)
    everything = [p for c in ade20k.SUPER_CLASSES for p in lists[c]]
    _write_list(os.path.join(output_dir, "all.txt"), everything)
    if portraits_dir:
        faces = [os.path.abspath(p) for p in sources.list_images(portraits_dir)]
        if not faces:
            raise ValueError(f"no images under --portraits {portraits_dir!r}")
        _write_list(os.path.join(output_dir, f"{ade20k.PORTRAIT}.txt"), faces)
        lists[ade20k.PORTRAIT] = faces
    table = summary_table(counts, lists)
    with open(os.path.join(output_dir, "summary.tsv"), "w", encoding="utf-8") as fh:
        fh.write(table)
    return {"counts": dict(counts), "lists": lists, "skipped": skipped, "table": table}


def _write_list(path: str, items: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(f"{p}\n" for p in items)


def summary_table(counts: collections.Counter, lists: dict[str, list[str]]) -> str:
    """TSV: one row per ADE20K class that labelled a patch, then the super-class totals."""
    rows = ["ade_id\tade_class\tsuper_class\tpatches"]
    for cls in sorted(counts, key=lambda c: (-counts[c], c)):
        rows.append(f"{cls}\t{ade20k.CLASS_NAMES[cls]}\t{ade20k.super_class(cls)}\t{counts[cls]}")
    rows.append("")
    rows.append("super_class\tpatches")
    for name, items in lists.items():
        rows.append(f"{name}\t{len(items)}")
    return "\n".join(rows) + "\n"
