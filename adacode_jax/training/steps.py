"""Training state and the jitted generator + discriminator step of every stage
(docs/official.md#losses).

One iteration, as the reference's ``optimize_parameters``:

1. Stage III only: the frozen stage II teacher encodes the GT batch (indices, f̂, x̂).
2. Generator step: forward, every loss term of the stage, one train-mode D call on the output
   (it advances D's spectral-norm vectors, as in the reference), Adam on the trainable
   generator parameters only (frozen modules get no gradient and no optimiser state).
3. Discriminator step: train-mode D on GT, then on the detached output, hinge loss, Adam.

Everything here is pure; :func:`adacode_jax.training.networks.jit_train_step` jits it with shardings.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from adacode_jax.training import losses
from adacode_jax.models import perceptual


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs besides the data iterator (which Orbax saves beside it)."""

    step: jnp.ndarray
    g_params: Any          # the whole generator, frozen modules included
    g_opt: Any             # Adam state of the trainable generator subtree
    d_params: Any
    d_spectral: Any        # spectral-norm u, v of the discriminator
    d_opt: Any


@dataclasses.dataclass(frozen=True)
class Networks:
    """The modules and constant (non-trained) weights a step needs."""

    generator: Any
    discriminator: Any
    lpips: Any | None          # LPIPS-vgg module (None when its weight is 0)
    vgg19: Any | None          # stage I semantic target network
    teacher: Any | None        # stage III: the stage II network (HQ)
    g_tx: optax.GradientTransformation
    d_tx: optax.GradientTransformation
    frozen: tuple[str, ...]


def is_frozen(name: str, keywords) -> bool:
    """The reference's rule: a module is frozen if any keyword is a substring of its name."""
    return any(k in name for k in keywords)


def split_params(params: dict, keywords) -> tuple[dict, dict]:
    """(trainable, frozen) top-level generator modules."""
    train = {k: v for k, v in params.items() if not is_frozen(k, keywords)}
    frozen = {k: v for k, v in params.items() if is_frozen(k, keywords)}
    return train, frozen


def learning_rate(peak: float, cfg: ml_collections.ConfigDict) -> optax.Schedule:
    """Constant (reference) or cosine, each after an optional linear warm-up."""
    warm = int(cfg.warmup_steps)
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak, max(warm, 1), int(cfg.num_steps))
    if warm:
        return optax.join_schedules([optax.linear_schedule(0.0, peak, warm),
                                     optax.constant_schedule(peak)], [warm])
    return optax.constant_schedule(peak)


def optimizers(cfg: ml_collections.ConfigDict):
    """Adam for G and D with the reference's betas (0.9, 0.99) and no weight decay; with
    ``cfg.grad_clip > 0`` each gradient is first clipped to that global norm (the reference
    does not clip)."""
    g = optax.adam(learning_rate(cfg.lr_g, cfg), b1=cfg.b1, b2=cfg.b2)
    d = optax.adam(learning_rate(cfg.lr_d, cfg), b1=cfg.b1, b2=cfg.b2)
    clip = float(cfg.get("grad_clip", 0.0))
    if clip > 0:
        g = optax.chain(optax.clip_by_global_norm(clip), g)
        d = optax.chain(optax.clip_by_global_norm(clip), d)
    return g, d


def init_state(nets: Networks, g_params, d_vars) -> TrainState:
    trainable, _ = split_params(g_params, nets.frozen)
    return TrainState(step=jnp.zeros((), jnp.int32), g_params=g_params,
                      g_opt=nets.g_tx.init(trainable), d_params=d_vars["params"],
                      d_spectral=d_vars["spectral"], d_opt=nets.d_tx.init(d_vars["params"]))


# Caffe VGG19 input is 0-255 pixels minus the mean; torchvision's is (x - mean) / std on [0, 1]
# with std about 0.226: the Caffe features are about 255 * 0.226 times larger.
CAFFE_TO_TORCHVISION = 1.0 / (255.0 * 0.226)


def semantic_target_scale(vgg19, cfg) -> float:
    """The factor on VGG19 relu4_4 targets (``train.semantic_target_scale``; −1 = automatic)."""
    if cfg.semantic_target_scale > 0:
        return float(cfg.semantic_target_scale)
    return CAFFE_TO_TORCHVISION if getattr(vgg19, "preprocessing", "") == "caffe" else 1.0


