"""Access to the official code's reference outputs (../shared/reference, see its README).

The directory and seed come from ``ADACODE_REFERENCE_DIR`` (default ``<repo>/../shared/reference``)
and ``ADACODE_REFERENCE_SEED`` (default 0). A missing file fails the test: parity is never skipped.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os

import numpy as np
import pytest

from adacode_jax import bench

REF_DIR = bench.reference_dir()
SEED = int(os.environ.get("ADACODE_REFERENCE_SEED", "0"))


def path(name: str) -> str:
    p = os.path.join(REF_DIR, name)
    if not os.path.exists(p):
        pytest.fail(f"reference file {p} is missing: set ADACODE_REFERENCE_DIR to a directory "
                    f"made like ../shared/reference (see its README)")
    return p


def weights_module():
    path("weights.py")                       # a missing file fails the test with the fix
    return bench.reference_weights_module()


@functools.lru_cache(maxsize=None)
def state_dict(kind: str) -> dict:
    return weights_module().make_state_dict(kind, SEED)


@functools.lru_cache(maxsize=None)
def outputs(name: str) -> dict:
    with np.load(path(f"{name}_seed{SEED}.npz")) as z:
        return {k: z[k] for k in z.files}


@functools.lru_cache(maxsize=None)
def manifest() -> dict:
    with open(path(f"manifest_seed{SEED}.json")) as f:
        return json.load(f)


def state_sha256(sd: dict) -> str:
    """The manifest's checksum: keys sorted, each key's UTF-8 bytes then its LE C-order bytes."""
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(np.ascontiguousarray(sd[k]).astype(sd[k].dtype.newbyteorder("<")).tobytes())
    return h.hexdigest()


def nhwc(a: np.ndarray) -> np.ndarray:
    """NCHW (or B,K,1,H,W weight maps) to NHWC."""
    a = np.asarray(a)
    if a.ndim == 5:          # (B, K, 1, h, w) -> (B, h, w, K)
        return a[:, :, 0].transpose(0, 2, 3, 1)
    return a.transpose(0, 2, 3, 1)


def assert_close(ours, ref, name: str, rel: float = 1e-3):
    """max |ours − ref| ≤ rel · max |ref| (the issue's criterion)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} vs reference {ref.shape}"
    err, scale = np.abs(ours - ref).max(), np.abs(ref).max()
    assert err <= rel * scale, f"{name}: max error {err:.3e} > {rel:g} x max|ref| ({scale:.3e})"
    return err / scale
