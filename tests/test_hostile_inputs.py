"""Hostile inputs: folders, image files, checkpoints and outputs that try to break the tools.

One hostile folder (built in ``tmp_path``) holds a symlink loop, a FIFO named ``x.png``, a
broken link, an empty ``.png``, a truncated JPEG, a text file named ``.jpg``, animated images,
a small PNG declaring 100000×100000 pixels, a float TIFF with NaN and an output folder of an
earlier run. The real command-line functions (``main(argv)``) run on it with a tiny random ×2
network on 16×16 images; the tests assert exit codes, the one-line messages, and which files
were written and which were not.
"""
import io
import json
import os
import pickle
import stat
import struct
import sys
import zipfile
import zlib

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from adacode_jax.models import checkpointing
from adacode_jax.inference import convert
from adacode_jax import errors, files, models
from adacode_jax.evaluation import evaluate
from adacode_jax.inference import restorer as restore, torchzip
from adacode_jax.cli import convert as convert_cli
from adacode_jax.cli import evaluate as evaluate_cli
from adacode_jax.cli import make_testset as make_testset_cli
from adacode_jax.cli import restore as restore_cli
from adacode_jax import images as data_io
from adacode_jax.data import sources

SIZE = 16


def _image(seed=0, size=SIZE):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), np.uint8)


def _png_declaring(width, height):
    """A valid-looking 60-byte PNG whose header declares ``width × height`` pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))


def _animated(fmt):
    frames = [Image.fromarray(_image(1)), Image.fromarray(_image(2))]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=100)
    return buf.getvalue()


@pytest.fixture
def hostile(tmp_path):
    """``(root, {name: path})``: the hostile input folder (see the module docstring)."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    p = {}
    p["good"] = root / "good.png"
    cv2.imwrite(str(p["good"]), _image(0))
    p["good2"] = root / "sub" / "good2.png"
    cv2.imwrite(str(p["good2"]), _image(3))
    os.symlink("..", root / "sub" / "loop")                     # sub/loop -> in (a cycle)
    os.symlink(root / "missing.png", root / "dangling.png")     # a broken link
    p["fifo"] = root / "x.png"
    os.mkfifo(p["fifo"])                                        # opening it would block
    p["empty"] = root / "empty.png"
    p["empty"].write_bytes(b"")
    ok, jpg = cv2.imencode(".jpg", _image(4))
    p["truncated"] = root / "truncated.jpg"
    p["truncated"].write_bytes(jpg.tobytes()[: len(jpg) // 2])
    p["text"] = root / "notes.jpg"
    p["text"].write_text("this is not a picture\n")
    p["apng"] = root / "animated.png"
    p["apng"].write_bytes(_animated("PNG"))
    p["gif"] = root / "animated.gif"
    p["gif"].write_bytes(_animated("GIF"))
    p["huge"] = root / "huge.png"
    p["huge"].write_bytes(_png_declaring(100000, 100000))
    nan = np.full((32, 32, 3), 0.5, np.float32)
    nan[1, 2, 0] = np.nan
    p["nan"] = root / "nan.tiff"
    assert cv2.imwrite(str(p["nan"]), nan)
    return root, p


@pytest.fixture(scope="module")
def sr2_checkpoint(tmp_path_factory):
    cfg = models.tiny_model_config("sr_x2")
    model = models.build(cfg)
    variables = jax.device_get(
        {"params": model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]})
    path = str(tmp_path_factory.mktemp("ckpt") / "sr2")
    return checkpointing.save_inference(path, cfg, variables, extra={"source": "tiny sr_x2 (test)"})


# ---- the walker ---------------------------------------------------------------------------------

def test_walk_visits_each_folder_once_and_never_opens_special_files(hostile):
    root, p = hostile
    walked = files.walk(root, data_io.IMAGE_EXTENSIONS)
    names = sorted(os.path.relpath(f, root) for f in walked.files)
    assert names == ["animated.png", "empty.png", "good.png", "huge.png", "nan.tiff", "notes.jpg",
                     "sub/good2.png", "truncated.jpg"]
    skipped = {os.path.relpath(f, root): why for f, why in walked.skipped}
    assert skipped == {
        "animated.gif": ".gif images are not supported (convert to PNG)",
        "dangling.png": "a broken symbolic link",
        "sub/loop": "a folder already visited (symbolic link loop or second link to the same folder)",
        "x.png": "a FIFO (named pipe), not an image file"}
    assert f"{p['fifo']}: skipped, a FIFO (named pipe), not an image file" in walked.messages()
    assert sources.list_images(str(root)) == walked.files       # training sources use it too


def test_walk_reports_folders_it_cannot_list(tmp_path, monkeypatch):
    (tmp_path / "a" / "locked").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "a" / "ok.png"), _image())
    real_scandir = os.scandir

    def scandir(path):
        # root reads any folder, so the refusal of an unreadable one is simulated
        if os.path.basename(path) == "locked":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    walked = files.walk(tmp_path, (".png",))
    assert walked.files == [str(tmp_path / "a" / "ok.png")]
    assert walked.messages() == [f"{tmp_path / 'a' / 'locked'}: skipped, cannot list the folder "
                                 "(Permission denied)"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can list a folder without read permission")
def test_walk_reports_an_unreadable_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        walked = files.walk(tmp_path, (".png",))
    finally:
        locked.chmod(stat.S_IRWXU)
    assert walked.skipped == [(str(locked), "cannot list the folder (Permission denied)")]


# ---- decoding -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, message", [
    ("empty", "{}: empty file (0 bytes); replace it with a valid image"),
    ("truncated", "{}: corrupt, truncated or not a supported image (OpenCV could not decode it); "
                  "check or re-export the file"),
    ("text", "{}: corrupt, truncated or not a supported image (OpenCV could not decode it); "
             "check or re-export the file"),
    ("apng", "{}: an animated image (2 frames); save the frame to use as a still "
             "image (PNG) and pass that"),
    ("gif", "{}: an animated image (2 frames); save the frame to use as a still "
            "image (PNG) and pass that"),
    ("huge", "{}: a 100000x100000 image (10,000,000,000 pixels) is larger than the cap of "
             "268,435,456 pixels; pass --max-pixels 10000000000 (or set ADACODE_MAX_PIXELS) if "
             "the file is genuine and memory allows"),
    ("nan", "{}: the float image holds 1 NaN/Inf sample(s); pixel values must be finite, in "
            "[0, 1]; fix or re-export it"),
    ("fifo", "{}: not a regular file; give an image file"),
])
def test_every_bad_file_raises_one_named_line(hostile, name, message, monkeypatch):
    monkeypatch.delenv(data_io.MAX_PIXELS_ENV, raising=False)
    path = str(hostile[1][name])
    for read in (data_io.read_image, restore.imageio.read_image_raw):
        with pytest.raises(data_io.ImageReadError) as e:
            read(path)
        assert str(e.value) == message.format(path)
        assert isinstance(e.value, errors.UserError) and isinstance(e.value, ValueError)


