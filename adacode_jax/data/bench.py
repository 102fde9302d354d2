"""Throughput of the input pipeline: training pairs per second per worker process.

    python -m adacode_jax.data.bench [--input DIR] [--seconds 5] [--workers 2]

Measures, on one core each (OpenCV limited to one thread):

1. BSRGAN degradation alone of 256x256 GT crops, sf = 4 and sf = 2 (the reference needs
   0.05-0.07 s per image, i.e. 14-20 images/s; the target is >= 30/s per core);
2. whole examples in one process (read file, random resize, crop, flips, then degradation
   (sr x4), a mask (inpaint) or nothing (stages I/II 'recon'));
3. the Grain loader with ``--workers`` worker processes (batches of 8), reported per worker.

Images default to the CC0 photographs shipped with scikit-image (``skimage/data``).
"""
from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time

from absl import flags
import cv2
import numpy as np

from adacode_jax.data import degradations
from adacode_jax.data import examples
from adacode_jax.data import io
from adacode_jax.data import pipeline
from adacode_jax.data import sources
from adacode_jax.cli import common

SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "hubble_deep_field.jpg", "retina.jpg", "camera.png")


def skimage_photos(dest: str) -> str:
    """Copies scikit-image's photos into ``dest`` (a folder source); returns it."""
    try:
        import skimage  # pylint: disable=g-import-not-at-top
    except ImportError as e:
        raise SystemExit("scikit-image is not installed: pass --input DIR with your images") from e
    data = os.path.join(os.path.dirname(skimage.__file__), "data")
    os.makedirs(dest, exist_ok=True)
    for name in SKIMAGE_PHOTOS:
        shutil.copy(os.path.join(data, name), os.path.join(dest, name))
    return dest


def _rate(fn, seconds: float, min_calls: int = 5) -> float:
    """Calls ``fn(i)`` for about ``seconds`` (at least min_calls times); returns calls/s."""
    fn(0)  # warm-up (caches, lazy imports)
    n, t0 = 0, time.perf_counter()
    while n < min_calls or time.perf_counter() - t0 < seconds:
        fn(n + 1)
        n += 1
    return n / (time.perf_counter() - t0)


def bench_degradation(crops: list[np.ndarray], sf: int, seconds: float) -> float:
    return _rate(lambda i: degradations.degrade_bsrgan(crops[i % len(crops)], sf,
                                                       np.random.default_rng(i)), seconds)


def bench_examples(folder: str, cfg: examples.ExampleConfig, seconds: float) -> float:
    src = sources.FolderSource(folder)
    keys = src.keys()
    make = examples.MakeExample([src], cfg)
    return _rate(lambda i: make.random_map((0, keys[i % len(keys)]), np.random.default_rng(i)), seconds)


def bench_loader(folder: str, task: str, workers: int, seconds: float, batch: int = 8) -> float:
    config = pipeline.default_data_config()
    config.sources = [{"type": "folder", "path": folder}]
    config.task, config.scale, config.batch_size = task, 4, batch
    config.worker_count = workers
    it = pipeline.make_iterator(config)
    try:
        for _ in range(2):  # start-up of the workers is not throughput
            next(it)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            next(it)
            n += batch
        return n / (time.perf_counter() - t0)
    finally:
        it.close()


def main(argv: list[str] | None = None) -> int:
    parser = common.ArgumentParser(prog="python -m adacode_jax.data.bench", description=__doc__,
                                     formatter_class=common.HelpFormatter)
    parser.add_argument("--input", default=None, help="image folder (default: scikit-image photos)")
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    parser.add_argument("--workers", type=int, default=2, help="Grain worker processes (0 to skip)")
    args = parser.parse_args(argv)
    flags.FLAGS.mark_as_parsed()  # Grain workers read absl flags
    cv2.setNumThreads(1)
    tmp = None
    folder = args.input
    if folder is None:
        tmp = tempfile.mkdtemp(prefix="adacode_bench_")
        folder = skimage_photos(tmp)
    try:
        files = sources.list_images(folder)
        rng = np.random.default_rng(0)
        crops = []
        for f in files:
            img = io.read_image(f)
            if min(img.shape[:2]) >= 256:
                t, l = int(rng.integers(img.shape[0] - 255)), int(rng.integers(img.shape[1] - 255))
                crops.append(np.ascontiguousarray(img[t:t + 256, l:l + 256]))
        print(f"{len(files)} images from {folder}; {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores visible; OpenCV {cv2.__version__} with 1 thread")
        print(f"{'measurement':58s} {'per second':>10s}")

        def show(label, rate):
            print(f"{label:58s} {rate:10.1f}", flush=True)

        for sf in (4, 2):
            show(f"BSRGAN degradation alone, 256^2 GT, sf={sf} (1 core)",
                 bench_degradation(crops, sf, args.seconds))
        for task, label in (("sr", "sr x4 pairs: read+resize+crop+flip+BSRGAN (1 core)"),
                            ("recon", "stage I/II crops: read+resize+crop+flip (1 core)"),
                            ("inpaint", "inpaint pairs: read+resize+crop+flip+mask (1 core)")):
            cfg = examples.ExampleConfig(task=task, scale=4 if task == "sr" else 1)
            show(label, bench_examples(folder, cfg, args.seconds))
        if args.workers > 0:
            for task in ("sr", "recon"):
                total = bench_loader(folder, task, args.workers, args.seconds)
                show(f"Grain loader {task}, {args.workers} workers, per worker", total / args.workers)
        print("reference BSRGAN degradation: 0.05-0.07 s per 256^2 image = 14-20 per second per core")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    common.entry(main)()
