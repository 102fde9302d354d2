"""2-D convolution whose gradients XLA:CPU computes well; a drop-in for ``lax.conv_general_dilated``.

The forward pass is XLA's own convolution, unchanged. On CPU the backward pass differs:

* **Filter gradient.** XLA lowers ``dL/dW`` of a k×k convolution to a second convolution whose
  window is the whole image (``window={size=256x256}``) with the batch as the contraction
  feature, after transposing both operands. XLA:CPU runs that at 30–50 GFLOP/s where the
  forward convolution runs at 250–300 (2 cores with AVX-512, jax 0.10.2): on the stage III
  training iteration the filter gradients took 8.6 of 22 s. Here it is a matrix product over
  output rows instead, ``dWᵀ = Σ_blocks g_blockᵀ · patches(x_block)``, looped (``lax.scan``)
  over blocks of about a thousand output pixels, so that each block's k·k·C-wide patch matrix
  stays in cache: 100–170 GFLOP/s on the same shapes.
* **Input gradient of stride-1 convolutions.** XLA's transposed convolution, written out as
  the forward convolution of the output gradient with the flipped, channel-swapped kernel,
  which XLA:CPU runs as fast as the forward pass (up to 20% faster for 256→256 layers).
* **Input gradient of strided convolutions.** XLA computes it as a convolution over the
  stride-dilated output gradient, three quarters of which are zeros for stride 2 (95 GFLOP/s
  against 250 for the forward). Here each of the s·s output phases is a stride-1 convolution
  with the matching taps of the flipped kernel, interleaved back (depth-to-space).

On a single-CPU-device program the 3×3 stride-1 convolutions with padding 1 (forward, and the
input gradient, which is one too) go through the Winograd kernel of
``adacode_jax.ops.winograd`` when it builds on the machine.

On other platforms (GPU, TPU) both gradients are XLA's, chosen at lowering time by
``lax.platform_dependent``. Results equal XLA's gradients up to float32 summation order
(relative differences about 1e-5, ``tests/test_conv.py``).
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from adacode_jax.ops import winograd

NHWC = ("NHWC", "HWIO", "NHWC")
_NHWC_SPECS = ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
# Output pixels per block of the filter gradient: a block's patch matrix (rows × k·k·C) then
# stays within a core's L2 cache for C ≤ 128 (measured best between 512 and 2048).
BLOCK_PIXELS = 1024


def conv_general_dilated(lhs, rhs, window_strides: Sequence[int], padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision=None,
                         preferred_element_type=None) -> jax.Array:
    """``lax.conv_general_dilated`` with the CPU-friendly backward pass for plain NHWC/HWIO
    2-D convolutions with explicit padding; anything else goes to ``lax`` unchanged."""
    plain = (lhs.ndim == 4 and rhs.ndim == 4 and feature_group_count == 1
             and batch_group_count == 1 and preferred_element_type is None
             and all(d == 1 for d in (lhs_dilation or (1, 1)))
             and all(d == 1 for d in (rhs_dilation or (1, 1)))
             and not isinstance(padding, str)
             and all(lo >= 0 and hi >= 0 for lo, hi in padding)
             and _is_nhwc(lhs.shape, rhs.shape, dimension_numbers))
    if not plain:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count, batch_group_count=batch_group_count,
            precision=precision, preferred_element_type=preferred_element_type)
    strides = tuple(int(s) for s in window_strides)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    return _conv(lhs, rhs, strides, pads, precision)


def _is_nhwc(lhs_shape, rhs_shape, dimension_numbers) -> bool:
    if dimension_numbers is None:
        return False
    dn = lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
    return (tuple(dn.lhs_spec), tuple(dn.rhs_spec), tuple(dn.out_spec)) == _NHWC_SPECS


def _xla_conv(x, w, strides, pads, precision):
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=NHWC,
                                    precision=precision)


def _forward(x, w, strides, pads, precision):
    """The forward convolution: the Winograd kernel on CPU where it applies, else XLA's."""
    if winograd.use(x, w, strides, pads):
        return lax.platform_dependent(
            x, w, cpu=winograd.conv3x3,
            default=lambda x, w: _xla_conv(x, w, strides, pads, precision))
    return _xla_conv(x, w, strides, pads, precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, w, strides, pads, precision):
    return _forward(x, w, strides, pads, precision)


