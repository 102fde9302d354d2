"""What a training run shows on the terminal (process 0), and its log file.

The terminal gets a short run header (:func:`run_header`) and one progress line
(:class:`Progress`: step/total, steps/s, ETA and the stage's key losses), rewritten in place on
a TTY and printed every ``interval_s`` seconds otherwise (Slurm logs, pipes). Every scalar still
goes to TensorBoard and ``metrics.jsonl``; the full parameter tables and every log line go to
``workdir/train.log`` (:func:`log_to_file`). The formatting functions are pure, for tests.
"""
from __future__ import annotations

import logging as std_logging
import os
import sys
import time
from typing import IO, Iterable, Mapping

# Lines that only the log file receives (``logging.info(..., extra=FILE_ONLY)``): the
# parameter tables.
FILE_ONLY = {"adacode_file_only": True}
LOG_FILE = "train.log"

# The 3-4 losses that say how a stage is going (the rest is in TensorBoard), with short labels.
KEY_LOSSES = {
    1: (("loss/pix", "pix"), ("loss/lpips", "lpips"), ("loss/codebook", "codebook"),
        ("loss/g_gan", "gan")),
    2: (("loss/pix", "pix"), ("loss/lpips", "lpips"), ("loss/codebook", "codebook"),
        ("loss/g_gan", "gan")),
    3: (("loss/pix", "pix"), ("loss/lpips", "lpips"), ("loss/before_quant", "feat"),
        ("loss/g_gan", "gan")),
}


# ---- pure formatting ----------------------------------------------------------------------

def format_duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h07m``, ``3d04h``; ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_count(n: int) -> str:
    """``950``, ``12.3K``, ``4.56M``, ``1.20B`` (parameter counts)."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}" if n / size < 100 else f"{n / size:.0f}{unit}"
    return str(int(n))


def format_bytes(n: float) -> str:
    """``512 B``, ``7.3 MB``, ``2.1 GB`` (powers of 1000, as ``df -H``)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def format_value(v: float) -> str:
    """A loss in 4 significant digits, switching to exponent notation when tiny or huge."""
    if v != v or v in (float("inf"), float("-inf")):
        return str(v)
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4):
        return f"{v:.3e}"
    return f"{v:.4g}"


def progress_line(step: int, total: int, steps_per_sec: float | None,
                  scalars: Mapping[str, float], keys: Iterable[tuple[str, str]]) -> str:
    """``step 120/1200 (10%) | 3.21 steps/s | ETA 5m36s | pix 0.0812 lpips 0.311 ...``.

    ``keys`` are ``(metric, label)`` pairs; metrics missing from ``scalars`` (a loss with zero
    weight) are left out.
    """
    width = len(str(total))
    head = f"step {step:>{width}}/{total} ({100 * step // max(total, 1):>3}%)"
    if steps_per_sec:
        eta = (total - step) / steps_per_sec
        rate = (f"{steps_per_sec:.3g} steps/s" if steps_per_sec >= 1
                else f"{1 / steps_per_sec:.3g} s/step")
        head += f" | {rate} | ETA {format_duration(eta)}"
    losses = " ".join(f"{label} {format_value(float(scalars[k]))}" for k, label in keys
                      if k in scalars)
    return head + (f" | {losses}" if losses else "")


def parameter_counts(g_params, d_params, frozen_keywords) -> dict[str, int]:
    """Parameter counts: ``g_trainable``, ``g_frozen`` (modules matching ``frozen_keywords``,
    the reference's substring rule) and ``d``. Works on global (sharded) arrays: shapes only."""
    import jax

    def count(tree) -> int:
        return int(sum(int(getattr(x, "size", 0)) for x in jax.tree.leaves(tree)))

    frozen = {k: v for k, v in g_params.items() if any(w in k for w in frozen_keywords)}
    trainable = {k: v for k, v in g_params.items() if k not in frozen}
    return {"g_trainable": count(trainable), "g_frozen": count(frozen), "d": count(d_params)}


def run_header(*, label: str, stage: int, kind: str, devices: str, mesh_shape: Mapping[str, int],
               processes: int, counts: Mapping[str, int], workdir: str, start: int,
               total: int) -> str:
    """The few lines printed when a stage starts (the parameter tables go to the log file)."""
    mesh = " x ".join(f"{n} {a}" for a, n in mesh_shape.items())
    where = f"resuming at step {start}" if start else "from step 0"
    return "\n".join([
        f"{label} | stage {stage} ({kind}) | {total} steps, {where}",
        f"  devices  {devices}; mesh {mesh}" + (f"; {processes} processes" if processes > 1 else ""),
        f"  params   G {format_count(counts['g_trainable'])} trainable + "
        f"{format_count(counts['g_frozen'])} frozen, D {format_count(counts['d'])}",
        f"  workdir  {workdir}  (log: {os.path.join(workdir, LOG_FILE)})",
    ])


def describe_devices(devices) -> str:
    """``8 x cpu`` or ``4 x NVIDIA H100 80GB HBM3`` (the first device's kind)."""
    devices = list(devices)
    kind = getattr(devices[0], "device_kind", devices[0].platform) if devices else "none"
    return f"{len(devices)} x {kind}"


