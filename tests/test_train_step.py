"""One whole stage III ×4 generator + discriminator step against the reference's loss fixture
(``losses_sr_x4_seed0.npz``): teacher = stage2 weights, student = sr_x4 weights, D = disc
weights in train mode; the reference's indices forced for student and teacher (README)."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from adacode_jax.configs import _base as config_lib
from adacode_jax.inference import convert
from adacode_jax.training import steps
from tests import reference as ref

# metric name -> fixture array (the G-step terms are unweighted in our metrics)
TERMS = {
    "loss/codebook": "loss/codebook_loss",
    "loss/before_quant": "loss/before_quant_loss",
    "loss/after_quant": "loss/after_quant_loss",
    "loss/contrast": "loss/contrast_loss",
    "loss/pix": "loss/l_pix",
    "loss/d_real": "loss/l_d_real",
    "loss/d_fake": "loss/l_d_fake",
}


@pytest.fixture(scope="module")
def one_step():
    r = ref.outputs("losses_sr_x4")
    student, g_vars = convert.load_official(ref.state_dict("sr_x4"), "sr_x4")
    teacher, t_vars = convert.load_official(ref.state_dict("stage2"), "stage2")
    disc, d_vars = convert.load_official(ref.state_dict("disc"), "disc")
    cfg = config_lib.base_config(3, "sr_x4").train
    cfg.w_lpips = 0.0                     # the fixture leaves LPIPS out
    g_tx, d_tx = steps.optimizers(cfg)
    nets = steps.Networks(student, disc, None, None, teacher, g_tx, d_tx, tuple(cfg.frozen))
    state = steps.init_state(nets, g_vars["params"], d_vars)
    batch = {"gt": ref.nhwc(r["gt"]), "lq": ref.nhwc(r["lq"]),
             "force_indices": r["aux/indices"][:, :, 0],
             "teacher_force_indices": r["hq/aux/indices"][:, :, 0]}
    step = jax.jit(steps.make_train_step(nets, cfg, stage=3))
    new_state, metrics, outputs = step(state, batch, {"teacher": t_vars})
    return r, state, jax.device_get(new_state), jax.device_get(metrics), jax.device_get(outputs)


def test_every_loss_term_of_the_fixture(one_step):
    r, _, _, m, _ = one_step
    for ours, theirs in TERMS.items():
        np.testing.assert_allclose(m[ours], r[theirs], rtol=1e-4, err_msg=ours)
    np.testing.assert_allclose(0.1 * m["loss/g_gan"], r["loss/l_g_gan"], rtol=1e-4)
    np.testing.assert_allclose(m["loss/g_total"], r["loss/l_g_total_without_lpips"], rtol=1e-4)
    assert "loss/lpips" not in m


def test_output_and_spectral_state_after_the_three_d_calls(one_step):
    r, _, new_state, _, outputs = one_step
    ref.assert_close(outputs["out"], ref.nhwc(r["out"]), "out")
    for conv, uv in new_state.d_spectral.items():
        for name in ("u", "v"):
            ref.assert_close(uv[name], r[f"d/uv_after_3/{conv}.weight_{name}"], f"{conv}.{name}")


def test_frozen_modules_unchanged_trainable_ones_updated(one_step):
    _, old, new, _, _ = one_step
    for name, tree in new.g_params.items():
        before = jax.device_get(old.g_params[name])
        same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(before)))
        assert same == steps.is_frozen(name, config_lib.FROZEN[3]), name
    # Adam state only for the trainable modules
    assert set(new.g_opt[0].mu) == {k for k in new.g_params if not steps.is_frozen(k, config_lib.FROZEN[3])}
    assert int(new.step) == 1
