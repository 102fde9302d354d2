"""The Winograd F(2×2, 3×3) CPU kernel (adacode_jax/ops): equal to XLA's convolution,
its gradients through ``models/conv.py``, the networks' parity with it, and when it is used.

The kernel is compiled on first use; on a machine without a C++ compiler (and without the
``ziglang`` package) these tests are skipped with that reason, and the package runs on XLA's
convolution (``test_fallback_without_a_compiler`` checks that path everywhere)."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from adacode_jax.ops import build, winograd
from adacode_jax.ops import conv

# The suite runs on 8 fake CPU devices (conftest), where the default "auto" keeps XLA's path.
needs_kernel = pytest.mark.skipif(not build.compilers(), reason="no C++ compiler on this machine")


def _xla(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=conv.NHWC,
                                    precision=lax.Precision.HIGHEST)


def _data(shape, seed=0):
    n, h, w, c, o = shape
    r = np.random.default_rng(seed)
    x = jnp.asarray(r.standard_normal((n, h, w, c)), jnp.float32)
    k = jnp.asarray(r.standard_normal((3, 3, c, o)) / np.sqrt(9 * c), jnp.float32)
    b = jnp.asarray(r.standard_normal(o), jnp.float32)
    return x, k, b


@needs_kernel
@pytest.mark.parametrize("shape", [
    (1, 8, 8, 16, 32),        # one block, fewer tiles than a block
    (2, 7, 9, 32, 64),        # odd sizes: last tile row and column half outside
    (1, 33, 31, 64, 96),      # 96 outputs: not a multiple of the 64-wide output block
    (1, 40, 52, 128, 128),    # several tile blocks per image, the last one partial
    (3, 16, 16, 256, 32),
])
def test_kernel_equals_xla_convolution(shape):
    assert winograd._library()[0]
    x, k, b = _data(shape)
    got = np.asarray(jax.jit(winograd.conv3x3)(x, k, b))
    want = np.asarray(_xla(x, k) + b)
    assert got.shape == want.shape
    # F(2×2, 3×3) rounds differently from the direct sum; measured 5e-7 to 1e-6 relative.
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 4e-6, err
    # Not trivially equal: a kernel that, say, dropped the bias or a tile row would be far off.
    assert np.abs(got - np.asarray(_xla(x, k))).max() > 0.5


@needs_kernel
def test_conv_uses_the_kernel_and_keeps_xla_gradients(monkeypatch):
    x, k, _ = _data((2, 12, 10, 32, 64), seed=2)
    r = jnp.asarray(np.random.default_rng(3).standard_normal((2, 12, 10, 64)), jnp.float32)

    def loss(x, k):
        y = conv.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=conv.NHWC)
        return jnp.sum(y * r)

    grads, hlo = {}, {}
    for mode in ("0", "1"):
        monkeypatch.setenv(winograd.ENV, mode)
        f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        hlo[mode] = f.lower(x, k).as_text()
        grads[mode] = jax.tree.map(np.asarray, f(x, k))
    assert winograd.TARGET in hlo["1"] and winograd.TARGET not in hlo["0"]
    # forward and input gradient by the kernel, filter gradient as before
    assert hlo["1"].count(winograd.TARGET) == 2
    for a, b in zip(jax.tree.leaves(grads["1"]), jax.tree.leaves(grads["0"])):
        assert np.abs(a - b).max() <= 5e-6 * np.abs(b).max()


def test_when_the_kernel_applies(monkeypatch):
    f32, bf16 = jnp.float32, jnp.bfloat16
    same = ((1, 1), (1, 1))
    assert winograd.shapes_fit((1, 8, 8, 64), (3, 3, 64, 64), (f32, f32), (1, 1), same)
    assert not winograd.shapes_fit((1, 8, 8, 64), (3, 3, 64, 64), (bf16, f32), (1, 1), same)
    assert not winograd.shapes_fit((1, 8, 8, 64), (3, 3, 64, 64), (f32, f32), (2, 2), same)
    assert not winograd.shapes_fit((1, 8, 8, 3), (3, 3, 3, 64), (f32, f32), (1, 1), same)
    assert not winograd.shapes_fit((1, 8, 8, 64), (3, 3, 64, 3), (f32, f32), (1, 1), same)
    assert not winograd.shapes_fit((1, 8, 8, 64), (4, 4, 64, 64), (f32, f32), (1, 1), same)
    assert not winograd.shapes_fit((1, 8, 8, 64), (3, 3, 64, 64), (f32, f32), (1, 1),
                                   ((0, 0), (0, 0)))
    x = jnp.zeros((1, 8, 8, 64))
    w = jnp.zeros((3, 3, 64, 64))
    monkeypatch.setenv(winograd.ENV, "auto")
    assert jax.device_count() > 1 and not winograd.use(x, w, (1, 1), same)   # 8 fake devices
    monkeypatch.setenv(winograd.ENV, "0")
    assert not winograd.use(x, w, (1, 1), same)
    assert winograd.status() == f"off ({winograd.ENV}=0)"
    monkeypatch.setenv(winograd.ENV, "auto")
    assert winograd.status() == f"off ({jax.device_count()} devices)"
    if build.compilers():
        monkeypatch.setenv(winograd.ENV, "1")
        assert winograd.status().startswith("on: ") and ".so" in winograd.status()
    monkeypatch.setenv(winograd.ENV, "yes")
    with pytest.raises(ValueError, match="ADACODE_CPU_WINOGRAD='yes': expected auto, 0 or 1"):
        winograd.use(x, w, (1, 1), same)


def test_fallback_without_a_compiler(monkeypatch, tmp_path):
    """No compiler: ``build`` says so in one line and returns no library."""
    monkeypatch.setattr(build, "compilers", lambda: [])
    monkeypatch.setenv("ADACODE_KERNEL_CACHE", str(tmp_path))
    lib, how = build.build(winograd.SOURCE)
    assert lib is None and "no C++ compiler found" in how and "ziglang" in how


def test_failed_build_names_the_compiler_and_error(monkeypatch, tmp_path):
    bad = tmp_path / "bad.cc"
    bad.write_text("this is not C++\n")
    monkeypatch.setattr(build, "compilers", lambda: [["/bin/false"]])
    monkeypatch.setenv("ADACODE_KERNEL_CACHE", str(tmp_path / "cache"))
    lib, how = build.build(bad)
    assert lib is None and how.startswith("/bin/false: exit 1")
    assert not list((tmp_path / "cache").glob("*.so"))       # no half-written library left


def test_unwritable_cache_is_one_line_not_a_crash(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(build, "compilers", lambda: [["c++"]])
    monkeypatch.setenv("ADACODE_KERNEL_CACHE", str(blocker / "kernels"))   # under a file
    lib, how = build.build(winograd.SOURCE)
    assert lib is None and how.startswith(f"cannot write the kernel cache {blocker / 'kernels'}")
    assert "ADACODE_KERNEL_CACHE" in how


@needs_kernel
def test_library_kept_beside_the_source_not_in_home(monkeypatch, tmp_path):
    """A program that finds the kernel built writes nothing to the home folder (the web app's
    test checks its home stays empty)."""
    monkeypatch.delenv("ADACODE_KERNEL_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert build.cache_dirs()[0] == winograd.SOURCE.with_name("_build")
    lib, _ = build.build(winograd.SOURCE)
    assert lib is not None and lib.parent == winograd.SOURCE.with_name("_build")
    assert build.build(winograd.SOURCE) == (lib, f"{lib} (cached)")
    assert os.listdir(tmp_path) == []


@needs_kernel
@pytest.mark.parametrize("kind", ["sr_x4", "stage2"])
def test_networks_match_the_reference_with_the_kernel(kind, monkeypatch):
    """The official outputs (the criteria of docs/official.md#reference-outputs,
    tests/test_parity.py) with every eligible convolution on the kernel: indices at clear gaps, and outputs with them forced."""
    from tests import reference as ref
    from tests.test_parity import _gaps, _indices, converted
    monkeypatch.setenv(winograd.ENV, "1")
    model, variables = converted(kind)
    r = ref.outputs(kind)
    x = ref.nhwc(r["input"])
    forced = _indices(r["aux/indices"])
    apply = jax.jit(lambda v, x, idx: model.apply(v, x, force_indices=idx))
    assert winograd.TARGET in apply.lower(variables, x, forced).as_text()
    out, aux = apply(variables, x, forced)
    ref.assert_close(np.asarray(out), ref.nhwc(r["out"]), "out")
    ref.assert_close(np.asarray(aux["feat_before_quant"]), ref.nhwc(r["aux/feat_before_quant"]),
                     "feat_before_quant")
    _, free = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
    want = _indices(r["aux/indices"])
    clear = _gaps(r, "", "gap", want.shape[0]) >= 1e-2
    np.testing.assert_array_equal(np.asarray(free["indices"])[clear], want[clear])


@needs_kernel
def test_benchmark_counts_the_networks_flops_not_the_custom_calls(monkeypatch):
    """XLA's cost analysis counts nothing for the custom call; the benchmark's FLOP figure is
    the direct convolution's all the same."""
    from adacode_jax.tools import bench
    x, k, _ = _data((1, 16, 16, 32, 64), seed=4)

    def f(x, k):
        return conv.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),
                                         dimension_numbers=conv.NHWC)

    monkeypatch.setenv(winograd.ENV, "1")
    compiled = jax.jit(f).lower(x, k).compile()
    assert winograd.TARGET in compiled.as_text()
    # XLA counts the in-bounds multiply-adds: (3·16 − 2)² of the 3·16 taps squared per pair
    direct = 2 * 46 * 46 * 32 * 64
    assert (bench._flops(compiled) or 0) < 0.1 * direct
    counted = bench._network_flops(compiled, lambda: jax.jit(lambda x, k: f(x, k)), x, k)
    assert counted == direct


@needs_kernel
def test_export_keeps_xla_convolutions(monkeypatch):
    """A jax.export artefact must run without this package: no kernel in it even when forced."""
    from adacode_jax.inference import export
    from adacode_jax import models
    model = models.build(models.tiny_model_config("sr_x2"))      # 32 channels: kernel-eligible
    x = jnp.zeros((1, 32, 32, 3))
    variables = {"params": jax.jit(model.init)(jax.random.key(0), x)["params"]}
    monkeypatch.setenv(winograd.ENV, "1")
    assert winograd.TARGET in jax.jit(lambda v, x: model.apply(v, x)).lower(variables, x).as_text()
    exported = export.export_restore(model, variables, shape=(40, 56), platforms=("cpu",))
    assert winograd.TARGET not in exported.mlir_module()
