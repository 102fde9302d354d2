"""Compile a kernel's C++ source into a shared library, once per machine, and cache it.

The library is built for the CPU it runs on (``-march=native``), so the cache key holds the
source, the jaxlib version (whose FFI headers it includes), the compiler command and the CPU's
feature flags. It goes next to the source (``_build/``, where ``make install`` puts it) when the
package folder is writable, else into the user's cache: a program that finds it built writes
nothing (the web app keeps the home folder untouched). Compilers tried in order: ``$CXX``, ``c++``, ``g++``, ``clang++``, then the
``ziglang`` package's ``zig c++`` (``pip install ziglang``: a compiler from PyPI for machines
without one; its first build takes about a minute). Nothing found or the build fails: ``None``
with the reason, and the caller keeps XLA's own path.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jaxlib

FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w")
TIMEOUT_S = 600


def cache_dirs() -> list[Path]:
    """Where libraries are looked for, and built in the first writable one:
    ``$ADACODE_KERNEL_CACHE`` alone when set, else ``_build/`` beside the source, then
    ``$XDG_CACHE_HOME/adacode_jax/kernels`` (~/.cache)."""
    if os.environ.get("ADACODE_KERNEL_CACHE"):
        return [Path(os.environ["ADACODE_KERNEL_CACHE"])]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return [Path(__file__).with_name("_build"), Path(base) / "adacode_jax" / "kernels"]


def _writable_temp(dirs: list[Path]) -> tuple[Path, str] | tuple[None, str]:
    """A temporary file in the first of ``dirs`` that can be written, or the last error."""
    error = ""
    for d in dirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=d)
            os.close(fd)
            return d, tmp
        except OSError as e:
            error = f"cannot write the kernel cache {d}: {e.strerror or e}"
    return None, error + "; set ADACODE_KERNEL_CACHE to a writable directory"


def compilers() -> list[list[str]]:
    """Candidate C++ compiler commands, in the order they are tried."""
    found = []
    if os.environ.get("CXX"):
        found.append(os.environ["CXX"].split())
    for name in ("c++", "g++", "clang++"):
        path = shutil.which(name)
        if path and [path] not in found:
            found.append([path])
    if importlib.util.find_spec("ziglang") is not None:
        found.append([sys.executable, "-m", "ziglang", "c++"])
    return found


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def build(source: Path) -> tuple[Path | None, str]:
    """The cached library for ``source`` (building it if needed) and a one-line account."""
    code = source.read_bytes()
    include = jax.ffi.include_dir()
    errors = []
    for cmd in compilers():
        key = hashlib.sha256(b"\0".join([
            code, jaxlib.__version__.encode(), " ".join(cmd + list(FLAGS)).encode(),
            _cpu_flags().encode(), platform.machine().encode()])).hexdigest()[:16]
        name = f"{source.stem}-{key}.so"
        for d in cache_dirs():
            if (d / name).exists():
                return d / name, f"{d / name} (cached)"
        # Build under a temporary name and rename: concurrent processes (test workers) each
        # build and the last rename wins, never a half-written library.
        out_dir, tmp = _writable_temp(cache_dirs())
        if out_dir is None:
            return None, tmp
        out = out_dir / name
        try:
            proc = subprocess.run([*cmd, *FLAGS, f"-I{include}", str(source), "-o", tmp],
                                  capture_output=True, text=True, timeout=TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as e:
            errors.append(f"{' '.join(cmd)}: {e}")
            Path(tmp).unlink(missing_ok=True)
            continue
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            errors.append(f"{' '.join(cmd)}: exit {proc.returncode}: {last}")
            Path(tmp).unlink(missing_ok=True)
            continue
        os.replace(tmp, out)
        return out, f"{out} (built with {' '.join(cmd)})"
    if not errors:
        return None, ("no C++ compiler found (tried $CXX, c++, g++, clang++, ziglang); "
                      "`pip install ziglang` provides one")
    return None, "; ".join(errors)


if __name__ == "__main__":                              # python -m adacode_jax.ops.build
    from adacode_jax.ops import winograd
    lib, how = build(winograd.SOURCE)
    print(f"{winograd.SOURCE.name}: {how}")
    sys.exit(0 if lib else 1)
