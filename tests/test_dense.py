"""Dense layers with the transposition-free kernel gradient (adacode_jax.ops.dense)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adacode_jax.ops import dense


def test_dense_gradients_equal_xla():
    x = jax.random.normal(jax.random.key(0), (2, 3, 5, 16))
    ours = nn.Dense(24, dot_general=dense.dot_general)
    plain = nn.Dense(24)
    params = plain.init(jax.random.key(1), x)
    np.testing.assert_array_equal(np.asarray(ours.apply(params, x)), np.asarray(plain.apply(params, x)))
    g = jax.random.normal(jax.random.key(2), (2, 3, 5, 24))

    def grads(m):
        return jax.jit(lambda p, x: jax.vjp(lambda p, x: m.apply(p, x), p, x)[1](g))(params, x)

    (gp_a, gx_a), (gp_b, gx_b) = grads(ours), grads(plain)
    for a, b in [(gx_a, gx_b), (gp_a["params"]["kernel"], gp_b["params"]["kernel"]),
                 (gp_a["params"]["bias"], gp_b["params"]["bias"])]:
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(gp_a["params"]["kernel"]).max()) > 0.1      # not a zero gradient


def test_other_contractions_go_to_lax():
    a = jax.random.normal(jax.random.key(3), (4, 6, 5))
    b = jax.random.normal(jax.random.key(4), (4, 5, 7))
    dn = (((2,), (1,)), ((0,), (0,)))                 # batched: not the Dense pattern
    np.testing.assert_array_equal(np.asarray(dense.dot_general(a, b, dn)),
                                  np.asarray(jax.lax.dot_general(a, b, dn)))
