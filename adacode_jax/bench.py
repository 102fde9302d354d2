"""Speed benchmarks beside the reference's CPU figures (spec §12); one JSON line per figure.

    python -m adacode_jax.bench [--threads 2] [--only sr_x4_64 ...] [--runs 5] [--quick]

Figures (official-size networks with the reference's seed-0 synthetic weights, batch 1 unless
said; the reference's protocol: median of 5 runs after 1 warm-up, the training step median of
3):

==================  ================================================  ===========
name                what                                              reference
==================  ================================================  ===========
``sr_x4_64``        SR x4 forward, 64² LR -> 256²                     2.79 s
``sr_x4_128``       SR x4 forward, 128² LR -> 512²                    12.45 s
``stage2_256``      stage II reconstruction forward, 256²             1.90 s
``train_sr_x4_b2``  stage III x4 training iteration, batch 2:         30.7 s
                    teacher + G forward/backward + Adam, two D calls
                    + D backward + Adam, LPIPS-vgg in the loss
``data_sr_x4``      training pairs per second: read, resize, crop,    14-20 /s per
                    flip, BSRGAN x4 (one core)                        core (BSRGAN)
==================  ================================================  ===========

Each line has ``ours_s`` (median), ``min_s``, ``reference_s``, ``ratio`` (ours / reference; the
goal is <= 0.8), the compile time, XLA's FLOP count of the program and the rate it gives, the
process's peak memory so far, and for inference the error against the reference output (same
input, same weights) and the fraction of equal code indices. On an accelerator, ``--accel``
figures add bf16 images/s and the model FLOP utilisation of the stage III step at
``--accel_batch`` per chip.

``--tiny`` runs the same code on the ``:tiny`` networks with random weights and small inputs:
a smoke test of the benchmark itself, whose figures mean nothing.

Threads: XLA's CPU thread pool takes one thread per core it may run on; ``--threads N`` pins
this process to N cores before JAX starts (the reference used ``torch.set_num_threads(2)``).
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import platform
import resource
import sys
import time
from typing import Any, Callable

REFERENCE_S = {"sr_x4_64": 2.79, "sr_x4_128": 12.45, "stage2_256": 1.90, "train_sr_x4_b2": 30.7}
REFERENCE_PAIRS_PER_S = (14.0, 20.0)  # BSRGAN degradation alone, per core (spec §9)
GOAL_RATIO = 0.8
# Dense bf16 peak FLOP/s per chip, for the utilisation figure (vendor data sheets).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12,
                   "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
                   "TPU v6 lite": 918e12, "TPU v6e": 918e12}
BENCHES = ("sr_x4_64", "sr_x4_128", "stage2_256", "train_sr_x4_b2", "data_sr_x4")


def reference_dir() -> str:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.environ.get("ADACODE_REFERENCE_DIR",
                          os.path.join(os.path.dirname(repo), "shared", "reference"))


@functools.lru_cache(maxsize=None)
def reference_weights_module():
    """The reference's ``weights.py`` (seed-0 synthetic weights and inputs), loaded from
    :func:`reference_dir` (the parity tests use it too)."""
    path = os.path.join(reference_dir(), "weights.py")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: set ADACODE_REFERENCE_DIR to the reference "
                                "directory (its weights.py generates the benchmark weights)")
    spec = importlib.util.spec_from_file_location("adacode_reference_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reference_outputs(name: str) -> dict | None:
    import numpy as np

    path = os.path.join(reference_dir(), f"{name}_seed0.npz")
    if not os.path.exists(path):
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _nhwc(a):
    return a.transpose(0, 2, 3, 1)


def peak_memory_mib() -> dict:
    """Peak resident memory of this process so far, and of the first device if it reports it."""
    out = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["device_peak_mib"] = round(stats["peak_bytes_in_use"] / 2**20, 1)
    return out


def time_calls(fn: Callable[[], Any], runs: int, warmup: int = 1) -> dict:
    """Median and min wall time of ``fn()`` (which must block until its result is ready)."""
    import numpy as np

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"ours_s": round(float(np.median(times)), 4), "min_s": round(min(times), 4),
            "runs": runs, "times_s": [round(t, 4) for t in times]}


def _flops(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports costs
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def _compile(jitted, *args):
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def _with_reference(name: str, line: dict) -> dict:
    ref = REFERENCE_S.get(name)
    if ref is not None:
        line["reference_s"] = ref
        line["ratio"] = round(line["ours_s"] / ref, 3)
        line["goal_ratio"] = GOAL_RATIO
        line["meets_goal"] = line["ratio"] <= GOAL_RATIO
    return line


# ---- inference ---------------------------------------------------------------------------------

def _network(kind: str, dtype: str, tiny: bool, size: int):
    """(config, variables): the reference's seed-0 weights, or a random ``:tiny`` network."""
    import jax
    import jax.numpy as jnp

    from adacode_jax import convert, models

    if not tiny:
        cfg, variables = convert.to_variables(reference_weights_module().make_state_dict(kind, 0), kind)
    else:
        cfg = models.tiny_model_config(kind)
        if kind != "disc":
            cfg.gt_resolution, cfg.codebook_scale = 64, 8   # as config_lib.make_tiny
        variables = jax.jit(models.build(cfg).init)(jax.random.key(0),
                                                    jnp.zeros((1, size, size, 3)))
    cfg.dtype = dtype
    return cfg, variables


