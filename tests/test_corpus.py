"""The real-photo corpus tool (adacode_jax.tools.corpus): labels, committed eval set, pure helpers.

No network: the package archives are not needed; helpers run on a tiny synthetic package tree.
"""
import csv
import hashlib
import json
import os
import struct
import zlib

import numpy as np
from PIL import Image
import pytest

from adacode_jax.tools import corpus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVALSET = os.path.join(REPO, "assets", "evalset")


@pytest.fixture(scope="module")
def labels():
    return corpus.read_labels()


def test_labels_parse_with_allowed_classes(labels):
    assert len(labels) > 100
    assert {l.cls for l in labels} <= set(corpus.CSV_CLASSES)
    assert {l.package for l in labels} <= set(corpus.PACKAGES)
    for l in labels:
        if l.cls != "skip":
            assert l.licence and l.description, l


def test_enough_images_per_class(labels):
    counts = {c: sum(l.cls == c for l in labels) for c in corpus.TRAIN_CLASSES + ("eval",)}
    assert all(counts[c] >= 20 for c in corpus.TRAIN_CLASSES), counts
    assert counts["eval"] >= 20
    assert sum(counts[c] for c in corpus.TRAIN_CLASSES) >= 100


def test_train_and_eval_disjoint_by_source(labels):
    keys = [(l.package, l.path) for l in labels]
    assert len(keys) == len(set(keys))
    train = {(l.package, l.path) for l in labels if l.cls in corpus.TRAIN_CLASSES}
    evals = {(l.package, l.path) for l in labels if l.cls == "eval"}
    assert not train & evals


def test_no_embedded_source_used(labels):
    assert len(corpus.EMBEDDED_SOURCES) == 10
    used = {(l.package, l.path) for l in labels if l.cls != "skip"}
    assert not used & corpus.EMBEDDED_SOURCES
    # the stems of assets/images come from these ten files
    with open(os.path.join(REPO, "assets", "LICENSES"), encoding="utf-8") as fh:
        text = fh.read()
    for _, path in corpus.EMBEDDED_SOURCES:
        stem = os.path.splitext(os.path.basename(path))[0]
        assert f"skimage.data.{stem}" in text


def test_eval_labels_are_committable(labels):
    for l in labels:
        if l.cls == "eval":
            assert corpus.is_permissive(l.licence), l
    assert not corpus.is_permissive("GPL-2+ (mate-backgrounds debian/copyright)")
    assert not corpus.is_permissive("CC-BY-SA-4.0, someone")
    assert corpus.is_permissive("CC0-1.0, someone")


def test_read_labels_rejects_bad_rows(tmp_path):
    head = ",".join(corpus.CSV_COLUMNS) + "\n"
    bad = tmp_path / "bad.csv"
    bad.write_text(head + "opencv-doc,a.jpg,indoor,x,BSD\n")
    with pytest.raises(corpus.CorpusError, match="bad.csv:2: class 'indoor'"):
        corpus.read_labels(str(bad))
    dup = tmp_path / "dup.csv"
    dup.write_text(head + "opencv-doc,a.jpg,natural,x,BSD\nopencv-doc,a.jpg,eval,x,BSD\n")
    with pytest.raises(corpus.CorpusError, match="listed twice"):
        corpus.read_labels(str(dup))
    emb = tmp_path / "emb.csv"
    emb.write_text(head + "scikit-image,skimage/data/coffee.png,portrait,cup,CC0\n")
    with pytest.raises(corpus.CorpusError, match="embedded image"):
        corpus.read_labels(str(emb))


def _committed():
    with open(os.path.join(EVALSET, "manifest.json"), encoding="utf-8") as fh:
        manifest = json.load(fh)
    with open(os.path.join(EVALSET, "eval_manifest.csv"), newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return manifest, rows


def test_committed_evalset_matches_manifest():
    manifest, rows = _committed()
    assert manifest["task"] == "sr_x4" and manifest["seed"] == 123
    files = manifest["files"]
    assert len(files) >= 20 and sorted(files) == sorted(r["file"] for r in rows)
    on_disk = sorted(f"{k}/{f}" for k in ("gt", "lq") for f in os.listdir(os.path.join(EVALSET, k)))
    assert on_disk == sorted(manifest["sha256"])
    for rel, digest in manifest["sha256"].items():
        with open(os.path.join(EVALSET, rel), "rb") as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == digest, rel
    for f in files:
        with Image.open(os.path.join(EVALSET, "gt", f)) as gt, \
                Image.open(os.path.join(EVALSET, "lq", f)) as lq:
            assert gt.size == (256, 256) and lq.size == (64, 64)
            assert gt.mode == lq.mode == "RGB"
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(EVALSET) for f in fs)
    assert total < 3 * 2**20


