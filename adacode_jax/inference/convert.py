"""Official AdaCode (PyTorch) state dicts -> Flax variables, saved with Orbax.

Usage::

    python -m adacode_jax.cli.convert --kind sr_x4 --input AdaCode_SR_X4_model_g.pth --output ckpt/sr_x4

Python API::

    model, variables = load_official("AdaCode_SR_X4_model_g.pth", "sr_x4")
    out, aux = model.apply(variables, x)          # x: (B, H, W, 3) float32 in [0, 1]

Our module names are the official ones, so a Flax parameter at path ``(m1, m2, ..., leaf)``
is the official key ``m1.m2....<leaf>`` with ``kernel`` -> ``weight`` (OIHW -> HWIO for convs,
transposed for linears), ``scale`` -> ``weight`` (norms), ``embedding`` -> ``embedding.weight``
and, under spectral norm, ``kernel`` -> ``weight_orig``, ``u``/``v`` -> ``weight_u``/``weight_v``.

Strict by default: missing, unexpected and mis-shaped keys are listed by name and nothing is
written. Buffers the network recomputes (Swin ``relative_position_index`` and ``attn_mask``,
``contrast_cri.*``) are checked against our own values, not copied.
"""
from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import zipfile
import zlib
from typing import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from adacode_jax import errors
from adacode_jax import models
from adacode_jax.models.swin import relative_position_index, shifted_window_mask


class ConversionError(errors.UserError, ValueError):
    """A state dict does not fit the requested network, or a file is not a state dict; the
    message lists every problem."""


# ---- reading files -----------------------------------------------------------------------

