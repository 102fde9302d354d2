"""Image sources: folders, paired GT/LR folders, and prepared TFDS datasets.

A source is described by a dict (one entry of ``config.data.sources``, see
:func:`adacode_jax.data.pipeline.default_data_config`) and opened with :func:`open_source`.
An opened source lists its record keys (:meth:`keys`, sorted, so every host and run sees the
same order) and loads one record as float32 RGB in [0, 1] (:meth:`load`). Sources are
pickled into Grain worker processes, so they hold only paths, settings and picklable readers.

Source dict fields:

- ``type``: 'folder', 'paired' or 'tfds'.
- ``weight`` (1.0): mixing weight among sources.
- ``resize_range`` (None): optional (lo, hi); each image is first rescaled by U(lo, hi)
  (the paper's FFHQ recipe is (0.5, 1.0)).
- folder: ``path`` (searched recursively), ``list_file`` (optional text file, one image path a
  line, '#' comments; relative paths resolve against ``path``, or the list's folder if ``path``
  is empty).
- paired: ``path`` (GT) and ``lq_path`` (LR), matched by relative path without extension, with
  ``lq_suffix`` appended to the LR stem (e.g. 'x4' for DIV2K's ``0001x4.png``); or
  ``list_file`` + ``lq_list_file``, two parallel lists like the reference's
  ``all_train.txt`` / ``all_train_X2.txt``.
- tfds: ``name`` (e.g. 'div2k/bicubic_x4'), ``split`` ('train'), ``data_dir`` (None = TFDS
  default), ``image_key`` ('image'; 'hr' for div2k) and ``lq_key`` (None; 'lr' for div2k to
  train on its LR images instead of on-the-fly degradation). The dataset must already be
  prepared on disk (ArrayRecord format); nothing is downloaded.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import numpy as np
from absl import logging

from adacode_jax import files
from adacode_jax import images as io

Key = Any  # a path, a (gt, lq) path pair, or an int index


def _get(spec: Mapping[str, Any], field: str, default: Any = None) -> Any:
    value = spec.get(field, default) if hasattr(spec, "get") else getattr(spec, field, default)
    return default if value is None else value


def _resize_range(spec: Mapping[str, Any]) -> tuple[float, float] | None:
    r = _get(spec, "resize_range")
    if r is None:
        return None
    lo, hi = (float(v) for v in r)
    if not 0 < lo <= hi:
        raise ValueError(f"resize_range must satisfy 0 < lo <= hi, got {r}")
    return lo, hi


def list_images(root: str) -> list[str]:
    """All image files under ``root`` (recursive, sorted), walked by :func:`adacode_jax.files.walk`:
    every real folder once (symlink loops cut), FIFOs/sockets/devices, broken links and
    unreadable folders skipped and logged as warnings, output folders of the tools not entered."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root!r} does not exist or is not a folder")
    found = files.walk(root, io.IMAGE_EXTENSIONS)
    for message in found.messages():
        logging.warning("%s", message)
    return found.files


def read_list_file(list_file: str, root: str | None = None) -> list[str]:
    """Paths listed in a text file (one a line; blank lines and '#' comments skipped).

    Relative paths resolve against ``root``, or the list file's folder when ``root`` is empty.
    """
    if not os.path.isfile(list_file):
        raise FileNotFoundError(f"list file {list_file!r} does not exist")
    base = root or os.path.dirname(os.path.abspath(list_file))
    out = []
    with open(list_file, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line if os.path.isabs(line) else os.path.join(base, line))
    return out


@dataclasses.dataclass(frozen=True)
class FolderSource:
    """Single images from a folder (recursive) or a list file."""
    path: str
    list_file: str | None = None
    weight: float = 1.0
    resize_range: tuple[float, float] | None = None

    def keys(self) -> list[str]:
        if self.list_file:
            files = read_list_file(self.list_file, self.path or None)
            where = f"list file {self.list_file!r}"
        else:
            files = list_images(self.path)
            where = f"{self.path!r} (extensions {', '.join(io.IMAGE_EXTENSIONS)})"
        if not files:
            raise ValueError(f"empty image source: no images in {where}")
        return files

    def load(self, key: str) -> tuple[np.ndarray, None]:
        return io.read_image(key), None

    def describe(self, key: str) -> str:
        return str(key)


def _stem_map(root: str, suffix: str = "") -> dict[str, str]:
    """Relative path without extension (minus ``suffix``) -> file, for every image under root."""
    out = {}
    for f in list_images(root):
        rel = os.path.splitext(os.path.relpath(f, root))[0]
        if suffix and rel.endswith(suffix):
            rel = rel[: -len(suffix)]
        out[rel] = f
    return out


