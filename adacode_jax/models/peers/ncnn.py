"""A torch-free reader of ncnn models (``.param`` text graph + ``.bin`` weights) into Flax params.

Released peers such as Real-ESRGAN are distributed as ncnn files (see :mod:`adacode_jax.models.peers.realesrgan`).
This module knows the file format only; which Linen network the weights belong to is the
caller's choice:

* :func:`read_param` parses the graph: magic ``7767517``, a line ``layer_count blob_count``,
  then one line per layer ``type name n_in n_out in… out… k=v…``. Keys ``-233xx`` hold arrays
  (``n,v1,…,vn``) and are stored under ``xx``.
* :func:`read_weights` walks the layers in file order and reads, for each layer that has
  weights, what ncnn reads: a ``Convolution``'s weights (a 4-byte storage tag, then
  ``(out, in, kh, kw)`` values, fp16 for tag ``0x01306B47`` or fp32 for an all-zero tag, padded
  to 4 bytes) and its fp32 biases; a ``PReLU``'s fp32 slopes. The file must be used up exactly.
* :func:`load_variables` maps those layers, in order, onto the ``nn.Conv`` / ``PReLU`` modules of
  a Linen model in the order the model calls them, checking every shape, stride and padding.

Every mismatch raises :class:`NcnnFormatError` with a one-line message naming the file.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adacode_jax.models.peers.srvgg import PReLU

MAGIC = 7767517
TAG_FP16 = 0x01306B47
# Layers that carry no weights in the .bin (the ones our peers use, plus a few common ones).
WEIGHTLESS = frozenset({"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle",
                        "ReLU", "Sigmoid", "TanH", "Clip", "Noop", "Crop", "Padding", "UnaryOp",
                        "Reshape", "Permute", "Flatten"})
WEIGHTED = {"Convolution": nn.Conv, "PReLU": PReLU}


class NcnnFormatError(ValueError):
    """A .param/.bin pair that is malformed or does not fit the model it is loaded into."""


@dataclasses.dataclass(frozen=True)
class Layer:
    """One line of a .param file; ``params`` maps ncnn's integer keys to numbers or tuples."""

    type: str
    name: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    params: dict[int, Any]


@dataclasses.dataclass(frozen=True)
class WeightLayer:
    """A layer with its arrays, in Flax layout: ``kernel`` (kh, kw, in, out), ``bias``, ``weight``."""

    layer: Layer
    arrays: dict[str, np.ndarray]


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") or text in ("nan", "inf", "-inf") else int(text)


def read_param(path: str | os.PathLike) -> list[Layer]:
    """Parse a text ``.param`` file into its layers, in file order."""
    name = os.path.basename(path)
    with open(path, encoding="utf-8") as f:
        lines = [ln.split() for ln in f.read().splitlines() if ln.strip()]
    if not lines or lines[0] != [str(MAGIC)]:
        raise NcnnFormatError(f"{name}: not an ncnn text .param file (first line is not {MAGIC})")
    try:
        layer_count, _ = (int(v) for v in lines[1])
    except (IndexError, ValueError):
        raise NcnnFormatError(f"{name}: second line must be 'layer_count blob_count'") from None
    layers = []
    for lineno, tok in enumerate(lines[2:], start=3):
        try:
            n_in, n_out = int(tok[2]), int(tok[3])
            bottoms, tops = tuple(tok[4:4 + n_in]), tuple(tok[4 + n_in:4 + n_in + n_out])
            if len(bottoms) != n_in or len(tops) != n_out:
                raise ValueError
            params: dict[int, Any] = {}
            for item in tok[4 + n_in + n_out:]:
                key, value = item.split("=", 1)
                k = int(key)
                if k <= -23300:
                    n, *values = value.split(",")
                    if len(values) != int(n):
                        raise ValueError
                    params[-k - 23300] = tuple(_number(v) for v in values)
                else:
                    params[k] = _number(value)
        except (IndexError, ValueError):
            raise NcnnFormatError(f"{name}: line {lineno} is not a valid layer: {' '.join(tok)!r}") from None
        layers.append(Layer(tok[0], tok[1], bottoms, tops, params))
    if len(layers) != layer_count:
        raise NcnnFormatError(f"{name}: header says {layer_count} layers, the file has {len(layers)}")
    return layers


