"""One run per workdir, one config per workdir: the workdir's lock (``run.lock``), how the
processes of a multi-host run agree on its outcome, the check that a resume keeps the
config's fixed fields, and the removal of what a run logged beyond the step it resumes from.
"""
from __future__ import annotations

import os
import tempfile
import time

import jax
import numpy as np
from absl import logging
from flax import traverse_util

from adacode_jax import paths

LOCK_FILE = "run.lock"


class WorkdirBusyError(RuntimeError):
    """Another live run holds the workdir's lock; the message names it."""


# ---- the lock ------------------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # another user's process
        return True
    return True


def acquire_lock(workdir: str) -> str:
    """Create ``workdir/run.lock`` (pid, host, start time) or raise :class:`WorkdirBusyError`.

    A lock left by a dead process of this host is taken over (logged); one of another host
    cannot be checked from here and is refused. Returns the lock's path.
    """
    import json
    import socket

    paths.makedirs(workdir)
    path = os.path.join(workdir, LOCK_FILE)
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for _ in range(3):
        if _create(path, me):
            return path
        try:
            with paths.open_file(path) as f:
                holder = json.load(f)
            pid, host = int(holder["pid"]), str(holder["host"])
        except (OSError, ValueError, KeyError, TypeError):
            raise WorkdirBusyError(f"{path} exists but is unreadable: another run may use "
                                   f"{workdir}; delete the file if none does") from None
        if host == me["host"] and not _pid_alive(pid):
            logging.warning("%s: taking over the lock of process %d on %s (started %s), which "
                            "is no longer running", path, pid, host, holder.get("started", "?"))
            paths.remove(path)
            continue
        raise WorkdirBusyError(
            f"{workdir} is in use by process {pid} on {host} (started "
            f"{holder.get('started', '?')}, lock {path}); wait for that run, use another "
            "workdir, or delete the lock if that run is dead")
    raise WorkdirBusyError(f"{path}: could not take the lock; another run keeps creating it")


def _create(path: str, me: dict) -> bool:
    """Write ``me`` to ``path`` if no file is there (atomically on a local disk); whether it
    was written."""
    import json

    if paths.is_url(path):       # no atomic create on object stores: best effort
        if paths.exists(path):
            return False
        with paths.open_file(path, "w") as f:
            json.dump(me, f)
        return True
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(me, f)
    return True


def release_lock(path: str) -> None:
    try:
        paths.remove(path)
    except OSError as e:
        logging.warning("could not remove the lock %s: %s", path, e)


# ---- multi-host agreement --------------------------------------------------------------------

_ROUNDS = iter(range(1 << 30))


def coordination_round() -> int:
    """A fresh number for the keys of one agreement in the JAX coordination service; every
    process draws the same sequence, so the same agreement gets the same number everywhere."""
    return next(_ROUNDS)


def all_processes_agree(name: str, error: BaseException | None) -> None:
    """Process 0's outcome of ``name`` for every process: the others raise its error too
    (instead of waiting in the first collective for a process that has stopped)."""
    if jax.process_count() == 1:
        if error is not None:
            raise error
        return
    from orbax.checkpoint import multihost

    client = multihost.get_jax_distributed_client()
    key = f"adacode:{name}:{coordination_round()}"
    if jax.process_index() == 0:
        client.key_value_set(key, "" if error is None else str(error))
        if error is not None:
            raise error
    else:
        message = client.blocking_key_value_get(key, 3600 * 1000)
        if message:
            raise WorkdirBusyError(f"process 0: {message}")


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is set on any process (an all-gather: every process takes part)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


# ---- one config per workdir --------------------------------------------------------------------

# What a resumed run may not change: the networks, the data (except how it is loaded), the
# seed and the stage, and what decides the optimiser state's layout. Everything else (num_steps,
# cadences, keep_checkpoints, profile, async_checkpoints, eval.*, mesh.*, learning rates ...) may
# change; such changes are logged.
RESUME_FIXED_PREFIXES = ("model.", "disc.", "data.")
RESUME_FIXED = ("seed", "stage", "train.frozen", "train.schedule")
RESUME_FREE = ("data.worker_count", "data.worker_buffer_size", "data.read_threads",
               "data.read_buffer_size")


def _short(v) -> str:
    import json

    return json.dumps(v, separators=(",", ":")) if not isinstance(v, str) else repr(v)


