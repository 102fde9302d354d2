"""Export a restoration network for serving: inference-only parameters and StableHLO.

    python -m adacode_jax.cli.export --checkpoint CKPT [--task sr --scale 4] --output DIR

writes

* ``DIR/model.json`` + ``DIR/variables/``: the network config and **only** its ``params``
  (Orbax, :mod:`adacode_jax.models.checkpointing`); ``Restorer.from_checkpoint(DIR)`` reads it;
* ``DIR/restore.jax_exported``: a serialized :mod:`jax.export` artefact (StableHLO plus calling
  convention) of ``restore(variables, x) -> y`` with x ``(b, h, w, 3)`` float32 RGB in [0, 1]
  and y ``(b, s·h, s·w, 3)`` float32 clamped to [0, 1]: the official ``test()`` (mirror padding
  to the pad multiple, forward, crop). Batch, height and width are **symbolic** (any
  ``h, w >= pad_multiple``), unless ``--shape HxW`` fixes them; lowered for CPU, CUDA and TPU;
* ``DIR/export.json``: what the function takes and returns, the platforms and versions.

The parameters are arguments of the exported function, not constants inside it, so the
artefact stays small (a few hundred kB) and is run as::

    exported, variables, meta = load_export(DIR)
    y = exported.call(variables, x)
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import export as jax_export

from adacode_jax.models import checkpointing
from adacode_jax import models
from adacode_jax.ops import winograd

EXPORT_FILE = "restore.jax_exported"
META_FILE = "export.json"
PLATFORMS = ("cpu", "cuda", "tpu")
# every platform jax.export lowers for
KNOWN_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def restore_function(model: models.AdaCodeNet):
    """``f(variables, x) -> y``: the official padded inference, clamped to [0, 1]."""
    def restore(variables, x):
        out, _ = model.apply(variables, x, method="restore_padded")
        return jnp.clip(out, 0.0, 1.0)
    return restore


def input_spec(model: models.AdaCodeNet, shape: tuple[int, int] | None = None) -> jax.ShapeDtypeStruct:
    """``(b, h, w, 3)`` float32 with symbolic b, h, w (h, w >= pad multiple), or fixed h, w."""
    if shape is not None:
        return jax.ShapeDtypeStruct((1, int(shape[0]), int(shape[1]), 3), jnp.float32)
    m = int(model.pad_multiple)
    # restore_padded mirrors at most one pad multiple, which must fit inside the image.
    b, h, w = jax_export.symbolic_shape("b, h, w", constraints=(f"h >= {m}", f"w >= {m}"))
    return jax.ShapeDtypeStruct((b, h, w, 3), jnp.float32)


def export_restore(model: models.AdaCodeNet, variables: Any, *, shape: tuple[int, int] | None = None,
                   platforms: Sequence[str] = PLATFORMS) -> jax_export.Exported:
    """A :class:`jax.export.Exported` of :func:`restore_function` (parameters as arguments).

    """
    fn = jax.jit(restore_function(model))
    params = {"params": variables["params"]}
    # XLA's own convolutions: the artefact must run wherever jax does, without this package's
    # CPU kernel (a custom call jax.export would refuse to serialise anyway).
    with winograd.forced("0"):
        return jax_export.export(fn, platforms=tuple(platforms))(params, input_spec(model, shape))


def check_finite(model: models.AdaCodeNet, variables: Any, exported: jax_export.Exported,
                 source: str, shape: tuple[int, int] | None = None) -> None:
    """Refuse weights holding NaN/Inf, and an export whose output on a mid-grey probe image is
    not finite (run when the current backend is among the lowered platforms)."""
    bad = checkpointing.first_non_finite(variables["params"])
    if bad is not None:
        raise ValueError(f"{source}: the weights are broken: {bad} holds NaN/Inf values; "
                         "nothing was exported")
    platform = {"gpu": "cuda"}.get(jax.default_backend(), jax.default_backend())
    if platform not in exported.platforms:
        return
    m = int(model.pad_multiple)
    h, w = shape if shape is not None else (m, m)
    y = np.asarray(exported.call({"params": variables["params"]},
                                 np.full((1, h, w, 3), 0.5, np.float32)))
    if not np.isfinite(y).all():
        raise ValueError(f"{source}: the exported function returns NaN/Inf on a grey {w}x{h} "
                         f"probe image ({model.dtype.__name__} compute); nothing was exported: "
                         "try --dtype float32 or another checkpoint")


def save_export(directory: str, cfg: ml_collections.ConfigDict, variables: Any,
                exported: jax_export.Exported, *, source: str = "") -> dict[str, Any]:
    """Write the three parts (see the module docstring); returns the metadata written."""
    params = {"params": jax.tree.map(np.asarray, variables["params"])}
    checkpointing.save_inference(directory, cfg, params,
                                 extra={"source": source, "kind": cfg.kind, "inference_only": True})
    with open(os.path.join(directory, EXPORT_FILE), "wb") as f:
        f.write(exported.serialize())
    model = models.build(cfg)
    meta = {
        "function": "restore(variables, x) -> y: official test() padding, forward, crop, clamp",
        "input": {"shape": [str(d) for d in exported.in_avals[-1].shape], "dtype": "float32",
                  "layout": "NHWC RGB in [0, 1]", "min_side": int(model.pad_multiple)},
        "output": {"shape": [str(d) for d in exported.out_avals[0].shape], "dtype": "float32",
                   "range": "[0, 1]"},
        "scale": int(model.scale), "kind": cfg.kind, "compute_dtype": cfg.dtype,
        "platforms": list(exported.platforms), "jax": jax.__version__, "flax": flax.__version__,
        "calling_convention_version": exported.calling_convention_version,
        "variables": "DIR/variables (Orbax, params only), passed as the first argument",
        "source": source,
    }
    with open(os.path.join(directory, META_FILE), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    return meta


def load_export(directory: str) -> tuple[jax_export.Exported, dict, dict[str, Any]]:
    """``(exported, variables, meta)`` from a directory written by :func:`save_export`."""
    path = os.path.join(directory, EXPORT_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: export with `python -m adacode_jax.cli.export`")
    with open(path, "rb") as f:
        exported = jax_export.deserialize(bytearray(f.read()))
    _, variables, _ = checkpointing.load_inference(directory)
    with open(os.path.join(directory, META_FILE), encoding="utf-8") as f:
        meta = json.load(f)
    return exported, {"params": variables["params"]}, meta