class _Reader:
    """Sequential reads from the .bin with errors that name the file, layer and offset."""

    def __init__(self, path: str | os.PathLike):
        self.name = os.path.basename(path)
        with open(path, "rb") as f:
            self.data = f.read()
        self.pos = 0

    def take(self, nbytes: int, layer: Layer) -> bytes:
        if self.pos + nbytes > len(self.data):
            raise NcnnFormatError(
                f"{self.name}: truncated: layer {layer.name} needs {nbytes} bytes at offset {self.pos}, "
                f"the file has {len(self.data)} bytes")
        out = self.data[self.pos:self.pos + nbytes]
        self.pos += nbytes
        return out

    def raw_fp32(self, count: int, layer: Layer) -> np.ndarray:
        return np.frombuffer(self.take(4 * count, layer), "<f4").astype(np.float32)

    def tagged(self, count: int, layer: Layer) -> np.ndarray:
        """ncnn's "auto" storage: a 4-byte tag says how the values are stored."""
        offset = self.pos
        tag = int(np.frombuffer(self.take(4, layer), "<u4")[0])
        if tag == TAG_FP16:
            values = np.frombuffer(self.take(2 * count, layer), "<f2").astype(np.float32)
            self.take((-2 * count) % 4, layer)  # ncnn pads fp16 blocks to 4 bytes
            return values
        if tag == 0:
            return self.raw_fp32(count, layer)
        raise NcnnFormatError(f"{self.name}: layer {layer.name}: unsupported weight storage tag "
                              f"0x{tag:08X} at offset {offset} (only fp16 and fp32 are read)")


def _conv_geometry(layer: Layer) -> dict[str, tuple[int, int]]:
    p = layer.params
    kw = p.get(1, 0)
    pad_left = p.get(4, 0)
    pad_top = p.get(14, pad_left)
    return {"kernel": (p.get(11, kw), kw),
            "stride": (p.get(13, p.get(3, 1)), p.get(3, 1)),
            "dilation": (p.get(12, p.get(2, 1)), p.get(2, 1)),
            "pad_h": (pad_top, p.get(16, pad_top)),
            "pad_w": (pad_left, p.get(15, pad_left))}


def read_weights(param_path: str | os.PathLike, bin_path: str | os.PathLike) -> list[WeightLayer]:
    """The layers with weights, in graph order, with their arrays in Flax layout (float32)."""
    layers = read_param(param_path)
    reader = _Reader(bin_path)
    pname = os.path.basename(param_path)
    out = []
    for layer in layers:
        if layer.type == "Convolution":
            p = layer.params
            if p.get(8, 0) or p.get(18, 0):
                raise NcnnFormatError(f"{pname}: layer {layer.name}: int8 / dynamic-weight convolutions "
                                      "are not supported")
            out_ch, size = p.get(0, 0), p.get(6, 0)
            kh, kw = _conv_geometry(layer)["kernel"]
            if out_ch <= 0 or kh <= 0 or kw <= 0 or size <= 0 or size % (out_ch * kh * kw):
                raise NcnnFormatError(f"{pname}: layer {layer.name}: weight count {size} is not "
                                      f"out {out_ch} × in × {kh}×{kw}")
            in_ch = size // (out_ch * kh * kw)
            w = reader.tagged(size, layer).reshape(out_ch, in_ch, kh, kw)
            arrays = {"kernel": np.ascontiguousarray(w.transpose(2, 3, 1, 0))}
            if p.get(5, 0):
                arrays["bias"] = reader.raw_fp32(out_ch, layer)
            out.append(WeightLayer(layer, arrays))
        elif layer.type == "PReLU":
            out.append(WeightLayer(layer, {"weight": reader.raw_fp32(layer.params.get(0, 1), layer)}))
        elif layer.type not in WEIGHTLESS:
            raise NcnnFormatError(f"{pname}: layer {layer.name}: unsupported layer type {layer.type!r}")
    if reader.pos != len(reader.data):
        raise NcnnFormatError(f"{reader.name}: {len(reader.data) - reader.pos} bytes left over after the "
                              f"last layer ({reader.pos} of {len(reader.data)} read): not the weights of "
                              f"{pname}")
    return out


