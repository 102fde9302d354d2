"""Orbax I/O for inference variables: a network's config (JSON) beside its variables.

Inference checkpoints (converted official weights, training exports) and the training run's
``CheckpointManager`` wrapper.

Layout of a converted or exported directory::

    DIR/model.json      {"model": <model ConfigDict as a dict>, "source": ...}
    DIR/variables/      Orbax StandardCheckpointer tree {"params": ..., ["spectral": ...]}
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging as std_logging
import os
import re
import shutil
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from adacode_jax import errors, paths

MODEL_JSON = "model.json"
VARIABLES_DIR = "variables"


def save_inference(directory: str, model_cfg: ml_collections.ConfigDict, variables: Any,
                   *, extra: dict | None = None) -> str:
    """Write ``variables`` and ``model_cfg`` under ``directory`` (created; replaced if present)."""
    directory = paths.absolute(directory)
    paths.makedirs(directory)
    # jax arrays go to Orbax as they are: sharded (multi-host) arrays are written by every host.
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(directory, VARIABLES_DIR),
                   jax.tree.map(lambda a: a if isinstance(a, jax.Array) else np.asarray(a), variables),
                   force=True)
    if jax.process_index() == 0:
        meta = {"model": json.loads(model_cfg.to_json()), **(extra or {})}
        with paths.open_file(os.path.join(directory, MODEL_JSON), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
    return directory


def first_non_finite(tree: Any) -> str | None:
    """The ``/``-joined path of the first floating leaf of ``tree`` holding NaN or Inf, or None."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        a = np.asarray(leaf)
        if np.issubdtype(a.dtype, np.inexact) and not np.isfinite(a).all():
            return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                            for k in path)
    return None


def load_inference(directory: str):
    """(model_cfg, variables, meta) from a directory written by :func:`save_inference`.

    The variables come back as host numpy arrays, whatever the device layout or number of
    processes they were saved from (an export of a one-GPU run loads on a pod, and back).
    """
    directory = paths.absolute(directory)
    meta_path = os.path.join(directory, MODEL_JSON)
    if not paths.exists(meta_path):
        raise FileNotFoundError(
            f"{meta_path} not found: {directory} is not an adacode-jax inference checkpoint. "
            "Make one with `python -m adacode_jax.cli.convert` (official .pth) or from training.")
    with paths.open_file(meta_path) as f:
        meta = json.load(f)
    with ocp.StandardCheckpointer() as ckptr:
        path = os.path.join(directory, VARIABLES_DIR)
        # Without a target Orbax restores the saved shardings, which fails on another topology.
        stored = ckptr.metadata(path).item_metadata
        variables = ckptr.restore(path, jax.tree.map(lambda m: np.empty(m.shape, m.dtype), stored))
    bad = first_non_finite(variables)
    if bad is not None:
        raise ValueError(f"{directory}: the weights are broken: {bad} holds NaN/Inf values; "
                         "re-export them from a training checkpoint saved before the loss "
                         "diverged")
    return ml_collections.ConfigDict(meta["model"]), variables, meta


# ---- training checkpoints ----------------------------------------------------------------

