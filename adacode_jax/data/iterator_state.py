"""Saving and restoring the input iterator, so a resumed run gets exactly the next batch.

A Grain iterator's state is a small JSON-able dict (positions in the stream, per worker when
there are workers). Two ways to keep it:

- with Orbax, next to the model state: pass :func:`orbax_save_args` /
  :func:`orbax_restore_args` as one item of ``ocp.args.Composite`` in the run's
  ``CheckpointManager`` (Grain's handler writes ``process_<i>-of-<n>.json`` per host);
- as a plain JSON file per host: :func:`save_state_json` / :func:`restore_state_json`.

Restore into an iterator built from the same config (same sources, seed and worker_count).
"""
from __future__ import annotations

import json
import os
from typing import Any

import grain

from adacode_jax.data import pipeline


def get_state(it: grain.DatasetIterator) -> dict[str, Any]:
    """The iterator's position (JSON-able)."""
    return it.get_state()


def set_state(it: grain.DatasetIterator, state: dict[str, Any]) -> None:
    """Moves the iterator to a saved position; the next batch is the one that followed it."""
    it.set_state(state)


def state_filename(directory: str, process_index: int, process_count: int) -> str:
    return os.path.join(directory, f"data_iterator_process_{process_index}-of-{process_count}.json")


def save_state_json(directory: str, it: grain.DatasetIterator,
                    process_index: int | None = None, process_count: int | None = None) -> str:
    """Writes this host's iterator state as JSON under ``directory``; returns the file."""
    pi, pc = _process(process_index, process_count)
    os.makedirs(directory, exist_ok=True)
    path = state_filename(directory, pi, pc)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(get_state(it), f, indent=1)
    os.replace(tmp, path)  # never leave a half-written state behind
    return path


def restore_state_json(directory: str, it: grain.DatasetIterator,
                       process_index: int | None = None, process_count: int | None = None) -> None:
    """Restores this host's iterator state written by :func:`save_state_json`."""
    pi, pc = _process(process_index, process_count)
    path = state_filename(directory, pi, pc)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no data iterator state {path!r}: was the checkpoint written with "
                                f"{pc} hosts?")
    with open(path, encoding="utf-8") as f:
        set_state(it, json.load(f))


def _process(index: int | None, count: int | None) -> tuple[int, int]:
    if index is None or count is None:
        import jax  # pylint: disable=g-import-not-at-top
        return jax.process_index(), jax.process_count()
    return index, count


def orbax_save_args(it: grain.DatasetIterator) -> Any:
    """Orbax save args for the iterator: ``ocp.args.Composite(..., data=orbax_save_args(it))``."""
    return grain.checkpoint.CheckpointSave(it)


def orbax_restore_args(it: grain.DatasetIterator) -> Any:
    """Orbax restore args; restores into ``it`` in place (and returns it in the result)."""
    return grain.checkpoint.CheckpointRestore(it)


def make_resumable_iterator(config: Any, directory: str | None = None,
                            **kwargs) -> grain.DatasetIterator:
    """Builds the iterator and, if ``directory`` holds a JSON state for this host, restores it."""
    it = pipeline.make_iterator(config, **kwargs)
    if directory is not None:
        shard = kwargs.get("shard_options")
        pi, pc = (shard.shard_index, shard.shard_count) if shard is not None else (None, None)
        pi, pc = _process(pi, pc)
        if os.path.exists(state_filename(directory, pi, pc)):
            restore_state_json(directory, it, pi, pc)
    return it
