"""Entry point: ``python -m adacode_jax.main --config stage3_sr:x4 --workdir DIR`` (the same
command as ``adacode-train``; ``--help`` lists the configs, ``--describe`` prints one's fields).

The flags, the distributed runtime and logging live in :mod:`adacode_jax.cli.train`; the
training itself is :func:`adacode_jax.training.loop.train_and_evaluate`.
"""
from __future__ import annotations

from adacode_jax.cli.train import console, main, run_training  # noqa: F401  (re-exported)

if __name__ == "__main__":
    console()
