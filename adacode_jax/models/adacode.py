"""The AdaCode generator for all three stages (docs/official.md#network-classes, paper §3).

One Linen module, :class:`AdaCodeNet`, covers the official ``FeMaSRNet`` (stage I, one
codebook), ``AdaCodeSRNet`` (stage II reconstruction, K codebooks) and
``AdaCodeSRNet_Contrast`` (stage III restoration: SR ×2/×4 and inpainting ×1). The forward:

    f          = encoder(x)                          32-level latent (LQ: after 4×6 Swin)
    z_k        = before_quant_k(f)                   1×1 conv per codebook
    z_q,k      = quantise_k(z_k)                     nearest code, straight-through
    w          = weight_predictor(f)                 (B, h, w, K), unnormalised
    x          = Σ_k w_k · after_quant_k(z_q,k)      paper Eq. 6, mixed after each 3×3 conv
    out        = out_conv(decoder(x [+ LQ shortcuts]))

Module names follow the official state-dict names; NHWC throughout; images in [0, 1].
Intermediate outputs are sown into the ``intermediates`` collection under the official module
names (``multiscale_encoder.blocks.1.swin_blks.0`` ...), for parity checks.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from adacode_jax.models.layers import CHANNELS, DownStage, UpStage, torch_conv
from adacode_jax.models.quantizer import VectorQuantizer
from adacode_jax.models.swin import SwinLayers

Dtype = Any


TAP_SUFFIX = ":out"


def _tap(module: nn.Module, name: str, x):
    """Sow ``x`` as the output of the submodule ``name`` (a suffix avoids a name clash)."""
    module.sow("intermediates", name + TAP_SUFFIX, x)


def taps(intermediates) -> dict:
    """``{official module name: output}`` from a sown ``intermediates`` collection."""
    from flax import traverse_util

    flat = traverse_util.flatten_dict(intermediates, sep=".")
    return {k[: -len(TAP_SUFFIX)]: v[0] for k, v in flat.items() if k.endswith(TAP_SUFFIX)}


class MultiScaleEncoder(nn.Module):
    """``in_conv`` (k4 p1: size − 1), stride-2 down stages to the 32 level, and for LQ
    networks a Swin stack plus two up stages whose outputs feed the decoder shortcuts.

    Returns the list of block outputs (``in_conv`` excluded), as the official encoder.
    """

    in_resolution: int
    depth: int
    lq_stage: bool
    channels: dict
    swin: dict
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        res = self.in_resolution
        x = torch_conv(self.channels[res], 4, padding=1, **kw, name="in_conv")(x)
        _tap(self, "in_conv", x)
        feats, i = [], 0
        for _ in range(self.depth):
            x = DownStage(self.channels[res // 2], self.remat, **kw, name=f"blocks.{i}")(x)
            _tap(self, f"blocks.{i}", x)
            feats.append(x)
            res, i = res // 2, i + 1
        if self.lq_stage:
            x = SwinLayers(**self.swin, **kw, name=f"blocks.{i}")(x)
            feats.append(x)
            i += 1
            for _ in range(2):
                x = UpStage(self.channels[res * 2], remat=self.remat, **kw, name=f"blocks.{i}")(x)
                _tap(self, f"blocks.{i}", x)
                feats.append(x)
                res, i = res * 2, i + 1
        return feats


class WeightPredictor(nn.Module):
    """``blocks.0``: Swin stack on f; ``blocks.1``: 1×1 conv to K maps. No softmax unless asked."""

    num_codebooks: int
    softmax: bool
    swin: dict
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, f):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = SwinLayers(**self.swin, **kw, name="blocks.0")(f)
        w = torch_conv(self.num_codebooks, 1, **kw, name="blocks.1")(h).astype(jnp.float32)
        return jax.nn.softmax(w, axis=-1) if self.softmax else w


class AdaCodeNet(nn.Module):
    """AdaCode generator. See the module docstring for the forward.

    Attributes:
      codebooks: ``(n_e, e_dim)`` per basis codebook, in checkpoint order.
      scale_factor: output / input size: 4 or 2 for SR, 1 for inpainting and HQ networks.
      lq_stage: stage III (LQ encoder with Swin and decoder shortcuts) vs HQ (stages I, II).
      single_codebook: the stage I ``FeMaSRNet`` layout: no weight predictor, and the
        after-quant conv stored as ``after_quant_group.0.conv``.
      use_semantic_loss: stage I's ``conv_semantic`` head (1×1 conv 256→512 + ReLU on z_q).
      weight_softmax: softmax over the K weight maps (off in every official config).
      use_residual: add the LQ up-stage outputs to decoder blocks 1 and 2.
      gt_resolution, codebook_scale: fix the pyramid depth (256 / 32 → 3 levels).
      channels: channel table ``C[r]`` as ``((r, C), ...)``.
      swin: SwinLayers settings (dim, num_rstb, depth, heads, window, mlp_ratio).
      remat: rematerialise Swin blocks and the encoder/decoder ResBlocks in the backward pass
        (memory for compute; same parameters and, up to float32 summation order, numbers).
      dtype, param_dtype: compute and storage dtypes. The quantiser is always float32.
    """

    codebooks: Sequence[tuple[int, int]]
    scale_factor: int = 1
    lq_stage: bool = False
    single_codebook: bool = False
    use_semantic_loss: bool = False
    weight_softmax: bool = False
    use_residual: bool = True
    gt_resolution: int = 256
    codebook_scale: int = 32
    channels: tuple = tuple(CHANNELS.items())
    swin_dim: int = 256
    swin_num_rstb: int = 4
    swin_depth: int = 6
    swin_heads: int = 8
    window_size: int = 8
    mlp_ratio: float = 4.0
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def scale(self) -> int:
        return self.scale_factor if self.lq_stage else 1

    @property
    def max_depth(self) -> int:
        return int(math.log2(self.gt_resolution // self.codebook_scale))

    @property
    def encode_depth(self) -> int:
        return int(math.log2(self.gt_resolution // self.scale // self.codebook_scale))

    @property
    def pad_multiple(self) -> int:
        """Input sizes must be multiples of this (the Swin window on the latent grid)."""
        return self.window_size * 2 ** self.encode_depth

    def _swin(self) -> dict:
        return dict(dim=self.swin_dim, num_rstb=self.swin_num_rstb, depth=self.swin_depth,
                    heads=self.swin_heads, window=self.window_size, mlp_ratio=self.mlp_ratio,
                    remat=self.remat)

    # ---- forward -------------------------------------------------------------------------
    @nn.compact
    def __call__(self, x, *, gt_indices=None, force_indices=None, codebook_mask=None):
        """x: (B, H, W, 3) float in [0, 1] → (out (B, sH, sW, 3) float32, aux dict).

        ``gt_indices`` / ``force_indices``: (K, B, h, w) integer code indices; the first
        switches the codebook loss to the stage III form, the second overrides the argmin.
        ``codebook_mask``: optional (K,) factors on the mixing weights, ``Σ_k m_k w_k ·
        after_quant_k(z_q,k)`` (0 drops codebook k; the codebook explorer); None (default) is
        exactly Eq. 6. ``aux["weight_maps"]`` stays the predicted, unmasked ``w``.
        aux: ``indices`` (K, B, h, w) the codes used, ``nearest_indices`` (only when forced:
        the argmin codes), ``weight_maps`` (B, h, w, K; not for stage I),
        ``feat_before_quant`` and ``feat_before_decoder`` (B, h, w, 256), ``codebook_loss``,
        and ``semantic_feat`` (B, h, w, 512) with ``use_semantic_loss``.
        """
        chan = dict(self.channels)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        k_books = len(self.codebooks)
        feats = MultiScaleEncoder(self.gt_resolution // self.scale, self.encode_depth,
                                  self.lq_stage, chan, self._swin(), self.remat, **kw,
                                  name="multiscale_encoder")(
            jax.lax.stop_gradient(x).astype(self.dtype))
        if self.lq_stage:
            f, shortcuts = feats[-3], feats[-2:]
        else:
            f, shortcuts = feats[-1], []
        cb_ch = chan[self.codebook_scale]

        mixed, indices, nearest, loss, semantic = 0.0, [], [], 0.0, None
        weights = None
        if not self.single_codebook:
            weights = WeightPredictor(k_books, self.weight_softmax, self._swin(), **kw,
                                      name="weight_predictor")(f)
        for k, (n_e, e_dim) in enumerate(self.codebooks):
            z = torch_conv(e_dim, 1, **kw, name=f"before_quant_group.{k}")(f)
            z_q, l_k, idx, near = VectorQuantizer(n_e, e_dim, name=f"quantize_group.{k}")(
                z, gt_indices=None if gt_indices is None else gt_indices[k],
                force_indices=None if force_indices is None else force_indices[k])
            if self.single_codebook:
                a = _CombineQuant(cb_ch, **kw, name=f"after_quant_group.{k}")(z_q.astype(self.dtype))
                if self.use_semantic_loss:
                    semantic = nn.relu(torch_conv(512, 1, **kw, name="conv_semantic.0")(
                        z_q.astype(self.dtype)))
                mixed = mixed + a
            else:
                a = torch_conv(cb_ch, 3, **kw, name=f"after_quant_group.{k}")(z_q.astype(self.dtype))
                w_k = weights[..., k:k + 1]
                if codebook_mask is not None:
                    w_k = w_k * jnp.asarray(codebook_mask, jnp.float32)[k]
                mixed = mixed + w_k.astype(self.dtype) * a
            indices.append(idx)
            nearest.append(near)
            loss = loss + l_k

        h = mixed
        for i in range(self.max_depth):
            if i > 0 and self.lq_stage and self.use_residual:
                h = h + shortcuts[i - 1]
            res = self.codebook_scale * 2 ** i
            h = UpStage(chan[res * 2], prefix="block.", remat=self.remat, **kw,
                        name=f"decoder_group.{i}")(h)
            _tap(self, f"decoder_group.{i}", h)
        out = torch_conv(3, 3, **kw, name="out_conv")(h).astype(jnp.float32)

        aux = {"indices": jnp.stack(indices), "feat_before_quant": f.astype(jnp.float32),
               "feat_before_decoder": jnp.asarray(mixed).astype(jnp.float32),
               "codebook_loss": loss}
        if force_indices is not None:
            aux["nearest_indices"] = jnp.stack(nearest)
        if weights is not None:
            aux["weight_maps"] = weights
        if semantic is not None:
            aux["semantic_feat"] = semantic.astype(jnp.float32)
        return out, aux

    def restore_padded(self, x, *, gt_indices=None, force_indices=None, codebook_mask=None):
        """The official ``test()``: mirror-pad bottom/right to ``(n // m + 1)·m`` (always at
        least one pixel), run the forward, crop to ``scale ×`` the input size.

        ``force_indices`` refer to the padded latent grid.
        """
        m = self.pad_multiple
        _, h, w, _ = x.shape
        ph, pw = (h // m + 1) * m - h, (w // m + 1) * m - w
        xp = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="symmetric")
        out, aux = self(xp, gt_indices=gt_indices, force_indices=force_indices,
                        codebook_mask=codebook_mask)
        return out[:, : h * self.scale, : w * self.scale], aux


class _CombineQuant(nn.Module):
    """Stage I's ``CombineQuantBlock(256, 0, 256)``: one 3×3 conv stored as ``.conv``."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        return torch_conv(self.features, 3, dtype=self.dtype, param_dtype=self.param_dtype,
                          name="conv")(x)