def test_committed_evalset_is_permissive_held_out(labels):
    _, rows = _committed()
    train = {(l.package, l.path) for l in labels if l.cls in corpus.TRAIN_CLASSES}
    with open(os.path.join(EVALSET, "LICENSES"), encoding="utf-8") as fh:
        licences = fh.read()
    for r in rows:
        assert corpus.is_permissive(r["licence"]), r
        assert (r["package"], r["path"]) not in train
        assert (r["package"], r["path"]) not in corpus.EMBEDDED_SOURCES
        assert r["file"] in licences and r["licence"] in licences
        assert int(r["crop_size"]) == 256


# ----------------------------------------------------------------------------- pure helpers

def _rcc(files: dict[str, bytes], compress: set[str] = frozenset()) -> bytes:
    """A minimal version-1 Qt resource bundle with one folder level: {'dir/name': bytes}."""
    dirs = sorted({p.split("/")[0] for p in files})
    names, data = bytearray(), bytearray()
    name_off = {}

    def add_name(n):
        if n not in name_off:
            name_off[n] = len(names)
            names.extend(struct.pack(">HI", len(n), 0) + n.encode("utf-16-be"))
        return name_off[n]

    nodes = [None]  # root, filled later
    children = {d: sorted(p for p in files if p.split("/")[0] == d) for d in dirs}
    first_file = 1 + len(dirs)
    order = [p for d in dirs for p in children[d]]
    for i, d in enumerate(dirs):
        start = first_file + order.index(children[d][0])
        nodes.append(struct.pack(">IHII", add_name(d), 2, len(children[d]), start))
    for p in order:
        blob = files[p]
        flags = 0
        if p in compress:
            blob = struct.pack(">I", len(blob)) + zlib.compress(blob)
            flags = 1
        off = len(data)
        data.extend(struct.pack(">I", len(blob)) + blob)
        nodes.append(struct.pack(">IHHHI", add_name(p.split("/")[1]), flags, 0, 0, off))
    nodes[0] = struct.pack(">IHII", 0, 2, len(dirs), 1)
    tree = b"".join(nodes)
    header_len = 20
    tree_off = header_len
    data_off = tree_off + len(tree)
    names_off = data_off + len(data)
    return (b"qres" + struct.pack(">IIII", 1, tree_off, data_off, names_off) + tree
            + bytes(data) + bytes(names))


def _jpeg(w, h, seed=0) -> bytes:
    import io
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_read_rcc_roundtrip():
    files = {"img/a.jpg": b"\xff\xd8\xffAAAA", "img/b.txt": b"hello" * 50, "snd/c.ogg": b"xyz"}
    out = corpus.read_rcc(_rcc(files, compress={"img/b.txt"}))
    assert out == files
    with pytest.raises(ValueError, match="qres"):
        corpus.read_rcc(b"nope" + bytes(30))


def test_candidate_photos_and_members(tmp_path):
    big, small = _jpeg(640, 400, 1), _jpeg(300, 200, 2)
    (tmp_path / "usr/share/backgrounds").mkdir(parents=True)
    (tmp_path / "usr/share/backgrounds/big.jpg").write_bytes(big)
    (tmp_path / "usr/share/backgrounds/small.jpg").write_bytes(small)
    (tmp_path / "usr/share/backgrounds/notes.txt").write_text("x")
    (tmp_path / "usr/share/data.rcc").write_bytes(_rcc({"res/photo.jpg": big, "res/icon.jpg": small}))
    found = list(corpus.candidate_photos(str(tmp_path), min_bytes=0))
    assert sorted(found) == [("usr/share/backgrounds/big.jpg", 640, 400),
                     ("usr/share/data.rcc!/res/photo.jpg", 640, 400)]
    assert corpus.read_member(str(tmp_path), "usr/share/data.rcc!/res/photo.jpg") == big
    image = corpus.decode_image(big, "big.jpg")
    assert image.shape == (400, 640, 3) and image.dtype == np.uint8
    with pytest.raises(corpus.CorpusError, match="nothere.jpg: not in the extracted package"):
        corpus.read_member(str(tmp_path), "nothere.jpg")
    with pytest.raises(corpus.CorpusError, match="broken.png: unreadable image"):
        corpus.decode_image(b"not an image", "broken.png")


