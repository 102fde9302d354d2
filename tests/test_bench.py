"""The benchmark's code paths on tiny shapes; no timing is asserted. (The official-size
figures beside the official code: ``python -m adacode_jax.cli.bench --reference-repo PATH``.)

``ADACODE_REFERENCE_REPO`` (a checkout of the official repository; with
``ADACODE_REFERENCE_PYTHON`` if this interpreter lacks torchvision/timm) also runs the
side-by-side path for real: our tiny networks beside one official-size forward.
"""
from __future__ import annotations

import json
import os
import platform
import sys

import pytest

from adacode_jax import hostmem
from adacode_jax.cli import bench as bench_cli
from adacode_jax.tools import bench, bench_official


def _json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_tiny_smoke_run_prints_one_json_line_per_figure_and_a_table(capsys):
    assert bench_cli.main(["--tiny", "--quick", "--no-accel",
                       "--only", "sr_x4_64", "train_sr_x4_b2", "data_sr_x4"]) == 0
    out = capsys.readouterr().out
    by_name = {line["bench"]: line for line in _json_lines(out)}
    assert set(by_name) == {"machine", "sr_x4_64", "train_sr_x4_b2", "data_sr_x4"}
    info = by_name["machine"]
    assert info["tiny"] and info["cores_used"] >= 1 and info["xla_matmul_2048_gflop_per_s"] > 0
    assert isinstance(info["vector_extensions"], list) and len(info["load_average"]) == 3
    for name in ("sr_x4_64", "train_sr_x4_b2"):
        line = by_name[name]
        assert line["ours_s"] > 0 and line["compile_s"] > 0 and line["gflops"] > 0
        assert line["peak_rss_mib"] > 0 and line["load_start"] is not None
        assert "reference_s" not in line and "ratio" not in line   # no reference ran
    assert by_name["sr_x4_64"]["input"] == [1, 16, 16, 3]
    assert by_name["data_sr_x4"]["pairs_per_s_per_core"] > 0
    assert "| figure | ours, median s (min) | official" in out and "XLA" in out


def test_cpu_bf16_adds_a_bfloat16_line_per_figure():
    lines = bench.run(["sr_x4_64"], runs=1, train_runs=1, data_seconds=0.0, accel=False,
                      accel_batch=1, tiny=True, cpu_bf16=True)
    assert [(ln["bench"], ln["dtype"]) for ln in lines] == [
        ("sr_x4_64", "float32"), ("sr_x4_64_bf16", "bfloat16")]


def test_no_stored_reference_figure_is_divided_by():
    import inspect

    for module in (bench, bench_official):
        source = inspect.getsource(module)
        for stale in ("meets_goal", "GOAL_RATIO", "REFERENCE_S", "2.79", "30.7"):
            assert stale not in source, (module.__name__, stale)


def test_ratio_only_beside_a_figure_timed_in_the_same_run():
    ref = {"figure": "fwd_sr_x4_64", "median_s": 4.0, "min_s": 3.5}
    line = bench_official.side_by_side({"bench": "sr_x4_64", "ours_s": 2.0, "min_s": 1.9}, ref,
                              comparable=True)
    assert line["reference_s"] == 4.0 and line["ratio"] == 0.5 and line["reference"] == ref
    tiny = bench_official.side_by_side({"bench": "sr_x4_64", "ours_s": 2.0}, ref, comparable=False)
    assert "ratio" not in tiny and tiny["reference"] == ref
    text = bench.table([line], {"cpu_model": "x", "vector_extensions": ["avx2"]})
    assert "| 0.50 |" in text and "4.00 (3.50)" in text
    assert "ratio_by_round" not in line                     # no per-run times: no spread

    # rounds pair our i-th run with theirs (adjacent in time): each round's ratio, and the
    # table shows their range beside the ratio of the medians
    ref = {**ref, "times_s": [4.0, 3.5, 5.0]}
    line = bench_official.side_by_side({"bench": "sr_x4_64", "ours_s": 2.1, "min_s": 2.0,
                               "times_s": [2.1, 2.0, 2.8]}, ref, comparable=True)
    assert line["ratio"] == 0.525 and line["ratio_by_round"] == [0.525, 0.571, 0.56]
    assert "| 0.53 (0.53–0.57) |" in bench.table([line], {})


def test_cpu_info_and_load_average():
    info = bench.cpu_info()
    assert set(info) == {"cpu_model", "vector_extensions"}
    assert set(info["vector_extensions"]) <= set(bench.VECTOR_FLAGS)
    assert all(v >= 0 for v in bench.load_average())


