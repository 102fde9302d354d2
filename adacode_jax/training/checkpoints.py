"""What a run writes to keep, and how it reads it back: the Orbax training-state checkpoints
(resuming from the newest intact one, :func:`resume`; saving with at most one asynchronous
save in flight, :class:`Saver`), a full disk reported once with what to do, the best generator
so far (``best/generator``) and the inference exports at the end (``export/``)."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from adacode_jax import errors, paths
from adacode_jax.models import checkpointing
from adacode_jax.training import workdir as workdir_lib


# ---- resuming from the newest intact checkpoint ---------------------------------------------

class DamagedCheckpointsError(errors.UserError):
    """Checkpoints exist but none restores whole and finite."""


def _leaf_name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def non_finite_leaf(state, out_sharding) -> str | None:
    """The ``/``-joined name of the first floating leaf of ``state`` holding NaN or Inf, or
    None. One jitted reduction over the (sharded) arrays: every process takes part."""
    leaves = [(p, x) for p, x in jax.tree_util.tree_flatten_with_path(state)[0]
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    if not leaves:
        return None
    finite = jax.jit(lambda xs: jnp.stack([jnp.isfinite(x).all() for x in xs]),
                     out_shardings=out_sharding)([x for _, x in leaves])
    finite = np.asarray(jax.device_get(finite))
    return None if finite.all() else _leaf_name(leaves[int(np.argmin(finite))][0])


def _first_line(e: BaseException, n: int = 200) -> str:
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return f"{type(e).__name__}: " + (text if len(text) <= n else text[:n] + "...")


def restore_latest_intact(ckpts, target, data_it, out_sharding):
    """``(step, state)`` of the newest checkpoint that restores whole (every file there and
    readable) and finite; ``(None, None)`` if the run has no checkpoint.

    Each damaged newer one is reported by path (a warning) and moved to
    ``checkpoints_damaged/<step>`` so the resumed run can save that step again. If checkpoints
    exist but none is intact, raises :class:`DamagedCheckpointsError` (never a silent restart
    from step 0).
    """
    steps = ckpts.all_steps()
    damaged = []
    for step in reversed(steps):
        problem = None
        try:
            state = ckpts.restore(step, target, data_it)
        except Exception as e:  # noqa: BLE001 - any failure to read it makes it damaged
            problem = f"it does not restore ({_first_line(e)})"
        else:
            bad = non_finite_leaf(state, out_sharding)
            if bad is not None:
                problem = f"{bad} holds NaN/Inf values"
        if workdir_lib.any_process(problem is not None):
            damaged.append((step, problem or "damaged on another process"))
            continue
        for s, why in damaged:
            moved = ckpts.set_aside(s)
            logging.warning("%s: damaged checkpoint: %s; moved to %s; resuming from step %d "
                            "instead", ckpts.step_dir(s), why, moved, step)
        return step, state
    if not steps:
        return None, None
    listing = "; ".join(f"step {s}: {why}" for s, why in damaged)
    raise DamagedCheckpointsError(
        f"{ckpts.directory}: none of the {len(steps)} checkpoints is intact ({listing})",
        f"restore the folder from a backup, or move it away (e.g. mv {ckpts.directory} "
        f"{ckpts.directory}.bad) to train from step 0")


def resume(ckpts, config, workdir: str, target, data_it, out_sharding):
    """``(step, state)`` to resume ``workdir`` from, or ``(None, None)`` for a new run: the
    newest intact checkpoint (:func:`restore_latest_intact`), once the saved config allows it
    (:func:`adacode_jax.training.workdir.check_resume_config`)."""
    latest = ckpts.latest_step()
    saved = ckpts.saved_config(latest) if latest is not None else None
    if saved is not None:
        workdir_lib.check_resume_config(saved, config, workdir, latest)
    return restore_latest_intact(ckpts, target, data_it, out_sharding)


# ---- saving ----------------------------------------------------------------------------------

class Saver:
    """The run's checkpoint saves: each waits for the previous asynchronous one, and a full
    disk, here or in Orbax's threads, becomes one :class:`checkpointing.DiskFullError` that
    names the step a rerun resumes from.

    ``held_errors`` is entered around the whole loop: asynchronous saves fail in Orbax's
    threads, which log the error with tracebacks; they are held until it is known whether the
    failure is a full disk (then reported once).
    """

    def __init__(self, ckpts, workdir: str, state_bytes: int):
        self.ckpts, self.workdir, self.state_bytes = ckpts, workdir, state_bytes
        self.in_flight = None             # the step of an asynchronous save not yet finished
        self.held_errors = checkpointing.HeldOrbaxErrors()

    def _disk_full(self, s: int):
        before = [p for p in self.ckpts.all_steps() if p < s]
        resume_at = f"step {before[-1]}" if before else "step 0"
        return checkpointing.disk_full_reported(
            self.ckpts.step_dir(s), f"the checkpoint of step {s}", self.state_bytes,
            f"free disk space or move {self.workdir} to a larger disk, then run the same command "
            f"again: it resumes from {resume_at}", cleanup=lambda: self.ckpts.remove_partial(s),
            held=self.held_errors)

    def guard(self, path: str, what: str, nbytes: int, fix: str):
        """A context for writing ``what`` into ``path``: a full disk removes the partial
        output and raises one :class:`checkpointing.DiskFullError` ending in ``fix``."""
        return checkpointing.disk_full_reported(
            path, what, nbytes, fix, cleanup=lambda: checkpointing.remove_temporary(path),
            held=self.held_errors)

    def finish(self) -> None:
        """Wait for the asynchronous save in flight, if any."""
        if self.in_flight is not None:
            s, self.in_flight = self.in_flight, None
            with self._disk_full(s):
                self.ckpts.wait()

    def save(self, step: int, state, data_it, config) -> None:
        """Checkpoint ``state`` and the data iterator at ``step`` (asynchronously if the
        manager is)."""
        self.finish()
        with self._disk_full(step):
            self.ckpts.save(step, state, data_it, config, force=True)
        self.in_flight = step

    def close(self, ok: bool) -> None:
        """Close the manager; quietly if the run failed (see :func:`close_quietly`)."""
        if ok:
            self.ckpts.close()
        else:
            close_quietly(self.ckpts)


def close_quietly(ckpts) -> None:
    """Close the checkpoint manager while another error propagates: a failed background save
    would only raise (and log) that error again."""
    import logging as std_logging

    absl_logger = std_logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(std_logging.CRITICAL)
    try:
        ckpts.close()
    except Exception as e:  # noqa: BLE001 - the error being raised says what went wrong
        logging.info("closing the checkpoints after an error: %s", _first_line(e))
    finally:
        absl_logger.setLevel(level)


# ---- the best generator and the exports ---------------------------------------------------------

def best_dir(workdir: str) -> str:
    return os.path.join(workdir, "best", "generator")


def read_best(workdir: str):
    """The validation LPIPS of ``workdir/best/generator``, or None if there is none yet."""
    import json

    meta = os.path.join(best_dir(workdir), checkpointing.MODEL_JSON)
    if paths.exists(meta):
        with paths.open_file(meta) as f:
            return json.load(f).get("val/lpips_alex")
    return None


def save_best(saver: Saver, workdir: str, config, g_params, step: int, scores: dict) -> None:
    """The generator of ``step`` as ``workdir/best/generator``, its ``scores`` in model.json."""
    path = best_dir(workdir)
    with saver.guard(path, "the best generator so far", checkpointing.tree_bytes(g_params),
                     "free disk space, then run the same command again"):
        checkpointing.save_inference(path, config.model, {"params": g_params},
                                     extra={"step": step, **scores})


def write_exports(workdir: str, config, state) -> str:
    """Inference weights of G and D under ``workdir/export``: the input of the next stage and
    of the restoration tools."""
    out = os.path.join(workdir, "export")
    step = int(jax.device_get(state.step))
    extra = {"stage": int(config.stage), "step": step}
    # how the restorer runs this network by default (restore.Restorer.from_checkpoint)
    hints = {"tile": int(config.train.inference_tile),
             "overlap": int(config.train.inference_overlap),
             "low_freq_fix": float(config.train.inference_low_freq_fix)}
    if any(hints.values()):
        extra["inference"] = hints
    checkpointing.save_inference(os.path.join(out, "generator"), config.model,
                                 {"params": state.g_params}, extra=extra)
    checkpointing.save_inference(os.path.join(out, "discriminator"), config.disc,
                                 {"params": state.d_params, "spectral": state.d_spectral},
                                 extra={"stage": int(config.stage), "step": step})
    logging.info("exported inference weights to %s", out)
    return out


def export_guarded(saver: Saver, workdir: str, config, state, step: int) -> str:
    """:func:`write_exports`, a full disk reported with the checkpoint a rerun resumes from."""
    with saver.guard(os.path.join(workdir, "export"), "the exported weights",
                     checkpointing.tree_bytes((state.g_params, state.d_params, state.d_spectral)),
                     f"free disk space, then run the same command again: it resumes from the "
                     f"checkpoint of step {step} and exports"):
        return write_exports(workdir, config, state)
