"""The convolution with CPU-friendly gradients (adacode_jax.ops.conv) equals XLA's.

Forward outputs must be bit-identical (it is XLA's convolution); both gradients must equal the
gradients XLA derives itself up to float32 summation order, for every stride, kernel and
padding the networks use and for sizes that do not divide evenly into blocks or phases.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from adacode_jax.ops import conv


def _grads(fn, x, w, g):
    return jax.jit(lambda x, w, g: jax.vjp(fn, x, w)[1](g))(x, w, g)


@pytest.mark.parametrize("b,h,wd,c,o,k,s,pads", [
    (2, 32, 32, 8, 16, 3, 1, ((1, 1), (1, 1))),     # the common 3x3 conv, several blocks
    (2, 32, 32, 8, 16, 4, 2, ((1, 1), (1, 1))),     # the discriminator's k4 s2 p1
    (1, 17, 13, 5, 7, 3, 2, ((1, 1), (1, 1))),      # odd sizes, k3 s2 (the encoder's down conv)
    (3, 9, 11, 4, 6, 4, 1, ((1, 1), (1, 1))),       # k4 p1 shrinks by one pixel (in_conv)
    (2, 8, 8, 6, 5, 1, 1, ((0, 0), (0, 0))),        # 1x1
    (1, 10, 12, 3, 4, 3, 2, ((0, 2), (1, 0))),      # asymmetric padding
    (2, 7, 7, 3, 2, 2, 3, ((0, 0), (0, 0))),        # stride larger than the kernel
    (2, 9, 6, 4, 3, 2, 1, ((1, 0), (1, 0))),        # k2 s1 asymmetric (the weight predictor)
    (1, 6, 5, 3, 2, 3, 1, ((0, 2), (2, 1))),        # k3 s1 asymmetric
    (1, 6, 6, 2, 3, 1, 1, ((1, 1), (0, 1))),        # padding beyond k - 1: XLA's gradient
])
def test_gradients_equal_xla(b, h, wd, c, o, k, s, pads):
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (b, h, wd, c))
    w = jax.random.normal(kw, (k, k, c, o))
    ref = lambda x, w: lax.conv_general_dilated(x, w, (s, s), pads,  # noqa: E731
                                                dimension_numbers=conv.NHWC)
    new = lambda x, w: conv.conv_general_dilated(x, w, (s, s), pads,  # noqa: E731
                                                 dimension_numbers=conv.NHWC)
    y = ref(x, w)
    np.testing.assert_array_equal(np.asarray(new(x, w)), np.asarray(y))
    g = jax.random.normal(kg, y.shape)
    (dx_ref, dw_ref), (dx, dw) = _grads(ref, x, w, g), _grads(new, x, w, g)
    assert dx.shape == x.shape and dw.shape == w.shape
    np.testing.assert_allclose(np.asarray(dx), np.asarray(dx_ref), rtol=0, atol=2e-5 * float(jnp.abs(dx_ref).max()))
    np.testing.assert_allclose(np.asarray(dw), np.asarray(dw_ref), rtol=0, atol=2e-5 * float(jnp.abs(dw_ref).max()))


def test_filter_gradient_blocks_cover_every_row():
    """Block sizes that leave a remainder (here 5 output rows in blocks of 2) still sum every row."""
    x = jax.random.normal(jax.random.key(1), (1, 5, 6, 3))
    g = jax.random.normal(jax.random.key(2), (1, 5, 6, 4))
    pads = ((1, 1), (1, 1))
    dw = conv.filter_grad_by_blocks(x, g, (3, 3, 3, 4), (1, 1), pads, block_pixels=12)
    ref = jax.vjp(lambda w: lax.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=conv.NHWC),
                  jnp.zeros((3, 3, 3, 4)))[1](g)[0]
    np.testing.assert_allclose(np.asarray(dw), np.asarray(ref), atol=1e-5)


def test_filter_gradient_per_example_sums_to_the_batch_gradient():
    """``per_example=True`` keeps the batch axis: entry i is example i's own gradient."""
    x = jax.random.normal(jax.random.key(3), (3, 9, 7, 4))
    g = jax.random.normal(jax.random.key(4), (3, 9, 7, 5))
    pads = ((1, 0), (0, 1))
    per = conv.filter_grad_by_blocks(x, g, (2, 2, 4, 5), (1, 1), pads, block_pixels=20,
                                     per_example=True)
    assert per.shape == (3, 2, 2, 4, 5)
    for i in range(3):
        ref = jax.vjp(lambda w: lax.conv_general_dilated(x[i:i + 1], w, (1, 1), pads,
                                                         dimension_numbers=conv.NHWC),
                      jnp.zeros((2, 2, 4, 5)))[1](g[i:i + 1])[0]
        np.testing.assert_allclose(np.asarray(per[i]), np.asarray(ref), atol=1e-5)
    total = conv.filter_grad_by_blocks(x, g, (2, 2, 4, 5), (1, 1), pads, block_pixels=20)
    np.testing.assert_allclose(np.asarray(per.sum(0)), np.asarray(total), atol=1e-5)


