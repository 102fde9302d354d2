"""What a run logs: the scalars of the steps since the last log, fetched from the device one
step late (:class:`MetricsWindow`), their means with the codebook usage and learning rates, the
``metrics.jsonl`` lines (:class:`JsonlWriter`), and the TensorBoard pictures."""
from __future__ import annotations

import time

import jax
import numpy as np

from adacode_jax import paths
from adacode_jax.evaluation import visualize
from adacode_jax.training import sharding as sharding_lib
from adacode_jax.training import steps as steps_lib


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the step and the terms."""


def check_finite(step: int, metrics: dict) -> None:
    """Raise :class:`NonFiniteLossError` if a ``loss/*`` scalar of ``step`` is NaN or Inf."""
    bad = [k for k, v in metrics.items() if k.startswith("loss/") and not np.isfinite(v)]
    if bad:
        raise NonFiniteLossError(f"non-finite loss at step {step}: "
                                 + ", ".join(f"{k}={metrics[k]}" for k in bad)
                                 + "; lower the learning rate or check the data")


def usage_stats(counts: np.ndarray, sizes) -> dict:
    """Per codebook: distinct codes used and perplexity over the window's histogram."""
    out = {}
    for k, n_e in enumerate(sizes):
        c = counts[k, :n_e].astype(np.float64)
        p = c / max(c.sum(), 1.0)
        ent = -np.sum(p[p > 0] * np.log(p[p > 0]))
        out[f"codebook/{k}/unique"] = float((c > 0).sum())
        out[f"codebook/{k}/perplexity"] = float(np.exp(ent))
    return out


def weight_map_stats(maps: np.ndarray) -> dict:
    """Mean and standard deviation of each codebook's weight map (``maps``: NHWK)."""
    out = {}
    for k in range(maps.shape[-1]):
        out[f"weights/{k}/mean"] = float(maps[..., k].mean())
        out[f"weights/{k}/std"] = float(maps[..., k].std())
    return out


class MetricsWindow:
    """The steps' scalars and code histograms since the last log.

    Metrics are fetched one step late: the host reads step s's scalars after step s + 1 is
    queued (:meth:`queue`, then :meth:`fetch`), so the device never waits for the host's data
    loading and logging in between. Steps that log, evaluate or checkpoint fetch their own at
    once (no NaN state is saved). With code restarts, the histograms since the last restart
    are summed apart (:meth:`take_restart_counts`).
    """

    def __init__(self, sizes, restart_every: int):
        self.sizes, self.restart_every = sizes, int(restart_every)
        self.pending = []                 # (step, metrics, usage, skipped files), on device
        self.window, self.counts = [], None
        self.latest: dict = {}            # the newest fetched step's scalars
        self.restart_counts = None        # code histograms since the last restart
        self.n_restarted = 0              # codes re-placed since the last log

    def queue(self, step: int, metrics, usage, n_skipped: int) -> None:
        self.pending.append((step, metrics, usage, n_skipped))

    def fetch(self) -> None:
        """Bring the queued steps' scalars to the host; raises on a non-finite loss."""
        for s_done, m_dev, usage_dev, n_skipped in self.pending:
            m_host = jax.device_get(m_dev)
            check_finite(s_done, m_host)
            m_host["data/skipped_files"] = n_skipped
            self.window.append(m_host)
            self.latest = m_host
            usage = np.asarray(jax.device_get(usage_dev))
            self.counts = usage if self.counts is None else self.counts + usage
            if self.restart_every:
                self.restart_counts = (usage if self.restart_counts is None
                                       else self.restart_counts + usage)
        self.pending.clear()

    def take_restart_counts(self):
        """The code histograms since the last restart; the next restart counts from zero."""
        counts, self.restart_counts = self.restart_counts, None
        return counts

    def close(self, step: int, train_cfg, outputs: dict) -> dict:
        """The scalars to log at ``step``: the window's means, skipped files, codebook usage,
        restarts, learning rates and weight-map statistics. Starts the next window."""
        last = {k: float(np.mean([w[k] for w in self.window])) for k in self.window[0]}
        last["data/skipped_files"] = float(sum(w["data/skipped_files"] for w in self.window))
        last.update(usage_stats(self.counts, self.sizes))
        if self.restart_every:
            last["codebook/restarted"] = float(self.n_restarted)
            self.n_restarted = 0
        last["lr/g"] = float(steps_lib.learning_rate(train_cfg.lr_g, train_cfg)(step))
        last["lr/d"] = float(steps_lib.learning_rate(train_cfg.lr_d, train_cfg)(step))
        if "weight_maps" in outputs:
            last.update(weight_map_stats(sharding_lib.to_host(outputs["weight_maps"])))
        self.window, self.counts = [], None
        return last


class JsonlWriter:
    """Appends ``{"step": s, "wall_time": unix seconds, **scalars}`` lines to
    ``workdir/metrics.jsonl`` (process 0), so scripts can read a run's numbers and timing
    without TensorBoard (:mod:`adacode_jax.evaluation.report`)."""

    def __init__(self, path: str, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, step: int, scalars: dict) -> None:
        if self.enabled:
            import json

            with paths.open_file(self.path, "a") as f:
                f.write(json.dumps({"step": int(step), "wall_time": round(time.time(), 3),
                                    **{k: float(v) for k, v in scalars.items()}}) + "\n")


# ---- pictures ----------------------------------------------------------------------------------

def panels(batch: dict, out: np.ndarray, n: int = 4) -> np.ndarray:
    """Labelled LQ | output | GT rows for the first ``n`` examples (:mod:`adacode_jax.evaluation.visualize`)."""
    return visualize.training_panels(batch["gt"], out, batch.get("lq"), n=n)


def weight_map_pictures(batch: dict, maps: np.ndarray, n: int = 2) -> np.ndarray:
    """The CLI's weight-map figure for the first ``n`` examples, one colour scale for all."""
    return visualize.training_weight_maps(batch.get("lq", batch["gt"]), maps, n=n)


def pictures(host_batch: dict, outputs: dict) -> dict:
    """The TensorBoard images of a step: LQ | output | GT panels and, for AdaCode networks,
    the weight maps. A collective on multi-host meshes: every process calls it."""
    pics = sharding_lib.to_host({k: outputs[k] for k in ("out", "weight_maps") if k in outputs})
    images = {"lq_out_gt": panels(host_batch, pics["out"])}
    if "weight_maps" in pics:
        images["weight_maps"] = weight_map_pictures(host_batch, pics["weight_maps"])
    return images
