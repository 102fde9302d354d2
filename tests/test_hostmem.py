"""adacode_jax.hostmem: freed host memory stays mapped, so a step's buffers fault in once."""
import os
import platform
import subprocess
import sys

import pytest

from adacode_jax import hostmem

_CHILD = r"""
import ctypes, resource, sys
from adacode_jax import hostmem
state = hostmem.keep_freed_memory() if sys.argv[1] == "keep" else "default"
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
n = 256 << 20            # a block far above glibc's mmap threshold (32 MiB at most)

def touch_once():
    p = libc.malloc(n)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ctypes.memset(p, 1, n)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    libc.free(p)
    return faults

touch_once()
print(state, touch_once())
"""


def _second_touch(mode: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != hostmem.ENV}   # conftest turns it off
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True,
                         check=True, env=env).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc only")
def test_a_freed_block_is_reused_without_page_faults():
    state, faults = _second_touch("keep")
    assert state == "kept"
    assert faults < 100, faults                       # the same pages, still mapped
    state, faults = _second_touch("default")
    # glibc's default: munmap on free, so all 65 536 pages (4 KiB) fault in again (fewer
    # where the kernel backs the block with huge pages)
    assert faults > 100, faults


def test_it_can_be_turned_off(monkeypatch):
    monkeypatch.setenv(hostmem.ENV, "0")
    assert hostmem.keep_freed_memory() == f"off ({hostmem.ENV}=0)"
    assert hostmem.state == f"off ({hostmem.ENV}=0)"