def restart_dead_codes(state: TrainState, nets: Networks, usage, feat, key):
    """``(state, restarted)``: every trainable codebook's codes unused over a window (``usage``
    (K, max n_e) histograms) re-placed on random pre-quantisation vectors of ``feat``, the
    encoder output (B, h, w, C) of the current batch taken through that codebook's
    ``before_quant`` 1×1 conv (:func:`adacode_jax.models.quantizer.restart_dead_codes`).
    ``restarted``: (K,) codes re-placed per codebook (0 for frozen codebooks)."""
    from adacode_jax.models import quantizer

    g = dict(state.g_params)
    counts = []
    f = feat.reshape(-1, feat.shape[-1]).astype(jnp.float32)
    for k, (n_e, _) in enumerate(nets.generator.codebooks):
        name = f"quantize_group.{k}"
        if is_frozen(name, nets.frozen):
            counts.append(jnp.zeros((), jnp.int32))
            continue
        conv = g[f"before_quant_group.{k}"]
        z = f @ conv["kernel"][0, 0].astype(jnp.float32) + conv["bias"].astype(jnp.float32)
        book, n = quantizer.restart_dead_codes(g[name]["embedding"], usage[k, :n_e], z,
                                               jax.random.fold_in(key, k))
        g[name] = {**g[name], "embedding": book}
        counts.append(n.astype(jnp.int32))
    return state.replace(g_params=g), jnp.stack(counts)


def _usage_counts(indices, sizes) -> jnp.ndarray:
    """(K, max n_e) code histograms of a batch's indices (K, B, h, w)."""
    width = max(sizes)
    return jnp.stack([jax.nn.one_hot(indices[k], width, dtype=jnp.int32).sum(axis=(0, 1, 2))
                      for k in range(len(sizes))])


