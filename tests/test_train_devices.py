"""Training on several devices equals one device, resumes across device counts, and stops on a
non-finite loss: the tiny stage II mechanics config (tests/test_train.py), apart from the stage
chain so that the two halves can run on different test workers."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from adacode_jax.training import logs, steps, loop as train
from tests.test_train import losses_by_step, mechanics_config


def _linear_optimizers(cfg):
    """SGD with momentum 0.9 for G and D, at the configs' learning rates, for comparisons
    across device counts: a stateful optimiser (its momentum must survive a move between
    meshes) whose update is linear in the gradients.

    Adam's first updates are about lr * sign(g): a gradient entry near zero whose sign differs
    by summation order alone moves its weight by 2 * lr, which turned float32 rounding into
    loss differences of 2.4e-3 at step 3 on an AVX2 machine. Under a linear update a relative
    gradient difference d moves the weights by lr * d * |g|, and the next losses differ by
    about d again."""
    import optax

    return (optax.sgd(steps.learning_rate(cfg.lr_g, cfg), momentum=0.9),
            optax.sgd(steps.learning_rate(cfg.lr_d, cfg), momentum=0.9))


@pytest.fixture
def linear_optimizer(monkeypatch):
    monkeypatch.setattr(steps, "optimizers", _linear_optimizers)


# Losses of a run on 8 devices (4 data x 2 FSDP) against one device on the same batches: only
# the order of float32 sums differs.
# - From the same parameters (step 1; the first step after a move): a few roundings of a
#   reduction over batch x pixels. 2.1e-7 measured on AVX2 and 2.3e-7 on AVX-512; the bound
#   is 2e-6, about 16 x float32's 2^-23.
# - After one update from gradients reduced in two orders: 3.1e-6 measured (loss/g_gan, the
#   mean of D's logits, a small difference of large terms); the bound is 10x that.
# - Later steps are not compared: with any optimiser a vector-quantisation near-tie flips a
#   code and the GAN terms jump (1.2e-3 at step 3 and 7.7e-3 at step 4 under plain SGD).
SAME_PARAMS_RTOL, ONE_UPDATE_RTOL = 2e-6, 3e-5


def _assert_losses_match(a, b, step_rtol):
    for s, rtol in step_rtol.items():
        for k in a[s]:
            np.testing.assert_allclose(b[s][k], a[s][k], rtol=rtol, atol=1e-7, err_msg=f"{s} {k}")


def _mesh_config(num_steps, n):
    c = mechanics_config(num_steps=num_steps, checkpoint_every=2)
    c.data.batch_size = 8
    c.mesh.num_devices, c.mesh.fsdp = n, (2 if n == 8 else 1)   # 4 x 2: data and FSDP
    return c


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    """4 steps on one device at batch 8, checkpoints at 2 and 4: the reference of both
    device-count comparisons."""
    wd = str(tmp_path_factory.mktemp("one_device") / "run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(steps, "optimizers", _linear_optimizers)
        train.train_and_evaluate(_mesh_config(4, 1), wd)
    return wd


def test_eight_devices_with_fsdp_match_one_device(one_device, tmp_path, linear_optimizer):
    eight = str(tmp_path / "eight")
    train.train_and_evaluate(_mesh_config(2, 8), eight)
    a, b = losses_by_step(one_device), losses_by_step(eight)
    _assert_losses_match(a, b, {1: SAME_PARAMS_RTOL, 2: ONE_UPDATE_RTOL})
    # the comparison has teeth: one update moves the loss far more than the bound
    moved = abs(a[2]["loss/g_total"] - a[1]["loss/g_total"]) / abs(a[1]["loss/g_total"])
    assert moved > 100 * ONE_UPDATE_RTOL, moved


def test_resume_onto_a_different_device_count(one_device, tmp_path, linear_optimizer):
    """Saved on one device at step 2, resumed on a 4 x 2 (data x fsdp) mesh of 8: the same
    trajectory. The copy is the one-device run as if killed after logging step 4."""
    moved = str(tmp_path / "moved")
    shutil.copytree(one_device, moved)
    shutil.rmtree(os.path.join(moved, "checkpoints", "4"))
    train.train_and_evaluate(_mesh_config(4, 8), moved)
    a, b = losses_by_step(one_device), losses_by_step(moved)
    assert sorted(b) == [1, 2, 3, 4] and a[1] == b[1] and a[2] == b[2]
    # step 3 runs the restored parameters; step 4 follows one 8-device update that used the
    # restored momentum
    _assert_losses_match(a, b, {3: SAME_PARAMS_RTOL, 4: ONE_UPDATE_RTOL})


def test_non_finite_loss_stops_the_run_naming_step_and_term(tmp_path):
    """lr 1e12: step 1's losses are finite, its update is not. The loop reads metrics one
    step late, yet names step 2, and nothing non-finite is checkpointed."""
    with pytest.raises(logs.NonFiniteLossError, match=r"non-finite loss at step 2: loss/"):
        train.train_and_evaluate(mechanics_config(num_steps=8, lr_g=1e12, checkpoint_every=2),
                                 str(tmp_path / "nan"))
    saved = os.listdir(tmp_path / "nan" / "checkpoints")
    assert not [d for d in saved if d.isdigit()], saved
