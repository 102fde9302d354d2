"""The vendored reference outputs (``tests/data/reference``): a compact copy of a full reference.

The official outputs take about 60 MB; the tests need about a quarter of that, stored so that
every check they make still holds (``tests/data/reference/README.md`` lists the precision of
each array and the test tolerance it serves). Each ``<name>_seed<S>.npz`` is an ordinary zip of
``.npy`` members (LZMA-compressed) plus ``__codecs__``, a JSON string saying how each array comes
back:

``raw``     stored as is (integers narrowed to int16 when they fit, and widened back on load);
``input``   not stored: ``refweights.make_input(shape, seed)``, checked against its SHA-256;
``quant``   float32 ``base + q · step`` with int16 ``q`` (bytes split into two planes, which
            LZMA packs better), ``step`` = max|a| · 2^-bits; ``base`` (optional) is another
            array of the same file, so a near copy (``out_test`` of ``out``) costs little;
``ref``     an exact duplicate of (a batch/channel slice of) another array, possibly in another
            file: the stage1/stage2/inpaint encoders share weights and input, the encoder's last
            tap is the first channels of ``aux/feat_before_quant``, and the loss fixture's
            teacher ran on the stage2 input.

:func:`load` returns the arrays under their reference names, as ``np.load`` of the original
would (NCHW); a plain ``.npz`` (a full reference, such as one at :data:`SHARED_REFERENCE_DIR`)
is returned unchanged. ``python -m tests.refdata SOURCE`` rebuilds the folder from a full reference.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import os
import shutil
import sys
import zipfile

import numpy as np

from tests import refweights

VENDORED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "reference")
# Where a full reference (the official code's outputs, docs/official.md#reference-outputs) lies
# when the checkout has one beside it: ../shared/reference. Optional; the tests name it only here.
SHARED_REFERENCE_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "shared", "reference")
CODECS = "__codecs__"

# Quantisation step = max|a| · 2^-bits, so the error is at most max|a| · 2^-(bits+1).
CHECK_BITS = 10   # float32 arrays checked at 1e-3 · max|ref|: error <= 2^-11 max = 4.9e-4 max,
                  # float16's worst case; ours is within 3e-5, so the check keeps a 2x margin
TAP_BITS = 11     # arrays the reference already stored as float16 (taps, ns/aux/feat_*), also
                  # checked at 1e-3 · max: 2^-12 on top of float16's 2^-11, 7.3e-4 in all
LOSS_BITS = 13    # loss-fixture tensors the losses are recomputed from at rtol 1e-4: error
                  # <= 2^-14 max = 6.1e-5 max, which moves each loss by <= 4e-6 relative
TAP_CHANNELS = 4  # taps keep the first 1/4 of the stored channels (at least 1), every position


# ---- reading ------------------------------------------------------------------------------------

def _planes_to_int16(planes: np.ndarray, shape) -> np.ndarray:
    return np.ascontiguousarray(planes.T).view("<i2").reshape(shape)


def _int16_to_planes(q: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(q.astype("<i2").reshape(-1).view(np.uint8).reshape(-1, 2).T)


class Store:
    """The reference files of one directory and seed; cross-file references are resolved here."""

    def __init__(self, directory: str, seed: int = 0):
        self.directory, self.seed = directory, seed

    def path(self, name: str) -> str:
        return os.path.join(self.directory, f"{name}_seed{self.seed}.npz")

    @functools.lru_cache(maxsize=None)
    def load(self, name: str) -> dict:
        with np.load(self.path(name)) as z:
            stored = {k: z[k] for k in z.files}
        if CODECS not in stored:
            return stored
        codecs = json.loads(str(stored.pop(CODECS)))
        out = {}

        def decode(key):
            if key not in out:
                out[key] = self._decode(key, codecs[key], stored, decode)
            return out[key]

        for key in codecs:
            decode(key)
        return out

    def _decode(self, key, c, stored, decode):
        codec = c["codec"]
        if codec == "raw":
            return stored[key].astype(c["dtype"], copy=False)
        if codec == "input":
            a = refweights.make_input(tuple(c["shape"]), c["seed"])
            if hashlib.sha256(a.tobytes()).hexdigest() != c["sha256"]:
                raise ValueError(f"{key}: make_input{tuple(c['shape']), c['seed']} does not "
                                 "reproduce the reference input")
            return a
        if codec == "quant":
            q = _planes_to_int16(stored[key], tuple(c["shape"])).astype(np.float64)
            base = decode(c["base"]).astype(np.float64) if c.get("base") else 0.0
            return (base + q * c["step"]).astype(np.float32)
        if codec == "ref":
            src = decode(c["key"]) if c["file"] is None else self.load(c["file"])[c["key"]]
            index = (slice(*c["batch"]) if c.get("batch") else slice(None),
                     slice(0, c["channels"]) if c.get("channels") else slice(None))
            return np.ascontiguousarray(src[index]).astype(c["dtype"], copy=False)
        raise ValueError(f"{key}: unknown codec {codec!r}")


def load(directory: str, name: str, seed: int = 0) -> dict:
    return _store(directory, seed).load(name)


@functools.lru_cache(maxsize=None)
def _store(directory: str, seed: int) -> Store:
    return Store(directory, seed)


# ---- building (from a full reference) ----------------------------------------------------------

GEN_KINDS = ("stage1", "stage2", "sr_x4", "sr_x2", "inpaint")
# Order matters: a ``ref`` points at a file written earlier.
FILES = ("losses_sr_x4", "stage2", "stage1", "inpaint", "sr_x4", "sr_x2", "disc")


def _plan(name: str, arrays: dict) -> dict:
    """key -> (codec, options) for every array some test reads; the rest are dropped."""
    plan = {}
    if name == "losses_sr_x4":
        plan["gt"] = ("input", {"seed": 1234})
        plan["lq"] = ("input", {"seed": 1235})
        for k in ("out", "d/fake_g", "d/real", "aux/feat_before_quant", "aux/feat_before_decoder",
                  "hq/aux/feat_before_quant", "hq/aux/feat_before_decoder"):
            plan[k] = ("quant", {"bits": LOSS_BITS})
        plan["d/fake"] = ("quant", {"bits": LOSS_BITS, "base": "d/fake_g"})   # same D, newer u, v
        for k in arrays:
            if k.startswith(("d/uv_after_", "loss/")) or k in ("aux/indices", "hq/aux/indices"):
                plan[k] = ("raw", {})
        return plan
    if name == "disc":
        plan["input"] = ("input", {"seed": 1234})
        plan["out"] = ("quant", {"bits": CHECK_BITS})
        plan["out_train"] = ("quant", {"bits": CHECK_BITS, "base": "out"})
        plan.update({k: ("raw", {}) for k in arrays if k.startswith("uv_after_train/")})
        return plan
    for p in ("", "ns/"):
        if p + "input" not in arrays:
            continue
        plan[p + "input"] = ("input", {"seed": 1234})
        plan[p + "out"] = ("quant", {"bits": CHECK_BITS})
        plan[p + "out_test"] = ("quant", {"bits": CHECK_BITS, "base": p + "out"})
        for k in ("aux/feat_before_quant", "aux/feat_before_decoder", "aux/weight"):
            if p + k in arrays:
                bits = TAP_BITS if arrays[p + k].dtype == np.float16 else CHECK_BITS
                plan[p + k] = ("quant", {"bits": bits})
        for k in arrays:
            rest = k[len(p):] if k.startswith(p) else None
            if rest is None or (p == "" and k.startswith("ns/")):
                continue
            if rest in ("aux/indices", "test/indices", "loss/codebook_loss") or \
                    rest.startswith(("gap/", "test/gap/")):
                plan[k] = ("raw", {})
            elif rest.startswith("dist/") and p == "" and name in ("stage2", "sr_x4"):
                plan[k] = ("raw", {})          # test_mixed_precision: relative gaps gap / dist
            elif p == "" and rest.startswith("tapstat/"):
                plan[k] = ("raw", {})
            elif p == "" and rest.startswith("tap/"):
                plan[k] = ("quant", {"bits": TAP_BITS,
                                     "channels": max(1, arrays[k].shape[1] // TAP_CHANNELS)})
    return plan


def _find_duplicate(key, a, written: dict, own: dict):
    """A ``ref`` codec if ``a`` is exactly (a slice of) an array already stored with the same
    dtype, else None. (A float16 tap that equals a float32 feature is not a ref: the float32
    copy's quantisation error would add to the tap's float16 rounding.)"""
    cands = [(None, k, v) for k, v in own.items()] + \
            [(f, k, v) for f, arrs in written.items() for k, v in arrs.items()]
    for file, k, b in cands:
        if k == key and file is None or b.dtype != a.dtype or b.ndim != a.ndim:
            continue
        if b.shape[2:] != a.shape[2:] or b.shape[0] < a.shape[0] or b.shape[1] < a.shape[1]:
            continue
        part = b[: a.shape[0], : a.shape[1]]
        if np.array_equal(part.astype(a.dtype), a):
            opts = {"file": file, "key": k, "dtype": "float32"}   # quant decodes to float32
            if b.shape[0] != a.shape[0]:
                opts["batch"] = [0, a.shape[0]]
            if b.shape[1] != a.shape[1]:
                opts["channels"] = a.shape[1]
            return opts
    return None


def build(source: str, dest: str, seed: int = 0) -> dict:
    """Writes the compact copy of ``source`` into ``dest``; returns {file: {key: error}}."""
    os.makedirs(dest, exist_ok=True)
    report, kept_by_file = {}, {}
    for name in FILES:
        with np.load(os.path.join(source, f"{name}_seed{seed}.npz")) as z:
            arrays = {k: z[k] for k in z.files}
        codecs, members, kept = {}, {}, {}
        for key, (codec, opt) in _plan(name, arrays).items():
            a = arrays[key]
            if opt.get("channels"):
                a = arrays[key] = np.ascontiguousarray(a[:, : opt["channels"]])
            if codec == "quant":
                dup = _find_duplicate(key, a, kept_by_file, kept)
                if dup is not None:
                    codec, opt = "ref", dup
            if codec == "raw":
                store = a
                if a.dtype == np.int64 and a.size and -2**15 <= a.min() and a.max() < 2**15:
                    store = a.astype(np.int16)
                codecs[key] = {"codec": "raw", "dtype": str(a.dtype)}
                members[key] = store
            elif codec == "input":
                codecs[key] = {"codec": "input", "shape": list(a.shape), "seed": opt["seed"],
                               "sha256": hashlib.sha256(a.tobytes()).hexdigest()}
            elif codec == "ref":
                codecs[key] = {"codec": "ref", **opt}
            else:
                codecs[key] = {"codec": "quant", "shape": list(a.shape),
                               "step": float(np.abs(a).max()) * 2.0 ** -opt["bits"],
                               "source_dtype": str(a.dtype)}
                if codecs.get(opt.get("base"), {}).get("codec") == "quant":
                    codecs[key]["base"] = opt["base"]
                members[key] = a                  # quantised by _write, bases first
            kept[key] = a
        kept_by_file[name] = kept
        _write(dest, name, seed, codecs, dict(members))
        decoded = Store(dest, seed).load(name)
        for key, c in codecs.items():
            want, got = arrays[key], decoded[key]
            assert got.shape == want.shape, (name, key)
            if c["codec"] in ("raw", "input"):
                assert got.dtype == want.dtype and np.array_equal(got, want), (name, key)
            else:   # max |stored − reference| / max |reference|, for the tests' tolerances
                c["max_rel_err"] = float(np.abs(got.astype(np.float64) - want).max()
                                         / np.abs(want.astype(np.float64)).max())
        _write(dest, name, seed, codecs, members)
        report[name] = {k: c.get("max_rel_err", 0.0) for k, c in codecs.items()}
    for sub in ("keys",):
        shutil.copytree(os.path.join(source, sub), os.path.join(dest, sub), dirs_exist_ok=True)
    shutil.copy(os.path.join(source, f"manifest_seed{seed}.json"), dest)
    return report


def _write(dest, name, seed, codecs, members):
    """Quantises the ``quant`` members (bases first) and writes a reproducible LZMA zip."""
    decoded = {}
    for key, c in codecs.items():
        if c["codec"] != "quant":
            continue
        a = members[key].astype(np.float64)
        base = decoded[c["base"]] if c.get("base") else 0.0
        q = np.rint((a - base) / c["step"])
        assert np.abs(q).max() < 2**15, (name, key)
        members[key] = _int16_to_planes(q.astype(np.int16))
        decoded[key] = (base + q * c["step"]).astype(np.float32).astype(np.float64)
    path = os.path.join(dest, f"{name}_seed{seed}.npz")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_LZMA) as zf:
        def put(member, array):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(member + ".npy", date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_LZMA
            zf.writestr(info, buf.getvalue())
        put(CODECS, np.array(json.dumps(codecs, sort_keys=True)))
        for key in sorted(members):
            put(key, members[key])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help=f"a full reference directory (e.g. {SHARED_REFERENCE_DIR})")
    parser.add_argument("--dest", default=VENDORED_DIR)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = build(args.source, args.dest, args.seed)
    json.dump(report, sys.stdout, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