def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """A flat ``{key: array}`` from an official ``.pth`` (``{'params': ...}`` or a bare state
    dict) or a flat ``.npz``."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: not a regular file", "give the .pth or .npz file")
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        obj = _load_pth(path)
    except (ValueError, pickle.UnpicklingError, EOFError, KeyError, OSError, RuntimeError,
            zipfile.BadZipFile, zlib.error) as e:
        # RuntimeError: torch.load's message for a malformed archive; BadZipFile, zlib.error:
        # a truncated or damaged .npz
        if isinstance(e, ConversionError) or (isinstance(e, OSError) and e.filename):
            raise
        text = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if text.startswith("Weights only load failed"):    # torch's page-long explanation
            text = ("torch refuses to read it as a file of tensors (torch.load with "
                    "weights_only=True); it is not a state dict written by torch.save, or it "
                    "holds other objects")
        what = text if text.startswith(path) else f"{path}: {text}"
        raise ConversionError(what, None if "; " in what else "check that it is a complete file "
                              "written by torch.save or numpy.savez") from e
    if isinstance(obj, Mapping):
        for wrapper in ("params", "params_ema", "state_dict"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path}: expected a state dict (a mapping of names to tensors), "
                              f"found {type(obj).__name__}")
    return {k: _to_numpy(v) for k, v in obj.items()}


def _load_pth(path: str):
    try:
        import torch  # the `convert` extra
    except ImportError:
        from adacode_jax.inference import torchzip  # torch-free reader of torch's zip format
        return torchzip.load(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def _to_numpy(v) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu()
        if str(v.dtype) == "torch.bfloat16":
            v = v.float()
        return v.numpy()
    return np.asarray(v)


# ---- the mapping -------------------------------------------------------------------------

def _official_key(collection: str, path: tuple[str, ...]) -> str:
    *mods, leaf = path
    prefix = ".".join(mods)
    spectral = collection == "spectral" or (leaf == "kernel" and _is_spectral(mods))
    if collection == "spectral":
        return f"{prefix}.weight_{leaf}"
    name = {"kernel": "weight_orig" if spectral else "weight", "scale": "weight",
            "embedding": "embedding.weight"}.get(leaf, leaf)
    return f"{prefix}.{name}"


def _is_spectral(mods) -> bool:
    return len(mods) == 1 and mods[0] in {f"conv{i}" for i in range(1, 9)}


def _to_torch_layout(a: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel" and a.ndim == 4:
        return a.transpose(3, 2, 0, 1)
    if leaf == "kernel" and a.ndim == 2:
        return a.T
    return a


def _from_torch_layout(a: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel" and a.ndim == 4:
        return a.transpose(2, 3, 1, 0)
    if leaf == "kernel" and a.ndim == 2:
        return a.T
    return a


def infer_config(sd: Mapping[str, np.ndarray], kind: str) -> ml_collections.ConfigDict:
    """The official config of ``kind`` with the codebook list read from the state dict, as the
    reference does: every ``quantize_group`` key in state-dict order gives ``[n_e, e_dim]``."""
    cfg = models.model_config(kind)
    if kind == "disc":
        return cfg
    books = tuple(tuple(v.shape) for k, v in sd.items() if "quantize_group" in k)
    if books:
        cfg.codebooks = books
    if kind == "stage1" and any(k.startswith("conv_semantic.") for k in sd):
        cfg.use_semantic_loss = True
    return cfg


def expected_keys(model, cfg, variables) -> dict[str, tuple]:
    """Official key -> (collection, flax path, torch-layout shape) for every variable."""
    out = {}
    for coll, tree in variables.items():
        for path, leaf in traverse_util.flatten_dict(tree).items():
            key = _official_key(coll, path)
            shape = _to_torch_layout(np.empty(leaf.shape, np.uint8), path[-1]).shape
            out[key] = (coll, path, shape)
    return out


def _recomputable(key: str) -> bool:
    return (key.endswith((".relative_position_index", ".attn_mask"))
            or key.startswith("contrast_cri."))


def _check_buffer(key: str, value: np.ndarray, window: int) -> str | None:
    """None if an official derived buffer equals what we compute, else a problem line."""
    if key.endswith(".relative_position_index"):
        ok = np.array_equal(value, relative_position_index(window))
    elif key.endswith(".attn_mask"):
        n = value.shape[0]
        side = int(round(np.sqrt(n))) * window
        ok = np.array_equal(value, np.asarray(shifted_window_mask(side, side, window, window // 2)))
    elif key == "contrast_cri.temperature":
        ok = np.allclose(value, 0.5)
    elif key == "contrast_cri.negatives_mask":
        n = value.shape[0]
        ok = value.ndim == 2 and np.array_equal(value, 1.0 - np.eye(n, dtype=value.dtype))
    else:
        return f"  {key}: unknown buffer"
    return None if ok else f"  {key}: differs from the value the network computes"


def to_variables(sd: Mapping[str, np.ndarray], kind: str, *, strict: bool = True):
    """(model config, variables) for ``kind`` from a flat official state dict.

    Raises :class:`ConversionError` listing every missing, unexpected or mis-shaped key (with
    ``strict=False`` missing keys keep their random init and unexpected ones are dropped;
    mis-shaped keys and wrong derived buffers always fail).
    """
    cfg = infer_config(sd, kind)
    model = models.build(cfg)
    size = {"sr_x4": 64, "sr_x2": 128}.get(kind, 256)
    x = jnp.zeros((1, size, size, 3), jnp.float32)
    init = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    init = {k: v for k, v in init.items() if k != "intermediates"}
    want = expected_keys(model, cfg, init)

    missing = [k for k in want if k not in sd]
    ignored = [k for k in sd if k.startswith("vgg_feat_extractor.")]   # frozen VGG19 copy
    unexpected, shape_errors, buffer_errors = [], [], []
    for k, v in sd.items():
        if k in want:
            if tuple(v.shape) != tuple(want[k][2]):
                shape_errors.append(f"  {k}: file {tuple(v.shape)}, network {tuple(want[k][2])}")
        elif _recomputable(k):
            problem = _check_buffer(k, np.asarray(v), int(cfg.get("window_size", 8)))
            if problem:
                buffer_errors.append(problem)
        elif k not in ignored:
            unexpected.append(k)

    problems = []
    if shape_errors:
        problems.append(f"{len(shape_errors)} mis-shaped keys:\n" + "\n".join(shape_errors))
    if buffer_errors:
        problems.append(f"{len(buffer_errors)} derived buffers that disagree:\n"
                        + "\n".join(buffer_errors))
    if strict and missing:
        problems.append(f"{len(missing)} missing keys:\n" + "\n".join(f"  {k}" for k in missing))
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected keys:\n"
                        + "\n".join(f"  {k}" for k in unexpected))
    if problems:
        raise ConversionError(f"state dict does not fit the {kind!r} network "
                              f"({type(model).__name__}):\n" + "\n".join(problems))

    rng_init = model.init(jax.random.key(0), x) if (missing and not strict) else None
    flat = {}
    for key, (coll, path, _) in want.items():
        if key in sd:
            arr = _from_torch_layout(np.asarray(sd[key], np.float32), path[-1])
        else:
            arr = np.asarray(traverse_util.flatten_dict(rng_init[coll])[path])
        flat[(coll,) + path] = jnp.asarray(arr)
    return cfg, traverse_util.unflatten_dict(flat)


def to_state_dict(variables, kind: str | None = None) -> dict[str, np.ndarray]:
    """The inverse mapping: official keys and PyTorch layouts (derived buffers left out)."""
    out = {}
    for coll, tree in variables.items():
        if coll == "intermediates":
            continue
        for path, leaf in traverse_util.flatten_dict(tree).items():
            out[_official_key(coll, path)] = _to_torch_layout(np.asarray(leaf), path[-1])
    return out


def check_output(output: str, *, overwrite: bool = False) -> list[str]:
    """The entries of an existing ``output`` folder (``[]`` if absent or empty); refuses
    (UserError) a file, or a non-empty folder without ``overwrite``. Cheap: call it before
    converting."""
    if os.path.exists(output) and not os.path.isdir(output):
        raise errors.UserError(f"{output}: exists and is not a folder", "choose another --output")
    present = sorted(os.listdir(output)) if os.path.isdir(output) else []
    if present and not overwrite:
        shown = ", ".join(present[:3]) + (" ..." if len(present) > 3 else "")
        raise errors.UserError(
            f"{output}: the folder is not empty ({len(present)} entries: {shown})",
            "choose a new or empty folder, or pass --overwrite to replace the checkpoint in it "
            "(other files are kept)")
    return present


def save_checkpoint(output: str, cfg, variables, *, extra: dict | None = None,
                    overwrite: bool = False) -> str:
    """Writes an inference checkpoint directory all at once; returns its absolute path.

    The checkpoint is written into a temporary folder beside ``output`` and moved into place,
    so ``output`` never holds half a checkpoint. A non-empty ``output`` is refused unless
    ``overwrite``; then only the checkpoint's own entries (``variables/``, ``model.json``) are
    replaced and every other file in it is kept.

    Raises:
      UserError: ``output`` is a file, or a non-empty folder without ``overwrite``.
    """
    from adacode_jax.models import checkpointing

    output = os.path.abspath(output)
    present = check_output(output, overwrite=overwrite)
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(output)}.", suffix=".tmp")
    try:
        checkpointing.save_inference(tmp, cfg, variables, extra=extra)
        if not present:
            if os.path.isdir(output):
                os.rmdir(output)           # empty: replaced by the finished checkpoint
            os.replace(tmp, output)
            return output
        for name in sorted(os.listdir(tmp)):
            target, new = os.path.join(output, name), os.path.join(tmp, name)
            old = None
            if os.path.lexists(target):
                old = os.path.join(tmp, f".old.{name}")
                os.replace(target, old)
            os.replace(new, target)
            if old is not None:
                shutil.rmtree(old) if os.path.isdir(old) and not os.path.islink(old) else os.unlink(old)
        return output
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_official(source, kind: str, *, strict: bool = True):
    """``(model, variables)`` from an official state dict: a ``.pth`` / ``.npz`` path or a
    ``{key: array}`` dict. ``model`` is a Linen module; see the module docstring."""
    sd = read_state_dict(source) if isinstance(source, (str, os.PathLike)) else dict(source)
    cfg, variables = to_variables(sd, kind, strict=strict)
    return models.build(cfg), variables
