"""How the benchmark times a figure: alone, or in lock-step with the official PyTorch code.

:func:`time_calls` times one of our figures alone (median of the runs after a warm-up).
:class:`Reference` runs the official code through the refbench harness in child processes
(:mod:`adacode_jax.tools.refdriver`); :func:`interleaved` alternates our figure and theirs run
by run, so that both sides see the same drift of a shared machine, and :func:`side_by_side`
adds the official figure (and the ratio, where the sizes match) to our line. Which official
code it is and at which commit: docs/official.md.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

from adacode_jax import errors


def time_calls(fn: Callable[[], Any], runs: int, warmup: int = 1) -> dict:
    """Median and min wall time of ``fn()`` (which must block until its result is ready)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return timing_fields(times)


def timing_fields(times: list[float]) -> dict:
    """Our line's timing fields from the wall times of the timed runs."""
    import numpy as np

    return {"ours_s": round(float(np.median(times)), 4), "min_s": round(min(times), 4),
            "runs": len(times), "times_s": [round(t, 4) for t in times]}


_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def refbench_dir() -> str:
    """The harness that runs the official code: ``ADACODE_REFBENCH_DIR``, else
    ``shared/tools/refbench`` in the folder that holds the checkout (docs/official.md says
    which official commit it runs)."""
    return os.environ.get("ADACODE_REFBENCH_DIR",
                          os.path.join(os.path.dirname(_REPO), "shared", "tools", "refbench"))


# Run by the reference's interpreter: the harness's inputs (same generators and seeds as
# bench_ref.py) and torch's 2048² float32 matmul rate at the same thread count.
_PROBE = r"""
import json, statistics, sys, time
import numpy as np, torch
threads, out = int(sys.argv[1]), sys.argv[2]
torch.set_num_threads(threads)
arrays = {f"fwd_{hw}": torch.rand(1, 3, hw, hw, generator=torch.Generator().manual_seed(1234)).numpy()
          for hw in (64, 128, 256)}
g = torch.Generator().manual_seed(99)
arrays["train_gt"] = torch.rand(2, 3, 256, 256, generator=g).numpy()
arrays["train_lq"] = torch.rand(2, 3, 64, 64, generator=g).numpy()
np.savez(out, **arrays)
n = 2048
a, b = torch.randn(n, n), torch.randn(n, n)
a @ b
ts = []
for _ in range(5):
    t0 = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t0)
print(json.dumps({"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                  "torch_matmul_2048_gflop_per_s": round(2 * n**3 / statistics.median(ts) / 1e9, 1)}))
"""


def _official_failed(what: str, output: str, returncode: int) -> errors.UserError:
    """One error line for a child process of the official code that failed: the last lines
    of its output."""
    tail = output.strip().splitlines()[-3:]
    return errors.UserError(f"official code ({what}) failed: "
                            + (" | ".join(tail) or f"exit {returncode}"),
                            "check --reference-repo and --reference-python (bench/README.md)")


class Reference:
    """The official code, timed by the refbench harness in child processes.

    Args:
      repo: checkout of the official repository (kechunl/AdaCode at the commit that
        docs/official.md names).
      python: interpreter with torch, torchvision and timm (the harness's ``setup.sh``);
        default ``ADACODE_REFERENCE_PYTHON`` or this interpreter.
      threads: ``torch.set_num_threads``; the child inherits this process's core affinity.
    """

    def __init__(self, repo: str, *, threads: int, python: str | None = None,
                 harness: str | None = None):
        self.repo = os.path.abspath(os.path.expanduser(repo))
        self.python = python or os.environ.get("ADACODE_REFERENCE_PYTHON") or sys.executable
        self.harness = harness or refbench_dir()
        self.threads = threads
        if not os.path.isdir(os.path.join(self.repo, "basicsr")):
            raise errors.UserError(f"{self.repo}: not a checkout of the official AdaCode "
                                   "repository (no basicsr/)", "see bench/README.md")
        if not os.path.exists(os.path.join(self.harness, "bench_ref.py")):
            raise errors.UserError(f"{self.harness}: refbench harness not found",
                                   "set ADACODE_REFBENCH_DIR")
        self._tmp = tempfile.mkdtemp(prefix="adacode_refbench_")
        self.inputs: dict = {}

    def _call(self, args: list[str]) -> list[dict]:
        env = {**os.environ, "ADACODE_REF": self.repo}
        proc = subprocess.run([self.python, *args], env=env, capture_output=True, text=True,
                              cwd=self.harness)
        if proc.returncode:
            raise _official_failed(" ".join(args[:2]), proc.stderr or proc.stdout,
                                   proc.returncode)
        return [json.loads(row) for row in proc.stdout.splitlines() if row.startswith("{")]

    def probe(self) -> dict:
        """torch's matmul rate, and the harness's inputs into :attr:`inputs` (NCHW arrays)."""
        import numpy as np

        path = os.path.join(self._tmp, "inputs.npz")
        info = self._call(["-c", _PROBE, str(self.threads), path])[-1]
        with np.load(path) as z:
            self.inputs = {k: z[k] for k in z.files}
        return info

    def start(self, figure: str, *, warmup: int = 1) -> "LockStep":
        """The harness's ``figure``, built and warmed up in a child process that then runs it
        once per :meth:`LockStep.run` (:mod:`adacode_jax.tools.refdriver`)."""
        return LockStep(self, figure, warmup)


