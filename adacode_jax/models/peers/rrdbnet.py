"""ESRGAN's RRDBNet, the generator of Real-ESRGAN x4plus: a pretrained peer, not part of AdaCode.

Used to compare AdaCode with a real released SR network (weights read by
:mod:`adacode_jax.models.peers.realesrgan`). The layout is the one of the released ncnn graph
``REALESRGAN_X4PLUS_UP4X.param`` (the graph is the reference for this port):

* ``conv_first`` 3→64;
* ``num_block`` (23) residual-in-residual dense blocks, each three dense blocks of five 3×3
  convs (growth 32, each conv sees the concatenation ``[x, c1, …]``; leaky ReLU 0.2 after the
  first four; ``out = 0.2·c5 + x``), and ``out = 0.2·rdb3 + x`` around the three;
* ``conv_body``, added to the output of ``conv_first`` (global residual);
* two ×2 nearest-neighbour upsamplings, each followed by a conv and leaky ReLU 0.2;
* ``conv_hr`` + leaky ReLU 0.2, ``conv_last`` 64→3. No pixel-unshuffle (that is the ×2/×1
  variants), no output clipping (callers clip).

Input and output are NHWC float in [0, 1] (the output may overshoot slightly). Module names are
the BasicSR state-dict names (``body.0.rdb1.conv1`` …) so ``".".join(path)`` of a parameter is
the PyTorch key; the ncnn loader relies only on the call order of the convs.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from adacode_jax.models.layers import upsample_nearest

Dtype = Any
LEAKY_SLOPE = 0.2
RESIDUAL_SCALE = 0.2


def _conv3x3(features: int, name: str, dtype: Dtype, precision: Any) -> nn.Conv:
    return nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), dtype=dtype,
                   precision=precision, name=name)


def _lrelu(x: jnp.ndarray) -> jnp.ndarray:
    return jax.nn.leaky_relu(x, LEAKY_SLOPE)


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3×3 convs, ``x + 0.2·conv5([x, c1, c2, c3, c4])``."""

    num_feat: int = 64
    num_grow_ch: int = 32
    dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        feats = [x]
        for i in range(1, 5):
            c = _conv3x3(self.num_grow_ch, f"conv{i}", self.dtype, self.precision)(
                jnp.concatenate(feats, axis=-1))
            feats.append(_lrelu(c))
        out = _conv3x3(self.num_feat, "conv5", self.dtype, self.precision)(jnp.concatenate(feats, axis=-1))
        return out * RESIDUAL_SCALE + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, ``x + 0.2·rdb3(rdb2(rdb1(x)))``."""

    num_feat: int = 64
    num_grow_ch: int = 32
    dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        out = x
        for i in range(1, 4):
            out = ResidualDenseBlock(self.num_feat, self.num_grow_ch, self.dtype, self.precision,
                                     name=f"rdb{i}")(out)
        return out * RESIDUAL_SCALE + x


class RRDBNet(nn.Module):
    """ESRGAN generator for ×4: ``(B, H, W, 3)`` in [0, 1] → ``(B, 4H, 4W, 3)``.

    Defaults are Real-ESRGAN x4plus (16.7 M parameters).
    """

    num_in_ch: int = 3
    num_out_ch: int = 3
    num_feat: int = 64
    num_block: int = 23
    num_grow_ch: int = 32
    dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        conv = lambda f, name: _conv3x3(f, name, self.dtype, self.precision)  # noqa: E731
        feat = conv(self.num_feat, "conv_first")(x.astype(self.dtype))
        body = feat
        for i in range(self.num_block):
            body = RRDB(self.num_feat, self.num_grow_ch, self.dtype, self.precision,
                         name=f"body.{i}")(body)
        feat = feat + conv(self.num_feat, "conv_body")(body)
        feat = _lrelu(conv(self.num_feat, "conv_up1")(upsample_nearest(feat, 2)))
        feat = _lrelu(conv(self.num_feat, "conv_up2")(upsample_nearest(feat, 2)))
        out = conv(self.num_out_ch, "conv_last")(_lrelu(conv(self.num_feat, "conv_hr")(feat)))
        return out.astype(jnp.float32)
