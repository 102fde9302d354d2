"""Orbax I/O for inference variables: a network's config (JSON) beside its variables.

Layout of a converted or exported directory::

    DIR/model.json      {"model": <model ConfigDict as a dict>, "source": ...}
    DIR/variables/      Orbax StandardCheckpointer tree {"params": ..., ["spectral": ...]}
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

MODEL_JSON = "model.json"
VARIABLES_DIR = "variables"


def save_inference(directory: str, model_cfg: ml_collections.ConfigDict, variables: Any,
                   *, extra: dict | None = None) -> str:
    """Write ``variables`` and ``model_cfg`` under ``directory`` (created; replaced if present)."""
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(directory, VARIABLES_DIR),
                   jax.tree.map(np.asarray, variables), force=True)
    meta = {"model": model_cfg.to_dict(), **(extra or {})}
    with open(os.path.join(directory, MODEL_JSON), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    return directory


def load_inference(directory: str):
    """(model_cfg, variables, meta) from a directory written by :func:`save_inference`."""
    directory = os.path.abspath(directory)
    meta_path = os.path.join(directory, MODEL_JSON)
    if not os.path.exists(meta_path):
        raise FileNotFoundError(
            f"{meta_path} not found: {directory} is not an adacode-jax inference checkpoint. "
            "Make one with `python -m adacode_jax.convert` (official .pth) or from training.")
    with open(meta_path) as f:
        meta = json.load(f)
    with ocp.StandardCheckpointer() as ckptr:
        variables = ckptr.restore(os.path.join(directory, VARIABLES_DIR))
    return ml_collections.ConfigDict(meta["model"]), variables, meta
