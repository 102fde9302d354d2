"""Convolutional building blocks shared by every AdaCode network (docs/official.md#building-blocks).

Every array is NHWC. Module names follow the official PyTorch state-dict names segment for
segment (``conv.0.norm``, ``block.1`` ...), so ``".".join(path)`` of a Flax parameter is the
official key; :mod:`adacode_jax.inference.convert` relies on that.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from adacode_jax.ops.conv import (NHWC, conv_general_dilated, filter_grad_by_blocks,
                                     input_grad_stride1)

Dtype = Any

# Official channel table C[r], keyed by the resolution a 256x256 image has at that level.
CHANNELS = {8: 256, 16: 256, 32: 256, 64: 256, 128: 128, 256: 64, 512: 32}


def torch_conv(features: int, kernel: int, *, stride: int = 1, padding: int | None = None,
               use_bias: bool = True, dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, name: str | None = None) -> nn.Conv:
    """A conv with PyTorch's symmetric explicit padding (default ``kernel // 2``).

    With explicit padding the output size is ``floor((n + 2p - k) / s) + 1``, exactly as in
    torch: the k4/p1 ``in_conv`` shrinks by one pixel and k3/s2/p1 maps n to ceil(n / 2).
    """
    p = kernel // 2 if padding is None else padding
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((p, p), (p, p)), use_bias=use_bias, dtype=dtype,
                   param_dtype=param_dtype, name=name,
                   conv_general_dilated=conv_general_dilated)


def upsample_nearest(x: jnp.ndarray, factor: int = 2) -> jnp.ndarray:
    """``nn.Upsample(scale_factor=2, mode='nearest')`` for NHWC."""
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def _plain_upsample_conv(x, kernel):
    return conv_general_dilated(upsample_nearest(x), kernel, (1, 1), ((1, 1), (1, 1)),
                                dimension_numbers=NHWC)


@jax.custom_vjp
def upsample2x_conv3x3(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """``conv3x3(upsample_nearest(x, 2), kernel)`` with padding 1, computed on the small image.

    Output row 2i reads upsampled rows 2i-1, 2i, 2i+1, i.e. source rows i-1, i, i: a 2-tap
    filter ``(k0, k1 + k2)`` over rows (i-1, i); row 2i+1 reads source rows i, i, i+1:
    ``(k0 + k1, k2)`` over (i, i+1); the same along columns. So each of the four output phases
    is a 2×2 convolution of ``x`` with summed taps, and the four are interleaved back: 16
    instead of 36 multiply-adds per source pixel and channel pair. The same sums as the
    official Upsample + Conv2d up to float32 rounding of the pre-summed taps
    (``tests/test_models.py``).

    Backward on CPU: the same four phase convolutions differentiated (16 instead of 36
    multiply-adds again). Their 2×2 kernel gradients are kept per example, mapped onto the
    3×3 taps, and only then summed over the batch: summing each phase's gradient over the batch
    first would make data-parallel training all-reduce 16 taps per kernel instead of 9
    (``tests/test_comm.py``). On other platforms the gradients are the plain composition's."""
    return _subpixel_upsample_conv(x, kernel)


# Per output phase r (even / odd rows): source-row padding of its 2×2 convolution, and which
# 3×3 taps make up each of its two taps (rows (i-1, i) get (k0, k1 + k2); (i, i+1) get
# (k0 + k1, k2)). The same holds for columns.
_PHASE_PADS = ((1, 0), (0, 1))
_PHASE_TAPS = (((0,), (1, 2)), ((0, 1), (2,)))


def _phase_kernel(kernel, r, q):
    """The (2, 2, C, O) kernel of output phase (r, q): sums of the 3×3 taps."""
    rows = [sum(kernel[t] for t in ts) for ts in _PHASE_TAPS[r]]             # 2 × (3, C, O)
    return jnp.stack([jnp.stack([sum(row[u] for u in us) for us in _PHASE_TAPS[q]])
                      for row in rows])


def _subpixel_upsample_conv(x, kernel):
    zero = jnp.zeros((), x.dtype)
    out = None
    for r in range(2):
        for q in range(2):
            phase = lax.conv_general_dilated(x, _phase_kernel(kernel, r, q), (1, 1),
                                             (_PHASE_PADS[r], _PHASE_PADS[q]),
                                             dimension_numbers=NHWC)
            # Interleave by interior padding (no reshape: it keeps explicit batch sharding);
            # each output pixel gets one phase's value plus zeros, so the sum is exact.
            spread = lax.pad(phase, zero, ((0, 0, 0), (r, 1 - r, 1), (q, 1 - q, 1), (0, 0, 0)))
            out = spread if out is None else out + spread
    return out


def _subpixel_grads(x, kernel, g):
    """(dx, dkernel) of :func:`_subpixel_upsample_conv` through its four phase convolutions."""
    c, o = kernel.shape[2:]
    dx = None
    parts = {}                     # 3×3 tap (t, u) -> per-example (B, C, O) phase-tap gradients
    for r in range(2):
        for q in range(2):
            pads = (_PHASE_PADS[r], _PHASE_PADS[q])
            g_rq = g[:, r::2, q::2]
            d = input_grad_stride1(_phase_kernel(kernel, r, q), g_rq, pads)
            dx = d if dx is None else dx + d
            dk_rq = filter_grad_by_blocks(x, g_rq, (2, 2, c, o), (1, 1), pads,
                                          per_example=True)           # (B, 2, 2, C, O)
            for a, ts in enumerate(_PHASE_TAPS[r]):
                for e, us in enumerate(_PHASE_TAPS[q]):
                    for t in ts:
                        for u in us:
                            parts.setdefault((t, u), []).append(dk_rq[:, a, e])
    dk = jnp.stack([jnp.stack([sum(parts[t, u]) for u in range(3)], axis=1)
                    for t in range(3)], axis=1)                             # (B, 3, 3, C, O)
    return dx.astype(x.dtype), dk.sum(axis=0).astype(kernel.dtype)


