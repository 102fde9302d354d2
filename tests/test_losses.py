"""Loss functions against the official training step (the reference's losses_sr_x4_seed0.npz).

The fixture holds the tensors of one stage III ×4 step of the PyTorch code (B = 2) and every loss
term it produced. Each loss here is recomputed from the stored tensors alone, so no network and
no argmin is involved. Stored arrays are NCHW; they are moved to NHWC before use.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacode_jax.training import losses
from tests import reference

RTOL = 1e-4


def _nhwc(x):
    return jnp.asarray(np.moveaxis(x, 1, -1))


@pytest.fixture(scope="module")
def ref():
    return reference.outputs("losses_sr_x4")


@pytest.fixture(scope="module")
def state_dict():
    return reference.state_dict("sr_x4")


def _close(got, want, name):
    got, want = float(got), float(want)
    rel = abs(got - want) / abs(want)
    assert rel <= RTOL, f"{name}: got {got!r}, reference {want!r}, relative error {rel:.2e}"


def _codebook_loss_per_k(ref, state_dict):
    """Σ_k F(z_k, q_k): z_k = before_quant_group[k](f), q_k = E_k[teacher indices]."""
    f = _nhwc(ref["aux/feat_before_quant"])
    teacher_idx = ref["hq/aux/indices"]                    # (K, B, 1, h, w)
    per_k = []
    for k in range(teacher_idx.shape[0]):
        w = state_dict[f"before_quant_group.{k}.weight"][:, :, 0, 0]   # (out, in)
        b = state_dict[f"before_quant_group.{k}.bias"]
        z_k = jnp.einsum("bhwi,oi->bhwo", f, w, precision="highest") + b
        codebook = state_dict[f"quantize_group.{k}.embedding.weight"]  # (n_e, e_dim)
        q_k = jnp.asarray(codebook)[teacher_idx[k, :, 0]]             # (B, h, w, e_dim)
        per_k.append(losses.vq_loss_gt(z=z_k, z_gt=q_k))
    return jnp.stack(per_k)


def test_feature_losses(ref):
    f, f_hat = _nhwc(ref["aux/feat_before_quant"]), _nhwc(ref["hq/aux/feat_before_quant"])
    x, x_hat = _nhwc(ref["aux/feat_before_decoder"]), _nhwc(ref["hq/aux/feat_before_decoder"])
    _close(losses.feature_loss(z=f, z_gt=f_hat), ref["loss/before_quant_loss"], "before_quant_loss")
    _close(losses.feature_loss(z=x, z_gt=x_hat), ref["loss/after_quant_loss"], "after_quant_loss")


def test_contrast_loss(ref):
    f, f_hat = _nhwc(ref["aux/feat_before_quant"]), _nhwc(ref["hq/aux/feat_before_quant"])
    _close(losses.info_nce(f_lq=f, f_hq=f_hat, temperature=0.5), ref["loss/contrast_loss"], "contrast_loss")


def test_pixel_and_gan_losses(ref):
    _close(losses.l1(pred=_nhwc(ref["out"]), target=_nhwc(ref["gt"])), ref["loss/l_pix"], "l_pix")
    _close(0.1 * losses.hinge_g(fake_logits=_nhwc(ref["d/fake_g"])), ref["loss/l_g_gan"], "l_g_gan")
    l_real, l_fake = losses.hinge_d(real_logits=_nhwc(ref["d/real"]), fake_logits=_nhwc(ref["d/fake"]))
    _close(l_real, ref["loss/l_d_real"], "l_d_real")
    _close(l_fake, ref["loss/l_d_fake"], "l_d_fake")


def test_codebook_loss(ref, state_dict):
    per_k = _codebook_loss_per_k(ref, state_dict)
    for k, want in enumerate(ref["loss/codebook_loss_per_k"]):
        _close(per_k[k], want, f"codebook_loss_per_k[{k}]")
    _close(jnp.sum(per_k), ref["loss/codebook_loss"], "codebook_loss")


def test_generator_total_without_lpips(ref, state_dict):
    f, f_hat = _nhwc(ref["aux/feat_before_quant"]), _nhwc(ref["hq/aux/feat_before_quant"])
    x, x_hat = _nhwc(ref["aux/feat_before_decoder"]), _nhwc(ref["hq/aux/feat_before_decoder"])
    # Weights of the stage III ×4 yaml (docs/official.md#losses): semantic 0.1 (the term is 0
    # in stage III), before_quant 0, after_quant 1, contrast 1, pixel 1, GAN 0.1, codebook 1.
    total = (
        1.0 * jnp.sum(_codebook_loss_per_k(ref, state_dict))
        + 0.1 * float(ref["loss/semantic_loss"])
        + 0.0 * losses.feature_loss(z=f, z_gt=f_hat)
        + 1.0 * losses.feature_loss(z=x, z_gt=x_hat)
        + 1.0 * losses.info_nce(f_lq=f, f_hq=f_hat)
        + 1.0 * losses.l1(pred=_nhwc(ref["out"]), target=_nhwc(ref["gt"]))
        + 0.1 * losses.hinge_g(fake_logits=_nhwc(ref["d/fake_g"])))
    _close(total, ref["loss/l_g_total_without_lpips"], "l_g_total_without_lpips")


def _naive_info_nce(f_lq, f_hq, tau):
    """The README definition literally, in float64 numpy (exp, sum, log; no log-sum-exp)."""
    r = np.concatenate([f_lq, f_hq]).astype(np.float64)
    r = r / np.maximum(np.linalg.norm(r, axis=-1, keepdims=True), 1e-12)
    n, bsz = r.shape[0], r.shape[0] // 2
    s = np.einsum("ahwc,bhwc->ab", r, r) / (r.shape[1] * r.shape[2])
    e = np.exp(s / tau)
    terms = [-np.log(e[a, (a + bsz) % n] / (e[a].sum() - e[a, a])) for a in range(n)]
    return float(np.mean(terms))


@pytest.mark.parametrize("tau", [0.5, 0.005])
def test_info_nce_matches_definition_and_is_stable(tau):
    # All samples share a common component, so every S[a, b] is close to 1: at τ = 0.005,
    # S/τ ≈ 200 and a literal exp() overflows float32, while the loss itself stays O(1).
    rng = np.random.default_rng(0)
    base = rng.normal(size=(1, 4, 5, 8))
    f_lq = (base + 0.05 * rng.normal(size=(3, 4, 5, 8))).astype(np.float32)
    f_hq = (f_lq + 0.05 * rng.normal(size=f_lq.shape)).astype(np.float32)
    got = float(losses.info_nce(f_lq=f_lq, f_hq=f_hq, temperature=tau))
    want = _naive_info_nce(f_lq, f_hq, tau)
    assert 0.1 < want < 10
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_feature_loss_and_info_nce_send_no_gradient_to_targets():
    rng = np.random.default_rng(1)
    z = jnp.asarray(rng.normal(size=(2, 4, 4, 8)), jnp.float32)
    z_gt = jnp.asarray(rng.normal(size=(2, 4, 4, 8)), jnp.float32)
    g_z, g_gt = jax.grad(lambda a, b: losses.feature_loss(z=a, z_gt=b), argnums=(0, 1))(z, z_gt)
    assert float(jnp.abs(g_z).max()) > 0
    assert float(jnp.abs(g_gt).max()) == 0.0
    g_lq, g_hq = jax.grad(lambda a, b: losses.info_nce(f_lq=a, f_hq=b), argnums=(0, 1))(z, z_gt)
    assert float(jnp.abs(g_lq).max()) > 0
    assert float(jnp.abs(g_hq).max()) == 0.0
    g_sem = jax.grad(lambda b: losses.semantic_loss(pred=z, target=b))(z_gt)
    assert float(jnp.abs(g_sem).max()) == 0.0


def test_vq_loss_gradients_split_codebook_and_commitment():
    rng = np.random.default_rng(2)
    z = jnp.asarray(rng.normal(size=(2, 3, 3, 4)), jnp.float32)
    z_q = jnp.asarray(rng.normal(size=(2, 3, 3, 4)), jnp.float32)
    n = z.size
    g_z, g_q = jax.grad(lambda a, b: losses.vq_loss(z=a, z_q=b), argnums=(0, 1))(z, z_q)
    # Codebook term moves z_q with weight 1; commitment moves z with weight 0.25.
    np.testing.assert_allclose(g_q, 2.0 * (z_q - z) / n, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g_z, 0.25 * 2.0 * (z - z_q) / n, rtol=1e-5, atol=1e-7)
    value = float(losses.vq_loss(z=z, z_q=z_q))
    np.testing.assert_allclose(value, 1.25 * float(np.mean((np.asarray(z) - np.asarray(z_q)) ** 2)), rtol=1e-6)


def test_gram_matches_numpy_and_bf16_inputs_give_float32():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(2, 3, 5, 4))
    b = rng.normal(size=(2, 3, 5, 4))
    ga = np.einsum("bnc,bnd->bcd", a.reshape(2, 15, 4), a.reshape(2, 15, 4)) / 15
    gb = np.einsum("bnc,bnd->bcd", b.reshape(2, 15, 4), b.reshape(2, 15, 4)) / 15
    np.testing.assert_allclose(float(losses.gram(a=a, b=b)), np.mean((ga - gb) ** 2), rtol=1e-5)
    out = losses.feature_loss(z=jnp.asarray(a, jnp.bfloat16), z_gt=jnp.asarray(b, jnp.bfloat16))
    assert out.dtype == jnp.float32
    assert losses.l1(pred=jnp.ones(3, jnp.bfloat16), target=jnp.zeros(3, jnp.bfloat16)).dtype == jnp.float32
