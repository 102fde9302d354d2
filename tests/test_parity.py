"""Our networks against the official PyTorch code's outputs (docs/official.md#reference-outputs).

Weights come from the reference's numpy generator (seed 0) and go through our converter.
Criteria (the reference README, "Comparing an implementation"):
  * argmin code indices equal wherever the reference's gap to the second code is >= 1e-2;
  * with the reference's indices forced into the quantiser, outputs, weight maps and features
    within 1e-3 · max|ref| (the float32 noise floor is about 3e-5 relative).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacode_jax.inference import convert
from adacode_jax.models.adacode import taps
from tests import reference as ref

GEN_KINDS = ("stage1", "stage2", "sr_x4", "sr_x2", "inpaint")
# Parameter counts of the official networks (docs/official.md#parameter-counts-and-flops).
PARAM_COUNTS = {"stage1": 11_062_339, "stage2": 35_438_088, "sr_x4": 57_321_352,
                "sr_x2": 59_972_616, "inpaint": 60_634_696, "disc": 4_376_897}
# (kind, prefix of the stored arrays): the second inputs are non-square / batch 2.
CASES = [(k, "") for k in GEN_KINDS] + [("stage2", "ns/"), ("sr_x4", "ns/")]


@functools.cache
def converted(kind: str):
    return convert.load_official(ref.state_dict(kind), kind)


def _indices(a: np.ndarray) -> np.ndarray:
    return np.asarray(a)[:, :, 0]       # (K, B, 1, h, w) -> (K, B, h, w)


@functools.cache
def run(kind: str, prefix: str, padded: bool):
    """Our forward (or padded path) with the reference's indices forced, plus its taps."""
    model, variables = converted(kind)
    r = ref.outputs(kind)
    x = ref.nhwc(r[prefix + "input"])
    forced = _indices(r[prefix + ("test/indices" if padded else "aux/indices")])

    @jax.jit
    def apply(v, x, idx):
        return model.apply(v, x, force_indices=idx, mutable=["intermediates"],
                           method="restore_padded" if padded else None)

    (out, aux), state = apply(variables, x, forced)
    return jax.tree.map(np.asarray, (out, aux, taps(state["intermediates"])))


def _gaps(r, prefix, key, k_books):
    return np.stack([r[f"{prefix}{key}/{k}"] for k in range(k_books)])


@pytest.mark.parametrize("kind", GEN_KINDS + ("disc",))
def test_generated_weights_match_manifest(kind):
    assert ref.state_sha256(ref.state_dict(kind)) == ref.manifest()["kinds"][kind]["state_sha256"]


@pytest.mark.parametrize("kind", GEN_KINDS + ("disc",))
def test_parameter_counts(kind):
    model, variables = converted(kind)
    n = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(variables["params"]))
    assert n == PARAM_COUNTS[kind] == ref.manifest()["kinds"][kind]["n_params"]


@pytest.mark.parametrize("kind,prefix", CASES)
def test_forward_indices_at_clear_gaps(kind, prefix):
    r = ref.outputs(kind)
    _, aux, _ = run(kind, prefix, False)
    want = _indices(r[prefix + "aux/indices"])
    clear = _gaps(r, prefix, "gap", want.shape[0]) >= 1e-2
    assert aux["nearest_indices"].shape == want.shape
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(aux["nearest_indices"][clear], want[clear])


@pytest.mark.parametrize("kind,prefix", CASES)
def test_forward_outputs(kind, prefix):
    r = ref.outputs(kind)
    out, aux, _ = run(kind, prefix, False)
    ref.assert_close(out, ref.nhwc(r[prefix + "out"]), "out")
    ref.assert_close(aux["feat_before_quant"], ref.nhwc(r[prefix + "aux/feat_before_quant"]),
                     "feat_before_quant")
    ref.assert_close(aux["feat_before_decoder"], ref.nhwc(r[prefix + "aux/feat_before_decoder"]),
                     "feat_before_decoder")
    if kind == "stage1":
        assert "weight_maps" not in aux
    else:
        ref.assert_close(aux["weight_maps"], ref.nhwc(r[prefix + "aux/weight"]), "weight_maps")
    np.testing.assert_allclose(aux["codebook_loss"], r[prefix + "loss/codebook_loss"], rtol=1e-4)


@pytest.mark.parametrize("kind,prefix", CASES)
def test_padded_path(kind, prefix):
    r = ref.outputs(kind)
    out, aux, _ = run(kind, prefix, True)
    ref.assert_close(out, ref.nhwc(r[prefix + "out_test"]), "out_test")
    want = _indices(r[prefix + "test/indices"])
    clear = _gaps(r, prefix, "test/gap", want.shape[0]) >= 1e-2
    np.testing.assert_array_equal(aux["nearest_indices"][clear], want[clear])