def test_pixel_cap_from_argument_and_environment(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), _image(size=20))                       # 400 pixels
    monkeypatch.setenv(data_io.MAX_PIXELS_ENV, "399")
    with pytest.raises(data_io.ImageTooLargeError, match=r"a 20x20 image \(400 pixels\) is larger "
                       r"than the cap of 399 pixels; pass --max-pixels 400"):
        data_io.read_image(path)
    assert data_io.read_image(path, max_pixels=400).shape == (20, 20, 3)
    assert data_io.read_image(path, max_pixels=0).shape == (20, 20, 3)      # 0: no cap
    monkeypatch.setenv(data_io.MAX_PIXELS_ENV, "lots")
    with pytest.raises(errors.UserError, match="ADACODE_MAX_PIXELS='lots': not a number"):
        data_io.read_image(path)


# ---- atomic writes ------------------------------------------------------------------------------

def test_atomic_writes_leave_the_old_file_or_the_new_one(tmp_path, monkeypatch):
    path = tmp_path / "out" / "a.bin"
    files.atomic_write_bytes(path, b"old")
    assert path.read_bytes() == b"old"
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()
    with pytest.raises(RuntimeError):
        with files.atomic_open(path, "wb") as f:
            f.write(b"half of the n")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old" and os.listdir(path.parent) == ["a.bin"]
    # an image that fails to encode leaves nothing behind either
    with pytest.raises(ValueError):
        restore.imageio.write_image_raw(tmp_path / "out" / "b.png", np.zeros((2, 2, 5), np.uint8))
    assert os.listdir(path.parent) == ["a.bin"]


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_evaluate_json_stores_non_finite_as_null_with_a_reason(tmp_path):
    results = {"protocol": {}, "mean": {"psnr": float("nan"), "ssim": 0.5},
               "per_image": {"a": {"psnr": float("inf"), "ssim": 0.5}},
               "inputs": {"n_images": 1}}
    json_path, csv_path = evaluate.write_results(results, str(tmp_path))
    stored = json.loads(open(json_path).read())           # strict JSON: no NaN/Infinity tokens
    assert stored["mean"]["psnr"] is None and stored["per_image"]["a"]["psnr"] is None
    assert stored["null_values"] == {"mean/psnr": "nan (not a finite number) stored as null",
                                     "per_image/a/psnr": "inf (not a finite number) stored as null"}
    assert open(csv_path).read().splitlines() == ["stem,psnr,ssim", "a,inf,0.5"]
    # a result that cannot be stored leaves the previous files as they were
    before = open(json_path).read()
    with pytest.raises(TypeError):
        evaluate.write_results({**results, "protocol": {"bad": object()}}, str(tmp_path))
    assert open(json_path).read() == before
    assert sorted(os.listdir(tmp_path)) == ["metrics.csv", "metrics.json"]