def _images(shape_nchw: tuple, seed: int, tiny: bool):
    import numpy as np

    if tiny:
        return np.random.default_rng(seed).random(shape_nchw, dtype=np.float32)
    return reference_weights_module().make_input(shape_nchw, seed)


def inference(kind: str, size: int, *, runs: int, dtype: str = "float32", batch: int = 1,
              tiny: bool = False) -> dict:
    """Forward of the official ``kind`` network on a ``size``² input; checks the reference."""
    import jax
    import numpy as np

    from adacode_jax import models

    cfg, variables = _network(kind, dtype, tiny, size)
    model = models.build(cfg)
    ref = None if tiny else _reference_outputs(kind)
    if ref is not None and ref["input"].shape[-1] == size and batch == 1:
        x = _nhwc(ref["input"])
    else:
        ref = None
        x = _nhwc(_images((batch, 3, size, size), 1234, tiny))
    variables = jax.device_put(variables)
    x = jax.device_put(np.ascontiguousarray(x))
    fwd = jax.jit(model.apply)
    compiled, compile_s = _compile(fwd, variables, x)
    timing = time_calls(lambda: jax.block_until_ready(compiled(variables, x)), runs)
    flops = _flops(compiled)
    line = {**timing, "compile_s": round(compile_s, 2), "batch": batch, "dtype": dtype,
            "input": list(x.shape)}
    if flops:
        line["gflops"] = round(flops / 1e9, 1)
        line["gflop_per_s"] = round(flops / 1e9 / timing["ours_s"], 1)
        line["images_per_s"] = round(batch / timing["ours_s"], 3)
    if ref is not None:
        out, aux = jax.device_get(compiled(variables, x))
        want = _nhwc(ref["out"])
        err = np.abs(np.asarray(out, np.float64) - want)
        line["max_abs_err"] = float(err.max())
        line["max_rel_err"] = float(err.max() / np.abs(want).max())
        line["index_agreement"] = float(
            (np.asarray(aux["indices"]) == ref["aux/indices"][:, :, 0]).mean())
    return line


# ---- the stage III training iteration ------------------------------------------------------------

