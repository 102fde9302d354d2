"""Paths that may be local or remote (``gs://bucket/run`` on Cloud TPU).

Local paths use ``os``; URLs (``scheme://...``) go through fsspec, which reads ``gs://`` where
gcsfs is installed and, in tests, its in-memory ``memory://`` filesystem. Orbax and the
TensorBoard writer handle URLs themselves; these helpers cover our own small files
(``metrics.jsonl``, ``model.json``, the rewritten event files of a resumed run) and keep a URL
from being turned into ``$PWD/gs:/bucket``.
"""
from __future__ import annotations

import os
from typing import IO


def is_url(path: str) -> bool:
    return "://" in str(path)


def _fs(url: str):
    """``(filesystem, path)`` of a URL (fsspec names the package a protocol needs)."""
    import fsspec

    return fsspec.core.url_to_fs(url)


def absolute(path: str) -> str:
    """``os.path.abspath`` for local paths; URLs unchanged."""
    path = os.fspath(path)
    return path if is_url(path) else os.path.abspath(path)


def exists(path: str) -> bool:
    if not is_url(path):
        return os.path.exists(path)
    fs, p = _fs(path)
    return fs.exists(p)


def isdir(path: str) -> bool:
    if not is_url(path):
        return os.path.isdir(path)
    fs, p = _fs(path)
    return fs.isdir(p)


def listdir(path: str) -> list[str]:
    """The names (not paths) in the folder ``path``."""
    if not is_url(path):
        return os.listdir(path)
    fs, p = _fs(path)
    return [os.path.basename(str(e).rstrip("/")) for e in fs.ls(p, detail=False)]


def makedirs(path: str) -> None:
    if not is_url(path):
        os.makedirs(path, exist_ok=True)
        return
    fs, p = _fs(path)
    fs.makedirs(p, exist_ok=True)


def open_file(path: str, mode: str = "r") -> IO:
    """``open`` for local paths, ``fsspec.open`` for URLs (text or binary modes)."""
    if not is_url(path):
        return open(path, mode)
    import fsspec

    return fsspec.open(path, mode).open()


def remove(path: str) -> None:
    """Removes the file ``path`` if it exists."""
    if not is_url(path):
        if os.path.exists(path):
            os.remove(path)
        return
    fs, p = _fs(path)
    if fs.exists(p):
        fs.rm(p)


def replace(src: str, dst: str) -> None:
    """Moves the file ``src`` over ``dst`` (atomic for local paths, as ``os.replace``)."""
    if not is_url(src):
        os.replace(src, dst)
        return
    fs, p = _fs(src)
    fs.mv(p, _fs(dst)[1])