def call_order(model: nn.Module, sample: jnp.ndarray) -> tuple[list[nn.Module], Any]:
    """The ``nn.Conv`` / ``PReLU`` modules of ``model`` in the order it calls them on ``sample``,
    and the abstract (shape-only) variables."""
    seen: dict[tuple[str, ...], nn.Module] = {}

    def record(next_fun, args, kwargs, context):
        m = context.module
        if context.method_name == "__call__" and isinstance(m, tuple(WEIGHTED.values())):
            seen.setdefault(tuple(m.path), m)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        shapes = jax.eval_shape(model.init, jax.random.key(0), sample)
    return list(seen.values()), shapes


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _check_conv(module: nn.Conv, layer: Layer, where: str) -> None:
    g = _conv_geometry(layer)
    padding = module.padding
    if isinstance(padding, (str, int)) or len(padding) != 2:
        raise NcnnFormatError(f"{where}: Linen conv {'.'.join(module.path)} must use explicit padding")
    want = {"stride": _pair(module.strides or 1), "dilation": _pair(module.kernel_dilation or 1),
            "pad_h": tuple(_pair(padding[0])), "pad_w": tuple(_pair(padding[1]))}
    for key, value in want.items():
        if tuple(g[key]) != tuple(value):
            raise NcnnFormatError(f"{where}: {key} {g[key]} in the graph, {value} in the Linen model")


def load_variables(model: nn.Module, param_path: str | os.PathLike, bin_path: str | os.PathLike, *,
                   sample_shape: Sequence[int] = (1, 16, 16, 3)) -> dict:
    """Read an ncnn model into ``{'params': …}`` for ``model``.

    The graph's weighted layers are matched, in order, with the modules ``model`` calls on a
    ``sample_shape`` input; their number, types, shapes, strides and paddings must agree.
    """
    pname = os.path.basename(param_path)
    layers = read_weights(param_path, bin_path)
    modules, shapes = call_order(model, jnp.zeros(sample_shape, jnp.float32))
    if len(layers) != len(modules):
        raise NcnnFormatError(f"{pname}: {len(layers)} Convolution/PReLU layers in the graph, "
                              f"{type(model).__name__} has {len(modules)}")
    params: dict = {}
    for wl, module in zip(layers, modules):
        path = tuple(module.path)
        where = f"{pname}: layer {wl.layer.name} -> {'.'.join(path)}"
        if not isinstance(module, WEIGHTED.get(wl.layer.type, ())):
            raise NcnnFormatError(f"{where}: a {wl.layer.type} in the graph, a {type(module).__name__} "
                                  "in the Linen model")
        if isinstance(module, nn.Conv):
            _check_conv(module, wl.layer, where)
        node_shapes, node = shapes["params"], params
        for key in path:
            node_shapes, node = node_shapes[key], node.setdefault(key, {})
        if set(node_shapes) != set(wl.arrays):
            raise NcnnFormatError(f"{where}: the graph has {sorted(wl.arrays)}, the model {sorted(node_shapes)}")
        for key, value in wl.arrays.items():
            if tuple(node_shapes[key].shape) != value.shape:
                raise NcnnFormatError(f"{where}.{key}: shape {value.shape} in the file, "
                                      f"{tuple(node_shapes[key].shape)} in the model")
            node[key] = jnp.asarray(value)
    return {"params": params}