def train_step_inputs(batch: int, dtype: str = "float32", tiny: bool = False):
    """(nets, train config, state, batch, consts) of the stage III x4 iteration at ``batch``:
    teacher = stage2, student = sr_x4, D = disc (the reference's seed-0 weights), LPIPS-vgg
    with real weights."""
    import numpy as np

    from adacode_jax import config_lib, models, perceptual, steps

    gt_size = 64 if tiny else 256
    g_cfg, g_vars = _network("sr_x4", dtype, tiny, gt_size // 4)
    t_cfg, t_vars = _network("stage2", dtype, tiny, gt_size)
    d_cfg, d_vars = _network("disc", dtype, tiny, gt_size)
    cfg = config_lib.base_config(3, "sr_x4").train
    lpips, lpips_vars = perceptual.load_lpips("vgg")
    g_tx, d_tx = steps.optimizers(cfg)
    nets = steps.Networks(models.build(g_cfg), models.build(d_cfg), lpips, None,
                          models.build(t_cfg), g_tx, d_tx, tuple(cfg.frozen))
    state = steps.init_state(nets, g_vars["params"], d_vars)
    ref = None if tiny else _reference_outputs("losses_sr_x4")
    if ref is not None and batch == 2:
        gt, lq = _nhwc(ref["gt"]), _nhwc(ref["lq"])
    else:
        gt = _nhwc(_images((batch, 3, gt_size, gt_size), 1234, tiny))
        lq = _nhwc(_images((batch, 3, gt_size // 4, gt_size // 4), 1235, tiny))
    data = {"gt": np.ascontiguousarray(gt), "lq": np.ascontiguousarray(lq)}
    consts = {"teacher": {"params": t_vars["params"]}, "lpips": lpips_vars}
    return nets, cfg, state, data, consts


def train_iteration(*, runs: int, batch: int = 2, dtype: str = "float32", mesh=None,
                    tiny: bool = False) -> dict:
    """Time of one stage III x4 G + D iteration (the state is donated and fed back)."""
    import jax

    from adacode_jax import sharding as sharding_lib, steps, train

    nets, cfg, state, data, consts = train_step_inputs(batch, dtype, tiny)
    if mesh is None:
        step = jax.jit(steps.make_train_step(nets, cfg, stage=3), donate_argnums=(0,))
        state, data, consts = jax.device_put((state, data, consts))
    else:
        state_sh = sharding_lib.tree_shardings(state, mesh, 2 ** 20)
        step = train.jit_train_step(nets, cfg, 3, mesh, state_sh)
        state = jax.device_put(state, state_sh)
        data = jax.device_put(data, sharding_lib.batch_sharding(mesh))
        consts = jax.device_put(consts, sharding_lib.replicated(mesh))
    compiled, compile_s = _compile(step, state, data, consts)
    holder = {"state": state}

    def one():
        holder["state"], metrics, _ = compiled(holder["state"], data, consts)
        jax.block_until_ready(metrics)

    timing = time_calls(one, runs)
    flops = _flops(compiled)
    line = {**timing, "compile_s": round(compile_s, 2), "batch": batch, "dtype": dtype}
    if flops:
        n_dev = 1 if mesh is None else mesh.size
        line["gflops"] = round(flops * n_dev / 1e9, 1)     # cost analysis is per device
        line["gflop_per_s"] = round(flops * n_dev / 1e9 / timing["ours_s"], 1)
    return line


def flop_utilisation(line: dict, n_devices: int) -> dict:
    """Model FLOP utilisation from XLA's FLOP count and the chip's dense bf16 peak."""
    import jax

    kind = jax.devices()[0].device_kind
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k.lower() in kind.lower()), None)
    out = {"device_kind": kind}
    if peak and "gflops" in line:
        out["peak_tflops_per_chip"] = peak / 1e12
        out["mfu"] = round(line["gflops"] * 1e9 / line["ours_s"] / (peak * n_devices), 4)
    return out


# ---- data pipeline -------------------------------------------------------------------------------

def data_pipeline(seconds: float, tiny: bool = False) -> dict:
    """Training pairs per second per core through ``adacode_jax.data.bench`` (sr x4)."""
    import shutil
    import tempfile

    import cv2

    from adacode_jax.config_lib import EMBEDDED_IMAGES
    from adacode_jax.data import bench as data_bench, examples

    cv2.setNumThreads(1)
    tmp = tempfile.mkdtemp(prefix="adacode_bench_")
    try:
        try:
            if tiny:
                raise SystemExit
            folder, source = data_bench.skimage_photos(tmp), "scikit-image photos"
        except SystemExit:
            folder, source = EMBEDDED_IMAGES, "embedded 256² crops"
        cfg = examples.ExampleConfig(task="sr", scale=4)
        pairs = data_bench.bench_examples(folder, cfg, seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"pairs_per_s_per_core": round(pairs, 2), "images": source,
            "reference_pairs_per_s_per_core": list(REFERENCE_PAIRS_PER_S),
            "meets_reference": pairs >= REFERENCE_PAIRS_PER_S[1]}


# ---- driver ------------------------------------------------------------------------------

def machine() -> dict:
    import jax

    dev = jax.devices()[0]
    return {"platform": dev.platform, "device_kind": dev.device_kind,
            "devices": jax.device_count(), "cpu": platform.processor() or platform.machine(),
            "cores_visible": os.cpu_count(), "cores_used": len(os.sched_getaffinity(0)),
            "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", "")}


def emit(line: dict) -> None:
    print(json.dumps(line), flush=True)


def run(names, *, runs: int, train_runs: int, data_seconds: float, accel: bool,
        accel_batch: int, tiny: bool = False) -> list[dict]:
    """Run the benchmarks ``names``, printing and returning one dict per figure."""
    import jax

    from adacode_jax import sharding as sharding_lib

    lines = []
    info = machine()
    emit({"bench": "machine", **info, "tiny": tiny})
    d = 4 if tiny else 1      # tiny: the same code on 1/4 of the sizes
    plan = {"sr_x4_64": lambda: inference("sr_x4", 64 // d, runs=runs, tiny=tiny),
            "sr_x4_128": lambda: inference("sr_x4", 128 // d, runs=runs, tiny=tiny),
            "stage2_256": lambda: inference("stage2", 256 // d, runs=runs, tiny=tiny),
            "train_sr_x4_b2": lambda: train_iteration(runs=train_runs, tiny=tiny),
            "data_sr_x4": lambda: data_pipeline(data_seconds, tiny)}
    for name in names:
        line = {"bench": name, **plan[name]()}
        if not tiny:
            line = _with_reference(name, line)
        line.update(peak_memory_mib())
        emit(line)
        lines.append(line)
    if accel and info["platform"] != "cpu":
        n = jax.device_count()
        mesh = sharding_lib.make_mesh(_mesh_cfg(), jax.devices())
        for kind, size in (("sr_x4", 64 // d), ("stage2", 256 // d)):
            line = inference(kind, size, runs=runs, dtype="bfloat16", batch=accel_batch, tiny=tiny)
            line = {"bench": f"{kind}_{size}_bf16_b{accel_batch}", **line}
            line.update(peak_memory_mib())
            emit(line)
            lines.append(line)
        line = train_iteration(runs=train_runs, batch=accel_batch * n, dtype="bfloat16", mesh=mesh,
                               tiny=tiny)
        line = {"bench": f"train_sr_x4_bf16_b{accel_batch}_per_chip", **line,
                "images_per_s": round(accel_batch * n / line["ours_s"], 2),
                **flop_utilisation(line, n)}
        line.update(peak_memory_mib())
        emit(line)
        lines.append(line)
    return lines


def _mesh_cfg():
    import ml_collections

    return ml_collections.ConfigDict({"data": -1, "fsdp": 1})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adacode_jax.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=BENCHES, default=list(BENCHES),
                        help="benchmarks to run (default: all)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per inference figure")
    parser.add_argument("--train_runs", type=int, default=3, help="timed training iterations")
    parser.add_argument("--data_seconds", type=float, default=5.0, help="data pipeline time")
    parser.add_argument("--threads", type=int, default=0,
                        help="pin the process to this many cores before JAX starts (0: all)")
    parser.add_argument("--accel", action=argparse.BooleanOptionalAction, default=True,
                        help="also the bf16 and FLOP-utilisation figures on GPU/TPU")
    parser.add_argument("--accel_batch", type=int, default=8, help="per-chip batch for --accel")
    parser.add_argument("--quick", action="store_true",
                        help="one timed run each and half a second of data pipeline")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny random networks and small inputs: a smoke test of this tool")
    args = parser.parse_args(argv)
    if args.threads:
        if "jax" in sys.modules:
            raise SystemExit("--threads must be applied before JAX is imported")
        cores = sorted(os.sched_getaffinity(0))[: args.threads]
        os.sched_setaffinity(0, cores)
    if args.quick:
        args.runs, args.train_runs, args.data_seconds = 1, 1, 0.5
    from absl import flags

    flags.FLAGS.mark_as_parsed()  # Grain reads absl flags
    run(args.only, runs=args.runs, train_runs=args.train_runs, data_seconds=args.data_seconds,
        accel=args.accel, accel_batch=args.accel_batch, tiny=args.tiny)
    return 0


if __name__ == "__main__":
    sys.exit(main())