# ---- resource limits ------------------------------------------------------------------------------

def test_host_memory_is_checked_before_restoring(sr2_checkpoint, monkeypatch):
    with pytest.raises(restore.HostMemoryError) as e:
        restore.check_host_memory(10000, 20000, 4, True, available=8 * 2 ** 30)
    assert str(e.value) == ("a 20000x10000 image restored x4 is 80000x40000: it needs about "
                            "202.7 GiB of host memory, 8.0 GiB are available; restore a smaller "
                            "image or cut it into parts; --max-pixels limits the input size")
    assert isinstance(e.value, MemoryError) and isinstance(e.value, errors.UserError)
    r = restore.Restorer.from_checkpoint(sr2_checkpoint, tile=0)
    monkeypatch.setattr(restore, "host_memory_available", lambda: 1000)
    with pytest.raises(restore.HostMemoryError, match="needs about 0.0 GiB of host memory"):
        r.restore_rgb(np.zeros((SIZE, SIZE, 3), np.float32))


class _Storage:
    def __init__(self, numel, key="0"):
        import torch
        self.pid = ("storage", torch.FloatStorage, key, "cpu", numel)


class _Tensor:
    def __init__(self, storage, size, stride):
        self.args = (storage, 0, size, stride, False, {})

    def __reduce__(self):
        import torch
        return torch._utils._rebuild_tensor_v2, self.args


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _Storage) else None


def _torch_zip(path, obj, storages):
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        for key, raw in storages.items():
            z.writestr(f"archive/data/{key}", raw)
    return str(path)


def _raw_zip(path, pickle_bytes):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle_bytes)
    return str(path)


