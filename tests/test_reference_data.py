"""The vendored reference (``tests/data/reference``) and our weight generator stand in for
a full reference (``refdata.SHARED_REFERENCE_DIR``): a plain clone runs the parity tests with
nothing outside the repository."""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

from tests import refdata, refweights
from tests import reference as ref

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = refdata.FILES
# The largest stored error each codec class may have, relative to max|reference array|:
# half a quantisation step plus the final cast to float32 (tests/refdata.py says which test
# tolerance each class serves).
BUDGET = {bits: 2.0 ** -(bits + 1) + 2.0 ** -23
          for bits in (refdata.CHECK_BITS, refdata.TAP_BITS, refdata.LOSS_BITS)}


def _codecs(name: str) -> dict:
    with zipfile.ZipFile(os.path.join(refdata.VENDORED_DIR, f"{name}_seed0.npz")) as zf:
        return json.loads(str(np.load(zf.open(refdata.CODECS + ".npy"))))


def test_default_reference_dir_is_inside_the_repository(monkeypatch):
    vendored = os.path.realpath(refdata.VENDORED_DIR)
    assert vendored.startswith(os.path.realpath(REPO) + os.sep)
    monkeypatch.delenv("ADACODE_REFERENCE_DIR", raising=False)
    import importlib

    fresh = importlib.reload(ref)
    try:
        assert os.path.realpath(fresh.REF_DIR) == vendored
    finally:
        importlib.reload(ref)        # back to whatever the environment chose
    for name in FILES:
        assert os.path.isfile(os.path.join(vendored, f"{name}_seed0.npz")), name
    assert os.path.isfile(os.path.join(vendored, "manifest_seed0.json"))


def test_vendored_copy_stays_small():
    total = sum(os.path.getsize(os.path.join(d, f))
                for d, _, files in os.walk(refdata.VENDORED_DIR) for f in files)
    assert total < 16e6, total


@pytest.mark.parametrize("kind", refweights.KIND_NAMES)
def test_our_generator_reproduces_the_manifest_checksums(kind):
    """SHA-256 over the sorted keys, each key's UTF-8 bytes then the array's LE C-order bytes."""
    with open(os.path.join(refdata.VENDORED_DIR, "manifest_seed0.json")) as f:
        manifest = json.load(f)["kinds"][kind]
    sd = refweights.make_state_dict(kind, 0)
    assert ref.state_sha256(sd) == manifest["state_sha256"]
    assert sum(v.size for k, v in sd.items() if not k.endswith(("weight_u", "weight_v"))) \
        == manifest["n_params"]
    rows = refweights.read_keys(kind)
    assert list(sd) == [r["key"] for r in rows if r["source"] == "generated"]
    assert all(sd[r["key"]].shape == r["shape"] for r in rows if r["source"] == "generated")


def test_generator_rules_on_a_few_keys():
    sd = refweights.make_state_dict("disc", 0)
    w = sd["conv1.weight_orig"].reshape(128, -1).astype(np.float64)
    u, v = sd["conv1.weight_u"].astype(np.float64), sd["conv1.weight_v"].astype(np.float64)
    np.testing.assert_allclose([np.linalg.norm(u), np.linalg.norm(v)], 1.0, rtol=1e-6)
    # u = n(W v): sigma = u^T W v is the norm of W v, positive and near the top singular value.
    sigma = u @ w @ v
    assert 0.5 * np.linalg.norm(w, 2) < sigma <= np.linalg.norm(w, 2) * (1 + 1e-6)
    np.testing.assert_allclose(w @ v / np.linalg.norm(w @ v), u, atol=1e-6)
    # Same key and shape in two kinds: same values (stage III starts from stage II).
    s2, x4 = refweights.make_state_dict("stage2", 0), refweights.make_state_dict("sr_x4", 0)
    for key in ("quantize_group.0.embedding.weight", "decoder_group.0.block.1.weight"):
        np.testing.assert_array_equal(s2[key], x4[key])
    x = refweights.make_input((2, 3, 8, 8), 1234)
    assert x.dtype == np.float32 and 0 <= x.min() and x.max() < 1
    np.testing.assert_array_equal(x[:1], refweights.make_input((1, 3, 8, 8), 1234))


@pytest.mark.parametrize("name", FILES)
def test_stored_precision_is_within_its_budget(name):
    """Every lossy array records its error against the reference when it was built."""
    codecs = _codecs(name)
    arrays = refdata.load(refdata.VENDORED_DIR, name)
    assert set(arrays) == set(codecs)
    for key, c in codecs.items():
        if c["codec"] == "quant":      # step = max|reference| · 2^-bits
            bits = int(round(-np.log2(c["step"] / np.abs(arrays[key]).max())))
            assert c["max_rel_err"] <= BUDGET[bits], key
        if c["codec"] == "ref":        # an exact duplicate of a quantised array
            assert c["max_rel_err"] <= max(BUDGET.values()), key
        if c["codec"] == "raw":
            assert arrays[key].dtype == np.dtype(c["dtype"]), key
    if name == "losses_sr_x4":     # recomputed at rtol 1e-4: the finest class
        for key in ("out", "d/fake_g", "d/real", "d/fake", "aux/feat_before_quant",
                    "hq/aux/feat_before_decoder"):
            assert codecs[key]["max_rel_err"] <= BUDGET[refdata.LOSS_BITS], key


def _full_reference():
    path = os.environ.get("ADACODE_FULL_REFERENCE_DIR", refdata.SHARED_REFERENCE_DIR)
    if not os.path.isfile(os.path.join(path, "stage2_seed0.npz")):
        pytest.skip("no full reference to compare the vendored copy with (optional)")
    return path


@pytest.mark.parametrize("name", FILES)
def test_vendored_copy_agrees_with_a_full_reference(name):
    """Optional: with a full reference at hand, every vendored array is the original, or within
    its recorded error of it."""
    full = refdata.load(_full_reference(), name)
    codecs = _codecs(name)
    for key, got in refdata.load(refdata.VENDORED_DIR, name).items():
        want = full[key]
        if codecs[key]["codec"] in ("raw", "input"):
            assert got.dtype == want.dtype and np.array_equal(got, want), key
            continue
        want = want[:, : got.shape[1]] if key.startswith("tap/") else want
        assert got.shape == want.shape, key
        err = np.abs(got.astype(np.float64) - want).max() / np.abs(want.astype(np.float64)).max()
        assert err <= codecs[key].get("max_rel_err", 0.0) * (1 + 1e-9) + 1e-12, key
