"""Real-ESRGAN's U-Net discriminator with spectral norm, used in all three stages
(docs/official.md#discriminator).

Spectral norm keeps torch's semantics: ``u`` and ``v`` are state (collection ``spectral``);
in eval mode the stored vectors give σ = uᵀWv; in training mode one power iteration
``v ← n(Wᵀu), u ← n(Wv)`` runs first and the new u, v are written back. ``W`` is the kernel
flattened as torch does, (out, in·kh·kw).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from adacode_jax.ops.conv import conv_general_dilated
from adacode_jax.models.layers import torch_conv

Dtype = Any
HIGHEST = jax.lax.Precision.HIGHEST


def _normalize(a, eps=1e-12):
    return a / jnp.maximum(jnp.linalg.norm(a), eps)


def upsample_bilinear2x(x: jnp.ndarray) -> jnp.ndarray:
    """``F.interpolate(scale_factor=2, mode='bilinear', align_corners=False)`` for NHWC.

    Output pixel 2i takes 0.25·x[i−1] + 0.75·x[i], pixel 2i+1 takes 0.75·x[i] + 0.25·x[i+1],
    with edge replication, which is torch's half-pixel rule clamped at the border.
    """
    def along(a, axis):
        n = a.shape[axis]
        prev = jnp.concatenate([jax.lax.slice_in_dim(a, 0, 1, axis=axis),
                                jax.lax.slice_in_dim(a, 0, n - 1, axis=axis)], axis=axis)
        nxt = jnp.concatenate([jax.lax.slice_in_dim(a, 1, n, axis=axis),
                               jax.lax.slice_in_dim(a, n - 1, n, axis=axis)], axis=axis)
        even, odd = 0.25 * prev + 0.75 * a, 0.75 * a + 0.25 * nxt
        out = jnp.stack([even, odd], axis=axis + 1)
        shape = list(a.shape)
        shape[axis] = 2 * n
        return out.reshape(shape)
    return along(along(x, 1), 2)


class SpectralConv(nn.Module):
    """A bias-free conv whose kernel is divided by its spectral norm (torch defaults)."""

    features: int
    kernel: int
    stride: int = 1
    padding: int = 1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, update_stats: bool = False, calls: int = 1):
        """``calls`` > 1 (training mode): the batch holds that many D calls interleaved
        (sample ``i`` belongs to call ``i % calls``); call ``c`` is normalised by the σ of the
        ``c``-th of ``calls`` consecutive power iterations, exactly as ``calls`` separate
        forwards of the torch module would be, and ``u``, ``v`` end after the last one."""
        cin = x.shape[-1]
        shape = (self.kernel, self.kernel, cin, self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape, self.param_dtype)
        w_mat = kernel.astype(jnp.float32).transpose(3, 2, 0, 1).reshape(self.features, -1)
        u = self.variable("spectral", "u", lambda: _normalize(
            jax.random.normal(self.make_rng("params"), (self.features,))))
        v = self.variable("spectral", "v", lambda: _normalize(
            jnp.matmul(w_mat.T, u.value, precision=HIGHEST)))
        if update_stats:
            w_sg = jax.lax.stop_gradient(w_mat)
            pairs, u_new = [], u.value
            for _ in range(calls):
                v_new = _normalize(jnp.matmul(w_sg.T, u_new, precision=HIGHEST))
                u_new = _normalize(jnp.matmul(w_sg, v_new, precision=HIGHEST))
                pairs.append((u_new, v_new))
            if not self.is_initializing():
                u.value, v.value = pairs[-1]
        else:
            pairs = [(u.value, v.value)]            # one σ for every call
        sigma = jnp.stack([jnp.dot(u_c, jnp.matmul(w_mat, v_c, precision=HIGHEST),
                                   precision=HIGHEST) for u_c, v_c in pairs])
        p = self.padding
        # conv(x, W) / σ rather than conv(x, W / σ): the same function (the conv is linear in
        # its kernel), and it lets one conv serve calls with different σ. The kernel's
        # gradient is then a single filter gradient over all calls: with data parallelism one
        # all-reduce for D's step instead of one per call.
        y = conv_general_dilated(
            x.astype(self.dtype), kernel.astype(self.dtype), (self.stride, self.stride),
            ((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC")).astype(jnp.float32)
        b = y.shape[0]
        if b % calls:
            raise ValueError(f"batch {b} does not split into {calls} interleaved D calls")
        # sigma: one per call in training mode, a single one (broadcast) in eval mode
        y = y.reshape(b // calls, calls, *y.shape[1:]) / sigma[:, None, None, None]
        return y.reshape(b, *y.shape[2:]).astype(self.dtype)


class UNetDiscriminatorSN(nn.Module):
    """``UNetDiscriminatorSN(3, num_feat=64, skip_connection=True)``: per-pixel logits.

    ``__call__(x, train=False, calls=1)``: x (B, H, W, 3) with H, W divisible by 8 →
    (B, H, W, 1) float32. With ``train=True`` apply it with ``mutable=["spectral"]`` to get
    the updated u and v back. ``calls``: x holds that many successive D calls, interleaved
    (sample ``i`` is call ``i % calls``), run as one batch: the same logits and u, v as the
    separate calls (see :class:`SpectralConv`).
    """

    num_feat: int = 64
    skip_connection: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False, calls: int = 1):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        nf = self.num_feat
        act = lambda t: nn.leaky_relu(t, 0.2)  # noqa: E731

        def sn(feat, k, s, name):
            return lambda t: SpectralConv(feat, k, s, 1, **kw, name=name)(t, train, calls)

        x0 = act(torch_conv(nf, 3, **kw, name="conv0")(x.astype(self.dtype)))
        x1 = act(sn(nf * 2, 4, 2, "conv1")(x0))
        x2 = act(sn(nf * 4, 4, 2, "conv2")(x1))
        x3 = act(sn(nf * 8, 4, 2, "conv3")(x2))
        x4 = act(sn(nf * 4, 3, 1, "conv4")(upsample_bilinear2x(x3)))
        if self.skip_connection:
            x4 = x4 + x2
        x5 = act(sn(nf * 2, 3, 1, "conv5")(upsample_bilinear2x(x4)))
        if self.skip_connection:
            x5 = x5 + x1
        x6 = act(sn(nf, 3, 1, "conv6")(upsample_bilinear2x(x5)))
        if self.skip_connection:
            x6 = x6 + x0
        out = act(sn(nf, 3, 1, "conv7")(x6))
        out = act(sn(nf, 3, 1, "conv8")(out))
        return torch_conv(1, 3, **kw, name="conv9")(out).astype(jnp.float32)
