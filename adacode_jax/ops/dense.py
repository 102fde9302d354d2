"""Dense layers whose kernel gradient XLA:CPU computes without re-running the backward pass.

JAX differentiates ``y = x · W`` (x: (..., C), W: (C, O)) into ``dW = (gᵀ · x)ᵀ``: a dot whose
left operand is the output gradient g contracted over its *major* (token) axis. XLA:CPU makes
that axis minor by fusing a transpose into whatever computes g; in a Swin block g is the
residual stream's gradient, a long element-wise chain (LayerNorm backward of every block
behind it), which then runs in transposed order, once per consumer: the Swin layers' backward
pass took 5x their forward pass. Here the kernel gradient is ``xᵀ · g`` with both operands
flattened to (tokens, ·): g is read in its own layout and only the activation x is transposed.
The kernel gradient equals JAX's up to float32 summation order (tests/test_dense.py); the
forward pass is unchanged. Used through ``nn.Dense(..., dot_general=dense.dot_general)``.
"""
from __future__ import annotations

import functools

import jax
from jax import lax


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """``lax.dot_general`` with the gradient above for the pattern ``nn.Dense`` uses (lhs's
    last axis against a 2-D kernel's first); any other contraction goes to ``lax``."""
    (lc, rc), (lb, rb) = dimension_numbers
    if (tuple(lc) == (lhs.ndim - 1,) and tuple(rc) == (0,) and not lb and not rb
            and rhs.ndim == 2 and preferred_element_type is None):
        return _matmul(lhs, rhs, precision)
    return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                           preferred_element_type=preferred_element_type)


def _dims(x):
    return (((x.ndim - 1,), (0,)), ((), ()))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul(x, w, precision):
    return lax.dot_general(x, w, _dims(x), precision=precision)


def _matmul_fwd(x, w, precision):
    return _matmul(x, w, precision), (x, w)


def _matmul_bwd(precision, res, g):
    x, w = res
    dx = lax.dot_general(g, w, (((g.ndim - 1,), (1,)), ((), ())), precision=precision)
    dw = lax.dot_general(x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1]),
                         (((0,), (0,)), ((), ())), precision=precision)
    return dx.astype(x.dtype), dw.astype(w.dtype)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)
