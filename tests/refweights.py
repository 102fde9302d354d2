"""The reference's synthetic weights and inputs, regenerated in numpy (no files but the key lists).

The parity fixtures (``tests/data/reference``, made from a full reference,
``refdata.SHARED_REFERENCE_DIR``) are outputs of the official PyTorch code for weights that are not stored anywhere: they are a pure function of
``(seed, key, shape)``, described in the reference README ("Weights"). This module implements
that description, so a plain clone can rebuild every state dict; ``tests/test_reference_data.py``
checks each kind byte for byte against the manifest's ``state_sha256``.

The rules, per state-dict key (PyTorch layouts: conv OIHW, linear (out, in)):

* every key draws from its own generator ``np.random.default_rng([seed, crc32(key)])``, so a key
  with the same shape in two kinds (stage2 and sr_x4 share the decoder, codebooks, quantiser
  convs and weight predictor) has the same values in both;
* conv / linear weights (and the discriminator's ``weight_orig``): N(0, 1) · gain / √fan_in with
  fan_in = prod(shape[1:]); gain 0.5 on the last layer of a residual branch, 0.25 on the RSTB
  conv, 0.3 on the weight predictor's output conv, 8 on the discriminator's logits conv;
* norm weights 1 + N(0, 0.05), norm biases N(0, 0.05), other biases N(0, 0.02);
* Swin relative-position bias tables and codebooks N(0, 1);
* spectral-norm ``weight_u`` / ``weight_v``: one power iteration from a random unit u0 (drawn
  from the ``weight_u`` key's generator), v = n(Wᵀu0), u = n(W v), W = weight_orig as (out, -1).

All arithmetic is elementwise float64 with exactly rounded sums (``math.fsum``) and one final
cast to float32, which is why the bytes do not depend on the CPU or BLAS.

Why here and not in the package: these weights exist only to compare against the reference
outputs; nothing in ``adacode_jax`` trains or restores with them, and the key lists are test data.
"""
from __future__ import annotations

import math
import os
import re
import zlib

import numpy as np

KEYS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "reference", "keys")
KIND_NAMES = ("stage1", "stage2", "sr_x4", "sr_x2", "inpaint", "disc")
# NCHW shapes of the fixture inputs (seed 1234); the second ones are the ``ns/`` cases.
INPUT_SHAPES = {
    "stage1": [(1, 3, 256, 256)],
    "stage2": [(1, 3, 256, 256), (1, 3, 192, 256)],
    "sr_x4": [(1, 3, 64, 64), (2, 3, 48, 80)],
    "sr_x2": [(1, 3, 128, 128)],
    "inpaint": [(1, 3, 256, 256)],
    "disc": [(1, 3, 256, 256)],
}
INPUT_SEED = 1234

# (pattern, gain) for conv/linear weights: the output layer of each residual branch is damped
# so that activations stay O(1) through deep stacks; D's last conv is amplified so that the
# hinge's clipping at |D| = 1 is exercised.
_GAINS = [
    (re.compile(r"\.conv\.5\.weight$"), 0.5),                   # ResBlock: second conv
    (re.compile(r"\.attn\.proj\.weight$"), 0.5),                # Swin attention output
    (re.compile(r"\.mlp\.fc2\.weight$"), 0.5),                  # Swin MLP output
    (re.compile(r"\.swin_blks\.\d+\.conv\.weight$"), 0.25),     # RSTB conv
    (re.compile(r"^weight_predictor\.blocks\.1\.weight$"), 0.3),
    (re.compile(r"^conv9\.weight$"), 8.0),                      # discriminator logits
]
_NORM_KEY = re.compile(r"(^|\.)norm\d*\.(weight|bias)$")
_BIAS_STD, _NORM_STD, _RPB_STD, _CODEBOOK_STD = 0.02, 0.05, 1.0, 1.0


def read_keys(kind: str, keys_dir: str = KEYS_DIR) -> list[dict]:
    """The rows of ``keys/<kind>.tsv``: {key, shape (tuple), dtype, kind, source}."""
    with open(os.path.join(keys_dir, f"{kind}.tsv"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    header = lines[0].split("\t")
    rows = []
    for line in lines[1:]:
        row = dict(zip(header, line.split("\t")))
        row["shape"] = tuple(int(d) for d in row["shape"].split(",")) if row["shape"] else ()
        rows.append(row)
    return rows


def make_input(shape: tuple, seed: int = INPUT_SEED) -> np.ndarray:
    """A fixture image: uniform [0, 1) float32 from a fresh generator (NCHW)."""
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def make_state_dict(kind: str, seed: int, keys_dir: str = KEYS_DIR) -> dict[str, np.ndarray]:
    """{key: array} for every ``generated`` row of the key list, in its order.

    The ``model`` rows (Swin index and mask buffers, ``contrast_cri.*``) are left out: a network
    derives them from its own configuration.
    """
    rows = [r for r in read_keys(kind, keys_dir) if r["source"] == "generated"]
    values = {}
    for r in rows:
        if not r["key"].endswith(("weight_u", "weight_v")):
            values[r["key"]] = _initial_value(seed, r["key"], r["shape"])
    for r in rows:
        if r["key"].endswith(".weight_u"):
            base = r["key"][: -len("_u")]
            values[base + "_u"], values[base + "_v"] = _power_iteration(
                _generator(seed, r["key"]), values[base + "_orig"])
    return {r["key"]: values[r["key"]].astype(np.dtype(r["dtype"]), copy=False) for r in rows}


def _generator(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])


def _gaussian(seed: int, key: str, shape: tuple, std: float, mean: float = 0.0) -> np.ndarray:
    draw = _generator(seed, key).standard_normal(shape)      # float64
    return (mean + std * draw).astype(np.float32)


def _initial_value(seed: int, key: str, shape: tuple) -> np.ndarray:
    if key.endswith(".relative_position_bias_table"):
        return _gaussian(seed, key, shape, _RPB_STD)
    if key.startswith("quantize_group.") and key.endswith(".embedding.weight"):
        return _gaussian(seed, key, shape, _CODEBOOK_STD)
    if _NORM_KEY.search(key):
        is_scale = key.endswith(".weight")
        return _gaussian(seed, key, shape, _NORM_STD, mean=1.0 if is_scale else 0.0)
    if key.endswith(".bias"):
        return _gaussian(seed, key, shape, _BIAS_STD)
    if key.endswith((".weight", ".weight_orig")) and len(shape) in (2, 4):
        gain = next((g for pattern, g in _GAINS if pattern.search(key)), 1.0)
        return _gaussian(seed, key, shape, gain / math.sqrt(math.prod(shape[1:])))
    raise ValueError(f"no initialisation rule for {key} {shape}")


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / math.sqrt(math.fsum((x * x).tolist()))


def _exact_matvec(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """w @ x with every row's sum exactly rounded (so no BLAS summation order enters)."""
    return np.array([math.fsum(row) for row in (w * x[None, :]).tolist()], np.float64)


def _power_iteration(rng: np.random.Generator, weight_orig: np.ndarray):
    """torch spectral_norm's (u, v) after one train-mode power iteration from a random unit u0."""
    w = weight_orig.reshape(weight_orig.shape[0], -1).astype(np.float64)
    u0 = _normalised(rng.standard_normal(w.shape[0]))
    v = _normalised(_exact_matvec(w.T, u0))
    u = _normalised(_exact_matvec(w, v))
    return u.astype(np.float32), v.astype(np.float32)