def test_torch_reader_allocates_nothing_the_file_asks_for(tmp_path):
    ok = _torch_zip(tmp_path / "ok.pth", {"w": _Tensor(_Storage(4), (2, 2), (2, 1))},
                    {"0": np.arange(4, dtype=np.float32).tobytes()})
    np.testing.assert_array_equal(torchzip.load(ok)["w"], [[0, 1], [2, 3]])
    # a storage declaring 2**40 floats backed by 16 bytes
    big = _torch_zip(tmp_path / "big.pth", {"w": _Tensor(_Storage(2 ** 40), (4,), (1,))},
                     {"0": np.zeros(4, np.float32).tobytes()})
    with pytest.raises(ValueError, match=r"storage 0 declares 1,099,511,627,776 elements "
                       r"\(4,398,046,511,104 bytes\), the archive holds 16 bytes"):
        torchzip.load(big)
    # a stride-0 tensor repeating one float 2**40 times
    expand = _torch_zip(tmp_path / "expand.pth", {"w": _Tensor(_Storage(1), (2 ** 20, 2 ** 20), (0, 0))},
                        {"0": np.zeros(1, np.float32).tobytes()})
    with pytest.raises(ValueError, match="more than the 67,108,864 allowed for an expanded tensor"):
        torchzip.load(expand)
    # callables asked for a size
    for name, data in [
            ("bytearray", b"\x80\x02c__builtin__\nbytearray\nJ\x00\x00\x00\x7f\x85R."),
            ("bytes", b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00\x7f\x85R."),
            ("ndarray", b"\x80\x02cnumpy\nndarray\nJ\x00\x00\x00\x7f\x85R."),
            ("reconstruct", b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
                            b"J\x00\x00\x00\x7f\x85U\x01b\x87R.")]:
        with pytest.raises(pickle.UnpicklingError, match="refused"):
            torchzip.load(_raw_zip(tmp_path / f"{name}.pth", data))
    # declared lengths past the end and memo indices far ahead: refused by the scan
    bin8 = b"\x80\x04\x8e" + struct.pack("<Q", 2 ** 36) + b"abc."
    with pytest.raises(ValueError, match="truncated or corrupt pickle"):
        torchzip.load(_raw_zip(tmp_path / "bin8.pth", bin8))
    memo = b"\x80\x02N" + b"r" + struct.pack("<I", 2 ** 31) + b"."
    with pytest.raises(pickle.UnpicklingError, match=r"memo entry 2147483648 after 0 entries"):
        torchzip.load(_raw_zip(tmp_path / "memo.pth", memo))
    # numpy arrays pickled the usual way still load
    arr = pickle.dumps({"a": np.arange(3, dtype=np.int16)}, protocol=2)
    np.testing.assert_array_equal(torchzip.load(_raw_zip(tmp_path / "np.pth", arr))["a"], [0, 1, 2])


def test_legacy_reader_checks_sizes_before_reading(tmp_path):
    import torch
    path = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(4)}, path, _use_new_zipfile_serialization=False)
    data = bytearray(path.read_bytes())
    at = data.rfind(struct.pack("<q", 4))          # the storage's element count before its bytes
    data[at:at + 8] = struct.pack("<q", 2 ** 40)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"storage \d+ holds 1099511627776 elements, the pickle says 4"):
        torchzip.load(path)


# ---- the command lines ------------------------------------------------------------------------------

def _err_lines(capsys):
    return capsys.readouterr().err.strip().splitlines()


def test_restore_cli_on_the_hostile_folder(hostile, sr2_checkpoint, capsys, monkeypatch):
    monkeypatch.delenv(data_io.MAX_PIXELS_ENV, raising=False)
    root, p = hostile
    out = root / "restored"                       # -o inside -i
    earlier = root / "old_run"                    # an output folder of an earlier run
    earlier.mkdir()
    cv2.imwrite(str(earlier / "good.png"), _image(5))
    files.mark_output_folder(earlier)
    argv = ["--checkpoint", sr2_checkpoint, "-i", str(root), "-o", str(out), "--no-progress"]
    assert restore_cli.main(argv) == 1
    err = "\n".join(_err_lines(capsys))
    assert f"note: {p['fifo']}: skipped, a FIFO (named pipe), not an image file" in err
    assert f"note: {root / 'sub' / 'loop'}: skipped, a folder already visited" in err
    assert (f"note: {earlier}: skipped, an output folder of an earlier run (holds "
            f"{files.OUTPUT_MARKER})") in err
    assert "error: 6 of 8 file(s) failed; the others were written:" in err
    for name, why in [("empty", "empty file (0 bytes)"), ("truncated", "corrupt, truncated"),
                      ("text", "corrupt, truncated"), ("apng", "an animated image (2 frames)"),
                      ("huge", "a 100000x100000 image (10,000,000,000 pixels) is larger than the "
                               "cap of 268,435,456 pixels; pass --max-pixels 10000000000"),
                      ("nan", "the float image holds 1 NaN/Inf sample(s)")]:
        assert f"  {p[name]}: {why}" in err, name
    written = sorted(os.path.relpath(os.path.join(d, f), out)
                     for d, _, fs in os.walk(out) for f in fs)
    assert written == [files.OUTPUT_MARKER, "good.png", os.path.join("sub", "good2.png")]
    assert cv2.imread(str(out / "good.png")).shape == (2 * SIZE, 2 * SIZE, 3)
    # a second run: the outputs (inside the input folder) are not inputs, and not overwritten
    before = (out / "good.png").read_bytes()
    assert restore_cli.main(argv) == 2
    assert _err_lines(capsys)[-1] == (
        f"error: {out}: 2 output file(s) exist already ({out / 'good.png'}, "
        f"{out / 'sub' / 'good2.png'}); pass --overwrite to replace them or --skip-existing to "
        "restore only the others")
    assert (out / "good.png").read_bytes() == before