def test_decode_scipy_face():
    import bz2
    raw = np.arange(768 * 1024 * 3, dtype=np.uint32).astype(np.uint8)
    out = corpus.decode_scipy_face(bz2.compress(raw.tobytes()))
    assert out.shape == (768, 1024, 3) and np.array_equal(out.reshape(-1), raw)


def test_eval_crop_rule():
    assert corpus.eval_crop_box(1080, 1920) == (512 / 1080, 128, (round(1920 * 512 / 1080) - 256) // 2)
    assert corpus.eval_crop_box(400, 600) == (1.0, 72, 172)  # never upscaled
    with pytest.raises(ValueError, match="smaller than the 256px"):
        corpus.eval_crop_box(200, 900)
    image = np.zeros((1000, 1500, 3), np.uint8)
    image[490:510, 740:760] = 255  # the centre survives the crop
    crop, box = corpus.make_eval_crop(image)
    assert crop.shape == (256, 256, 3) and box["crop_size"] == 256
    assert crop[128, 128].min() > 200 and crop[0, 0].max() == 0


def test_output_name_and_manifest_writers(tmp_path):
    assert corpus.output_name("opencv-doc", "usr/share/doc/opencv-doc/examples/data/fruits.jpg",
                              True) == "opencv-doc__opencv-doc_examples_data_fruits.jpg"
    assert corpus.output_name("gcompris-qt-data", "a/b.rcc!/x/y.webp", False) == \
        "gcompris-qt-data__a_b.rcc_x_y.png"
    rows = [{"file": f"{c}/{c}{i}.png", "class": c, "package": "p", "version": "1", "path": f"{c}{i}",
             "licence": "CC0", "sha256": "0" * 64, "width": 500, "height": 400}
            for c in corpus.TRAIN_CLASSES for i in range(2)]
    corpus.write_csv(str(tmp_path / "manifest.csv"), rows, corpus.MANIFEST_COLUMNS)
    with open(tmp_path / "manifest.csv", newline="") as fh:
        back = list(csv.DictReader(fh))
    assert [r["file"] for r in back] == sorted(r["file"] for r in rows)
    assert tuple(back[0]) == corpus.MANIFEST_COLUMNS
    counts = corpus.write_lists(str(tmp_path), rows)
    assert counts == {"architecture": 2, "natural": 2, "portrait": 2, "all": 6}
    assert (tmp_path / "lists/natural.txt").read_text().splitlines() == ["natural/natural0.png",
                                                                        "natural/natural1.png"]
    with pytest.raises(corpus.CorpusError, match="both train and eval"):
        corpus._check_disjoint(rows[:1], [dict(rows[0], file="e.png")])


def test_validation_split_is_one_in_ten_per_class_and_stable(tmp_path):
    rows = [{"class": cls, "sha256": hashlib.sha256(f"{cls}{i}".encode()).hexdigest(),
             "file": f"{cls}/p{i}.png"} for cls, n in (("natural", 21), ("portrait", 9))
            for i in range(n)]
    train, val = corpus.split_validation(rows)
    # per class ceil(n / 10): natural 3 of 21, portrait 1 of 9; disjoint, nothing lost
    assert sorted(r["class"] for r in val) == ["natural"] * 3 + ["portrait"]
    assert len(train) + len(val) == len(rows)
    assert not {r["file"] for r in train} & {r["file"] for r in val}
    # independent of the order of the rows, and a new photo moves only photos of its class
    assert corpus.split_validation(rows[::-1])[1] == val
    extra = {"class": "natural", "sha256": "0" * 64, "file": "natural/new.png"}
    _, val2 = corpus.split_validation(rows + [extra])
    assert [r for r in val2 if r["class"] == "portrait"] == [r for r in val if r["class"] == "portrait"]
    # the validation photos leave train/ for one flat folder, in no list
    for r in rows:
        path = tmp_path / "train" / r["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    moved = corpus.move_validation(str(tmp_path), val)
    assert sorted(os.listdir(tmp_path / "val")) == sorted(r["file"] for r in moved)
    assert [r["file"] for r in moved] == [r["file"].replace("/", "__") for r in val]
    assert not any((tmp_path / "train" / r["file"]).exists() for r in val)
    corpus.write_lists(str(tmp_path), train)
    listed = (tmp_path / "lists" / "all.txt").read_text().split()
    assert len(listed) == 26 and not set(listed) & {r["file"] for r in val}