def test_a_missing_reference_checkout_is_one_error_line(tmp_path, capsys):
    assert bench_cli.main(["--tiny", "--quick", "--only", "sr_x4_64",
                       "--reference-repo", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "basicsr" in err


@pytest.mark.skipif(not os.environ.get("ADACODE_REFERENCE_REPO"),
                    reason="set ADACODE_REFERENCE_REPO to a checkout of the official repository")
def test_side_by_side_with_the_official_code(capsys):
    """The real harness: official-size ``fwd_sr_x4_64`` (one warm-up, one run) beside our
    tiny network; the harness's inputs and torch's matmul rate reach the machine line."""
    assert bench_cli.main(["--tiny", "--quick", "--no-accel", "--no-table", "--only", "sr_x4_64"]) == 0
    by_name = {line["bench"]: line for line in _json_lines(capsys.readouterr().out)}
    info, line = by_name["machine"], by_name["sr_x4_64"]
    assert info["torch_matmul_2048_gflop_per_s"] > 0 and info["torch_threads"] == info["xla_threads"]
    ref = line["reference"]
    assert ref["figure"] == "fwd_sr_x4_64" and ref["median_s"] > 0
    assert ref["threads"] == info["xla_threads"]
    assert "ratio" not in line                        # tiny: sizes differ, no ratio



_FAKE_HARNESS = """
import os, time, types
FWD = {"fwd_sr_x4_64": ("sr_x4", 8, "forward")}
TRAIN = ("train_s3_x4_b2",)
LOG = os.environ["FAKE_HARNESS_LOG"]
refload = types.SimpleNamespace(setup=lambda: None)

def _log(word):
    with open(LOG, "a") as f:
        f.write(word + "\\n")

def get_model(kind):
    def forward(x):
        _log("theirs")
        time.sleep(0.02)
        return (x * 2,)
    return forward

def make_train(kind, batch):
    def g_step():
        _log("theirs")
        time.sleep(0.03)
    return g_step, (lambda: time.sleep(0.01)), {}
"""


def _fake_reference(tmp_path, monkeypatch, source=_FAKE_HARNESS):
    """A Reference whose harness is a stand-in ``bench_ref.py`` that logs each call."""
    (tmp_path / "official" / "basicsr").mkdir(parents=True)
    harness = tmp_path / "harness"
    harness.mkdir()
    (harness / "bench_ref.py").write_text(source)
    log = tmp_path / "calls.log"
    monkeypatch.setenv("FAKE_HARNESS_LOG", str(log))
    return bench_official.Reference(str(tmp_path / "official"), threads=1, python=sys.executable,
                           harness=str(harness)), log


def test_lockstep_alternates_ours_and_theirs_run_by_run(tmp_path, monkeypatch):
    reference, log = _fake_reference(tmp_path, monkeypatch)

    def ours():
        with open(log, "a") as f:
            f.write("ours\n")

    with reference.start("fwd_sr_x4_64") as theirs:
        timing, ref = bench_official.interleaved(ours, theirs, rounds=3)
    # theirs warms up in the child, ours once here, then strict alternation
    assert log.read_text().split() == ["theirs", "ours"] + ["ours", "theirs"] * 3
    assert timing["runs"] == 3 and len(ref["times_s"]) == 3
    assert all(t >= 0.02 for t in ref["times_s"]) and ref["median_s"] >= 0.02
    assert ref["figure"] == "fwd_sr_x4_64" and ref["threads"] == 1
    assert ref["host_memory"] == f"off ({hostmem.ENV}=0)"   # tests/conftest.py's setting

    with reference.start("train_s3_x4_b2") as theirs:
        _, ref = bench_official.interleaved(lambda: None, theirs, rounds=2)
    assert ref["g_step_median_s"] >= 0.03 and ref["d_step_median_s"] >= 0.01
    assert ref["median_s"] >= ref["g_step_median_s"] + ref["d_step_median_s"] - 1e-3


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="the policy is glibc's mallopt")
def test_the_official_side_runs_under_our_host_memory_policy(tmp_path, monkeypatch):
    """Same allocator settings on both sides: the child applies hostmem before torch starts
    (the official code otherwise page-faults its per-step buffers in again every step)."""
    reference, _ = _fake_reference(tmp_path, monkeypatch)
    monkeypatch.setenv(hostmem.ENV, "1")
    with reference.start("fwd_sr_x4_64") as theirs:
        _, ref = bench_official.interleaved(lambda: None, theirs, rounds=1)
    assert ref["host_memory"] == "kept"


def test_a_failing_official_harness_is_one_error_line(tmp_path, monkeypatch):
    from adacode_jax import errors

    reference, _ = _fake_reference(tmp_path, monkeypatch,
                                   source="raise ImportError('no module named timm')\n")
    with pytest.raises(errors.UserError, match="official code .fwd_sr_x4_64. failed: .*timm"):
        reference.start("fwd_sr_x4_64")


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


def test_without_shared_the_checkout_gives_the_reference_weights_and_outputs(monkeypatch, tmp_path):
    """A plain clone (no full reference beside it): the benchmark's networks get the same seed-0 weights from
    tests/refweights.py and their outputs are checked against the vendored fixtures."""
    import numpy as np

    shared = bench.reference_dir()   # the float32 original beside the checkout (CI has it)
    monkeypatch.setenv("ADACODE_REFERENCE_DIR", str(tmp_path / "absent"))
    bench.reference_weights_module.cache_clear()
    try:
        assert bench.reference_dir() is None
        module = bench.reference_weights_module()
        assert module.__name__ == "tests.refweights"
        x = module.make_input((1, 3, 8, 8), 1234)
        assert x.shape == (1, 3, 8, 8) and x.dtype == np.float32
        out, source = bench.reference_outputs("sr_x4")
        assert source == "vendored" and out["out"].shape[:2] == (1, 3)
        # the copy's rounding, which the table names next to errors measured against it
        from tests import refdata
        assert bench.VENDORED_ROUNDING == 2.0 ** -(refdata.CHECK_BITS + 1)
        if shared:
            with np.load(os.path.join(shared, "sr_x4_seed0.npz")) as z:
                want = z["out"].astype(np.float64)
            rel = np.abs(out["out"] - want).max() / np.abs(want).max()
            assert 0 < rel <= bench.VENDORED_ROUNDING * (1 + 1e-5), rel   # + float32 dequantising
    finally:
        bench.reference_weights_module.cache_clear()
