"""``python -m adacode_jax.cli.bench``: speed figures, ours beside the official code's.

The library is :mod:`adacode_jax.tools.bench` (the timing beside the official code:
:mod:`adacode_jax.tools.bench_official`); this module parses arguments, pins the process to
``--threads`` cores before JAX starts and prints one JSON line per figure, then a table.
"""
from __future__ import annotations

import argparse
import os
import sys

from adacode_jax import errors, hostmem
from adacode_jax.cli import common

# LPIPS loading imports TensorFlow through clu-free paths too: no C++ start-up banner.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")   # TF only reads data and writes logs here; its oneDNN note is noise

PROG = "python -m adacode_jax.cli.bench"
EXAMPLES = (
    f"{PROG} --threads 2 --reference-repo ~/adacode-official   # the full side-by-side table",
    f"{PROG} --threads 2                                       # ours only, no ratio",
    f"{PROG} --only sr_x4_64 stage2_256 --runs 5 --cpu-bf16",
    f"{PROG} --tiny --quick                                    # smoke test of the tool",
)
REFERENCE_REPO_ENV = "ADACODE_REFERENCE_REPO"


def build_parser() -> common.ArgumentParser:
    from adacode_jax.tools import bench

    p = common.ArgumentParser(prog=PROG, description=bench.__doc__, examples=EXAMPLES)
    p.add_argument("--only", nargs="+", choices=bench.BENCHES, default=list(bench.BENCHES),
                   help="benchmarks to run")
    p.add_argument("--runs", type=int, default=5, help="timed runs per inference figure")
    p.add_argument("--train_runs", "--train-runs", type=int, default=3,
                   help="timed training iterations")
    p.add_argument("--data_seconds", "--data-seconds", type=float, default=5.0,
                   help="data pipeline time")
    p.add_argument("--threads", type=int, default=0,
                   help="pin the process (and the official code's) to this many cores before "
                        "JAX starts; torch.set_num_threads the same (0: all cores)")
    p.add_argument("--reference-repo", "--reference_repo",
                   default=os.environ.get(REFERENCE_REPO_ENV, ""),
                   help=f"checkout of the official AdaCode repository (or {REFERENCE_REPO_ENV}): "
                        "time it beside ours in this run and print ours / official")
    p.add_argument("--reference-python", "--reference_python", default=None,
                   help="interpreter with torch, torchvision, timm for the official code "
                        "(default: ADACODE_REFERENCE_PYTHON or this interpreter)")
    p.add_argument("--cpu-bf16", "--cpu_bf16", action="store_true",
                   help="on CPU also time bfloat16 inference and training (model.dtype)")
    p.add_argument("--accel", action=argparse.BooleanOptionalAction, default=True,
                   help="also the bf16 and FLOP-utilisation figures on GPU/TPU")
    p.add_argument("--accel_batch", type=int, default=8, help="per-chip batch for --accel")
    p.add_argument("--quick", action="store_true",
                   help="one timed run each and half a second of data pipeline")
    p.add_argument("--tiny", action="store_true",
                   help="tiny random networks and small inputs: a smoke test of this tool")
    p.add_argument("--no-table", dest="table", action="store_false",
                   help="JSON lines only, no Markdown table at the end")
    return p


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    threads = args.threads or len(os.sched_getaffinity(0))
    if args.threads:
        if "jax" in sys.modules and len(os.sched_getaffinity(0)) != args.threads:
            raise errors.UserError("--threads: JAX is already imported in this process",
                                   "run the benchmark as its own command")
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])
    hostmem.keep_freed_memory()        # before JAX's CPU client starts its threads
    if args.quick:
        args.runs, args.train_runs, args.data_seconds = 1, 1, 0.5
    from absl import flags

    from adacode_jax.tools import bench, bench_official

    reference = None
    if args.reference_repo:
        reference = bench_official.Reference(args.reference_repo, threads=threads,
                                             python=args.reference_python)
    flags.FLAGS.mark_as_parsed()  # Grain reads absl flags
    bench.run(args.only, runs=args.runs, train_runs=args.train_runs,
              data_seconds=args.data_seconds, accel=args.accel, accel_batch=args.accel_batch,
              tiny=args.tiny, reference=reference, cpu_bf16=args.cpu_bf16,
              print_table=args.table)
    return 0


main = common.command(_main)
console = common.entry(_main)

if __name__ == "__main__":
    console()