def make_train_step(nets: Networks, cfg: ml_collections.ConfigDict, stage: int,
                    d_one_batch: bool = False) -> Callable:
    """``train_step(state, batch, consts) -> (state, metrics, outputs)`` for ``stage``.

    ``d_one_batch``: the D step's two calls (real, then fake) run as one interleaved batch
    (same logits and u, v; one all-reduce of D's gradients under data parallelism).

    ``batch``: ``gt`` (B, S, S, 3), and ``lq`` for stage III; optional ``force_indices`` /
    ``teacher_force_indices`` (K, B, h, w) override the argmin (parity checks). ``consts``: the constant weights
    ``{"lpips": ..., "vgg19": ..., "teacher": ...}`` (passed, not closed over, so they are not
    baked into the compiled program). ``outputs`` holds the images and maps for summaries.
    """
    t = cfg
    sizes = [int(cb[0]) for cb in nets.generator.codebooks]
    semantic_scale = semantic_target_scale(nets.vgg19, cfg)
    # w_gan = 0: no adversarial term, so neither D call in the G step nor the D step is run
    # (D's weights, spectral state and optimiser stay as they are; about a third of a
    # compact step's time).
    use_gan = float(t.w_gan) != 0.0

    def d_apply(params, spectral, x, calls=1):
        logits, upd = nets.discriminator.apply({"params": params, "spectral": spectral}, x,
                                               train=True, calls=calls, mutable=["spectral"])
        return logits, upd["spectral"]

    def g_losses(trainable, frozen, state, batch, consts):
        params = {**frozen, **trainable}
        gt = batch["gt"]
        terms = {}
        if stage == 3:
            _, hq = nets.teacher.apply(consts["teacher"], gt,
                                       force_indices=batch.get("teacher_force_indices"))
            hq = jax.lax.stop_gradient(hq)
            out, aux = nets.generator.apply({"params": params}, batch["lq"], gt_indices=hq["indices"],
                                            force_indices=batch.get("force_indices"))
            terms["before_quant"] = (t.w_before_quant, losses.feature_loss(
                z=aux["feat_before_quant"], z_gt=hq["feat_before_quant"]))
            terms["after_quant"] = (t.w_after_quant, losses.feature_loss(
                z=aux["feat_before_decoder"], z_gt=hq["feat_before_decoder"]))
            terms["contrast"] = (t.w_contrast, losses.info_nce(
                f_lq=aux["feat_before_quant"], f_hq=hq["feat_before_quant"],
                temperature=t.contrast_temperature))
        else:
            out, aux = nets.generator.apply({"params": params}, gt,
                                            force_indices=batch.get("force_indices"))
        terms["codebook"] = (t.w_codebook, aux["codebook_loss"])
        terms["pix"] = (t.w_pix, losses.l1(pred=out, target=gt))
        if nets.lpips is not None:
            terms["lpips"] = (t.w_lpips, perceptual.lpips_distance(
                nets.lpips, consts["lpips"], out, gt).mean())
        if stage == 1 and nets.vgg19 is not None:
            target = perceptual.vgg19_features(nets.vgg19, consts["vgg19"], gt) * semantic_scale
            terms["semantic"] = (t.w_semantic, losses.semantic_loss(
                pred=aux["semantic_feat"], target=target))
        spectral = state.d_spectral
        if use_gan:
            fake_logits, spectral = d_apply(state.d_params, state.d_spectral, out)
            terms["g_gan"] = (t.w_gan, losses.hinge_g(fake_logits=fake_logits))
        total = sum(w * v for w, v in terms.values())
        metrics = {f"loss/{k}": v for k, (_, v) in terms.items()}
        metrics["loss/g_total"] = total
        return total, (metrics, out, aux, spectral)

    def train_step(state: TrainState, batch: dict, consts: dict):
        trainable, frozen = split_params(state.g_params, nets.frozen)
        grads, (metrics, out, aux, spectral) = jax.grad(g_losses, has_aux=True)(
            trainable, frozen, state, batch, consts)
        updates, g_opt = nets.g_tx.update(grads, state.g_opt, trainable)
        g_params = {**state.g_params, **optax.apply_updates(trainable, updates)}

        grad_norm_g = optax.tree.norm(grads)
        outputs = {"out": out, "usage": _usage_counts(aux["indices"], sizes)}
        if float(t.codebook_restart_every) > 0:
            outputs["feat"] = aux["feat_before_quant"]
        if "weight_maps" in aux:
            outputs["weight_maps"] = aux["weight_maps"]
        if not use_gan:
            metrics["grad_norm/g"] = grad_norm_g
            new = state.replace(step=state.step + 1, g_params=g_params, g_opt=g_opt)
            return new, metrics, outputs

        fake = jax.lax.stop_gradient(out)

        def d_loss(d_params):
            # D(real) then D(fake). As one batch, (B, 2, ...) -> (2B, ...) keeps each sample
            # on its device (no resharding) and D's gradients are sent once (SpectralConv).
            gt = batch["gt"]
            if d_one_batch:
                both = jnp.stack([gt, fake.astype(gt.dtype)], axis=1).reshape(-1, *gt.shape[1:])
                logits, sp = d_apply(d_params, spectral, both, calls=2)
                logits = logits.reshape(gt.shape[0], 2, *logits.shape[1:])
                real_logits, fake_logits = logits[:, 0], logits[:, 1]
            else:
                real_logits, sp = d_apply(d_params, spectral, gt)
                fake_logits, sp = d_apply(d_params, sp, fake)
            l_real, l_fake = losses.hinge_d(real_logits=real_logits, fake_logits=fake_logits)
            return l_real + l_fake, (l_real, l_fake, real_logits, fake_logits, sp)

        d_grads, (l_real, l_fake, real_logits, fake_logits, spectral) = jax.grad(
            d_loss, has_aux=True)(state.d_params)
        d_updates, d_opt = nets.d_tx.update(d_grads, state.d_opt, state.d_params)
        d_params = optax.apply_updates(state.d_params, d_updates)

        metrics.update({
            "loss/d_real": l_real, "loss/d_fake": l_fake,
            "d/real_logits": jnp.mean(real_logits), "d/fake_logits": jnp.mean(fake_logits),
            "grad_norm/g": grad_norm_g, "grad_norm/d": optax.tree.norm(d_grads),
        })
        new = state.replace(step=state.step + 1, g_params=g_params, g_opt=g_opt,
                            d_params=d_params, d_spectral=spectral, d_opt=d_opt)
        return new, metrics, outputs

    return train_step