class RunCheckpoints:
    """The one Orbax ``CheckpointManager`` of a training run.

    Each step directory holds three items: ``state`` (the :class:`~adacode_jax.training.steps.TrainState`
    pytree, restored onto the current mesh's shardings, whatever the device count at save
    time), ``data`` (the Grain iterator position, one JSON per host) and ``config`` (JSON).
    """

    def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True):
        import grain  # noqa: F401  (registers grain's checkpoint handlers)

        self.directory = paths.absolute(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 enable_async_checkpointing=async_save))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_iterator, config: ml_collections.ConfigDict,
             *, force: bool = False) -> bool:
        import grain

        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  data=grain.checkpoint.CheckpointSave(data_iterator),
                                  config=ocp.args.JsonSave(json.loads(config.to_json())))
        return self.manager.save(step, args=args, force=force)

    def restore(self, step: int, abstract_state, data_iterator):
        """The saved state (with the shardings of ``abstract_state``); moves the iterator."""
        import grain

        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                  data=grain.checkpoint.CheckpointRestore(data_iterator))
        restored = self.manager.restore(step, args=args)
        return restored["state"]

    def saved_config(self, step: int) -> dict | None:
        """The config saved with ``step`` (a JSON dict), or None if that step has none."""
        try:
            restored = self.manager.restore(
                step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        except (FileNotFoundError, KeyError, ValueError):
            return None
        return restored["config"]

    def all_steps(self) -> list[int]:
        """The finalised steps, oldest first (a save cut short leaves only a temporary folder,
        which Orbax does not list)."""
        return sorted(self.manager.all_steps())

    def step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def set_aside(self, step: int) -> str:
        """Move the damaged ``step`` out of the manager's folder, to
        ``<directory>_damaged/<step>`` (kept for inspection; a resumed run will save that step
        again). Process 0 moves; every process reloads the list of steps. Returns the new path."""
        from etils import epath

        dst = os.path.join(self.directory.rstrip("/") + "_damaged", str(step))
        if jax.process_index() == 0:
            dst_path = epath.Path(dst)
            if dst_path.exists():
                dst_path.rmtree()
            dst_path.parent.mkdir(parents=True, exist_ok=True)
            epath.Path(self.step_dir(step)).rename(dst_path)
        _sync(f"set_aside_{step}")
        self.manager.reload()
        return dst

    def remove_partial(self, step: int) -> list[str]:
        """Delete what an interrupted save of ``step`` left (its temporary folder, or a step
        folder that is not in the list of finalised steps). Process 0; returns the paths."""
        from etils import epath

        removed = []
        if jax.process_index() == 0:
            root = epath.Path(self.directory)
            if root.exists():
                for p in root.iterdir():
                    partial = (p.name.startswith(f"{step}.orbax-checkpoint-tmp")
                               or (p.name == str(step) and step not in self.manager.all_steps()))
                    if partial:
                        p.rmtree() if p.is_dir() else p.unlink()
                        removed.append(str(p))
        return removed

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def remove_temporary(folder: str) -> list[str]:
    """Delete the temporary folders that interrupted Orbax saves left under ``folder`` (two
    levels deep: ``export/generator/variables.orbax-checkpoint-tmp-*``). Process 0."""
    from etils import epath

    removed = []
    root = epath.Path(folder)
    if jax.process_index() != 0 or not root.exists():
        return removed
    todo = [root]
    for _ in range(3):
        nxt = []
        for d in todo:
            for p in d.iterdir():
                if ".orbax-checkpoint-tmp" in p.name:
                    p.rmtree() if p.is_dir() else p.unlink()
                    removed.append(str(p))
                elif p.is_dir():
                    nxt.append(p)
        todo = nxt
    return removed


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from orbax.checkpoint import multihost

        multihost.sync_global_processes(f"adacode_{name}")


# ---- disk full ----------------------------------------------------------------------------

class DiskFullError(errors.UserError):
    """A checkpoint or export did not fit on the disk (ENOSPC, EDQUOT); the message names the
    path, the space needed and the space free.

    ``needed`` and ``free`` (bytes; ``free`` is None where it could not be read) are the
    figures of the message: free space as it was once the partial output had been removed.
    """

    def __init__(self, what: str, fix: str | None = None, *, needed: int = 0,
                 free: int | None = None):
        super().__init__(what, fix)
        self.needed = needed
        self.free = free


_DISK_FULL_TEXT = re.compile(r"No space left on device|Disk quota exceeded|"
                             rf"os_error_code='?({errno.ENOSPC}|{errno.EDQUOT})\b")


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e`` (or an exception it was raised from) is a full disk or exhausted quota:
    an ``OSError`` with ENOSPC / EDQUOT, or TensorStore's error text for them."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if _DISK_FULL_TEXT.search(str(e)):
            return True
        e = e.__cause__ or e.__context__
    return False


def tree_bytes(tree) -> int:
    """Bytes of the (global) arrays of ``tree``: about what a checkpoint of it takes."""
    return int(sum(int(np.prod(np.shape(x))) * np.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(tree) if hasattr(x, "dtype")))


def free_bytes(path: str) -> int | None:
    """Free bytes on the file system of ``path`` (its nearest existing parent); None for
    object stores."""
    if paths.is_url(path):
        return None
    p = os.path.abspath(path)
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


class HeldOrbaxErrors(std_logging.Filter):
    """Holds back the ERROR records (with tracebacks) that Orbax's writer threads log when a
    save fails, so a full disk is reported once, by :class:`DiskFullError`. A context manager
    (on the ``absl`` logger); records not released by :meth:`release` are logged at exit.
    Asynchronous saves fail in the background: hold them for as long as a save may run."""

    def __init__(self):
        super().__init__()
        self.held: list[std_logging.LogRecord] = []
        self._logger = std_logging.getLogger("absl")

    def filter(self, record) -> bool:
        if record.levelno >= std_logging.ERROR and "/orbax/" in (record.pathname or ""):
            self.held.append(record)
            return False
        return True

    def release(self, *, file_only: bool) -> None:
        """Log the held records: as they are, or (a reported full disk) to the log file only,
        as INFO lines without traceback."""
        held, self.held = self.held, []
        for record in held:
            if file_only:
                record.adacode_file_only = True
                record.levelno, record.levelname = std_logging.INFO, "INFO"
                record.exc_info = record.exc_text = None
            for h in self._logger.handlers or std_logging.getLogger().handlers:
                if record.levelno >= h.level and h.filter(record):
                    h.handle(record)

    def __enter__(self):
        self._logger.addFilter(self)
        return self

    def __exit__(self, *exc) -> None:
        self._logger.removeFilter(self)
        self.release(file_only=False)


@contextlib.contextmanager
def disk_full_reported(path: str, what: str, nbytes: int, fix: str, cleanup=None,
                       held: HeldOrbaxErrors | None = None):
    """Run a save into ``path``; a full disk becomes one :class:`DiskFullError`:
    ``<path>: no space left on device while writing <what> (needs about X, Y free); <fix>``.

    ``cleanup()`` (removing the partial output) runs first. Other errors pass unchanged, and
    the Orbax error records held meanwhile (by ``held``, or for the duration of the block)
    are logged as usual.
    """
    own = held is None
    held = HeldOrbaxErrors() if own else held
    if own:
        held.__enter__()
    try:
        yield
    except Exception as e:  # noqa: BLE001 - re-raised unless it is a full disk
        full = is_disk_full(e)
        held.release(file_only=full)
        if not full:
            raise
        if cleanup is not None:
            try:
                cleanup()
            except OSError as ce:
                std_logging.getLogger("absl").warning("could not remove the partial %s: %s", what, ce)
        free = free_bytes(path)
        space = f"needs about {_fmt_bytes(nbytes)}" + (
            f", {_fmt_bytes(free)} free" if free is not None else "")
        raise DiskFullError(f"{path}: no space left on device while writing {what} ({space})",
                            fix, needed=int(nbytes), free=free) from None
    finally:
        if own:
            held.__exit__(None, None, None)


def _fmt_bytes(n: float) -> str:
    from adacode_jax.training import console

    return console.format_bytes(n)

