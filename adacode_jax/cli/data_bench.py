"""``python -m adacode_jax.cli.data_bench``: input pipeline throughput per worker process.

Times the BSRGAN degradation alone, whole examples in one process and the Grain loader, on
``--input`` images or scikit-image's photos, and prints one row per measurement. The library
is :mod:`adacode_jax.tools.data_bench`.
"""
from __future__ import annotations

import os
import platform
import shutil
import tempfile

from adacode_jax.cli import common
from adacode_jax.data import examples, sources
from adacode_jax.tools import data_bench

PROG = "python -m adacode_jax.cli.data_bench"


def build_parser() -> common.ArgumentParser:
    parser = common.ArgumentParser(prog=PROG, description=data_bench.__doc__,
                                   formatter_class=common.HelpFormatter)
    parser.add_argument("--input", default=None, help="image folder (default: scikit-image photos)")
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    parser.add_argument("--workers", type=int, default=2, help="Grain worker processes (0 to skip)")
    return parser


def _show(label: str, rate: float) -> None:
    print(f"{label:58s} {rate:10.1f}", flush=True)


def _measure(folder: str, args) -> None:
    """Every measurement on the images of ``folder``, one printed row each."""
    import cv2

    files = sources.list_images(folder)
    crops = data_bench.gt_crops(files)
    print(f"{len(files)} images from {folder}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores visible; OpenCV {cv2.__version__} with 1 thread")
    print(f"{'measurement':58s} {'per second':>10s}")
    for sf in (4, 2):
        _show(f"BSRGAN degradation alone, 256^2 GT, sf={sf} (1 core)",
              data_bench.bench_degradation(crops, sf, args.seconds))
    for task, label in (("sr", "sr x4 pairs: read+resize+crop+flip+BSRGAN (1 core)"),
                        ("recon", "stage I/II crops: read+resize+crop+flip (1 core)"),
                        ("inpaint", "inpaint pairs: read+resize+crop+flip+mask (1 core)")):
        cfg = examples.ExampleConfig(task=task, scale=4 if task == "sr" else 1)
        _show(label, data_bench.bench_examples(folder, cfg, args.seconds))
    if args.workers > 0:
        for task in ("sr", "recon"):
            total = data_bench.bench_loader(folder, task, args.workers, args.seconds)
            _show(f"Grain loader {task}, {args.workers} workers, per worker", total / args.workers)
    print("reference BSRGAN degradation: 0.05-0.07 s per 256^2 image = 14-20 per second per core")


def _main(argv: list[str] | None = None) -> int:
    import cv2
    from absl import flags

    args = build_parser().parse_args(argv)
    flags.FLAGS.mark_as_parsed()  # Grain workers read absl flags
    cv2.setNumThreads(1)
    tmp = None
    folder = args.input
    if folder is None:
        tmp = tempfile.mkdtemp(prefix="adacode_bench_")
        folder = data_bench.skimage_photos(tmp)
    try:
        _measure(folder, args)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


main = common.command(_main)
console = common.entry(_main)

if __name__ == "__main__":
    console()