def test_other_convolutions_go_to_lax_unchanged():
    """Dilated, grouped or string-padded convolutions are lax's (gradients bit-identical)."""
    x = jax.random.normal(jax.random.key(3), (1, 9, 9, 4))
    w = jax.random.normal(jax.random.key(4), (3, 3, 2, 4))
    for kwargs in (dict(feature_group_count=2), ):
        ref = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=conv.NHWC, **kwargs)  # noqa: E731
        new = lambda x, w: conv.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=conv.NHWC, **kwargs)  # noqa: E731
        g = jnp.ones_like(ref(x, w))
        for a, b in zip(_grads(ref, x, w, g), _grads(new, x, w, g)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_flax_conv_uses_it():
    """torch_conv's gradients go through the custom rule (same values as a plain nn.Conv)."""
    import flax.linen as nn

    from adacode_jax.models.layers import torch_conv

    x = jax.random.normal(jax.random.key(5), (2, 12, 12, 4))
    ours = torch_conv(8, 4, stride=2, padding=1)
    plain = nn.Conv(8, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)))
    params = ours.init(jax.random.key(6), x)
    loss = lambda m: lambda p: jnp.sum(m.apply(p, x) ** 2)  # noqa: E731
    ga, gb = jax.grad(loss(ours))(params), jax.grad(loss(plain))(params)
    np.testing.assert_allclose(np.asarray(ga["params"]["kernel"]), np.asarray(gb["params"]["kernel"]),
                               rtol=1e-5, atol=1e-5)
    jaxpr = str(jax.make_jaxpr(jax.grad(loss(ours)))(params))
    assert "branches_platforms" in jaxpr        # the backward pass picks its CPU rule


def test_data_parallel_filter_gradient_reduces_once():
    """With the batch sharded over devices, the filter gradient's all-reduce is outside the
    block loop (once per step), not inside the while body (once per block)."""
    import re

    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    devices = jax.devices()
    if len(devices) < 2:
        pytest.skip("needs several (fake) devices")
    mesh = Mesh(np.array(devices), ("data",))
    x = jax.device_put(jnp.ones((len(devices), 32, 32, 4)), NamedSharding(mesh, P("data")))
    w = jax.device_put(jnp.ones((3, 3, 4, 8)), NamedSharding(mesh, P()))
    loss = lambda w, x: jnp.sum(conv.conv_general_dilated(  # noqa: E731
        x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=conv.NHWC) ** 2)
    text = jax.jit(jax.grad(loss)).lower(w, x).compile().as_text()
    assert " while(" in text                      # the block loop is there
    comp, where = None, []
    for line in text.splitlines():
        m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if m:
            comp = m.group(1)
        if re.search(r" all-reduce(-start)?\(", line):
            where.append(comp)
    bodies = set(re.findall(r"body=%?([\w.\-]+)", text))
    assert where and not bodies & set(where), (where, bodies)
