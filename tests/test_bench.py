"""The benchmark's code paths on tiny shapes; no timing is asserted. (The official-size
figures and their comparison with the reference outputs: ``python -m adacode_jax.bench``.)"""
from __future__ import annotations

import json

from adacode_jax import bench


def test_tiny_smoke_run_prints_one_json_line_per_figure(capsys):
    assert bench.main(["--tiny", "--quick", "--no-accel",
                       "--only", "sr_x4_64", "train_sr_x4_b2", "data_sr_x4"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_name = {line["bench"]: line for line in lines}
    assert set(by_name) == {"machine", "sr_x4_64", "train_sr_x4_b2", "data_sr_x4"}
    assert by_name["machine"]["tiny"] and by_name["machine"]["cores_used"] >= 1
    for name in ("sr_x4_64", "train_sr_x4_b2"):
        line = by_name[name]
        assert line["ours_s"] > 0 and line["compile_s"] > 0 and line["gflops"] > 0
        assert line["peak_rss_mib"] > 0
        assert "reference_s" not in line              # tiny figures are not compared
    assert by_name["sr_x4_64"]["input"] == [1, 16, 16, 3]
    assert by_name["data_sr_x4"]["pairs_per_s_per_core"] > 0

