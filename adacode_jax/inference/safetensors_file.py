"""Our networks as ``.safetensors`` files in the official AdaCode (PyTorch) key layout.

    python -m adacode_jax.cli.export --format safetensors --checkpoint CKPT --output FILE.safetensors

A file holds what an official ``.pth`` holds: the parameters under their official keys and
layouts (:func:`adacode_jax.inference.convert.to_state_dict`: conv OIHW, linear (out, in),
spectral norm ``weight_orig``/``weight_u``/``weight_v``) and the derived buffers the official
networks store, valued as the official code computes them
(:func:`adacode_jax.inference.convert.official_buffers`), so the official code and spandrel load
it as they load a released checkpoint. Its header's metadata (str -> str):

=============  ==============================================================================
format         ``pt`` (the safetensors convention for PyTorch state dicts)
kind           network kind (``sr_x4``, ``stage2``, ``disc`` ...)
scale          output size / input size (generators)
codebooks      ``n_e x e_dim`` per basis codebook in checkpoint order, comma-separated
model          our whole network config (JSON): what our reader rebuilds, so a network
               outside the official sizes (the compact family) comes back exactly
training_data  what it was trained on, where ``model.json`` or the model card says
license        its licence, where ``model.json`` or the model card says
source         the checkpoint it was exported from
=============  ==============================================================================

:func:`read` is the reader behind :func:`adacode_jax.inference.convert.read_state_dict`; a
damaged file is one :class:`~adacode_jax.inference.convert.ConversionError` naming it.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

import ml_collections
import numpy as np

from adacode_jax import errors, files
from adacode_jax.inference import convert

SUFFIX = convert.SAFETENSORS_SUFFIX
# Model cards looked for in a checkpoint folder (and, naming the folder in their title, beside it).
CARD_NAMES = ("MODEL_CARD.md", "README.md")
# model.json entries copied into the header, by header name.
_INFO_KEYS = {"training_data": ("training_data", "data"), "license": ("license", "licence")}
# model card bullets ("- **Data**: ...") copied into the header, by header name.
_CARD_FIELDS = {"training_data": ("data", "training data"), "license": ("licence", "license")}


# ---- writing -----------------------------------------------------------------------------

def official_state_dict(cfg: ml_collections.ConfigDict, variables: Any) -> dict[str, np.ndarray]:
    """``{official key: array}`` of a network: its parameters (float32, PyTorch layouts) and
    the derived buffers an official file of its kind stores."""
    params = {k: np.ascontiguousarray(v, np.float32)
              for k, v in convert.to_state_dict(variables).items()}
    window = int(cfg.get("window_size", 8))
    return {**params, **convert.official_buffers(params, cfg.kind, window)}


def header(cfg: ml_collections.ConfigDict, info: Mapping[str, str] | None = None) -> dict[str, str]:
    """The file's metadata (see the module docstring); ``info``: training_data, license,
    source (empty values left out)."""
    meta = {"format": "pt", "kind": str(cfg.kind),
            "model": json.dumps(json.loads(cfg.to_json()), sort_keys=True)}
    if cfg.kind != "disc":
        meta["scale"] = str(int(cfg.scale_factor))
        meta["codebooks"] = ",".join(f"{int(n)}x{int(d)}" for n, d in cfg.codebooks)
    meta.update({k: str(v) for k, v in (info or {}).items() if v})
    return meta


def provenance(checkpoint: str, meta: Mapping[str, Any]) -> dict[str, str]:
    """training_data / license of an inference checkpoint folder: from its ``model.json``
    (``meta``; keys training_data or data, license or licence), else from its model card."""
    out = {}
    for name, keys in _INFO_KEYS.items():
        value = next((meta[k] for k in keys if isinstance(meta.get(k), str) and meta[k]), None)
        if value:
            out[name] = value
    card = _card_text(checkpoint)
    for name, value in (_card_fields(card) if card else {}).items():
        out.setdefault(name, value)
    return out


def _card_text(checkpoint: str) -> str | None:
    """The model card of a checkpoint folder: one inside it, or one beside it whose title
    (first line) names the folder (``adacode_jax/pretrained/MODEL_CARD.md``)."""
    folder = os.path.abspath(checkpoint)
    name = os.path.basename(folder.rstrip(os.sep))
    for where, must_name in ((folder, False), (os.path.dirname(folder), True)):
        for card in CARD_NAMES:
            path = os.path.join(where, card)
            if not os.path.isfile(path):
                continue
            with open(path, encoding="utf-8") as f:
                text = f.read()
            if not must_name or name in (text.splitlines() or [""])[0]:
                return text
    return None


def _card_fields(text: str) -> dict[str, str]:
    """``{header name: text}`` of the card's ``- **Data**:`` / ``- **Licence**:`` bullets
    (continuation lines joined, whitespace collapsed)."""
    bullets = re.findall(r"^- \*\*([^*]+)\*\*:?\s*(.*(?:\n(?!- |\s*\n|#)\s+.*)*)", text, re.M)
    out = {}
    for label, body in bullets:
        for name, labels in _CARD_FIELDS.items():
            if label.strip().rstrip(":").lower() in labels:
                out.setdefault(name, " ".join(body.split()))
    return out


def write(path: str, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> str:
    """Write ``tensors`` with ``metadata`` to ``path`` all at once
    (:func:`adacode_jax.files.atomic_write_bytes`); returns the absolute path."""
    from safetensors.numpy import save

    return files.atomic_write_bytes(os.path.abspath(path),
                                    save(dict(tensors), metadata=dict(metadata)))


def check_output(path: str) -> None:
    """Refuses (UserError) an output that is not a ``.safetensors`` file name or is a folder."""
    if not os.fspath(path).endswith(SUFFIX):
        raise errors.UserError(f"{path}: a safetensors export is one file ending in {SUFFIX}",
                               f"give --output NAME{SUFFIX}")
    if os.path.isdir(path):
        raise errors.UserError(f"{path}: is a folder", f"give a file name ending in {SUFFIX}")


def export(path: str, cfg: ml_collections.ConfigDict, variables: Any,
           info: Mapping[str, str] | None = None) -> dict[str, str]:
    """Write a network to ``path`` (see the module docstring); returns the header written."""
    check_output(path)
    meta = header(cfg, info)
    write(path, official_state_dict(cfg, variables), meta)
    return meta


# ---- reading -----------------------------------------------------------------------------

def _damaged(path: str, e: Exception) -> convert.ConversionError:
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return convert.ConversionError(
        f"{path}: not a readable safetensors file ({text})",
        "check that it is a complete file written by safetensors (adacode-export "
        "--format safetensors writes them)")


def read_metadata(path: str) -> dict[str, str]:
    """The header's metadata of a ``.safetensors`` file (``{}`` when it has none)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, "np") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, ValueError, TypeError) as e:
        raise _damaged(path, e) from e


