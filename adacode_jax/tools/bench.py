"""Speed benchmarks, ours beside the official PyTorch code timed in the same run; one JSON line
per figure and a table at the end.

    python -m adacode_jax.cli.bench --threads 2 --reference-repo ~/adacode-official

Figures (official-size networks, batch 1 unless said; the reference's protocol: median of 5
runs after 1 warm-up, the training iteration median of 3):

==================  ================================================  ==========================
name                what                                              official (refbench figure)
==================  ================================================  ==========================
``sr_x4_64``        SR x4 forward, 64² LR -> 256²                     ``fwd_sr_x4_64``
``sr_x4_128``       SR x4 forward, 128² LR -> 512²                    ``fwd_sr_x4_128``
``stage2_256``      stage II reconstruction forward, 256²             ``fwd_stage2_256``
``train_sr_x4_b2``  stage III x4 training iteration, batch 2:         ``train_s3_x4_b2``
                    teacher + G forward/backward + Adam, two D calls
                    + D backward + Adam, LPIPS-vgg in the loss
``data_sr_x4``      training pairs per second: read, resize, crop,    (none)
                    flip, BSRGAN x4 (one core)
==================  ================================================  ==========================

With a checkout of the official repository (``--reference-repo`` or ``ADACODE_REFERENCE_REPO``)
each figure of ours is timed in lock-step with the same figure of the official code: the shared
harness ``tools/refbench/bench_ref.py`` builds and warms it up in a child process
(:mod:`adacode_jax.tools.refdriver`), then ours and theirs alternate run by run (ours once, theirs
once, ``--runs`` or ``--train-runs`` rounds), on the same cores with the same thread count
(``torch.set_num_threads`` = XLA's intra-op threads = ``--threads``) and the same inputs (the
harness's ``torch.rand`` tensors, seeds 1234 and 99, are generated once and fed to ours),
under the same allocator policy (:mod:`adacode_jax.hostmem`, applied in both processes). The
official code's time drifts by about 10% over minutes on a shared machine; alternating run by
run makes both sides see the same drift. Only then does a line carry ``reference_s`` and
``ratio`` (median ours / median official), with ``ratio_by_round`` (each round's two adjacent
runs divided: their spread is this machine's noise on the ratio). Without a reference
repository a line has our figures only: no stored figure is divided by.

Each line has ``ours_s`` (median), ``min_s``, the 1-minute load average before and after it,
the compile time, XLA's FLOP count of the program and the rate it gives, the process's peak
memory so far, and for inference the error against the stored reference output (seed-0
weights of docs/official.md#reference-outputs and their fixture input; checked once, untimed;
``reference_outputs`` says whether those were the reference's float32 arrays or the checkout's
vendored copy, whose rounding alone gives errors up to 4.9e-4) and the fraction of equal code
indices. The first line describes the machine: CPU model, vector
extensions, cores, load average, and a measured 2048² float32 matmul rate in XLA (and in torch
when the reference runs). On an accelerator, ``--accel`` figures add bf16 images/s and the
model FLOP utilisation of the stage III step at ``--accel_batch`` per chip; ``--cpu-bf16`` adds
the bf16 figures on CPU.

``--tiny`` runs the same code on the ``:tiny`` networks with random weights and small inputs:
a smoke test of the benchmark itself, whose figures mean nothing (no ratio is printed).
This module builds the figures; how each is timed, alone or in lock-step with the official
code, is :mod:`adacode_jax.tools.bench_official`. The command-line front end is
:mod:`adacode_jax.cli.bench`.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import platform
import resource
import sys
import time
from typing import Any, Callable

from adacode_jax import hostmem
from adacode_jax.tools import bench_official

# Dense bf16 peak FLOP/s per chip, for the utilisation figure (vendor data sheets).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12,
                   "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
                   "TPU v6 lite": 918e12, "TPU v6e": 918e12}
BENCHES = ("sr_x4_64", "sr_x4_128", "stage2_256", "train_sr_x4_b2", "data_sr_x4")
# Our figure -> the refbench harness's figure of the official code.
REFERENCE_FIGURES = {"sr_x4_64": "fwd_sr_x4_64", "sr_x4_128": "fwd_sr_x4_128",
                     "stage2_256": "fwd_stage2_256", "train_sr_x4_b2": "train_s3_x4_b2"}
# CPU flags worth printing beside a CPU figure (what XLA and oneDNN can vectorise with).
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
                "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16",
                "amx_int8")


_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def reference_dir() -> str | None:
    """A full reference directory (``ADACODE_REFERENCE_DIR``, else ``shared/reference`` in the
    folder that holds the checkout; what it holds: docs/official.md#reference-outputs), or None."""
    path = os.environ.get("ADACODE_REFERENCE_DIR") or os.path.join(
        os.path.dirname(_REPO), "shared", "reference")
    return path if os.path.isdir(path) else None


def _checkout_tests():
    """The checkout's ``tests`` package (its numpy implementation of the reference weight
    generator and the vendored reference outputs), or None outside a checkout."""
    if not os.path.exists(os.path.join(_REPO, "tests", "refdata.py")):
        return None
    if _REPO not in sys.path:
        sys.path.append(_REPO)
    import tests.refdata  # noqa: F401
    import tests.refweights  # noqa: F401
    return sys.modules["tests"]


@functools.lru_cache(maxsize=None)
def reference_weights_module():
    """What generates the seed-0 synthetic weights and inputs of the reference outputs: the
    reference's ``weights.py``, else the checkout's ``tests/refweights.py`` (the same bytes,
    checked by ``tests/test_reference_data.py``); None in an installed package without
    either (the networks then get random weights and no output is checked)."""
    ref = reference_dir()
    path = os.path.join(ref, "weights.py") if ref else ""
    if os.path.exists(path):
        spec = importlib.util.spec_from_file_location("adacode_reference_weights", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    tests = _checkout_tests()
    return tests.refweights if tests else None


def reference_outputs(name: str) -> tuple[dict | None, str | None]:
    """The official outputs for the seed-0 weights and input, and where they came from:
    ``"shared"`` (the reference's float32 arrays), or ``"vendored"`` (the checkout's copy,
    stored at 2^-10 of each array's max, so it adds up to :data:`VENDORED_ROUNDING` of max|ref|
    to any error measured against it); ``(None, None)`` without either."""
    import numpy as np

    ref = reference_dir()
    path = os.path.join(ref, f"{name}_seed0.npz") if ref else ""
    if os.path.exists(path):
        with np.load(path) as z:
            return {k: z[k] for k in z.files}, "shared"
    tests = _checkout_tests()
    if tests and os.path.exists(os.path.join(tests.refdata.VENDORED_DIR, f"{name}_seed0.npz")):
        return tests.refdata.load(tests.refdata.VENDORED_DIR, name, 0), "vendored"
    return None, None


# What the vendored copy's rounding alone can add to max_rel_err (tests/refdata.py: float32
# outputs kept at 2^-10 of their max, float16 ones as stored): errors up to this say nothing.
VENDORED_ROUNDING = 2.0 ** -11


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



def _flops(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports costs
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def _network_flops(compiled, make_jitted, *args) -> float | None:
    """XLA's FLOP count of ``compiled``, or, where it calls the Winograd CPU convolution (whose
    custom calls XLA's cost analysis counts as nothing), of the same program traced with
    XLA's convolutions (``make_jitted()`` must return a fresh jitted function, so that it is
    traced again): the figure is the network's direct-convolution count, whatever algorithm
    ran it, so rates stay comparable with the official code's and earlier runs'."""
    from adacode_jax.ops import winograd

    if winograd.TARGET not in compiled.as_text():
        return _flops(compiled)
    with winograd.forced("0"):
        # as lowered, uncompiled: 0.1% from the compiled count (217.8 against 218.0 GFLOP for
        # the SR forward), in a second rather than a second compilation (77 s for training)
        return _flops(make_jitted().lower(*args))


def _compile(jitted, *args):
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - t0


# ---- inference ---------------------------------------------------------------------------------

def _network(kind: str, dtype: str, tiny: bool, size: int):
    """(config, variables): the reference's seed-0 weights, or a random ``:tiny`` network."""
    import jax
    import jax.numpy as jnp

    from adacode_jax.inference import convert
    from adacode_jax import models

    weights = None if tiny else reference_weights_module()
    if weights is not None:
        cfg, variables = convert.to_variables(weights.make_state_dict(kind, 0), kind)
    elif not tiny:                     # an installed package: official size, random weights
        cfg = models.model_config(kind)
        variables = jax.jit(models.build(cfg).init)(jax.random.key(0),
                                                    jnp.zeros((1, size, size, 3)))
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

    weights = None if tiny else reference_weights_module()
    if weights is None:
        return np.random.default_rng(seed).random(shape_nchw, dtype=np.float32)
    return weights.make_input(shape_nchw, seed)


def inference_case(kind: str, size: int, *, dtype: str = "float32", batch: int = 1,
                   tiny: bool = False, x_nchw=None) -> tuple[Callable[[], Any], dict, Any]:
    """``(call, line, flops)``: the compiled forward of the official ``kind`` network on a
    ``size``² input (the harness's ``x_nchw`` when the reference runs beside; else the fixture
    input), ready to time; ``line`` holds the compile time and the error against the stored
    reference output for the fixture input (checked once, untimed)."""
    import jax
    import numpy as np

    from adacode_jax import models

    cfg, variables = _network(kind, dtype, tiny, size)
    model = models.build(cfg)
    ref, ref_source = (None, None) if tiny else reference_outputs(kind)
    if ref is not None and not (ref["input"].shape[-1] == size and batch == 1):
        ref = None
    if x_nchw is not None:
        x = _nhwc(np.asarray(x_nchw, np.float32))
    elif ref is not None:
        x = _nhwc(ref["input"])
    else:
        x = _nhwc(_images((batch, 3, size, size), 1234, tiny))
    variables = jax.device_put(variables)
    x = jax.device_put(np.ascontiguousarray(x))
    fwd = jax.jit(model.apply)
    compiled, compile_s = _compile(fwd, variables, x)
    line = {"compile_s": round(compile_s, 2), "batch": batch, "dtype": dtype,
            "input": list(x.shape)}
    if ref is not None:
        x_ref = jax.device_put(np.ascontiguousarray(_nhwc(ref["input"])))
        out, aux = jax.device_get(compiled(variables, x_ref))
        want = _nhwc(ref["out"])
        err = np.abs(np.asarray(out, np.float64) - want)
        line["max_abs_err"] = float(err.max())
        line["max_rel_err"] = float(err.max() / np.abs(want).max())
        line["index_agreement"] = float(
            (np.asarray(aux["indices"]) == ref["aux/indices"][:, :, 0]).mean())
        line["reference_outputs"] = ref_source
    flops = _network_flops(compiled, lambda: jax.jit(lambda v, x: model.apply(v, x)),
                           variables, x)
    return (lambda: jax.block_until_ready(compiled(variables, x))), line, flops


def _with_rates(line: dict, timing: dict, flops: float | None, n_images: int | None) -> dict:
    """``line`` with the timing, and the FLOP rate (and images/s) it gives."""
    line = {**timing, **line}
    if flops:
        line["gflops"] = round(flops / 1e9, 1)
        line["gflop_per_s"] = round(flops / 1e9 / timing["ours_s"], 1)
        if n_images:
            line["images_per_s"] = round(n_images / timing["ours_s"], 3)
    return line


def inference(kind: str, size: int, *, runs: int, dtype: str = "float32", batch: int = 1,
              tiny: bool = False, x_nchw=None) -> dict:
    """Forward of the official ``kind`` network on a ``size``² input, timed alone
    (:func:`inference_case`; median of ``runs`` after one warm-up)."""
    call, line, flops = inference_case(kind, size, dtype=dtype, batch=batch, tiny=tiny,
                                       x_nchw=x_nchw)
    return _with_rates(line, bench_official.time_calls(call, runs), flops, batch)


# ---- the stage III training iteration ------------------------------------------------------------

def train_step_inputs(batch: int, dtype: str = "float32", tiny: bool = False, images=None):
    """(nets, train config, state, batch, consts) of the stage III x4 iteration at ``batch``:
    teacher = stage2, student = sr_x4, D = disc (the reference's seed-0 weights), LPIPS-vgg
    with real weights. ``images``: ``{"gt", "lq"}`` NCHW arrays to use instead of the
    fixture's (the harness's, when the reference runs beside)."""
    import numpy as np

    from adacode_jax.configs import _base as config_lib
    from adacode_jax import models
    from adacode_jax.models import perceptual
    from adacode_jax.training import steps

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
    ref = None if tiny else reference_outputs("losses_sr_x4")[0]
    if images is not None:
        gt, lq = _nhwc(np.asarray(images["gt"], np.float32)), _nhwc(np.asarray(images["lq"], np.float32))
    elif ref is not None and batch == 2:
        gt, lq = _nhwc(ref["gt"]), _nhwc(ref["lq"])
    else:
        gt = _nhwc(_images((batch, 3, gt_size, gt_size), 1234, tiny))
        lq = _nhwc(_images((batch, 3, gt_size // 4, gt_size // 4), 1235, tiny))
    data = {"gt": np.ascontiguousarray(gt), "lq": np.ascontiguousarray(lq)}
    consts = {"teacher": {"params": t_vars["params"]}, "lpips": lpips_vars}
    return nets, cfg, state, data, consts


def train_case(*, batch: int = 2, dtype: str = "float32", mesh=None, tiny: bool = False,
               images=None) -> tuple[Callable[[], Any], dict, Any]:
    """``(call, line, flops)``: one stage III x4 G + D iteration, compiled and ready to time
    (the state is donated and fed back); ``flops`` counts every device of ``mesh``."""
    import jax

    from adacode_jax.training import networks, sharding as sharding_lib, steps

    nets, cfg, state, data, consts = train_step_inputs(batch, dtype, tiny, images)
    if mesh is None:
        step = jax.jit(steps.make_train_step(nets, cfg, stage=3), donate_argnums=(0,))
        state, data, consts = jax.device_put((state, data, consts))
    else:
        state_sh = sharding_lib.tree_shardings(state, mesh, 2 ** 20)
        step = networks.jit_train_step(nets, cfg, 3, mesh, state_sh)
        state = jax.device_put(state, state_sh)
        data = jax.device_put(data, sharding_lib.batch_sharding(mesh))
        consts = jax.device_put(consts, sharding_lib.replicated(mesh))
    compiled, compile_s = _compile(step, state, data, consts)
    holder = {"state": state}

    def one():
        holder["state"], metrics, _ = compiled(holder["state"], data, consts)
        jax.block_until_ready(metrics)

    flops = (_flops(compiled) if mesh is not None else _network_flops(
        compiled, lambda: jax.jit(steps.make_train_step(nets, cfg, stage=3)), state, data, consts))
    if flops:
        flops *= 1 if mesh is None else mesh.size     # cost analysis is per device
    return one, {"compile_s": round(compile_s, 2), "batch": batch, "dtype": dtype}, flops


def train_iteration(*, runs: int, batch: int = 2, dtype: str = "float32", mesh=None,
                    tiny: bool = False, images=None) -> dict:
    """Time of one stage III x4 G + D iteration, alone (:func:`train_case`)."""
    call, line, flops = train_case(batch=batch, dtype=dtype, mesh=mesh, tiny=tiny, images=images)
    return _with_rates(line, bench_official.time_calls(call, runs), flops, None)


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
    """Training pairs per second per core through ``adacode_jax.tools.data_bench`` (sr x4)."""
    import shutil
    import tempfile

    import cv2

    from adacode_jax.configs._base import EMBEDDED_IMAGES
    from adacode_jax.tools import data_bench
    from adacode_jax.data import examples

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
    return {"pairs_per_s_per_core": round(pairs, 2), "images": source}


# ---- the machine ---------------------------------------------------------------------------------

def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages (``/proc/loadavg``; empty where there is none)."""
    try:
        with open("/proc/loadavg") as f:
            return [float(v) for v in f.read().split()[:3]]
    except OSError:
        return []


def cpu_info() -> dict:
    """CPU model and the vector extensions of :data:`VECTOR_FLAGS` it has (``/proc/cpuinfo``)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for row in f:
                key, _, value = row.partition(":")
                if key.strip() == "model name" and model in ("", "x86_64", platform.machine()):
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"cpu_model": model, "vector_extensions": [f for f in VECTOR_FLAGS if f in flags]}


def xla_matmul_gflops(n: int = 2048, runs: int = 5) -> float:
    """Measured rate of an ``n``² float32 matmul in XLA on the default device, GFLOP/s (median)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    mm = jax.jit(jnp.matmul).lower(a, b).compile()
    t = bench_official.time_calls(lambda: mm(a, b).block_until_ready(), runs)["ours_s"]
    return round(2 * n**3 / t / 1e9, 1)


def machine() -> dict:
    import jax

    from adacode_jax.ops import winograd

    dev = jax.devices()[0]
    return {"platform": dev.platform, "device_kind": dev.device_kind,
            "devices": jax.device_count(), **cpu_info(),
            "cores_visible": os.cpu_count(), "cores_used": len(os.sched_getaffinity(0)),
            # XLA:CPU's intra-op pool takes one thread per core this process may run on
            "xla_threads": len(os.sched_getaffinity(0)), "load_average": load_average(), "python": platform.python_version(),
            "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "host_memory": hostmem.state, "cpu_winograd": winograd.status()}



# ---- driver ------------------------------------------------------------------------------

def emit(line: dict) -> None:
    print(json.dumps(line), flush=True)


_TITLES = {"sr_x4_64": "SR ×4 forward, 64² LR → 256²", "sr_x4_128": "SR ×4 forward, 128² LR → 512²",
           "stage2_256": "stage II reconstruction, 256²",
           "train_sr_x4_b2": "stage III ×4 training iteration, batch 2 (G + D)",
           "data_sr_x4": "data pipeline, sr ×4 pairs, 1 core"}


def table(lines: list[dict], info: dict) -> str:
    """The figures of one run as a Markdown table, headed by the machine they ran on."""
    head = (f"machine: {info.get('cpu_model')}; {info.get('cores_used')} of "
            f"{info.get('cores_visible')} cores; {' '.join(info.get('vector_extensions', []))}; "
            f"matmul 2048² fp32: XLA {info.get('xla_matmul_2048_gflop_per_s')} GFLOP/s"
            + (f", torch {info['torch_matmul_2048_gflop_per_s']} GFLOP/s"
               if "torch_matmul_2048_gflop_per_s" in info else "")
            + f"; load average at start {info.get('load_average')}")
    rows = ["| figure | ours, median s (min) | official, median s (min) | ours / official "
            "(range over rounds) | load (1 min) start → end | check |", "|---|---|---|---|---|---|"]
    for ln in lines:
        name = ln["bench"]
        if "pairs_per_s_per_core" in ln:
            ours, theirs = f"{ln['pairs_per_s_per_core']} pairs/s", "—"
        else:
            ours = f"{ln['ours_s']:.2f} ({ln['min_s']:.2f})"
            ref = ln.get("reference")
            theirs = f"{ref['median_s']:.2f} ({ref['min_s']:.2f})" if ref else "—"
        ratio = f"{ln['ratio']:.2f}" if "ratio" in ln else "—"
        if ln.get("ratio_by_round"):
            ratio += f" ({min(ln['ratio_by_round']):.2f}–{max(ln['ratio_by_round']):.2f})"
        check = (f"max rel. err {ln['max_rel_err']:.1e}, indices {ln['index_agreement']:.0%}"
                 if "max_rel_err" in ln else "")
        if ln.get("reference_outputs") == "vendored":
            check += f" (vendored copy: its rounding alone gives up to {VENDORED_ROUNDING:.1e})"
        rows.append(f"| {_TITLES.get(name, name)} ({ln.get('dtype', 'float32')}) | {ours} | {theirs} "
                    f"| {ratio} | {ln.get('load_start')} → {ln.get('load_end')} | {check} |")
    return head + "\n\n" + "\n".join(rows)


def run(names, *, runs: int, train_runs: int, data_seconds: float, accel: bool,
        accel_batch: int, tiny: bool = False,
        reference: bench_official.Reference | None = None, cpu_bf16: bool = False,
        print_table: bool = False) -> list[dict]:
    """Run the benchmarks ``names`` (each followed by the official code's figure when
    ``reference`` is given), printing and returning one dict per figure."""
    import jax

    from adacode_jax.training import sharding as sharding_lib

    lines = []
    info = machine()
    info["xla_matmul_2048_gflop_per_s"] = xla_matmul_gflops()
    if reference is not None:
        info.update(reference.probe())
        info["reference_repo"] = reference.repo
    emit({"bench": "machine", **info, "tiny": tiny})
    d = 4 if tiny else 1      # tiny: the same code on 1/4 of the sizes
    ins = {} if (reference is None or tiny) else reference.inputs
    train_images = ({"gt": ins["train_gt"], "lq": ins["train_lq"]} if ins else None)
    # figure -> (dtype -> (call, line, flops), images per call, timed runs)
    cases = {
        "sr_x4_64": (lambda dt: inference_case("sr_x4", 64 // d, dtype=dt, tiny=tiny,
                                               x_nchw=ins.get("fwd_64")), 1, runs),
        "sr_x4_128": (lambda dt: inference_case("sr_x4", 128 // d, dtype=dt, tiny=tiny,
                                                x_nchw=ins.get("fwd_128")), 1, runs),
        "stage2_256": (lambda dt: inference_case("stage2", 256 // d, dtype=dt, tiny=tiny,
                                                 x_nchw=ins.get("fwd_256")), 1, runs),
        "train_sr_x4_b2": (lambda dt: train_case(dtype=dt, tiny=tiny, images=train_images),
                           None, train_runs)}
    bf16 = ("sr_x4_64", "stage2_256", "train_sr_x4_b2")

    def measure(name, dtype="float32"):
        load0 = (load_average() or [None])[0]
        bench = name if dtype == "float32" else f"{name}_bf16"
        if name not in cases:                       # the data pipeline: ours only
            line = {"bench": bench, **data_pipeline(data_seconds, tiny)}
        else:
            make, n_images, n = cases[name]
            call, line, flops = make(dtype)
            figure = REFERENCE_FIGURES.get(name) if dtype == "float32" else None
            if reference is not None and figure:
                with reference.start(figure) as theirs:
                    timing, ref = bench_official.interleaved(call, theirs, n)
                line = bench_official.side_by_side(
                    {"bench": bench, **_with_rates(line, timing, flops, n_images)}, ref,
                    comparable=not tiny)
            else:
                timing = bench_official.time_calls(call, n)
                line = {"bench": bench, **_with_rates(line, timing, flops, n_images)}
        line["load_start"], line["load_end"] = load0, (load_average() or [None])[0]
        line.update(peak_memory_mib())
        emit(line)
        lines.append(line)

    for name in names:
        measure(name)
        if cpu_bf16 and info["platform"] == "cpu" and name in bf16:
            measure(name, "bfloat16")
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
    if print_table:
        print("\n" + table([ln for ln in lines if ln["bench"] in _TITLES or
                            ln["bench"].endswith("_bf16")], info), flush=True)
    return lines


def _mesh_cfg():
    import ml_collections

    return ml_collections.ConfigDict({"data": -1, "fsdp": 1})
