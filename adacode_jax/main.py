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
# Multi-process runs. --distributed: jax.distributed.initialize() with what the cluster tells
# it (Cloud TPU pods, whose workers carry no environment variable we could test for, Slurm,
# Open MPI, Kubernetes); launch/ passes it. The three explicit settings are for machines without
# a cluster manager JAX detects (and the localhost multi-process test).
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "initialise the JAX distributed runtime from the cluster "
                                 "environment (an error if there is none)")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0's coordinator (with --num_processes)")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "number of processes in the run")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "this process's index, 0 ... num_processes-1")
flags.mark_flags_as_required(["config", "workdir"])


def _maybe_initialize_distributed() -> None:
    """``jax.distributed.initialize()``: with the explicit flags, with ``--distributed``, or when
    a Slurm, Open MPI, Kubernetes or TPU environment variable is present."""
    explicit = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    given = [v is not None for v in explicit]
    if any(given) and not all(given):
        raise app.UsageError("--coordinator_address, --num_processes and --process_id go together")
    if all(given):
        jax.distributed.initialize(*explicit)
        return
    if _DISTRIBUTED.value:
        jax.distributed.initialize()
        return
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
