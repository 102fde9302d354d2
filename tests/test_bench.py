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



def test_accelerator_lines_run_on_fake_devices(monkeypatch):
    """The lines a GPU or TPU gets (bf16 inference at batch 8 per call, the bf16 stage III
    step on a data-parallel mesh of every device, its MFU), run here on the 8 fake CPU
    devices with a made-up 1 TFLOP/s peak."""
    real = bench.machine
    monkeypatch.setattr(bench, "machine", lambda: {**real(), "platform": "fake-accelerator"})
    monkeypatch.setitem(bench.PEAK_BF16_FLOPS, "cpu", 1e12)
    lines = bench.run([], runs=1, train_runs=1, data_seconds=0.0, accel=True, accel_batch=1,
                      tiny=True)
    assert [line["bench"] for line in lines] == [
        "sr_x4_16_bf16_b1", "stage2_64_bf16_b1", "train_sr_x4_bf16_b1_per_chip"]
    assert all(line["dtype"] == "bfloat16" for line in lines)
    step = lines[-1]
    assert step["batch"] == 8 and step["images_per_s"] > 0
    want = step["gflops"] * 1e9 / step["ours_s"] / (1e12 * 8)
    assert step["mfu"] > 0 and abs(step["mfu"] - want) <= 1e-4
