"""Pure loss functions of AdaCode training (docs/official.md#losses).

Every function is keyword-only and side-effect free. Inputs are NHWC (features ``(B, h, w, c)``,
images ``(B, H, W, 3)`` in [0, 1]; logits ``(B, H, W, 1)`` or any shape). Inputs are cast to
float32 first and every reduction runs in float32, so a bfloat16 caller still gets a float32
loss. Contractions use ``Precision.HIGHEST`` so that TPUs and GPUs do not drop to bf16/TF32
inside the Gram matrices and similarity matrices.

Loss weights are not applied here (the 0.1 of the GAN term, the 1.0 of the others): they live in
the config and are applied by the caller. The LPIPS term lives in :mod:`adacode_jax.models.perceptual`
because it needs pretrained weights.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST
# The commitment weight of the quantiser (``beta = 0.25``), also the MSE weight of
# ``feature_loss`` (docs/official.md#quantizer-and-codebooks).
BETA = 0.25


def _f32(x: jax.Array) -> jax.Array:
    return jnp.asarray(x, jnp.float32)


def _mse(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(a - b))


def l1(*, pred: jax.Array, target: jax.Array) -> jax.Array:
    """Mean absolute error (``l_pix``, BasicSR ``L1Loss`` with mean reduction).

    Args:
      pred, target: arrays of the same shape, e.g. ``(B, H, W, 3)`` images in [0, 1].

    Returns:
      scalar float32.
    """
    return jnp.mean(jnp.abs(_f32(pred) - _f32(target)))


def mse(*, pred: jax.Array, target: jax.Array) -> jax.Array:
    """Mean squared error over every element. Returns a float32 scalar."""
    return _mse(_f32(pred), _f32(target))


def gram(*, a: jax.Array, b: jax.Array) -> jax.Array:
    """Squared distance of per-sample Gram matrices (docs/official.md#quantizer-and-codebooks).

    With ``A_n`` sample n reshaped to ``(h·w, c)``, ``G_a[n] = A_nᵀ A_n / (h·w)``; the result is
    the mean over ``(B, c, c)`` of ``(G_a − G_b)²``. No stop-gradient is applied here.

    Args:
      a, b: ``(B, h, w, c)`` features.

    Returns:
      scalar float32.
    """
    a, b = _f32(a), _f32(b)
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"gram expects two (B, h, w, c) arrays of one shape, got {a.shape}, {b.shape}")
    bsz, h, w, c = a.shape
    a = a.reshape(bsz, h * w, c)
    b = b.reshape(bsz, h * w, c)
    g_a = jnp.einsum("bnc,bnd->bcd", a, a, precision=_HIGHEST) / (h * w)
    g_b = jnp.einsum("bnc,bnd->bcd", b, b, precision=_HIGHEST) / (h * w)
    return _mse(g_a, g_b)


def feature_loss(*, z: jax.Array, z_gt: jax.Array) -> jax.Array:
    """``0.25·mean((sg z_gt − z)²) + gram(z, sg z_gt)`` (F(a, b) in the reference,
    docs/official.md#losses).

    Used for ``l_before_quant`` (encoder feature vs the teacher's), ``l_after_quant`` (mixed
    features vs the teacher's) and the GT-index codebook loss. ``z_gt`` is a target: no gradient
    reaches it.

    Args:
      z: ``(B, h, w, c)`` student features.
      z_gt: ``(B, h, w, c)`` target features.

    Returns:
      scalar float32.
    """
    z = _f32(z)
    z_gt = jax.lax.stop_gradient(_f32(z_gt))
    return BETA * _mse(z_gt, z) + gram(a=z, b=z_gt)


def vq_loss(*, z: jax.Array, z_q: jax.Array) -> jax.Array:
    """Quantiser loss without GT indices (stages I and II,
    docs/official.md#quantizer-and-codebooks).

    ``mean((z_q − sg z)²) + 0.25·mean((sg z_q − z)²)``: the codebook term moves the codes towards
    the encoder output, the commitment term moves the encoder output towards its codes.

    Args:
      z: ``(B, h, w, e)`` encoder output (the quantiser input).
      z_q: ``(B, h, w, e)`` selected codes ``E[argmin]`` (before the straight-through estimator).

    Returns:
      scalar float32.
    """
    z, z_q = _f32(z), _f32(z_q)
    sg = jax.lax.stop_gradient
    return _mse(z_q, sg(z)) + BETA * _mse(sg(z_q), z)


def vq_loss_gt(*, z: jax.Array, z_gt: jax.Array) -> jax.Array:
    """Quantiser loss with GT indices (stage III): ``feature_loss(z, E[gt_idx])``
    (docs/official.md#quantizer-and-codebooks).

    Args:
      z: ``(B, h, w, e)`` quantiser input of the LQ branch.
      z_gt: ``(B, h, w, e)`` the teacher's codes ``E[gt_indices]``.

    Returns:
      scalar float32.
    """
    return feature_loss(z=z, z_gt=z_gt)


def hinge_g(*, fake_logits: jax.Array) -> jax.Array:
    """Generator side of the hinge GAN loss, ``−mean(D(fake))`` (unweighted; config uses 0.1).

    Args:
      fake_logits: discriminator logits of generated images, e.g. ``(B, H, W, 1)``.

    Returns:
      scalar float32.
    """
    return -jnp.mean(_f32(fake_logits))


def hinge_d(*, real_logits: jax.Array, fake_logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Discriminator hinge loss terms ``(mean(relu(1 − real)), mean(relu(1 + fake)))``.

    The official step backpropagates the two terms separately (two backward calls); their sum
    has the same gradient. The caller stops the gradient into the generator for ``fake``.

    Args:
      real_logits: logits of ground-truth images, any shape.
      fake_logits: logits of generated images, any shape.

    Returns:
      ``(l_d_real, l_d_fake)``, float32 scalars.
    """
    l_real = jnp.mean(jax.nn.relu(1.0 - _f32(real_logits)))
    l_fake = jnp.mean(jax.nn.relu(1.0 + _f32(fake_logits)))
    return l_real, l_fake


def _unit_channels(f: jax.Array) -> jax.Array:
    """L2-normalise over the last axis, dividing by ``max(‖f‖, 1e-12)`` (``F.normalize``)."""
    norm = jnp.sqrt(jnp.sum(jnp.square(f), axis=-1, keepdims=True))
    return f / jnp.maximum(norm, 1e-12)


def info_nce(*, f_lq: jax.Array, f_hq: jax.Array, temperature: float = 0.5) -> jax.Array:
    """InfoNCE between LQ and HQ encoder features (``ContrastiveLoss``, docs/official.md#losses).

    1. Each pixel's c-vector of ``f_lq`` and ``sg f_hq`` is normalised to unit length.
    2. ``r = concat([f_lq, f_hq])`` holds 2B samples.
    3. ``S[a, b]`` is the per-pixel cosine similarity of ``r_a`` and ``r_b`` averaged over h·w.
    4. With partner ``p(a) = (a + B) mod 2B``,
       ``ℓ_a = −log(exp(S[a, p(a)]/τ) / Σ_{k≠a} exp(S[a, k]/τ))`` (the positive is in the sum).
    5. The loss is the mean of ``ℓ_a`` over the 2B samples.

    Computed as ``logsumexp_{k≠a}(S[a, k]/τ) − S[a, p(a)]/τ``, which is the same number without
    overflow for small τ. The negatives come only from this batch, so the loss depends on B.

    Args:
      f_lq: ``(B, h, w, c)`` features of the LQ branch.
      f_hq: ``(B, h, w, c)`` features of the frozen HQ teacher (no gradient reaches them).
      temperature: τ (a fixed buffer of 0.5 in the reference).

    Returns:
      scalar float32.
    """
    f_lq = _f32(f_lq)
    f_hq = jax.lax.stop_gradient(_f32(f_hq))
    if f_lq.shape != f_hq.shape or f_lq.ndim != 4:
        raise ValueError(f"info_nce expects two (B, h, w, c) arrays of one shape, got {f_lq.shape}, {f_hq.shape}")
    bsz, h, w, _ = f_lq.shape
    r = jnp.concatenate([_unit_channels(f_lq), _unit_channels(f_hq)], axis=0)
    sim = jnp.einsum("ahwc,bhwc->ab", r, r, precision=_HIGHEST) / (h * w)
    logits = sim / temperature
    n = 2 * bsz
    idx = jnp.arange(n)
    off_diagonal = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, logits)
    log_denominator = jax.nn.logsumexp(off_diagonal, axis=1)
    positives = logits[idx, (idx + bsz) % n]
    return jnp.mean(log_denominator - positives)


def semantic_loss(*, pred: jax.Array, target: jax.Array) -> jax.Array:
    """Stage I semantic loss: ``MSE(conv_semantic(z_q), VGG19_relu4_4(image))``
    (docs/official.md#stage-i-network).

    The target features come from a frozen network; no gradient reaches them.

    Args:
      pred: ``(B, 32, 32, 512)`` output of the ``conv_semantic`` head.
      target: ``(B, 32, 32, 512)`` VGG19 relu4_4 features of the input image.

    Returns:
      scalar float32.
    """
    return _mse(_f32(pred), jax.lax.stop_gradient(_f32(target)))
