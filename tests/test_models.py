"""Network behaviour beyond parity: sharding, dtypes, padding, options, gradients."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from adacode_jax.inference import convert
from adacode_jax import models
from tests import reference as ref


def _tiny(kind, **overrides):
    cfg = models.tiny_model_config(kind)
    cfg.update(overrides)
    return models.build(cfg)


def _init(model, shape, seed=0):
    return model.init(jax.random.key(seed), jnp.zeros(shape, jnp.float32))


def test_sr_x4_batch_sharded_over_8_devices_equals_one_device():
    """The official ×4 network under jit with the batch split over an 8-device CPU mesh."""
    assert jax.device_count() == 8, "conftest sets 8 fake CPU devices"
    model, variables = convert.load_official(ref.state_dict("sr_x4"), "sr_x4")
    x = np.random.default_rng(0).random((8, 32, 32, 3), dtype=np.float32)
    single = jax.jit(model.apply)(variables, x)
    mesh = jax.make_mesh((8,), ("data",))          # Explicit axes by default (docs/assets.md, pitfall 4)
    batch = NamedSharding(mesh, P("data"))
    xs = jax.device_put(x, batch)
    vs = jax.device_put(variables, NamedSharding(mesh, P()))
    sharded = jax.jit(model.apply)(vs, xs)
    out_s, aux_s = sharded
    assert out_s.sharding.spec == P("data") or len(out_s.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(out_s), np.asarray(single[0]), rtol=0, atol=2e-5)
    np.testing.assert_array_equal(np.asarray(aux_s["indices"]), np.asarray(single[1]["indices"]))
    np.testing.assert_allclose(np.asarray(aux_s["codebook_loss"]), np.asarray(single[1]["codebook_loss"]),
                               rtol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_quantiser():
    m32 = _tiny("sr_x4")
    m16 = _tiny("sr_x4", dtype="bfloat16")
    v = _init(m32, (1, 32, 32, 3))
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(v))
    x = np.random.default_rng(1).random((1, 32, 32, 3), dtype=np.float32)
    out32, aux32 = m32.apply(v, x)
    out16, aux16 = m16.apply(v, x)
    assert out16.dtype == jnp.float32 and aux16["codebook_loss"].dtype == jnp.float32
    assert aux16["weight_maps"].dtype == jnp.float32
    # bf16 has 8 mantissa bits: most code choices equal, and with the same codes forced the
    # outputs close (about 1.9% mean relative error here). Without forcing, the few codes bf16
    # flips dominate the decoder's difference (12-16% for this random tiny network), which
    # says nothing about bf16's precision.
    assert float((aux16["indices"] == aux32["indices"]).mean()) > 0.8
    forced, _ = m16.apply(v, x, force_indices=aux32["indices"])
    assert float(jnp.abs(forced - out32).mean()) < 0.05 * float(jnp.abs(out32).mean())


@pytest.mark.parametrize("kind,size,scale", [("sr_x4", (37, 53), 4), ("sr_x2", (45, 29), 2),
                                              ("inpaint", (70, 90), 1), ("stage2", (64, 100), 1)])
def test_padded_path_takes_any_size(kind, size, scale):
    model = _tiny(kind)
    v = _init(model, (1, 64, 64, 3))
    x = np.random.default_rng(2).random((2, *size, 3), dtype=np.float32)
    out, aux = model.apply(v, x, method="restore_padded")
    assert out.shape == (2, size[0] * scale, size[1] * scale, 3)
    assert bool(jnp.isfinite(out).all())


def test_padding_is_the_official_mirror_and_always_pads():
    """test(): pad to (n // m + 1)·m with a symmetric flip; a multiple of m still pads."""
    model = _tiny("sr_x4")
    assert model.pad_multiple == 16
    v = _init(model, (1, 32, 32, 3))
    x = np.random.default_rng(3).random((1, 32, 20, 3), dtype=np.float32)
    xp = np.concatenate([x, x[:, ::-1]], axis=1)[:, :48]
    xp = np.concatenate([xp, xp[:, :, ::-1]], axis=2)[:, :, :32]
    want, _ = model.apply(v, xp)
    got, _ = model.apply(v, x, method="restore_padded")
    np.testing.assert_allclose(np.asarray(got), np.asarray(want)[:, :128, :80], atol=1e-5)


def test_grid_not_multiple_of_window_is_a_clear_error():
    model = _tiny("sr_x4")
    v = _init(model, (1, 32, 32, 3))
    with pytest.raises(ValueError, match="multiple of the window"):
        model.apply(v, jnp.zeros((1, 36, 32, 3)))


def test_weight_softmax_option_normalises_the_maps():
    model = _tiny("stage2", weight_softmax=True)
    v = _init(model, (1, 64, 64, 3))
    _, aux = model.apply(v, np.random.default_rng(4).random((1, 64, 64, 3), dtype=np.float32))
    np.testing.assert_allclose(np.asarray(aux["weight_maps"].sum(-1)), 1.0, rtol=1e-5)


@pytest.mark.parametrize("shape,offset", [((2, 16, 12, 64), 0.0), ((1, 8, 8, 96), 300.0)])
def test_group_norm_equals_flax_two_pass_and_float64(shape, offset):
    """Our GroupNorm against the float64 two-pass result and nn.GroupNorm (values and
    gradients), also where the mean is 300 standard deviations from zero (there float32's
    mean itself is off by ~2e-5 standard deviations, for nn.GroupNorm as for ours)."""
    import flax.linen as nn

    from adacode_jax.models.layers import group_norm

    rng = np.random.default_rng(3)
    x = (rng.standard_normal(shape) + offset).astype(np.float32)
    c = shape[-1]
    scale = rng.standard_normal(c).astype(np.float32)
    bias = rng.standard_normal(c).astype(np.float32)
    x64 = x.astype(np.float64).reshape(shape[0], -1, 32, c // 32)
    mu, var = x64.mean((1, 3), keepdims=True), x64.var((1, 3), keepdims=True)
    want = ((x64 - mu) / np.sqrt(var + 1e-6)).reshape(shape) * scale + bias
    ref = nn.GroupNorm(num_groups=32, epsilon=1e-6, use_fast_variance=False)

    def ours(x, s, b):
        return group_norm(x, s, b, 32, 1e-6)

    def theirs(x, s, b):
        return ref.apply({"params": {"scale": s, "bias": b}}, x)

    def rel_err(a):
        return np.abs(np.asarray(a, np.float64) - want).max() / np.abs(want).max()
    assert rel_err(ours(x, scale, bias)) <= max(1.5 * rel_err(theirs(x, scale, bias)), 2e-6)
    assert rel_err(ours(x, scale, bias)) < 5e-5

    g = rng.standard_normal(shape).astype(np.float32)

    def loss(fn):
        return lambda x, s, b: jnp.vdot(jnp.tanh(fn(x, s, b)), g)
    got = jax.grad(loss(ours), argnums=(0, 1, 2))(x, scale, bias)
    exp = jax.grad(loss(theirs), argnums=(0, 1, 2))(x, scale, bias)
    for a, b in zip(got, exp):
        assert np.abs(np.asarray(a) - np.asarray(b)).max() <= 1e-4 * np.abs(np.asarray(b)).max()


def test_remat_changes_nothing_numerically():
    x = np.random.default_rng(5).random((1, 64, 64, 3), dtype=np.float32)
    m, mr = _tiny("stage2"), _tiny("stage2", remat=True)
    v = _init(m, x.shape)

    def loss(model):
        return lambda p: jnp.mean(jnp.abs(model.apply({"params": p}, x)[0] - x))
    g, gr = jax.jit(jax.grad(loss(m)))(v["params"]), jax.jit(jax.grad(loss(mr)))(v["params"])
    flat = np.concatenate([np.ravel(a) for a in jax.tree.leaves(g)])
    flat_r = np.concatenate([np.ravel(a) for a in jax.tree.leaves(gr)])
    # Recomputation may reorder float32 sums; biases before a GroupNorm have ~0 gradient, so
    # compare against the scale of the whole gradient.
    assert np.abs(flat - flat_r).max() <= 1e-4 * np.abs(flat).max()


def test_straight_through_gradients():
    """L1 on the output reaches the encoder through z_q = z + sg(z_q − z); the codebook gets
    gradient only from the codebook loss, the encoder input none."""
    model = _tiny("stage2")
    x = np.random.default_rng(6).random((1, 64, 64, 3), dtype=np.float32)
    v = _init(model, x.shape)

    def l1(p):
        return jnp.mean(jnp.abs(model.apply({"params": p}, x)[0] - x))

    def cb(p):
        return model.apply({"params": p}, x)[1]["codebook_loss"]

    g = jax.grad(l1)(v["params"])
    enc = jax.tree.leaves(g["multiscale_encoder"])
    assert max(float(jnp.abs(a).max()) for a in enc) > 0
    assert float(jnp.abs(g["quantize_group.0"]["embedding"]).max()) == 0.0
    gc = jax.grad(cb)(v["params"])
    assert float(jnp.abs(gc["quantize_group.0"]["embedding"]).max()) > 0
    assert float(jnp.abs(gc["out_conv"]["kernel"]).max()) == 0.0


def test_gt_indices_switch_the_codebook_loss_to_the_stage3_form():
    """0.25·MSE(z, E[gt]) + Gram, while the output keeps the LQ argmin."""
    model = _tiny("sr_x4")
    x = np.random.default_rng(7).random((2, 32, 32, 3), dtype=np.float32)
    v = _init(model, x.shape)
    out, aux = model.apply(v, x)
    gt = (aux["indices"] + 1) % 32
    out_gt, aux_gt = model.apply(v, x, gt_indices=gt)
    np.testing.assert_array_equal(np.asarray(out_gt), np.asarray(out))
    assert not np.isclose(float(aux_gt["codebook_loss"]), float(aux["codebook_loss"]))


def test_stage1_semantic_head():
    model = _tiny("stage1", use_semantic_loss=True)
    v = _init(model, (1, 64, 64, 3))
    _, aux = model.apply(v, np.zeros((1, 64, 64, 3), np.float32))
    assert aux["semantic_feat"].shape == (1, 8, 8, 512)
    assert float(aux["semantic_feat"].min()) >= 0.0        # ReLU


def test_config_validation_messages():
    cfg = models.tiny_model_config("sr_x4")
    cfg.channels = [30] * 7
    with pytest.raises(ValueError, match="multiples of 32"):
        models.build(cfg)
    cfg = models.tiny_model_config("sr_x4")
    cfg.swin_dim = 64
    with pytest.raises(ValueError, match="swin_dim"):
        models.build(cfg)
    with pytest.raises(ValueError, match="unknown network kind"):
        models.model_config("sr_x8")


@pytest.mark.parametrize("shape,out", [((2, 7, 5, 8), 6), ((1, 4, 4, 3), 64)])
def test_upsample_conv_equals_upsample_then_conv(shape, out):
    """The sub-pixel form of Upsample(x2) + Conv k3 p1: values and both gradients equal the
    plain composition up to float32 rounding of the pre-summed taps."""
    from jax import lax

    from adacode_jax.models import layers

    x = jax.random.normal(jax.random.key(0), shape)
    w = jax.random.normal(jax.random.key(1), (3, 3, shape[-1], out))

    def plain(x, w):
        return lax.conv_general_dilated(layers.upsample_nearest(x), w, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

    want, vjp_want = jax.vjp(plain, x, w)
    got, vjp_got = jax.vjp(layers.upsample2x_conv3x3, x, w)
    assert got.shape == want.shape == (shape[0], 2 * shape[1], 2 * shape[2], out)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(jnp.abs(want).max()))
    g = jax.random.normal(jax.random.key(2), want.shape)
    for a, b in zip(vjp_got(g), vjp_want(g)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(jnp.abs(b).max()))
    # the module keeps nn.Conv's parameter names and shapes (checkpoints, official names)
    params = layers.UpsampleConv(out).init(jax.random.key(3), x)["params"]
    assert {k: v.shape for k, v in params.items()} == {"kernel": w.shape, "bias": (out,)}


def test_upsample_conv_gradient_reduces_nine_taps_under_data_parallelism():
    """With the batch sharded, the kernel gradient's all-reduce carries the 3×3 kernel (9
    taps), not the four 2×2 phase kernels (16): the phase gradients are mapped onto the 3×3
    taps per example, before the sum over the batch."""
    import re

    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    from adacode_jax.models import layers

    devices = jax.devices()
    if len(devices) < 2:
        pytest.skip("needs several (fake) devices")
    mesh = Mesh(np.array(devices), ("data",))
    c, o = 8, 16
    x = jax.device_put(jnp.ones((len(devices), 6, 6, c)), NamedSharding(mesh, P("data")))
    w = jax.device_put(jnp.ones((3, 3, c, o)), NamedSharding(mesh, P()))
    loss = lambda w, x: jnp.sum(layers.upsample2x_conv3x3(x, w) ** 2)  # noqa: E731
    text = jax.jit(jax.grad(loss)).lower(w, x).compile().as_text()
    reduced = 0
    for line in text.splitlines():
        m = re.search(r"= (\(.*?\)|\S+) all-reduce(?:-start)?\(", line)
        if m:
            reduced += sum(int(np.prod([int(d) for d in dims.split(",") if d]))
                           for dims in re.findall(r"f32\[([\d,]*)\]", m.group(1)))
    assert reduced == 9 * c * o, (reduced, 16 * c * o)
