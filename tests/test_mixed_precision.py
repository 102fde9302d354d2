"""Mixed precision and memory: bf16 compute against the official outputs, and what the
``remat`` switch keeps for the backward pass."""
from __future__ import annotations

import contextlib
import io
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.ad_checkpoint import print_saved_residuals

from adacode_jax.inference import convert
from adacode_jax import models
from tests import reference as ref

# bf16 keeps 8 significant bits: features carry relative errors of a few 2^-8, so a code whose
# squared distance beats the runner-up by less than that fraction is a coin flip.
BF16_EPS = 2.0 ** -8


@pytest.mark.parametrize("kind", ["sr_x4", "stage2"])
def test_bf16_code_indices_match_the_reference_except_near_ties(kind):
    """bf16 convolutions and matmuls, float32 parameters, quantiser and outputs: the argmin
    codes equal the (float32) reference wherever the relative gap d2/d1 − 1 exceeds 2^-8
    (measured: mismatches only below 0.0024; about 1-2% of all positions differ)."""
    r = ref.outputs(kind)
    cfg, variables = convert.to_variables(ref.state_dict(kind), kind)
    cfg.dtype = "bfloat16"
    model = models.build(cfg)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(variables))
    x = ref.nhwc(r["input"])
    want = np.asarray(r["aux/indices"])[:, :, 0]
    # One pass: the reference's codes forced for the output, our argmin in nearest_indices.
    out, aux = jax.jit(lambda v, x, i: model.apply(v, x, force_indices=i))(variables, x, want)
    got = np.asarray(aux["nearest_indices"])
    rel_gap = np.stack([r[f"gap/{k}"] / r[f"dist/{k}"] for k in range(want.shape[0])])
    clear = rel_gap > BF16_EPS
    assert clear.mean() > 0.8
    np.testing.assert_array_equal(got[clear], want[clear])
    assert (got == want).mean() > 0.97
    assert out.dtype == jnp.float32 and aux["codebook_loss"].dtype == jnp.float32
    # With the reference's codes, the whole bf16 network lands within a few percent.
    err = np.abs(np.asarray(out, np.float64) - ref.nhwc(r["out"])).max()
    assert err < 0.05 * np.abs(r["out"]).max()


def _residual_bytes(fn, *args) -> int:
    """Bytes the backward pass of ``fn`` keeps from its forward (arguments excluded)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print_saved_residuals(fn, *args)
    total = 0
    for line in buf.getvalue().splitlines():
        m = re.match(r"(f32|bf16|i32|u32|bool)\[([\d,]*)\]", line)
        if m and "from the argument" not in line:
            size = {"f32": 4, "i32": 4, "u32": 4, "bf16": 2, "bool": 1}[m.group(1)]
            total += size * int(np.prod([int(d) for d in m.group(2).split(",") if d]))
    return total


@pytest.mark.parametrize("kind,size", [("stage2", 64), ("sr_x4", 16)])
def test_remat_keeps_a_fraction_of_the_activations(kind, size):
    """``model.remat``: Swin blocks and encoder/decoder ResBlocks are recomputed in the
    backward pass, which keeps only their inputs (measured: 44 MiB -> 6-7 MiB here)."""
    x = jnp.asarray(np.random.default_rng(0).random((2, size, size, 3), dtype=np.float32))
    kept = {}
    for remat in (False, True):
        cfg = models.tiny_model_config(kind)
        cfg.gt_resolution, cfg.codebook_scale, cfg.remat = 64, 8, remat
        model = models.build(cfg)
        params = jax.jit(model.init)(jax.random.key(0), x[:1])["params"]
        kept[remat] = _residual_bytes(lambda p: jnp.mean(model.apply({"params": p}, x)[0]), params)
    assert kept[True] < 0.25 * kept[False], kept
