"""3×3 stride-1 convolutions on CPU by Winograd's F(2×2, 3×3): 16 multiply-adds per 2×2 output
tile and channel pair where the direct form needs 36, in a fused C++ kernel (``winograd.cc``)
that XLA calls as an FFI custom call.

XLA:CPU runs these convolutions near its matmul rate, which leaves no room to be faster with
the same multiply-adds; Winograd written in JAX was slower (its transforms run at memory speed,
``bench/README.md``). Fused, the transforms stay in cache. Results equal XLA's convolution to
float32 rounding (about 1e-6 relative, ``tests/test_winograd.py``).

When it is used (``use(...)``): a float32 NHWC/HWIO convolution with a 3×3 kernel, stride 1,
padding 1, input channels a multiple of 16 and output channels a multiple of 32, traced while
``ADACODE_CPU_WINOGRAD`` allows it:

* ``auto`` (default): when JAX's default backend is the CPU with a single device. The custom
  call has no sharding rule, so programs over several devices (meshes, the test suite's fake
  devices) keep XLA's convolution.
* ``1``: whenever the shapes allow (single-device programs only); ``0``: never.

The library is compiled by ``make install`` or on first use (``build.py``, which says where it
is kept); without a compiler everything stays on XLA's path, with one log line saying why.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = Path(__file__).with_name("winograd.cc")
TARGET = "adacode_winograd_f2x2_3x3"
ENV = "ADACODE_CPU_WINOGRAD"
# Tiles per block: the block's transformed input (16 × tiles × C floats) and products stay
# within a core's L2 (measured 32-128 alike on a 2-core AVX-512 VM; 64 kept).
TILE_BLOCK = 64
# Output channels per pass over a block's products (M is 16 × tiles × OUT_BLOCK floats).
OUT_BLOCK = 64

log = logging.getLogger(__name__)


@functools.cache
def _library() -> tuple[bool, str]:
    """Build (or find cached) and register the kernel once per process: (usable, account)."""
    from adacode_jax.ops import build
    lib_path, how = build.build(SOURCE)
    if lib_path is None:
        log.warning("Winograd CPU convolution unavailable, using XLA's: %s", how)
        return False, how
    try:
        lib = ctypes.cdll.LoadLibrary(str(lib_path))
        jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.AdacodeWinogradF2),
                                    platform="cpu")
    except (OSError, AttributeError, RuntimeError) as e:
        log.warning("Winograd CPU convolution unavailable (%s: %s), using XLA's", lib_path, e)
        return False, f"{lib_path}: {e}"
    log.info("Winograd CPU convolution: %s", how)
    return True, how


def _switched_off() -> str | None:
    """Why programs traced now keep XLA's convolution whatever their shapes, or ``None``."""
    m = mode()
    if m == "0":
        return f"{ENV}=0"
    if m == "auto" and jax.default_backend() != "cpu":
        return f"backend {jax.default_backend()}"
    if m == "auto" and jax.device_count() != 1:
        return f"{jax.device_count()} devices"
    return None


def status() -> str:
    """One line for reports (the benchmark's machine line): whether programs traced now use
    the kernel, and why not."""
    off = _switched_off()
    if off:
        return f"off ({off})"
    ok, how = _library()
    return f"on: {how}" if ok else f"unavailable: {how}"


_forced: list[str] = []


@contextlib.contextmanager
def forced(value: str):
    """Trace with the mode ``value`` ("auto", "0", "1") whatever the environment says (the
    benchmark counts the network's FLOPs with XLA's convolutions: XLA's cost analysis counts
    none for a custom call)."""
    _forced.append(value)
    try:
        yield
    finally:
        _forced.pop()


def mode() -> str:
    value = _forced[-1] if _forced else os.environ.get(ENV, "auto").strip().lower()
    if value not in ("auto", "0", "1"):
        raise ValueError(f"{ENV}={value!r}: expected auto, 0 or 1")
    return value


def shapes_fit(x_shape, w_shape, dtypes, strides, pads) -> bool:
    """True for the convolutions the kernel computes (see the module docstring)."""
    return (len(x_shape) == 4 and tuple(w_shape[:2]) == (3, 3)
            and tuple(strides) == (1, 1) and tuple(map(tuple, pads)) == ((1, 1), (1, 1))
            and all(d == jnp.float32 for d in dtypes)
            and x_shape[3] == w_shape[2] and x_shape[3] % 16 == 0 and w_shape[3] % 32 == 0)


def use(x, w, strides, pads) -> bool:
    """Whether a convolution traced now goes through the kernel."""
    if not shapes_fit(x.shape, w.shape, (x.dtype, w.dtype), strides, pads):
        return False
    return _switched_off() is None and _library()[0]


def conv3x3(x: jax.Array, w: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """``conv(x, w) + bias``, NHWC/HWIO, 3×3, stride 1, padding 1, by the kernel. The caller
    checks ``use`` (this lowers only on CPU); not differentiable by itself (``models/conv.py``
    gives it XLA's gradients)."""
    n, h, wd, _ = x.shape
    o = w.shape[3]
    b = jnp.zeros((o,), jnp.float32) if bias is None else bias.astype(jnp.float32)
    # The second result is the kernel's scratch for the transformed weights (16·C·O floats),
    # allocated by XLA with the program's other buffers; the kernel computes it on each call
    # (XLA ran that transform-and-transpose as a slow transpose fusion: 4-11 ms per 256→256).
    call = jax.ffi.ffi_call(TARGET, (jax.ShapeDtypeStruct((n, h, wd, o), jnp.float32),
                                     jax.ShapeDtypeStruct((16 * w.shape[2] * o,), jnp.float32)),
                            vmap_method="sequential")
    y, _ = call(x, w.astype(jnp.float32), b, tile_block=np.int64(TILE_BLOCK),
                out_block=np.int64(OUT_BLOCK))
    return y