def test_restore_cli_existing_outputs_suffix_and_same_folder(tmp_path, sr2_checkpoint, capsys):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), _image(1))
    cv2.imwrite(str(src / "b.png"), _image(2))
    out = tmp_path / "out"
    base = ["--checkpoint", sr2_checkpoint, "-i", str(src), "-o", str(out), "--no-progress"]
    assert restore_cli.main(base + ["--suffix", "x2"]) == 0
    assert sorted(os.listdir(out)) == [files.OUTPUT_MARKER, "a_x2.png", "b_x2.png"]   # a separator
    (out / "a_x2.png").write_bytes(b"mine")
    (out / "b_x2.png").unlink()
    assert restore_cli.main(base + ["--suffix", "x2"]) == 2              # refused before any work
    assert "1 output file(s) exist already" in _err_lines(capsys)[-1]
    assert not (out / "b_x2.png").exists()
    assert restore_cli.main(base + ["--suffix", "x2", "--skip-existing"]) == 0
    assert (out / "a_x2.png").read_bytes() == b"mine" and (out / "b_x2.png").exists()
    assert restore_cli.main(base + ["--suffix", "x2", "--overwrite"]) == 0
    assert cv2.imread(str(out / "a_x2.png")).shape == (2 * SIZE, 2 * SIZE, 3)
    assert restore_cli.main(base + ["--suffix=-big"]) == 0
    assert (out / "a-big.png").exists()
    # -o equal to -i: a suffix is required, and earlier outputs are never read as inputs
    same = ["--checkpoint", sr2_checkpoint, "-i", str(src), "-o", str(src), "--no-progress"]
    assert restore_cli.main(same) == 2
    assert _err_lines(capsys)[-1] == (f"error: {src}: the output folder is the input folder, so "
                                      "outputs would overwrite an input; pass --suffix (e.g. "
                                      "--suffix x4) or another -o")
    assert restore_cli.main(same + ["--suffix", "x2", "--save-weight-maps"]) == 0
    assert restore_cli.main(same + ["--suffix", "x2", "--save-weight-maps", "--overwrite"]) == 0
    # (no marker in a folder that holds inputs: a walk from above must still read them)
    assert sorted(os.listdir(src)) == ["a.png", "a_x2.png", "b.png", "b_x2.png", "weight_maps"]
    assert sorted(os.listdir(src / "weight_maps")) == [files.OUTPUT_MARKER, "a_x2.png", "b_x2.png"]
    capsys.readouterr()
    # the pixel cap on the command line
    assert restore_cli.main(base + ["--suffix", "c", "--max-pixels", "100"]) == 1
    assert f"  {src / 'a.png'}: a 16x16 image (256 pixels) is larger than the cap of 100 pixels; " \
           "pass --max-pixels 256" in "\n".join(_err_lines(capsys))


def test_evaluate_cli_on_hostile_folders(hostile, tmp_path, capsys):
    root, p = hostile
    gt = tmp_path / "gt"
    gt.mkdir()
    cv2.imwrite(str(gt / "good.png"), _image(0, 32))
    pred = tmp_path / "pred"
    pred.mkdir()
    cv2.imwrite(str(pred / "good_x2.png"), _image(0, 32)[::-1])
    os.mkfifo(pred / "fifo.png")
    os.symlink(".", pred / "self")
    out = tmp_path / "eval"
    assert evaluate_cli.main(["--pred", str(pred), "--gt", str(gt), "--pred-suffix", "x2",
                              "--no-lpips", "--output", str(out), "--quiet"]) == 0
    err = _err_lines(capsys)
    assert f"note: {pred / 'fifo.png'}: skipped, a FIFO (named pipe), not an image file" in err
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["inputs"]["n_images"] == 1 and len(stored["inputs"]["skipped"]) == 2
    # a NaN float TIFF as a prediction: a named error, exit 2, nothing written
    os.replace(p["nan"], pred / "good_x2.tiff")
    (pred / "good_x2.png").unlink()
    assert evaluate_cli.main(["--pred", str(pred), "--gt", str(gt), "--pred-suffix", "x2",
                              "--no-lpips", "--output", str(tmp_path / "eval2")]) == 2
    assert _err_lines(capsys)[-1] == (f"error: {pred / 'good_x2.tiff'}: the float image holds 1 "
                                      "NaN/Inf sample(s); pixel values must be finite, in [0, 1]; "
                                      "fix or re-export it")
    assert not (tmp_path / "eval2").exists()


