"""Test set-up shared by every test module.

Eight fake CPU devices give the sharding tests a mesh; the flag must be set before JAX starts.
absl flags are marked parsed because grain's worker processes read them
(docs/assets.md#software-stack, pitfall 1).
"""
import os

# LLVM at -O0: the suite's programs are tiny and run a few steps, so compiling dominates
# (a tiny stage III run: 60 s -> 41 s). XLA's graph passes are unchanged; tests/test_opt_level.py
# checks that the default level gives the same numbers to float32 rounding (FMA contraction).
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {TEST_XLA_FLAGS}")
# The tiny training runs compile the same programs again and again (resume, chained stages):
# a persistent compilation cache turns the repeats into loads.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                   ".pytest_cache", "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# Test workers run many programs one after another in one process: let glibc return freed
# memory as usual (adacode_jax.hostmem keeps it for a training run; tests/test_hostmem.py
# checks that policy in child processes of its own).
os.environ.setdefault("ADACODE_KEEP_FREED_MEMORY", "0")

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()


import gc  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_memory_after_module():
    """Drop JAX's in-memory executables and dead arrays after each test module: a worker runs
    many modules in turn, and without this its memory kept growing (one reached 13.7 GB beside
    the other worker and a two-process test, and the OOM killer ended the run)."""
    yield
    import jax

    jax.clear_caches()
    gc.collect()
