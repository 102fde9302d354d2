"""Host memory: how much is available (:func:`available`), and the policy for XLA:CPU that keeps
freed memory mapped instead of giving it back each step.

XLA:CPU allocates one temporary buffer per execution of a compiled step (about 6 GB for the
stage III ×4 training iteration at batch 2) with ``posix_memalign``. glibc serves a block
that large with ``mmap`` and returns it with ``munmap`` when the step ends, so the next step
page-faults every 4 KiB page of it again: 1.8 million minor faults and 9.4 s of kernel time
per training iteration on a 2-core AVX2 machine (``bench/README.md``), a quarter of the
iteration's wall time spent by the kernel zeroing pages.

:func:`keep_freed_memory` tells glibc (``mallopt``) to serve every block from one heap and
never return freed memory to the system: after the first step the buffers are reused with no
page faults. The cost is that the process keeps its peak memory until it exits, which is what
a training run or a benchmark does anyway. It is applied by the command-line front ends that
run steps (``adacode_jax.main`` / training and ``adacode_jax.tools.bench``), never on import;
``ADACODE_KEEP_FREED_MEMORY=0`` turns it off. Other C libraries (musl, macOS) are left alone.

The benchmark's official side applies the same policy (``refdriver.py`` loads this file by
path, so it must keep to the standard library): torch allocates through glibc too, and a ratio
between two processes under different allocator settings would measure the allocator.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys

# mallopt parameters (glibc <malloc.h>).
M_TRIM_THRESHOLD = -1      # -1: never trim the heap's top
M_MMAP_MAX = -4            # 0: never serve a block with its own mmap
M_ARENA_MAX = -8           # 1: one heap for all threads (blocks freed by one are reused by all)

ENV = "ADACODE_KEEP_FREED_MEMORY"
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))

# What :func:`keep_freed_memory` did in this process ("default" when it was not called).
state = "default"


def keep_freed_memory() -> str:
    """Apply the policy if this process runs on glibc and it is not turned off; returns what
    was done, for the logs and the benchmark's machine line: ``"kept"``, ``"off (ENV=0)"``,
    ``"default (not glibc)"`` or ``"default (mallopt refused)"``.

    Call it before JAX creates its CPU client, so that XLA's worker threads share the one heap
    (an arena a thread already holds stays in use)."""
    global state
    state = _apply()
    return state


def _apply() -> str:
    if os.environ.get(ENV, "1") == "0":
        return f"off ({ENV}=0)"
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return "default (not glibc)"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "default (not glibc)"
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if not all(mallopt(param, value) == 1 for param, value in SETTINGS):
        return "default (mallopt refused)"
    return "kept"


def available() -> int | None:
    """``MemAvailable`` of the host in bytes (what can be allocated without swapping); None if
    unknown. The one probe of host memory, used by the restorer's size checks and budgets."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
