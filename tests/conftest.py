"""Test set-up shared by every test module.

Eight fake CPU devices give the sharding tests a mesh; the flag must be set before JAX starts.
absl flags are marked parsed because grain's worker processes read them (stack.md trap 1).
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()