@dataclasses.dataclass(frozen=True)
class PairedFolderSource:
    """GT images with pre-degraded LR counterparts (the reference's ``PairedImageDataset``)."""
    path: str
    lq_path: str | None = None
    list_file: str | None = None
    lq_list_file: str | None = None
    lq_suffix: str = ""
    weight: float = 1.0
    resize_range: tuple[float, float] | None = None

    def keys(self) -> list[tuple[str, str]]:
        if self.list_file or self.lq_list_file:
            if not (self.list_file and self.lq_list_file):
                raise ValueError("a paired source needs both list_file and lq_list_file, or neither")
            gts = read_list_file(self.list_file, self.path or None)
            lqs = read_list_file(self.lq_list_file, self.lq_path or None)
            if len(gts) != len(lqs):
                raise ValueError(f"paired lists differ in length: {self.list_file!r} has {len(gts)} "
                                 f"lines, {self.lq_list_file!r} has {len(lqs)}")
            pairs = list(zip(gts, lqs))
        else:
            if not self.lq_path:
                raise ValueError(f"paired source {self.path!r} needs lq_path (the LR folder)")
            gt_map = _stem_map(self.path)
            lq_map = _stem_map(self.lq_path, self.lq_suffix)
            missing = sorted(set(gt_map) - set(lq_map))
            if missing:
                raise ValueError(
                    f"{len(missing)} GT images under {self.path!r} have no LR image under "
                    f"{self.lq_path!r} (e.g. {missing[:3]}); LR files must have the GT's relative path "
                    f"and name plus lq_suffix={self.lq_suffix!r}")
            pairs = [(gt_map[k], lq_map[k]) for k in sorted(gt_map)]
        if not pairs:
            raise ValueError(f"empty paired source: no images in {self.path!r}")
        return pairs

    def load(self, key: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
        gt_path, lq_path = key
        return io.read_image(gt_path), io.read_image(lq_path)

    def describe(self, key: tuple[str, str]) -> str:
        return f"{key[0]} (LR {key[1]})"


@dataclasses.dataclass(frozen=True)
class TfdsSource:
    """A TFDS dataset prepared on disk, read with ``tfds.data_source`` (no TensorFlow needed).

    ``reader`` is the opened data source (picklable, so Grain workers receive it).
    """
    name: str
    split: str
    reader: Any
    image_key: str = "image"
    lq_key: str | None = None
    weight: float = 1.0
    resize_range: tuple[float, float] | None = None

    def keys(self) -> list[int]:
        n = len(self.reader)
        if n == 0:
            raise ValueError(f"empty TFDS source {self.name!r} split {self.split!r}")
        return list(range(n))

    def load(self, key: int) -> tuple[np.ndarray, np.ndarray | None]:
        name = self.describe(key)
        try:
            example = self.reader[key]
        except Exception as e:  # pylint: disable=broad-except
            raise io.ImageReadError(f"{name}: cannot read record ({type(e).__name__}: {e})") from e
        if self.image_key not in example:
            raise KeyError(f"{self.name!r} has no feature {self.image_key!r}; features are "
                           f"{sorted(example)}: set image_key in the source config")
        gt = io.to_float_rgb(np.asarray(example[self.image_key]), name)
        lq = io.to_float_rgb(np.asarray(example[self.lq_key]), name) if self.lq_key else None
        return gt, lq

    def describe(self, key: int) -> str:
        return f"tfds:{self.name}/{self.split}[{key}]"


Source = FolderSource | PairedFolderSource | TfdsSource


def open_source(spec: Mapping[str, Any]) -> Source:
    """Opens one source described by a config dict (see the module docstring)."""
    kind = _get(spec, "type", "folder")
    weight = float(_get(spec, "weight", 1.0))
    if weight <= 0:
        raise ValueError(f"source weight must be > 0, got {weight} in {dict(spec)}")
    rr = _resize_range(spec)
    if kind == "folder":
        path, list_file = _get(spec, "path", ""), _get(spec, "list_file")
        if not path and not list_file:
            raise ValueError("a folder source needs path or list_file")
        return FolderSource(path, list_file, weight, rr)
    if kind == "paired":
        return PairedFolderSource(
            _get(spec, "path", ""), _get(spec, "lq_path"), _get(spec, "list_file"),
            _get(spec, "lq_list_file"), _get(spec, "lq_suffix", ""), weight, rr)
    if kind == "tfds":
        import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow import)
        name, split = _get(spec, "name"), _get(spec, "split", "train")
        if not name:
            raise ValueError("a tfds source needs name, e.g. 'div2k/bicubic_x4'")
        data_dir = _get(spec, "data_dir")
        try:
            reader = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        except Exception as e:  # pylint: disable=broad-except
            raise FileNotFoundError(
                f"TFDS dataset {name!r} split {split!r} is not prepared under data_dir={data_dir!r} "
                f"({type(e).__name__}: {e}); prepare it first with `tfds build {name.split('/')[0]}` "
                f"(file_format=array_record)") from e
        return TfdsSource(name, split, reader, _get(spec, "image_key", "image"), _get(spec, "lq_key"),
                          weight, rr)
    raise ValueError(f"unknown source type {kind!r} (use 'folder', 'paired' or 'tfds')")


def shard_keys(keys: Sequence[Key], shard_index: int, shard_count: int,
               drop_remainder: bool = True) -> list[Key]:
    """This host's share of a source: every ``shard_count``-th key from ``shard_index``.

    With ``drop_remainder`` every host gets the same number of keys (the last
    ``len % shard_count`` keys are unused), so hosts stay in step epoch after epoch.
    """
    n = len(keys)
    if drop_remainder:
        n -= n % shard_count
    return list(keys[shard_index:n:shard_count])
