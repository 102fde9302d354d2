"""Training curves and timing from runs' ``metrics.jsonl`` (written by every training run).

    python -m adacode_jax.cli.report curves --run NAME=WORKDIR [--run ...] \\
        --metric val/psnr --metric val/lpips_alex --output curves.png [--title TEXT]
    python -m adacode_jax.cli.report timing --run NAME=WORKDIR [--run ...]

``curves`` draws one panel per metric with one line per run (PNG, matplotlib). ``timing``
prints a Markdown table of steps and wall-clock per run: the sum of the gaps between
consecutive logged steps, leaving out gaps longer than ``--max-gap`` × the median gap (a
resumed run's downtime, or an evaluation pause is kept: it is part of training).
"""
from __future__ import annotations

import json
import os
from typing import Any


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """The records of ``workdir/metrics.jsonl``, in file order.

    Raises:
      FileNotFoundError: naming the file when the run has none.
    """
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is {workdir} a training workdir?")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def series(records: list[dict[str, Any]], metric: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``metric``; a step logged twice (a resumed run) keeps the last."""
    by_step = {int(r["step"]): float(r[metric]) for r in records if metric in r}
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def wall_clock(records: list[dict[str, Any]], max_gap: float = 5.0) -> dict[str, float]:
    """``{"steps", "seconds", "left_out_gaps"}`` of one run (see the module docstring)."""
    timed = [(int(r["step"]), float(r["wall_time"])) for r in records if "wall_time" in r]
    gaps = [(b[1] - a[1]) for a, b in zip(timed, timed[1:]) if b[0] > a[0]]
    if not gaps:
        return {"steps": max((int(r["step"]) for r in records), default=0), "seconds": 0.0,
                "left_out_gaps": 0}
    med = sorted(gaps)[len(gaps) // 2]
    kept = [g for g in gaps if g <= max_gap * max(med, 1e-9)]
    return {"steps": max(s for s, _ in timed), "seconds": float(sum(kept)),
            "left_out_gaps": len(gaps) - len(kept)}


def plot_curves(runs: dict[str, str], metrics: list[str], output: str, title: str = "") -> str:
    """One panel per metric, one line per run; returns ``output``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = {name: read_metrics(wd) for name, wd in runs.items()}
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name, recs in records.items():
            xs, ys = series(recs, metric)
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 15 else None, ms=3, label=name)
        ax.set_title(metric)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output


def timing_table(runs: dict[str, str], max_gap: float = 5.0) -> str:
    lines = ["| run | steps | wall-clock | s / step |", "|---|---|---|---|"]
    for name, wd in runs.items():
        t = wall_clock(read_metrics(wd), max_gap)
        per = t["seconds"] / t["steps"] if t["steps"] else float("nan")
        lines.append(f"| {name} | {t['steps']} | {t['seconds'] / 60:.1f} min | {per:.2f} |")
    return "\n".join(lines)