# ---- the progress line ------------------------------------------------------------------------

class Progress:
    """One progress line on ``stream`` (stdout by default), enabled on process 0 only.

    On a TTY it is rewritten in place (``\\r``) at most every ``tty_interval_s``; otherwise a
    plain line is printed every ``interval_s`` and at the last step. The rate is measured over
    the steps since :meth:`start` (the first steps include compilation: it is reset after the
    first update).
    """

    def __init__(self, total: int, keys, *, enabled: bool = True, stream: IO | None = None,
                 interval_s: float = 30.0, tty_interval_s: float = 0.2, clock=time.monotonic):
        self.total, self.keys, self.enabled = int(total), tuple(keys), enabled
        self.stream = stream if stream is not None else sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = tty_interval_s if self.tty else interval_s
        self.clock = clock
        self._t0 = self._s0 = None
        self._last_shown = None
        self._open = False             # a TTY line without its newline yet
        self.rate = None

    def update(self, step: int, scalars: Mapping[str, float], *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if self._t0 is None or self._s0 is None:
            self._t0, self._s0 = now, step     # after compilation: the rate starts here
        elif step > self._s0 and now > self._t0:
            self.rate = (step - self._s0) / (now - self._t0)
        due = self._last_shown is None or now - self._last_shown >= self.interval_s
        if not (due or force or step >= self.total):
            return
        self._last_shown = now
        line = progress_line(step, self.total, self.rate, scalars, self.keys)
        if self.tty:
            self.stream.write("\r" + line + "\033[K")
            self._open = True
            if step >= self.total:
                self.finish()
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Erase the TTY line (before a log line is printed); the next update redraws it."""
        if self._open:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._open = False
            self._last_shown = None

    def finish(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


class _ClearProgress(std_logging.Filter):
    """Erases the live progress line before a log line reaches the terminal, and keeps
    file-only lines (``extra=FILE_ONLY``) and the libraries' INFO lines off it."""

    progress: Progress | None = None

    def filter(self, record) -> bool:
        if getattr(record, "adacode_file_only", False):
            return False
        if (record.levelno < std_logging.WARNING
                and f"{os.sep}adacode_jax{os.sep}" not in (record.pathname or "")):
            return False          # libraries' INFO (Orbax, clu, XLA): train.log has it
        if self.progress is not None:
            self.progress.clear()
        return True


_TERMINAL_FILTER = _ClearProgress()


def attach(progress: Progress | None) -> None:
    """Route log lines around ``progress`` (None: detach)."""
    _TERMINAL_FILTER.progress = progress


def _terminal_handlers():
    from absl import logging

    handlers = [logging.get_absl_handler()]
    handlers += [h for h in std_logging.getLogger().handlers
                 if isinstance(h, std_logging.StreamHandler)
                 and not isinstance(h, std_logging.FileHandler) and h not in handlers]
    return handlers


def log_to_file(workdir: str) -> std_logging.Handler | None:
    """Append every log line (INFO and up, the parameter tables too) to ``workdir/train.log``;
    keep file-only lines off the terminal. Returns the handler (for :func:`close_log_file`).
    Object-store workdirs get no log file (None)."""
    from absl import logging

    for h in _terminal_handlers():
        if _TERMINAL_FILTER not in h.filters:
            h.addFilter(_TERMINAL_FILTER)
    if "://" in workdir:
        return None
    os.makedirs(workdir, exist_ok=True)
    handler = std_logging.FileHandler(os.path.join(workdir, LOG_FILE), encoding="utf-8")
    handler.setLevel(std_logging.INFO)
    handler.setFormatter(logging.PythonFormatter())
    root = std_logging.getLogger()
    root.addHandler(handler)
    if root.level > std_logging.INFO or root.level == std_logging.NOTSET:
        root.setLevel(std_logging.INFO)
    std_logging.getLogger("absl").setLevel(std_logging.INFO)
    return handler


def close_log_file(handler: std_logging.Handler | None) -> None:
    if handler is not None:
        std_logging.getLogger().removeHandler(handler)
        handler.close()


# ---- process set-up (main) -----------------------------------------------------------------

def silence_libraries() -> None:
    """No TensorFlow C++ start-up lines (must run before TensorFlow is imported) and no
    INFO chatter from the libraries' Python loggers."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in ("tensorflow", "jax._src.xla_bridge", "grain"):
        std_logging.getLogger(name).setLevel(std_logging.WARNING)


def setup() -> None:
    """For a training command, before it imports the training code: quiet libraries and INFO
    logging (our lines; the terminal filter keeps the parameter tables off it)."""
    from absl import logging

    silence_libraries()
    logging.set_verbosity(logging.INFO)


def config_label() -> str:
    """The ``--config`` argument of this program (``configs/stage3_sr.py:x4,tiny``), if any."""
    try:
        from absl import flags

        flag = flags.FLAGS["config"]
        return str(getattr(flag, "config_filename", "") or "")
    except Exception:  # noqa: BLE001 - no such flag, or flags not parsed (library use)
        return ""
