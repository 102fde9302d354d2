"""Training curves and timing from metrics.jsonl (adacode_jax.evaluation.report)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from adacode_jax.cli import report as report_cli
from adacode_jax.evaluation import report


def _write(path, records):
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "metrics.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return str(path)


def test_series_keeps_the_last_value_of_a_step_logged_twice(tmp_path):
    wd = _write(tmp_path / "a", [{"step": 10, "loss/pix": 0.5}, {"step": 20, "loss/pix": 0.4},
                                 {"step": 20, "loss/pix": 0.3}, {"step": 30, "val/psnr": 20.0}])
    assert report.series(report.read_metrics(wd), "loss/pix") == ([10, 20], [0.5, 0.3])


def test_wall_clock_leaves_out_downtime_between_resumes():
    recs = [{"step": s, "wall_time": t} for s, t in
            [(25, 100.0), (50, 130.0), (75, 160.0), (100, 5000.0), (125, 5030.0)]]
    t = report.wall_clock(recs)
    assert t == {"steps": 125, "seconds": 90.0, "left_out_gaps": 1}


def test_curves_are_drawn_for_every_run_and_metric(tmp_path):
    a = _write(tmp_path / "a", [{"step": s, "val/psnr": 10 + s / 10, "loss/pix": 1 / s}
                                for s in range(10, 200, 10)])
    b = _write(tmp_path / "b", [{"step": s, "val/psnr": 12 + s / 20} for s in range(10, 200, 10)])
    out = report.plot_curves({"a": a, "b": b}, ["val/psnr", "loss/pix"], str(tmp_path / "c.png"))
    from adacode_jax import images as io

    img = io.read_image(out)
    assert img.shape[1] > img.shape[0] > 200 and np.std(img) > 0.05


def test_missing_run_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        report.read_metrics(str(tmp_path))
    assert report_cli.main(["timing", "--run", f"x={tmp_path}"]) == 1
