"""Run by the official code's interpreter (torch, not JAX): one refbench figure in lock-step
with our benchmark, so the two sides alternate run by run.

    <refenv>/bin/python refdriver.py HARNESS_DIR FIGURE THREADS WARMUP

It builds the figure the way the shared harness ``tools/refbench/bench_ref.py`` does (its
``get_model`` and ``make_train``, the same inputs and seeds), runs WARMUP untimed calls, prints
``{"ready": ...}`` and then, for every line ``run`` on stdin, times one call and prints
``{"s": seconds}`` (and the G and D steps' seconds for a training figure). An empty line or
end of input ends it. Between calls it waits on stdin, so the other side runs alone.

Before torch starts, it applies our host-memory policy (``hostmem.py`` beside it, loaded by
path: standard library only) exactly as our side does, so the two sides run under the same
allocator settings; ``ADACODE_KEEP_FREED_MEMORY=0`` turns it off for both. What it did is in
the ``ready`` line (``host_memory``).

This file must not import :mod:`adacode_jax` (the reference interpreter does not have it).
"""
import importlib.util
import json
import os
import sys
import time


def _keep_freed_memory() -> str:
    """``hostmem.keep_freed_memory()`` of ``adacode_jax/hostmem.py`` (one folder up), without the package."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "hostmem.py")
    spec = importlib.util.spec_from_file_location("adacode_hostmem", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.keep_freed_memory()


def _closure(bench_ref, figure):
    """``call()``, which runs the figure once and returns its part times (training) or None."""
    import torch

    if figure in bench_ref.FWD:
        kind, hw, mode = bench_ref.FWD[figure]
        model = bench_ref.get_model(kind)
        x = torch.rand(1, 3, hw, hw, generator=torch.Generator().manual_seed(1234))

        def forward():
            with torch.no_grad():
                if mode == "forward":
                    model(x)
                else:
                    model.test(x)
        return forward
    if figure in bench_ref.TRAIN:
        g_step, d_step, _ = bench_ref.make_train(
            "sr_x4" if figure == "train_s3_x4_b2" else "stage2", 2)

        def iteration():
            t0 = time.perf_counter()
            g_step()
            t1 = time.perf_counter()
            d_step()
            return {"g_step_s": t1 - t0, "d_step_s": time.perf_counter() - t1}
        return iteration
    raise SystemExit(f"refdriver: the harness has no figure {figure!r}")


def main(argv):
    harness, figure, threads, warmup = argv[1], argv[2], int(argv[3]), int(argv[4])
    host_memory = _keep_freed_memory()     # before torch allocates or starts its threads
    sys.path.insert(0, harness)
    os.chdir(harness)
    import torch

    torch.set_num_threads(threads)
    import bench_ref

    bench_ref.refload.setup()
    call = _closure(bench_ref, figure)
    for _ in range(warmup):
        call()
    print(json.dumps({"ready": figure, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "host_memory": host_memory}),
          flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        t0 = time.perf_counter()
        parts = call()
        print(json.dumps({"s": time.perf_counter() - t0, **(parts or {})}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
