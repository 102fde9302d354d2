"""Test set-up shared by every test module.

Eight fake CPU devices give the sharding tests a mesh; the flag must be set before JAX starts.
absl flags are marked parsed because grain's worker processes read them (stack.md trap 1).
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# The tiny training runs compile the same programs again and again (resume, chained stages):
# a persistent compilation cache turns the repeats into loads.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                   ".pytest_cache", "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()