def _upsample_conv_fwd(x, kernel):
    return _subpixel_upsample_conv(x, kernel), (x, kernel)


def _upsample_conv_bwd(res, g):
    x, kernel = res

    def plain(x, kernel, g):
        return jax.vjp(_plain_upsample_conv, x, kernel)[1](g)

    return lax.platform_dependent(x, kernel, g, cpu=_subpixel_grads, default=plain)


upsample2x_conv3x3.defvjp(_upsample_conv_fwd, _upsample_conv_bwd)


class UpsampleConv(nn.Module):
    """``Upsample(x2, nearest)`` then ``Conv k3 p1`` (:func:`upsample2x_conv3x3`), with the
    parameters of the ``nn.Conv`` it replaces (``kernel`` (3, 3, C, O), ``bias``; same
    initialisers), so checkpoints and the official names are unchanged."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (3, 3, x.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,),
                          self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return upsample2x_conv3x3(x, kernel) + bias


class NormLayer(nn.Module):
    """GroupNorm(32 groups, eps 1e-6), stored as ``<name>.norm`` like the official NormLayer."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        return GroupNorm(32, 1e-6, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x)


def group_norm(x, scale, bias, groups: int, eps: float):
    """GroupNorm over the pixels and each group's channels of NHWC ``x``: float32
    statistics, two-pass variance (as torch; E[x²] − E[x]² loses digits in float32).

    The sums run first per channel over the pixels (a reduction over the major axis, which
    XLA:CPU vectorises along the contiguous channels), then over each group's channels; the
    normalisation and the scale fold into one per-channel factor on ``x − mean``. The same
    sums as ``nn.GroupNorm(use_fast_variance=False)`` in another order
    (``tests/test_models.py``), which reduces over a (pixels, groups, channels per group)
    view instead: on 2 CPU cores (AVX-512) the forward with SiLU 1.7-2.6x faster (256², 64
    channels to 64², 256 channels), forward and backward 1.4-2x (``bench/README.md``)."""
    b, c = x.shape[0], x.shape[-1]
    xf = x.astype(jnp.float32).reshape(b, -1, c)
    n = xf.shape[1] * (c // groups)

    def per_group(chan_sums):                   # (b, c) -> (b, c): each channel's group total
        g = chan_sums.reshape(b, groups, c // groups).sum(-1, keepdims=True)
        return jnp.broadcast_to(g, (b, groups, c // groups)).reshape(b, c)

    mean = per_group(xf.sum(1)) / n
    d = xf - mean[:, None]
    var = per_group((d * d).sum(1)) / n
    a = lax.rsqrt(var + eps) * scale.astype(jnp.float32)
    y = d * a[:, None] + bias.astype(jnp.float32)
    return y.reshape(x.shape)


class GroupNorm(nn.Module):
    """``nn.GroupNorm``'s parameters (``scale``, ``bias``) and results (two-pass variance),
    computed by :func:`group_norm`; the output in ``dtype``."""

    num_groups: int = 32
    epsilon: float = 1e-6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
        return group_norm(x, scale, bias, self.num_groups, self.epsilon).astype(self.dtype)


class ResBlock(nn.Module):
    """Pre-activation residual block ``x + conv(act(gn(conv(act(gn(x))))))``
    (docs/official.md#building-blocks).

    Submodule names are the official ``conv.{0,2,3,5}`` indices; 1 and 4 are the SiLUs.
    """

    channels: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = NormLayer(**kw, name="conv.0")(x)
        h = torch_conv(self.channels, 3, **kw, name="conv.2")(nn.silu(h))
        h = NormLayer(**kw, name="conv.3")(h)
        h = torch_conv(self.channels, 3, **kw, name="conv.5")(nn.silu(h))
        return x + h


class DownStage(nn.Module):
    """``[Conv k3 s2 p1, ResBlock, ResBlock]``: halves H and W (ceil) and maps cin to ``out``.

    ``remat``: recompute the ResBlocks in the backward pass instead of keeping their
    activations (the parameter names do not change).
    """

    out: int
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        block = nn.remat(ResBlock) if self.remat else ResBlock
        x = torch_conv(self.out, 3, stride=2, **kw, name="0")(x)
        x = block(self.out, **kw, name="1")(x)
        return block(self.out, **kw, name="2")(x)


class UpStage(nn.Module):
    """``[Upsample x2 nearest, Conv k3, ResBlock, ResBlock]`` (the official DecoderBlock); the
    first two as one :class:`UpsampleConv`.

    ``prefix`` is ``"block."`` inside the decoder (``decoder_group.i.block.1``) and empty in
    the LQ encoder's upsamplers (``multiscale_encoder.blocks.j.1``). ``remat`` as in
    :class:`DownStage`.
    """

    out: int
    prefix: str = ""
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        block = nn.remat(ResBlock) if self.remat else ResBlock
        x = UpsampleConv(self.out, **kw, name=f"{self.prefix}1")(x)
        x = block(self.out, **kw, name=f"{self.prefix}2")(x)
        return block(self.out, **kw, name=f"{self.prefix}3")(x)


Conv1x1 = functools.partial(torch_conv, kernel=1)
Conv3x3 = functools.partial(torch_conv, kernel=3)
