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

The same mapping, inverted, writes our networks in the official layout
(:func:`to_state_dict`, :func:`official_buffers`; the ``.safetensors`` files of
``adacode-export --format safetensors``, :mod:`adacode_jax.inference.safetensors_file`), and
those files read back here as the ``.pth`` do.
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

SAFETENSORS_SUFFIX = ".safetensors"
# The official Swin stacks are built for a 32 x 32 token grid (``SwinLayers(input_resolution=
# (32, 32))``, whatever the network), which sizes the ``attn_mask`` buffers of their files.
OFFICIAL_SWIN_GRID = 32
# The stage III networks (``AdaCodeSRNet_Contrast``) store ``contrast_cri.negatives_mask``, 2B x 2B
# for the training batch B per GPU of the release (docs/official.md#official-checkpoints); stage I
# (``FeMaSRNet``), stage II (``AdaCodeSRNet``) and the discriminator have no ``contrast_cri``.
OFFICIAL_CONTRAST_BATCH = {"sr_x4": 8, "sr_x2": 8, "inpaint": 2}


class ConversionError(errors.UserError, ValueError):
    """A state dict does not fit the requested network, or a file is not a state dict; the
    message lists every problem."""


# ---- reading files -----------------------------------------------------------------------

def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """A flat ``{key: array}`` from an official ``.pth`` (``{'params': ...}`` or a bare state
    dict), a flat ``.npz`` or a ``.safetensors`` file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: not a regular file",
                              "give the .pth, .npz or .safetensors file")
    if path.endswith(SAFETENSORS_SUFFIX):
        from adacode_jax.inference import safetensors_file

        return safetensors_file.read(path)[0]
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
    # by index: a .safetensors file lists its keys sorted as text (10 before 2)
    keys = sorted((k for k in sd if "quantize_group" in k), key=_codebook_index)
    books = tuple(tuple(sd[k].shape) for k in keys)
    if books:
        cfg.codebooks = books
    if kind == "stage1" and any(k.startswith("conv_semantic.") for k in sd):
        cfg.use_semantic_loss = True
    return cfg


def _codebook_index(key: str) -> tuple:
    head, _, rest = key.partition("quantize_group.")
    index = rest.split(".", 1)[0]
    return (head, int(index) if index.isdigit() else -1, key)


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


def _buffer_value(key: str, shape: tuple, window: int) -> np.ndarray | None:
    """The value the official code gives the derived buffer ``key`` of ``shape`` (the shape
    says the mask's grid and the contrastive batch), or None for a key that is none."""
    if key.endswith(".relative_position_index"):
        return relative_position_index(window).astype(np.int64)
    if key.endswith(".attn_mask"):
        side = max(int(round(np.sqrt(shape[0]))) if shape else 1, 1) * window
        return np.asarray(shifted_window_mask(side, side, window, window // 2), np.float32)
    if key == "contrast_cri.temperature":
        return np.array(0.5, np.float32)
    if key == "contrast_cri.negatives_mask":
        n = shape[0] if shape else 0
        return 1.0 - np.eye(n, dtype=np.float32)
    return None


def _check_buffer(key: str, value: np.ndarray, window: int) -> str | None:
    """None if an official derived buffer equals what we compute, else a problem line."""
    want = _buffer_value(key, value.shape, window)
    if want is None:
        return f"  {key}: unknown buffer"
    if key == "contrast_cri.temperature":
        ok = value.size == 1 and np.allclose(value, want)
    else:
        ok = value.shape == want.shape and np.array_equal(value, want)
    return None if ok else f"  {key}: differs from the value the network computes"


def official_buffers(keys, kind: str, window: int) -> dict[str, np.ndarray]:
    """The derived buffers an official file of ``kind`` stores beside the parameter ``keys``
    (official names), valued as the official code computes them: per Swin block
    ``relative_position_index`` (int64) and, on shifted (odd) blocks, ``attn_mask`` for the
    official 32 x 32 grid; ``contrast_cri.*`` for the kinds of :data:`OFFICIAL_CONTRAST_BATCH`."""
    grid = (OFFICIAL_SWIN_GRID // window) ** 2
    shapes = {}
    for key in keys:
        if not key.endswith(".attn.relative_position_bias_table"):
            continue
        block = key[: -len(".attn.relative_position_bias_table")]
        shapes[block + ".attn.relative_position_index"] = None
        if int(block.rsplit(".", 1)[1]) % 2 == 1 and OFFICIAL_SWIN_GRID > window:
            shapes[block + ".attn_mask"] = (grid,)       # SwinIR: no shift when grid <= window
    if kind in OFFICIAL_CONTRAST_BATCH:
        shapes["contrast_cri.temperature"] = None
        shapes["contrast_cri.negatives_mask"] = (2 * OFFICIAL_CONTRAST_BATCH[kind],)
    return {k: _buffer_value(k, shape, window) for k, shape in shapes.items()}


def to_variables(sd: Mapping[str, np.ndarray], kind: str, *, strict: bool = True,
                 config: ml_collections.ConfigDict | None = None):
    """(model config, variables) for ``kind`` from a flat official state dict.

    ``config``: the network to fill (a file's own, :func:`stored_config`); default the official
    network of ``kind`` with the file's codebooks (:func:`infer_config`).

    Raises :class:`ConversionError` listing every missing, unexpected or mis-shaped key (with
    ``strict=False`` missing keys keep their random init and unexpected ones are dropped;
    mis-shaped keys and wrong derived buffers always fail).
    """
    cfg = infer_config(sd, kind) if config is None else config
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


def stored_config(path: str, kind: str) -> ml_collections.ConfigDict | None:
    """The network config a ``.safetensors`` file of ours carries (its header's ``model``), None
    for other files (their network is the official one). Refuses (:class:`ConversionError`) a
    file that holds another kind than ``kind``."""
    if not os.fspath(path).endswith(SAFETENSORS_SUFFIX):
        return None
    from adacode_jax.inference import safetensors_file

    return safetensors_file.stored_config(os.fspath(path), kind)


def load_file(path: str, kind: str, *, strict: bool = True):
    """``(config, variables, number of keys)`` of a ``.pth`` / ``.pt`` / ``.npz`` /
    ``.safetensors`` file of ``kind`` (:func:`read_state_dict`, :func:`stored_config`,
    :func:`to_variables`)."""
    sd = read_state_dict(path)
    cfg, variables = to_variables(sd, kind, strict=strict, config=stored_config(path, kind))
    return cfg, variables, len(sd)


def load_official(source, kind: str, *, strict: bool = True):
    """``(model, variables)`` from an official state dict: a ``.pth`` / ``.npz`` /
    ``.safetensors`` path or a ``{key: array}`` dict. ``model`` is a Linen module; see the
    module docstring."""
    if isinstance(source, (str, os.PathLike)):
        cfg, variables, _ = load_file(source, kind, strict=strict)
    else:
        cfg, variables = to_variables(dict(source), kind, strict=strict)
    return models.build(cfg), variables
