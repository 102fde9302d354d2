"""The vector quantiser (paper Eqs. 1-2): nearest code, straight-through estimator
(docs/official.md#quantizer-and-codebooks).

Always float32, whatever the network's compute dtype: squared distances, the first-index
argmin and the code lookup decide discrete indices, and bf16 would flip near-ties.
The lookup is a one-hot matmul (as in the reference), which shards over a batch-sharded mesh
without a gather (docs/assets.md#software-stack, pitfall 4).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

HIGHEST = jax.lax.Precision.HIGHEST


def gram_loss(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """mean over (B, c, c') of (G_a − G_b)², G = AᵀA / (h·w) per sample; a, b (B, h, w, c)."""
    def gram(x):
        x = x.reshape(x.shape[0], -1, x.shape[-1]).astype(jnp.float32)
        return jnp.einsum("bnc,bnd->bcd", x, x, precision=HIGHEST) / x.shape[1]
    return jnp.mean((gram(a) - gram(b)) ** 2)


def nearest_code(z: jnp.ndarray, codebook: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Indices (B, h, w) of the nearest codes and the squared distances (B, h, w, n_e).

    ``d = Σz² + Σe² − 2 z·eᵀ`` in float32 like the reference; ``argmin`` takes the first index
    on a tie, as torch does.
    """
    z = z.astype(jnp.float32)
    e = codebook.astype(jnp.float32)
    d = (jnp.sum(z ** 2, axis=-1, keepdims=True) + jnp.sum(e ** 2, axis=1)
         - 2.0 * jnp.einsum("bhwc,nc->bhwn", z, e, precision=HIGHEST))
    return jnp.argmin(d, axis=-1), d


def lookup(indices: jnp.ndarray, codebook: jnp.ndarray) -> jnp.ndarray:
    """Codes for ``indices`` (B, h, w) as a one-hot matmul: (B, h, w, e_dim), float32."""
    onehot = jax.nn.one_hot(indices, codebook.shape[0], dtype=jnp.float32)
    return jnp.einsum("bhwn,nc->bhwc", onehot, codebook.astype(jnp.float32), precision=HIGHEST)


class VectorQuantizer(nn.Module):
    """``n_e`` codes of size ``e_dim`` (param ``embedding``, the official (n_e, e_dim) layout).

    Returns ``(z_q, loss, indices, nearest)``: ``z_q`` (B, h, w, e_dim) float32 with the
    straight-through gradient ``z + sg(z_q − z)``; ``indices`` (B, h, w) int32, the codes
    used; ``nearest`` the argmin codes (equal to ``indices`` unless forced).

    ``loss`` without ``gt_indices``: ``mean((z_q − sg z)²) + β·mean((sg z_q − z)²)``.
    With ``gt_indices`` (stage III): ``β·mean((sg z_gt − z)²) + gram(z, sg z_gt)`` with
    ``z_gt = E[gt_indices]``; the output stays quantised with z's own argmin.
    ``force_indices`` replaces the argmin (parity checks, analysis of code choices).
    """

    n_e: int
    e_dim: int
    beta: float = 0.25

    @nn.compact
    def __call__(self, z, *, gt_indices=None, force_indices=None):
        e = self.param("embedding", _uniform_sym(self.n_e), (self.n_e, self.e_dim), jnp.float32)
        z = z.astype(jnp.float32)
        nearest, _ = nearest_code(jax.lax.stop_gradient(z), e)
        indices = nearest if force_indices is None else force_indices
        z_q = lookup(indices, e)
        if gt_indices is not None:
            z_gt = jax.lax.stop_gradient(lookup(gt_indices, e))
            loss = self.beta * jnp.mean((z_gt - z) ** 2) + gram_loss(z, z_gt)
        else:
            loss = (jnp.mean((z_q - jax.lax.stop_gradient(z)) ** 2)
                    + self.beta * jnp.mean((jax.lax.stop_gradient(z_q) - z) ** 2))
        z_q = z + jax.lax.stop_gradient(z_q - z)
        return z_q, loss, indices.astype(jnp.int32), nearest.astype(jnp.int32)


def restart_dead_codes(codebook: jnp.ndarray, usage: jnp.ndarray, candidates: jnp.ndarray,
                       key: jax.Array) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Codes unused over a window re-placed on encoder outputs (a training aid, not part of
    the network: the layout and forward stay the official ones).

    A plain VQ codebook trained from its tiny uniform init at a high step size collapses onto
    a few codes (seen on the compact recipe: 20 of 256 codes after 20 steps), because only the
    chosen codes receive gradients. Re-placing each dead code on a randomly chosen
    pre-quantisation vector ``z`` of the current batch (Dhariwal et al. 2020, Jukebox; Zeghidour
    et al. 2021, SoundStream) keeps every code near the data.

    Args:
      codebook: (n_e, e_dim).
      usage: (n_e,) how often each code was chosen over the window; 0 = dead.
      candidates: (N, e_dim) pre-quantisation vectors to draw from.
      key: PRNG key of this restart.
    Returns:
      (new codebook, number of codes re-placed).
    """
    dead = usage <= 0
    pick = jax.random.randint(key, (codebook.shape[0],), 0, candidates.shape[0])
    new = jnp.where(dead[:, None], candidates[pick].astype(codebook.dtype), codebook)
    return new, jnp.sum(dead)


def _uniform_sym(n_e: int):
    """uniform(−1/n_e, 1/n_e), the reference's codebook init."""
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -1.0 / n_e, 1.0 / n_e)
    return init