def _conv_fwd(x, w, strides, pads, precision):
    return _forward(x, w, strides, pads, precision), (x, w)


def _conv_bwd(strides, pads, precision, res, g):
    x, w = res

    def xla_dx(x, w, g):
        return jax.vjp(lambda t: _xla_conv(t, w, strides, pads, precision), x)[1](g)[0]

    def xla_dw(x, w, g):
        return jax.vjp(lambda t: _xla_conv(x, t, strides, pads, precision), w)[1](g)[0]

    def cpu_dx(x, w, g):
        if strides == (1, 1):
            if all(0 <= p <= k - 1 for (lo, hi), k in zip(pads, w.shape[:2]) for p in (lo, hi)):
                return input_grad_stride1(w, g, pads, precision).astype(x.dtype)
            return xla_dx(x, w, g)
        return input_grad_by_phases(x.shape, w, g, strides, pads, precision).astype(x.dtype)

    def cpu_dw(x, w, g):
        return filter_grad_by_blocks(x, g, w.shape, strides, pads, precision).astype(w.dtype)

    dx = lax.platform_dependent(x, w, g, cpu=cpu_dx, default=xla_dx)
    dw = lax.platform_dependent(x, w, g, cpu=cpu_dw, default=xla_dw)
    return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def filter_grad_by_blocks(x, g, w_shape, strides, pads, precision=None,
                          block_pixels: int = BLOCK_PIXELS, per_example: bool = False) -> jax.Array:
    """``dL/dW`` (kh, kw, C, O) of ``conv(x, W)`` for output gradient ``g`` (B, Ho, Wo, O):
    per example, Σ over blocks of output rows of (the block's rows of g)ᵀ · (patch matrix of
    the block), accumulated in float32, then summed over the batch and transposed.

    ``per_example``: return the (B, kh, kw, C, O) gradients of each example, not their sum
    (for a caller that maps them to other parameters before the sum over the batch, which is
    the all-reduce of data-parallel training)."""
    kh, kw, c, o = w_shape
    sh, sw = strides
    b, ho, wo, _ = g.shape
    rows = max(1, min(ho, block_pixels // max(1, b * wo)))      # output rows per block
    n_blocks = -(-ho // rows)
    # Rows of padded input a block reads; pad (zeros) so the last block stays in bounds.
    in_rows = (rows - 1) * sh + kh
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    need_h = (n_blocks * rows - 1) * sh + kh
    need_w = (wo - 1) * sw + kw
    xp = xp[:, :need_h, :need_w]
    xp = jnp.pad(xp, ((0, 0), (0, need_h - xp.shape[1]), (0, 0), (0, 0)))
    gp = jnp.pad(g, ((0, 0), (0, n_blocks * rows - ho), (0, 0), (0, 0)))

    def block(i):
        xr = lax.dynamic_slice_in_dim(xp, i * rows * sh, in_rows, axis=1)
        gr = lax.dynamic_slice_in_dim(gp, i * rows, rows, axis=1).reshape(b, -1, o)
        taps = [lax.slice(xr, (0, a, e, 0), (b, a + (rows - 1) * sh + 1, e + (wo - 1) * sw + 1, c),
                          (1, sh, sw, 1)) for a in range(kh) for e in range(kw)]
        patches = jnp.concatenate(taps, axis=-1).reshape(b, -1, kh * kw * c)
        # gᵀ · patches rather than patchesᵀ · g: XLA then transposes the small g block, not
        # the k·k times wider patch matrix (10–35% faster for the discriminator's layers).
        # Per example (batch axis kept): with the batch sharded over devices each device
        # accumulates its own examples and the sum over the batch, hence the all-reduce,
        # happens once after the loop instead of once per block.
        return lax.dot_general(gr, patches, (((1,), (1,)), ((0,), (0,))), precision=precision,
                               preferred_element_type=jnp.float32)

    if n_blocks == 1:
        dw_t = block(0)
    else:
        def body(acc, i):
            return acc + block(i), None
        dw_t, _ = lax.scan(body, jnp.zeros((b, o, kh * kw * c), jnp.float32),
                           jnp.arange(n_blocks))
    if per_example:
        return jnp.swapaxes(dw_t, 1, 2).reshape(b, kh, kw, c, o)
    return dw_t.sum(axis=0).T.reshape(kh, kw, c, o)


def input_grad_stride1(w, g, pads, precision=None) -> jax.Array:
    """``dL/dx`` of a stride-1 ``conv(x, W)`` with padding ``pads`` (each within 0..k-1):
    the forward convolution of ``g`` with the kernel flipped in space and its channel axes
    swapped, padded by k - 1 - p. The same sums as XLA's transposed convolution (equal
    results in ``tests/test_conv.py``), but XLA:CPU runs this form as a plain forward
    convolution: on an AVX2 machine 80 against 103 ms for 64², 256→256 at batch 2."""
    kh, kw = w.shape[:2]
    (pt, pb), (pl, pr) = pads
    w_t = jnp.swapaxes(w[::-1, ::-1], 2, 3)          # (kh, kw, O, C)
    return _forward(g, w_t, (1, 1), ((kh - 1 - pt, kh - 1 - pb), (kw - 1 - pl, kw - 1 - pr)),
                    precision)


def input_grad_by_phases(x_shape, w, g, strides, pads, precision=None) -> jax.Array:
    """``dL/dx`` (B, H, W, C) of a strided ``conv(x, W)`` for output gradient ``g``.

    With ``xp`` the padded input, ``y[i] = Σ_a xp[i·s + a] · W[a]``, so the padded-input row
    ``p = m·s + r`` (phase ``r`` < s) receives ``Σ_t g[m - t] · W[r + t·s]ᵀ``: per phase a
    stride-1 correlation of g (padded by taps − 1 in front) with that phase's taps in reverse
    order. The phases are computed in both dimensions and interleaved back."""
    b, h, wd, c = x_shape
    kh, kw = w.shape[:2]
    sh, sw = strides
    (pt, _), (pl, _) = pads
    wt = jnp.swapaxes(w, 2, 3)                 # (kh, kw, O, C): maps g's channels onto x's
    n_h, n_w = -(-(pt + h) // sh), -(-(pl + wd) // sw)      # rows / columns per phase
    ho, wo = g.shape[1], g.shape[2]
    grid = []
    for r in range(sh):
        row = []
        for q in range(sw):
            taps_h, taps_w = list(range(r, kh, sh))[::-1], list(range(q, kw, sw))[::-1]
            if not taps_h or not taps_w:
                row.append(jnp.zeros((b, n_h, n_w, c), g.dtype))
                continue
            k_sub = wt[jnp.array(taps_h)][:, jnp.array(taps_w)]
            pad_h = (len(taps_h) - 1, max(0, n_h - ho))
            pad_w = (len(taps_w) - 1, max(0, n_w - wo))
            out = lax.conv_general_dilated(g, k_sub, (1, 1), (pad_h, pad_w),
                                           dimension_numbers=NHWC, precision=precision)
            row.append(out[:, :n_h, :n_w])
        grid.append(jnp.stack(row, axis=3))    # (B, n_h, n_w, sw, C)
    full = jnp.stack(grid, axis=2)             # (B, n_h, sh, n_w, sw, C): padded coordinates
    full = full.reshape(b, n_h * sh, n_w * sw, c)
    return full[:, pt:pt + h, pl:pl + wd]
