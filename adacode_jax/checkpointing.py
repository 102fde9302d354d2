"""Orbax I/O for inference variables: a network's config (JSON) beside its variables.

Inference checkpoints (converted official weights, training exports) and the training run's
``CheckpointManager`` wrapper.

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

from adacode_jax import paths

MODEL_JSON = "model.json"
VARIABLES_DIR = "variables"


def save_inference(directory: str, model_cfg: ml_collections.ConfigDict, variables: Any,
                   *, extra: dict | None = None) -> str:
    """Write ``variables`` and ``model_cfg`` under ``directory`` (created; replaced if present)."""
    directory = paths.absolute(directory)
    paths.makedirs(directory)
    # jax arrays go to Orbax as they are: sharded (multi-host) arrays are written by every host.
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(directory, VARIABLES_DIR),
                   jax.tree.map(lambda a: a if isinstance(a, jax.Array) else np.asarray(a), variables),
                   force=True)
    if jax.process_index() == 0:
        meta = {"model": json.loads(model_cfg.to_json()), **(extra or {})}
        with paths.open_file(os.path.join(directory, MODEL_JSON), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
    return directory


def first_non_finite(tree: Any) -> str | None:
    """The ``/``-joined path of the first floating leaf of ``tree`` holding NaN or Inf, or None."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        a = np.asarray(leaf)
        if np.issubdtype(a.dtype, np.inexact) and not np.isfinite(a).all():
            return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                            for k in path)
    return None


def load_inference(directory: str):
    """(model_cfg, variables, meta) from a directory written by :func:`save_inference`.

    The variables come back as host numpy arrays, whatever the device layout or number of
    processes they were saved from (an export of a one-GPU run loads on a pod, and back).
    """
    directory = paths.absolute(directory)
    meta_path = os.path.join(directory, MODEL_JSON)
    if not paths.exists(meta_path):
        raise FileNotFoundError(
            f"{meta_path} not found: {directory} is not an adacode-jax inference checkpoint. "
            "Make one with `python -m adacode_jax.convert` (official .pth) or from training.")
    with paths.open_file(meta_path) as f:
        meta = json.load(f)
    with ocp.StandardCheckpointer() as ckptr:
        path = os.path.join(directory, VARIABLES_DIR)
        # Without a target Orbax restores the saved shardings, which fails on another topology.
        stored = ckptr.metadata(path).item_metadata
        variables = ckptr.restore(path, jax.tree.map(lambda m: np.empty(m.shape, m.dtype), stored))
    bad = first_non_finite(variables)
    if bad is not None:
        raise ValueError(f"{directory}: the weights are broken: {bad} holds NaN/Inf values; "
                         "re-export them from a training checkpoint saved before the loss "
                         "diverged")
    return ml_collections.ConfigDict(meta["model"]), variables, meta


# ---- training checkpoints ----------------------------------------------------------------

class RunCheckpoints:
    """The one Orbax ``CheckpointManager`` of a training run.

    Each step directory holds three items: ``state`` (the :class:`~adacode_jax.steps.TrainState`
    pytree, restored onto the current mesh's shardings, whatever the device count at save
    time), ``data`` (the Grain iterator position, one JSON per host) and ``config`` (JSON).
    """

    def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True):
        import grain  # noqa: F401  (registers grain's checkpoint handlers)

        self.directory = paths.absolute(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 enable_async_checkpointing=async_save))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_iterator, config: ml_collections.ConfigDict,
             *, force: bool = False) -> bool:
        import grain

        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  data=grain.checkpoint.CheckpointSave(data_iterator),
                                  config=ocp.args.JsonSave(json.loads(config.to_json())))
        return self.manager.save(step, args=args, force=force)

    def restore(self, step: int, abstract_state, data_iterator):
        """The saved state (with the shardings of ``abstract_state``); moves the iterator."""
        import grain

        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                  data=grain.checkpoint.CheckpointRestore(data_iterator))
        restored = self.manager.restore(step, args=args)
        return restored["state"]

    def saved_config(self, step: int) -> dict | None:
        """The config saved with ``step`` (a JSON dict), or None if that step has none."""
        try:
            restored = self.manager.restore(
                step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        except (FileNotFoundError, KeyError, ValueError):
            return None
        return restored["config"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

