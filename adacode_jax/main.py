"""Entry point: ``python -m adacode_jax.main --config configs/stage3_sr.py:x4 --workdir DIR``.

Flags, the distributed runtime and logging; everything else is :mod:`adacode_jax.train`.
"""
from __future__ import annotations

import logging as std_logging
import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py[:variant])",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory: checkpoints, TensorBoard logs, exports")
flags.mark_flags_as_required(["config", "workdir"])


def _maybe_initialize_distributed() -> None:
    """``jax.distributed.initialize()`` on Cloud TPU pods, Slurm, Open MPI or Kubernetes."""
    cluster = any(v in os.environ for v in ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE",
                                            "TPU_WORKER_HOSTNAMES", "JAX_COORDINATOR_ADDRESS",
                                            "KUBERNETES_SERVICE_HOST", "MEGASCALE_COORDINATOR_ADDRESS"))
    if not cluster:
        return
    try:
        jax.distributed.initialize()
    except ValueError as e:   # a plain machine inside one of those environments
        logging.warning("jax.distributed.initialize() skipped: %s", e)


class _QuietLibraries(std_logging.Filter):
    """Drop the INFO chatter of Orbax's internals; warnings and errors still show."""

    def filter(self, record) -> bool:
        return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def main(argv) -> None:
    del argv
    logging.get_absl_handler().addFilter(_QuietLibraries())
    _maybe_initialize_distributed()
    from adacode_jax import train  # after the runtime is up

    logging.info("process %d of %d; local devices %s; global devices %d", jax.process_index(),
                 jax.process_count(), jax.local_devices(), jax.device_count())
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