def read(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``({key: array}, metadata)`` of a ``.safetensors`` file; a truncated or damaged file is
    a :class:`~adacode_jax.inference.convert.ConversionError` naming it."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    meta = read_metadata(path)
    try:
        tensors = load_file(path)
    except (SafetensorError, ValueError, TypeError) as e:
        raise _damaged(path, e) from e
    return tensors, meta


def stored_kind(path: str) -> str | None:
    """The network kind a ``.safetensors`` file's header names, or None (other files, or a
    header that names none)."""
    if not os.fspath(path).endswith(SUFFIX) or not os.path.isfile(path):
        return None
    return read_metadata(os.fspath(path)).get("kind") or None


def stored_config(path: str, kind: str) -> ml_collections.ConfigDict | None:
    """The network config of a file's header (``model``), or None where it has none; refuses a
    file whose header names another kind than ``kind``, or holds a broken config."""
    meta = read_metadata(path)
    found = meta.get("kind")
    text = meta.get("model")
    cfg = None
    if text is not None:
        try:
            cfg = ml_collections.ConfigDict(json.loads(text))
            found = cfg.kind
        except (ValueError, TypeError, AttributeError) as e:
            raise convert.ConversionError(
                f"{path}: the header's 'model' entry is not a network config ({e})",
                "export the file again with adacode-export --format safetensors") from e
    if found and found != kind:
        raise convert.ConversionError(f"{path}: holds a {found!r} network, not {kind!r}",
                                      f"ask for {found!r} instead")
    return cfg
