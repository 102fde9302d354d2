"""Throughput of the input pipeline: training pairs per second per worker process.

    python -m adacode_jax.cli.data_bench [--input DIR] [--seconds 5] [--workers 2]

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
import shutil
import time

import numpy as np

from adacode_jax.data import degradations
from adacode_jax.data import examples
from adacode_jax import images as io
from adacode_jax.data import pipeline
from adacode_jax.data import sources

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


def gt_crops(files: list[str], size: int = 256, seed: int = 0) -> list[np.ndarray]:
    """One random ``size``² crop (float32 RGB, HWC, in [0, 1]) of each image at least that
    large, for :func:`bench_degradation`."""
    rng = np.random.default_rng(seed)
    crops = []
    for f in files:
        img = io.read_image(f)
        if min(img.shape[:2]) >= size:
            t = int(rng.integers(img.shape[0] - size + 1))
            l = int(rng.integers(img.shape[1] - size + 1))
            crops.append(np.ascontiguousarray(img[t:t + size, l:l + size]))
    return crops