@pytest.mark.parametrize("kind", GEN_KINDS)
def test_intermediate_taps(kind):
    """Every stored module output: float16 channel slices and full-tensor statistics."""
    r = ref.outputs(kind)
    _, _, ours = run(kind, "", False)
    names = [k[len("tap/"):] for k in r if k.startswith("tap/")]
    assert names, "reference has no taps"
    for name in names:
        assert name in ours, f"no tap {name} in our network"
        mine = np.asarray(ours[name], np.float64).transpose(0, 3, 1, 2)[:, : r["tap/" + name].shape[1]]
        tap = r["tap/" + name].astype(np.float64)
        # float16 storage rounds by up to 2^-11 relative on top of the float32 error.
        tol = 1e-3 * np.abs(tap).max()
        assert np.abs(mine - tap).max() <= tol, name
        full = np.asarray(ours[name], np.float64)
        np.testing.assert_allclose([full.mean(), full.std(), full.min(), full.max()],
                                   r["tapstat/" + name], rtol=1e-3, atol=1e-4, err_msg=name)


def test_index_tie_breaking_takes_first_code():
    from adacode_jax.models.quantizer import nearest_code

    book = jnp.asarray([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    z = jnp.asarray([[[[0.5, 0.5], [1.0, 0.0]]]])        # tie between 0 and 1; exact 0 == 2
    idx, _ = nearest_code(z, book)
    np.testing.assert_array_equal(np.asarray(idx), [[[0, 0]]])


# ---- discriminator -----------------------------------------------------------------------

def _uv(variables):
    from flax import traverse_util

    flat = traverse_util.flatten_dict(variables["spectral"])
    return {f"{p[0]}.weight_{p[1]}": np.asarray(v) for p, v in flat.items()}


def test_discriminator_eval_and_one_power_iteration():
    model, variables = converted("disc")
    r = ref.outputs("disc")
    x = ref.nhwc(r["input"])
    out = jax.jit(model.apply)(variables, x)
    ref.assert_close(out, ref.nhwc(r["out"]), "disc eval")
    out_train, state = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["spectral"]))(
        variables, x)
    ref.assert_close(out_train, ref.nhwc(r["out_train"]), "disc train")
    new_uv = _uv(state)
    for key, value in new_uv.items():
        ref.assert_close(value, r["uv_after_train/" + key], key)
    # Eval mode does not touch u and v.
    for key, value in _uv(variables).items():
        np.testing.assert_array_equal(value, ref.state_dict("disc")[key])


def test_discriminator_uv_sequence_of_the_training_step():
    """The loss fixture's three train-mode D calls: logits, and u, v after each call."""
    model, variables = converted("disc")
    r = ref.outputs("losses_sr_x4")
    step = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["spectral"]))
    calls = [("out", "d/fake_g"), ("gt", "d/real"), ("out", "d/fake")]
    for i, (x, logits) in enumerate(calls, start=1):
        out, state = step(variables, ref.nhwc(r[x]))
        ref.assert_close(out, ref.nhwc(r[logits]), logits)
        variables = {**variables, "spectral": state["spectral"]}
        for key, value in _uv(variables).items():
            ref.assert_close(value, r[f"d/uv_after_{i}/{key}"], f"call {i} {key}")


def test_discriminator_two_interleaved_calls_equal_the_reference_calls():
    """The D step runs D(real) and D(fake) as one interleaved batch (``calls=2``): the logits
    of each half and u, v afterwards equal the reference's second and third calls."""
    model, variables = converted("disc")
    r = ref.outputs("losses_sr_x4")
    one = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["spectral"]))
    _, state = one(variables, ref.nhwc(r["out"]))              # the G step's call
    variables = {**variables, "spectral": state["spectral"]}
    gt, fake = ref.nhwc(r["gt"]), ref.nhwc(r["out"])
    both = np.stack([gt, fake], axis=1).reshape(-1, *gt.shape[1:])
    logits, state = jax.jit(lambda v, x: model.apply(v, x, train=True, calls=2,
                                                     mutable=["spectral"]))(variables, both)
    logits = np.asarray(logits).reshape(gt.shape[0], 2, *logits.shape[1:])
    ref.assert_close(logits[:, 0], ref.nhwc(r["d/real"]), "d/real (interleaved)")
    ref.assert_close(logits[:, 1], ref.nhwc(r["d/fake"]), "d/fake (interleaved)")
    for key, value in _uv({"spectral": state["spectral"]}).items():
        ref.assert_close(value, r[f"d/uv_after_3/{key}"], f"interleaved {key}")
    with pytest.raises(ValueError, match="interleaved D calls"):
        model.apply(variables, both[:3], train=True, calls=2, mutable=["spectral"])
