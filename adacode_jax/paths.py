"""Paths that may be local or remote (``gs://bucket/run`` on Cloud TPU).

Local paths use ``os``; URLs (``scheme://...``) use ``tf.io.gfile`` (TensorFlow is already a
dependency; it reads ``gs://`` and, in tests, ``ram://``). Orbax and the TensorBoard writer
handle URLs themselves; these helpers cover our own small files (``metrics.jsonl``,
``model.json``) and keep a URL from being turned into ``$PWD/gs:/bucket``.
"""
from __future__ import annotations

import os
from typing import IO


def is_url(path: str) -> bool:
    return "://" in str(path)


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def absolute(path: str) -> str:
    """``os.path.abspath`` for local paths; URLs unchanged."""
    path = os.fspath(path)
    return path if is_url(path) else os.path.abspath(path)


def exists(path: str) -> bool:
    return _gfile().exists(path) if is_url(path) else os.path.exists(path)


def makedirs(path: str) -> None:
    if is_url(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def open_file(path: str, mode: str = "r") -> IO:
    """``open`` for local paths, ``tf.io.gfile.GFile`` for URLs (text or binary modes)."""
    return _gfile().GFile(path, mode) if is_url(path) else open(path, mode)