class LockStep:
    """One official figure in a child process, run on demand so that ours and theirs
    alternate run by run (the official code's time drifts by ~10% over minutes)."""

    def __init__(self, reference: Reference, figure: str, warmup: int):
        self.figure = figure
        driver = os.path.join(os.path.dirname(os.path.abspath(__file__)), "refdriver.py")
        self._proc = subprocess.Popen(
            [reference.python, driver, reference.harness, figure, str(reference.threads),
             str(warmup)], env={**os.environ, "ADACODE_REF": reference.repo},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.info = self._read()

    def _read(self) -> dict:
        while True:
            row = self._proc.stdout.readline()
            if not row:
                self._proc.wait()
                raise _official_failed(self.figure, self._proc.stderr.read(),
                                       self._proc.returncode)
            if row.startswith("{"):
                return json.loads(row)

    def run(self) -> dict:
        """Runs the figure once in the child: ``{"s": seconds, ...}`` (G and D step seconds
        for a training figure)."""
        self._proc.stdin.write("run\n")
        self._proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write("\n")
                self._proc.stdin.close()
            except OSError:
                pass
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc.stdout.close()
        self._proc.stderr.close()

    def __enter__(self) -> "LockStep":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def interleaved(call: Callable[[], Any], theirs: LockStep, rounds: int) -> tuple[dict, dict]:
    """Ours and the official figure alternating run by run: one warm-up of ours (theirs warmed
    up in :class:`LockStep`), then ``rounds`` of (ours once, theirs once). Returns our timing
    (as :func:`time_calls`) and theirs (median, min, every run and, for training, the G and D
    steps' medians)."""
    import numpy as np

    call()
    ours, rows = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        call()
        ours.append(time.perf_counter() - t0)
        rows.append(theirs.run())
    ref_s = [row["s"] for row in rows]
    ref = {"figure": theirs.figure, "median_s": round(float(np.median(ref_s)), 4),
           "min_s": round(min(ref_s), 4), "times_s": [round(t, 4) for t in ref_s],
           **{k: theirs.info.get(k) for k in ("threads", "torch", "host_memory")},
           "protocol": "alternating run by run"}
    for part in ("g_step", "d_step"):
        if f"{part}_s" in rows[0]:
            ref[f"{part}_median_s"] = round(float(np.median([r[f"{part}_s"] for r in rows])), 4)
    return timing_fields(ours), ref


def side_by_side(line: dict, ref: dict, *, comparable: bool) -> dict:
    """Adds the official figure timed in this run to our ``line``; the ratio only when both
    sides ran the same sizes (not for ``--tiny``)."""
    line = {**line, "reference": ref}
    if comparable:
        line["reference_s"] = ref["median_s"]
        line["ratio"] = round(line["ours_s"] / ref["median_s"], 3)
        ours, theirs = line.get("times_s") or [], ref.get("times_s") or []
        if len(ours) == len(theirs) > 1:
            # Round i's two runs were adjacent in time: their ratios show how far this
            # machine's drift moves the figure (the median ratio above is the one to quote).
            line["ratio_by_round"] = [round(a / b, 3) for a, b in zip(ours, theirs)]
    return line
