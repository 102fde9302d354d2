"""The compact model family and the training aids it relies on: configs of every stage, sizes,
dead-code restarts (pure function and in the loop, resumed exactly), and the GAN-free step."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacode_jax.models import checkpointing
from adacode_jax.configs import _base as config_lib
from adacode_jax import models
from adacode_jax.training import networks, steps, loop as train
from adacode_jax.models import quantizer
from tests.test_train import get_config, losses_by_step, mechanics_config


@pytest.mark.parametrize("name,arg,kind", [
    ("stage1_codebook", "natural,compact", "stage1"),
    ("stage1_codebook", "all,compact", "stage1"),
    ("stage2_adacode", "compact", "stage2"),
    ("stage2_adacode", "compact,single", "stage2"),
    ("stage3_sr", "x4,compact", "sr_x4"),
    ("stage3_sr", "x2,compact", "sr_x2"),
    ("stage3_inpaint", "compact", "inpaint"),
])
def test_every_config_has_a_compact_variant(name, arg, kind):
    c = get_config(name, arg)
    if c.stage == 3:
        c.train.stage2_checkpoint = "somewhere"
    config_lib.validate(c)
    assert c.model.kind == kind and c.model.swin_dim == 128 and c.model.window_size == 4
    # stage III trains on 256² crops, the size it is used at; I and II on 96²
    assert c.train.w_gan == 0.0 and (c.data.crop_size, c.data.batch_size) == (
        (256, 2) if c.stage == 3 else (96, 4))
    # recipe choices on the corpus's validation split, never on the held-out set
    assert c.eval.path == os.path.join("data", "corpus", "val")
    src = c.data.sources[0]
    assert src["list_file"].endswith(".txt") and src["path"].endswith(os.path.join("corpus", "train"))


def test_compact_sizes():
    """Parameter counts of the compact family (reported in docs/reproduction.md)."""
    def count(kind, size):
        cfg = models.compact_model_config(kind)
        if kind == "stage1":
            cfg.use_semantic_loss = True
        net = models.build(cfg)
        shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
        return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))
    assert count("stage1", 96) == 2_721_763
    assert count("stage2", 96) == 3_298_798
    assert count("sr_x4", 32) == 3_845_462


def test_restart_dead_codes_replaces_only_unused_codes():
    book = jnp.arange(12.0).reshape(6, 2)
    usage = jnp.array([3, 0, 1, 0, 0, 7])
    cands = jnp.full((5, 2), -1.0) - jnp.arange(5.0)[:, None]
    new, n = quantizer.restart_dead_codes(book, usage, cands, jax.random.key(0))
    assert int(n) == 3
    np.testing.assert_array_equal(new[jnp.array([0, 2, 5])], book[jnp.array([0, 2, 5])])
    for i in (1, 3, 4):
        assert any(np.array_equal(new[i], c) for c in np.asarray(cands)), new[i]


def test_restart_keeps_frozen_codebooks():
    c = get_config("stage2_adacode", "tiny")
    nets, _ = networks.build_networks(c, {})
    state = jax.jit(networks.init_fn(c, nets))()
    usage = jnp.zeros((2, 64), jnp.int32)
    feat = jnp.ones((2, 8, 8, 32))
    new, n = steps.restart_dead_codes(state, nets, usage, feat, jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(n), [0, 0])       # stage II: codebooks frozen
    for k in range(2):
        np.testing.assert_array_equal(new.g_params[f"quantize_group.{k}"]["embedding"],
                                      state.g_params[f"quantize_group.{k}"]["embedding"])


def _stage1(**overrides):
    c = get_config("stage1_codebook", "portrait,tiny")
    c.train.update(dict(w_lpips=0.0, eval_every=0, image_every=0, log_every=1,
                        codebook_restart_every=2, checkpoint_every=4, lr_g=1e-2), **overrides)
    return c


def test_dead_code_restarts_revive_codes_and_resume_exactly(tmp_path):
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    train.train_and_evaluate(_stage1(num_steps=8), full)
    train.train_and_evaluate(_stage1(num_steps=4), part)
    train.train_and_evaluate(_stage1(num_steps=8), part)
    a, b = losses_by_step(full), losses_by_step(part)
    for s in (5, 6, 7, 8):
        assert a[s] == b[s], (s, a[s], b[s])
    restarted = [m for m in train_metrics(full) if "codebook/restarted" in m]
    assert sum(m["codebook/restarted"] for m in restarted) > 0
    _, va, _ = checkpointing.load_inference(os.path.join(full, "export", "generator"))
    _, vb, _ = checkpointing.load_inference(os.path.join(part, "export", "generator"))
    np.testing.assert_array_equal(va["params"]["quantize_group.0"]["embedding"],
                                  vb["params"]["quantize_group.0"]["embedding"])


def train_metrics(workdir):
    from tests.test_train import read_metrics
    return read_metrics(workdir)


def test_restart_cadence_must_divide_checkpoint_cadence():
    c = _stage1(num_steps=8, codebook_restart_every=3)
    with pytest.raises(ValueError, match="codebook_restart_every"):
        config_lib.validate(c)


def test_without_gan_the_discriminator_is_skipped_and_g_gets_the_same_update():
    """w_gan = 0 runs no D at all; G's update equals that of a vanishing GAN weight."""
    c = mechanics_config()
    nets, consts = networks.build_networks(c, {})
    state = jax.jit(networks.init_fn(c, nets))()
    rng = np.random.default_rng(0)
    batch = {"gt": rng.random((4, 64, 64, 3), np.float32)}
    out = {}
    for w in (0.0, 1e-30):
        t = c.train.copy_and_resolve_references()
        t.w_gan = w
        new, m, _ = jax.jit(steps.make_train_step(nets, t, 2))(state, batch, consts)
        out[w] = (new, m)
    (s0, m0), (s1, m1) = out[0.0], out[1e-30]
    assert "loss/d_real" not in m0 and "loss/g_gan" not in m0 and "loss/d_real" in m1
    for a, b in zip(jax.tree.leaves(s0.g_params), jax.tree.leaves(s1.g_params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(jax.tree.leaves(s0.d_params), jax.tree.leaves(state.d_params)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(s1.d_params), jax.tree.leaves(state.d_params)))


def test_model_sizes_reports_parameters_and_flops():
    from adacode_jax.tools import model_sizes

    s = model_sizes.size("compact", "sr_x4")
    assert s["params"] == 3_845_462
    assert 30.0 < s["gflops"] < 35.0          # 32.3 GFLOPs per 64² -> 256² image
    assert "| compact | disc |" in model_sizes.table(["compact"])


def test_grad_clip_bounds_what_adam_sees():
    cfg = config_lib.base_config(3, "sr_x4").train
    cfg.grad_clip = 1.0
    g_tx, d_tx = steps.optimizers(cfg)
    params = {"w": jnp.zeros(3)}
    _, state = g_tx.update({"w": jnp.array([3e6, 4e6, 0.0])}, g_tx.init(params), params)
    mu = np.asarray(state[1][0].mu["w"])             # Adam's first moment after one step
    np.testing.assert_allclose(mu, 0.1 * np.array([0.6, 0.8, 0.0]), rtol=1e-6)
    cfg.grad_clip = 0.0                               # the reference: plain Adam
    assert not isinstance(steps.optimizers(cfg)[0].init(params), tuple) or \
        hasattr(steps.optimizers(cfg)[0].init(params)[0], "mu")