def test_convert_cli_refuses_a_non_empty_output(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    rc = convert_cli.main(["--kind", "sr_x4", "--input", str(tmp_path / "absent.pth"),
                           "--output", str(out)])
    assert rc == 2
    assert _err_lines(capsys) == [f"error: {out}: the folder is not empty (1 entries: notes.txt); "
                                  "choose a new or empty folder, or pass --overwrite to replace the "
                                  "checkpoint in it (other files are kept)"]
    # a hostile .pth is a named error, not a traceback (the torch-free reader, as without torch)
    monkeypatch.setitem(sys.modules, "torch", None)
    bad = _raw_zip(tmp_path / "bad.pth", b"\x80\x02c__builtin__\nbytearray\nJ\x00\x00\x00\x7f\x85R.")
    assert convert_cli.main(["--kind", "sr_x4", "--input", bad, "--output", str(tmp_path / "c2")]) == 2
    assert _err_lines(capsys) == [
        f"error: {bad}: the pickle asks for bytearray(2130706432): refused, a state dict never "
        "allocates by size; check that it is a complete file written by torch.save or numpy.savez"]
    assert not (tmp_path / "c2").exists()


def test_convert_overwrite_replaces_only_the_checkpoint(tmp_path):
    cfg = models.tiny_model_config("sr_x2")
    variables = {"params": {"w": np.ones((2, 2), np.float32)}}
    out = tmp_path / "ckpt"
    convert.save_checkpoint(str(out), cfg, variables, extra={"n": 1})
    assert sorted(os.listdir(out)) == ["model.json", "variables"]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(errors.UserError, match="the folder is not empty"):
        convert.save_checkpoint(str(out), cfg, variables)
    convert.save_checkpoint(str(out), cfg, {"params": {"w": np.zeros((2, 2), np.float32)}},
                            extra={"n": 2}, overwrite=True)
    assert sorted(os.listdir(out)) == ["model.json", "notes.txt", "variables"]
    assert json.loads((out / "model.json").read_text())["n"] == 2
    assert not [n for n in os.listdir(tmp_path) if n != "ckpt"]          # no temporary folder left


def test_make_testset_cli_skips_hostile_files_and_refuses_to_overwrite(hostile, tmp_path, capsys):
    root, p = hostile
    out = tmp_path / "set"
    argv = ["--input", str(root), "--output", str(out), "--task", "sr_x2", "--no-progress"]
    assert make_testset_cli.main(argv) == 1            # the bad files fail, the good ones are written
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["good.png", "sub/good2.png"]
    assert {os.path.basename(s["file"]) for s in manifest["skipped"]} == {
        "animated.gif", "dangling.png", "loop", "x.png"}
    capsys.readouterr()
    assert make_testset_cli.main(argv) == 2
    assert _err_lines(capsys) == [f"error: {out}: holds a test set already (gt, lq, "
                                  "manifest.json); pass --overwrite to replace its files or "
                                  "choose another --output"]
    assert make_testset_cli.main(argv + ["--overwrite"]) == 1


def test_an_output_folder_that_is_a_file_is_a_usage_error(tmp_path, capsys):
    from adacode_jax.cli import compare as compare_cli
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), np.zeros((16, 16, 3), np.uint8))
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"x")
    below = taken / "sub"
    runs = [
        (restore_cli, ["-i", str(tmp_path / "in"), "-o", str(taken)], str(taken), "-o/--output",
         "is an existing file"),
        (restore_cli, ["-i", str(tmp_path / "in"), "-o", str(below)], str(below), "-o/--output",
         f"is below the file {taken}"),
        (make_testset_cli, ["--input", str(tmp_path / "in"), "--output", str(taken), "--task",
                            "sr_x4"], str(taken),
         "--output", "is an existing file"),
        (evaluate_cli, ["--pred", str(tmp_path / "in"), "--gt", str(tmp_path / "in"),
                        "--output", str(taken)], str(taken), "--output", "is an existing file"),
        (compare_cli, ["--output", str(below)], str(below), "--output", f"is below the file {taken}"),
    ]
    for cli, argv, path, flag, where in runs:
        assert cli.main(argv) == 2, argv
        assert _err_lines(capsys)[-1] == (f"error: {path}: {flag} must be a folder, and it {where}; "
                                          "choose another path")
    assert taken.read_bytes() == b"x"