def check_resume_config(saved: dict, config, workdir: str, step: int) -> None:
    """Refuse to resume ``workdir`` with a config whose fixed fields differ from ``saved``.

    Fields absent from one side (a config written by another version) are not compared.
    """
    import json

    old = traverse_util.flatten_dict(saved, sep=".")
    new = traverse_util.flatten_dict(json.loads(config.to_json()), sep=".")
    fixed, free = [], []
    for k in sorted(set(old) & set(new)):
        if old[k] == new[k]:
            continue
        change = f"{k}: {_short(old[k])} → {_short(new[k])}"
        if k not in RESUME_FREE and (k in RESUME_FIXED or k.startswith(RESUME_FIXED_PREFIXES)):
            fixed.append(change)
        else:
            free.append(change)
    if fixed:
        raise ValueError(f"{workdir} belongs to another config: its checkpoint at step {step} "
                         f"differs in {'; '.join(fixed)}; resume with the saved values or "
                         "start a new workdir")
    if free:
        logging.info("resuming %s with changed settings: %s", workdir, "; ".join(free))


# ---- one entry per step in the logs, after a resume -------------------------------------------

def drop_logs_after(workdir: str, step: int) -> dict[str, int]:
    """Remove what a run logged beyond ``step``, the step it resumes from (everything if 0):
    ``metrics.jsonl`` lines and TensorBoard summary events (event files are rewritten without
    them). Process 0. Returns the number of entries dropped per file kind."""
    dropped = {"metrics.jsonl": _drop_jsonl_after(os.path.join(workdir, "metrics.jsonl"), step),
               "tensorboard": 0}
    tb = os.path.join(workdir, "tensorboard")
    if not paths.isdir(tb):
        return dropped
    for name in sorted(paths.listdir(tb)):
        if name.startswith("events.out.tfevents"):
            dropped["tensorboard"] += _drop_events_after(os.path.join(tb, name), step)
    if any(dropped.values()):
        logging.info("resuming at step %d: dropped the logged entries of later steps (%s)", step,
                     ", ".join(f"{n} from {k}" for k, n in dropped.items() if n))
    return dropped


def _drop_jsonl_after(path: str, step: int) -> int:
    """Rewrite the ``metrics.jsonl`` at ``path`` without the lines beyond ``step``; how many
    lines it dropped."""
    import json

    if not paths.exists(path):
        return 0
    with paths.open_file(path) as f:
        lines = f.read().splitlines()
    kept = []
    for line in lines:
        try:
            keep = step > 0 and int(json.loads(line)["step"]) <= step
        except (ValueError, KeyError, TypeError):
            keep = False                   # a line cut short by a kill
        if keep:
            kept.append(line)
    if len(kept) == len(lines):
        return 0
    tmp = path + ".tmp"
    with paths.open_file(tmp, "w") as f:
        f.write("".join(line + "\n" for line in kept))
    paths.replace(tmp, path)
    return len(lines) - len(kept)


# A TFRecord frame: length (8 bytes), its CRC (4), the data, the data's CRC (4).
_RECORD_OVERHEAD = 16


def _drop_events_after(events_path: str, step: int) -> int:
    """Rewrite the TensorBoard event file ``events_path`` without the summaries beyond
    ``step`` (removing it if none is left); how many events it dropped. Records are read by
    TensorBoard's own loader (with or without TensorFlow) and written by its record writer."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    if paths.is_url(events_path):
        # a local copy for the loader (TensorFlow's reader, where installed, knows no fsspec URLs)
        with paths.open_file(events_path, "rb") as f, \
                tempfile.NamedTemporaryFile(suffix=".tfevents") as local:
            size = local.write(f.read())
            local.flush()
            records = list(RawEventFileLoader(local.name).Load())
    else:
        size = os.path.getsize(events_path)
        records = list(RawEventFileLoader(events_path).Load())
    # the loader stops quietly at a record cut short by a kill: that record is dropped too
    n_drop = int(sum(len(r) + _RECORD_OVERHEAD for r in records) < size)
    kept = []
    for raw in records:
        event = Event.FromString(raw)
        if event.HasField("summary") and (step == 0 or event.step > step):
            n_drop += 1
        else:
            kept.append((raw, event.HasField("summary")))
    if not n_drop:
        return 0
    if not any(has_summary for _, has_summary in kept):
        paths.remove(events_path)
        return n_drop
    tmp = events_path + ".tmp"
    with paths.open_file(tmp, "wb") as f:
        writer = RecordWriter(f)
        for raw, _ in kept:
            writer.write(raw)
    paths.replace(tmp, events_path)
    return n_drop
