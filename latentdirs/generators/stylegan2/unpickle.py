"""A restricted unpickler for StyleGAN network pickles: rebuilds weights, never runs code from the file.

NVlabs pickles reduce every network module to ``torch_utils.persistence._reconstruct_persistent_obj(meta)``
whose ``meta["module_src"]`` is the source of the module's file — the original loader *executes* it.
Here that call returns an inert :class:`PersistentRecord` holding ``meta`` (the source text is kept as
text and never run). Old TensorFlow pickles hold ``dnnlib.tflib.network.Network`` objects, rebuilt
as inert :class:`TFNetworkRecord` s. Tensors and arrays come back through PyTorch's and NumPy's own
rebuild functions; storages through ``torch.load(weights_only=True)``, each after its declared sizes
were checked against the bytes it really holds (:mod:`latentdirs.weights`).

Memory: :func:`restricted_load_file` streams the file. A storage's bytes (a ``torch.save`` blob inside
the pickle, passed to ``torch.storage._load_from_bytes``) are not read when the pickle reaches them:
the unpickler pushes a small :class:`DeferredBytes` that remembers where they are, and reads them only
while it builds that one storage, so the pickle's memo never pins them. At its peak a load holds the
storages read so far, one blob and the storage made from it: about one copy of the weights.

Any global outside :data:`ALLOWED` is refused with an error that names it, before anything runs; a
tensor view that does not fit its storage or repeats elements (a stride-0 "expanded" tensor), an
array asked to be allocated at a declared shape, and views beyond twice the file's size are refused
before anything is allocated for them.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import struct
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import torch

from latentdirs.errors import WeightsMismatchError, invalid
from latentdirs.weights import MAX_TENSOR_DIMS, MAX_TENSOR_ELEMENTS, ViewBudget, check_tensor_view, load_torch_bytes


class MalformedPickle(Exception):
    """Raised while unpickling: what is wrong, in a few words (:func:`restricted_load` adds the file)."""


class PersistentRecord:
    """What an NVlabs persistent object was: ``class_name``, ``module_src`` (text, never run), ``state``."""

    def __init__(self, meta: Any) -> None:
        if not isinstance(meta, dict):
            raise MalformedPickle(f"a persistent object whose metadata is a {type(meta).__name__}, not a dict")
        self.meta = meta

    def __setstate__(self, state: Any) -> None:  # the reference never pickles state onto these
        raise MalformedPickle("state pickled onto a persistent object")

    @property
    def class_name(self) -> str:
        return str(self.meta.get("class_name"))

    @property
    def state(self) -> dict[str, Any]:
        # checked on every access: a pickle can refill a memoised dict after handing it to a constructor
        state = self.meta.get("state")
        if state is None:
            return {}
        if not isinstance(state, dict):
            raise MalformedPickle(f"a persistent object whose state is a {type(state).__name__}, not a dict")
        return state

    def __repr__(self) -> str:
        return f"<PersistentRecord {self.class_name}>"


class TFNetworkRecord:
    """What a ``dnnlib.tflib.network.Network`` was: its pickled state (name, kwargs, variables, components)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise MalformedPickle(f"a TensorFlow network whose state is a {type(state).__name__}, not a dict")
        self.state = state


class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a plain dict (attribute access is not needed)."""


class _GlobalReference:
    """An allowed global that pickles pass as an argument but must never call (``numpy.ndarray(shape)`` allocates)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise MalformedPickle(f"a call of {self.name}, which the reference only passes as an argument")

    def __repr__(self) -> str:
        return self.name


NDARRAY = _GlobalReference("numpy.ndarray")
#: element kinds an array in a network pickle may have: bool, signed and unsigned integers, floats
_ARRAY_KINDS = "biuf"


class PickledArray(np.ndarray):
    """The arrays a pickle rebuilds: state checked (numeric dtype, data exactly the declared size) before numpy takes it."""

    budget: ViewBudget | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise MalformedPickle("an array whose state is not (version, shape, dtype, is_fortran, data)")
        _, shape, dtype, _, data = state
        if (not isinstance(shape, tuple) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
                or len(shape) > MAX_TENSOR_DIMS):
            raise MalformedPickle(f"an array of shape {shape!r}")
        if not isinstance(dtype, np.dtype) or dtype.kind not in _ARRAY_KINDS or dtype.shape != () or dtype.fields:
            raise MalformedPickle(f"an array of dtype {dtype!r}; only numeric arrays are read")
        count = math.prod(shape)
        if count > MAX_TENSOR_ELEMENTS or not isinstance(data, bytes) or len(data) != count * dtype.itemsize:
            raise MalformedPickle(f"an array of shape {shape} ({dtype}) holding {len(data) if isinstance(data, bytes) else 'no'} bytes of data")
        if self.budget is not None:
            self.budget.charge(count, dtype.itemsize)
        super().__setstate__(state)


def _numpy_core(name: str) -> Callable[..., Any]:
    multiarray = getattr(np, "_core", None) or np.core
    return getattr(multiarray.multiarray, name)


def _latin1_encode(text: Any, encoding: str = "latin1") -> Any:
    # protocol-2 pickles store bytes as _codecs.encode(str, "latin1"); nothing else is accepted
    if isinstance(text, DeferredBytes) and text.kind == "text" and encoding == "latin1":
        return DeferredBytes(text.source, text.offset, text.length, kind="latin1")  # still unread
    if encoding != "latin1" or not isinstance(text, str):
        raise MalformedPickle(f"_codecs.encode asked for {encoding!r} of a {type(text).__name__}; only latin1 text is allowed")
    return text.encode("latin1")


# ---------------------------------------------------------------------- reading without holding the file
#: bytes and text items at least this long, about to become a storage, are left in the file until then
#: (pickle's own frame size: protocol-4 picklers write longer items outside frames, straight from the file)
DEFER_AT = 64 * 1024
#: reads up to this length are served as asked (a short read is a truncation the unpickler reports);
#: longer ones are first compared with what the file has left, so a declared length never allocates
_UNCHECKED_READ = 64 * 1024


class PickleSource:
    """The pickle's bytes: sequential reads for the unpickler, never past the end, and reads at an offset.

    ``handle`` is the open file (or a ``BytesIO``) of ``size`` bytes; ``read_at(offset, length)``
    returns those bytes without moving ``handle``.
    """

    def __init__(self, handle: BinaryIO, size: int, read_at: Callable[[int, int], bytes]) -> None:
        self.handle, self.size, self._read_at = handle, size, read_at

    @classmethod
    def of_bytes(cls, data: bytes) -> "PickleSource":
        view = memoryview(data)
        return cls(io.BytesIO(data), len(data), lambda offset, length: bytes(view[offset:offset + length]))

    def _check_left(self, length: int) -> int:
        offset = self.handle.tell()
        if length > self.size - offset:  # reported as the truncation it most likely is (see _load)
            raise EOFError(f"an item of {length} bytes at byte {offset}, where {self.size - offset} remain")
        return offset

    def read(self, length: int) -> bytes:
        if length > _UNCHECKED_READ:
            self._check_left(length)
        return self.handle.read(length)

    def readline(self) -> bytes:
        return self.handle.readline()

    def skip(self, length: int) -> int:
        """Move past ``length`` bytes that must all be in the file; returns the offset they start at."""
        offset = self._check_left(length)
        self.handle.seek(length, io.SEEK_CUR)
        return offset

    def read_at(self, offset: int, length: int) -> bytes:
        data = self._read_at(offset, length)
        if len(data) != length:
            raise MalformedPickle(f"{len(data)} of {length} bytes at byte {offset} (the file changed while loading?)")
        return data


class DeferredBytes:
    """An item of the pickle left unread: ``length`` bytes at ``offset`` of ``source``.

    ``kind``: ``"bytes"`` (a BINBYTES item), ``"text"`` (a BINUNICODE item: UTF-8) or ``"latin1"`` (the
    ``_codecs.encode(text, "latin1")`` of a deferred text item, how protocol 2 stores bytes). Only
    :meth:`RestrictedUnpickler.load_storage` reads one; anywhere else it is an inert object that the
    loaders refuse as not being what they expect.
    """

    __slots__ = ("source", "offset", "length", "kind")

    def __init__(self, source: PickleSource, offset: int, length: int, *, kind: str) -> None:
        self.source, self.offset, self.length, self.kind = source, offset, length, kind

    def read(self) -> bytes:
        data = self.source.read_at(self.offset, self.length)
        if self.kind != "latin1":
            return data
        try:  # pickle's own decoding of BINUNICODE (surrogatepass), then the latin1 encoding it stood for
            return data.decode("utf-8", "surrogatepass").encode("latin1")
        except UnicodeError:
            raise MalformedPickle("a storage stored as text that is not latin1 characters") from None

    def __repr__(self) -> str:
        return f"<{self.length} unread bytes of the pickle>"


#: (module, name) → the object the unpickler hands out for it; tensor, storage and array rebuilding are
#: bound to each unpickler (they check declared sizes against the file), see RestrictedUnpickler
ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentRecord,
    ("dnnlib.tflib.network", "Network"): TFNetworkRecord,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("torch._utils", "_rebuild_tensor_v2"): "rebuild_tensor",
    ("torch._utils", "_rebuild_parameter"): "rebuild_parameter",
    ("torch.storage", "_load_from_bytes"): "load_storage",
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("_codecs", "encode"): _latin1_encode,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): NDARRAY,
    ("numpy.core.multiarray", "scalar"): _numpy_core("scalar"),
    ("numpy._core.multiarray", "scalar"): _numpy_core("scalar"),
    ("numpy.core.multiarray", "_reconstruct"): "reconstruct_array",
    ("numpy._core.multiarray", "_reconstruct"): "reconstruct_array",
}


class RestrictedUnpickler(pickle._Unpickler):
    """An unpickler whose ``find_class`` hands out only :data:`ALLOWED` objects.

    Tensors are rebuilt only as views that fit their storage and repeat no element, storages only
    through :func:`latentdirs.weights.load_torch_bytes` (declared sizes checked), arrays only empty and
    then filled with exactly their declared bytes; all of them together within twice the file's size.

    It is pickle's pure-Python unpickler (the C one cannot be told to leave an item unread): the
    handlers of BINBYTES, BINBYTES8, BINUNICODE and BINUNICODE8 push a :class:`DeferredBytes` instead of
    the item when it is long and about to become a storage (the function on top of the stack is
    ``torch.storage._load_from_bytes`` or, for protocol 2, ``_codecs.encode``); every other item, and
    every length, is read and checked against what the file has left (:class:`PickleSource`) —
    BYTEARRAY8 included, whose pure-Python handler would zero-fill the declared length first. The
    pure-Python loop costs nothing measurable: a 1024-px network pickle is about 11 000 opcodes.
    """

    def __init__(self, source: PickleSource, *, name: str) -> None:
        super().__init__(source)
        self.source, self.name = source, name
        self.budget = ViewBudget(source.size, param="generator", name=name)
        self._array_type = type("PickledArray", (PickledArray,), {"budget": self.budget})
        # bound once, so the "is this storage loading on top of the stack" test is an identity test
        self._bound = {found: getattr(self, found) for found in ALLOWED.values() if isinstance(found, str)}
        self._storages: dict[tuple[int, str], Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            found = ALLOWED[(module, name)]
        except KeyError:
            raise invalid("generator", f"{self.name}: the pickle references the global {module}.{name}",
                          "the globals of StyleGAN network pickles (NVlabs persistence, dnnlib, torch and numpy "
                          "tensor rebuilding)", "Nothing from the file was run; load the original NVlabs, TensorFlow "
                          "or rosinality file", cls=WeightsMismatchError) from None
        return self._bound[found] if isinstance(found, str) else found

    # ---------------------------------------------------------------- long items, deferred
    def _load_counted(self, size_format: str, kind: str) -> None:
        """A BINBYTES*/BINUNICODE* item: deferred when it is a long storage blob outside any frame, else read."""
        (length,) = struct.unpack(size_format, self.read(struct.calcsize(size_format)))
        consumer = self._bound["load_storage"] if kind == "bytes" else _latin1_encode
        if (length >= DEFER_AT and self.stack and self.stack[-1] is consumer
                and self._unframer.current_frame is None):
            self.append(DeferredBytes(self.source, self.source.skip(length), length, kind=kind))
            return
        data = self.read(length)
        if len(data) != length:
            raise EOFError(f"an item of {length} bytes cut short at {len(data)}")
        if kind == "bytearray":
            self.append(bytearray(data))
        else:
            self.append(data if kind == "bytes" else str(data, "utf-8", "surrogatepass"))

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BINBYTES[0]] = lambda self: self._load_counted("<I", "bytes")
    dispatch[pickle.BINBYTES8[0]] = lambda self: self._load_counted("<Q", "bytes")
    dispatch[pickle.BINUNICODE[0]] = lambda self: self._load_counted("<I", "text")
    dispatch[pickle.BINUNICODE8[0]] = lambda self: self._load_counted("<Q", "text")
    # pickle's own handler allocates (and zero-fills) the declared length before reading anything
    dispatch[pickle.BYTEARRAY8[0]] = lambda self: self._load_counted("<Q", "bytearray")

    def persistent_load(self, pid: Any) -> Any:
        raise MalformedPickle("persistent ids (a torch.save file?); it is not an NVlabs or TensorFlow network pickle")

    # ---------------------------------------------------------------- rebuilders bound to this file
    def rebuild_tensor(self, storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
        if not isinstance(storage, torch.storage.TypedStorage):
            raise MalformedPickle(f"a tensor over a {type(storage).__name__} instead of a storage")
        if backward_hooks or metadata:
            raise MalformedPickle("a tensor with backward hooks or metadata, which the reference never pickles")
        count = check_tensor_view(storage._size(), storage_offset, size, stride, param="generator", name=self.name)
        self.budget.charge(count, storage.dtype.itemsize)
        return torch._utils._rebuild_tensor_v2(storage, storage_offset, tuple(size), tuple(stride), False,
                                               collections.OrderedDict())

    def rebuild_parameter(self, data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> torch.Tensor:
        if not isinstance(data, torch.Tensor) or backward_hooks:
            raise MalformedPickle("a parameter that is not a plain tensor")
        return data

    def load_storage(self, data: Any) -> Any:
        if isinstance(data, DeferredBytes) and data.kind != "text" and data.source is self.source:
            key = (data.offset, data.kind)
            if key not in self._storages:  # one storage per stored blob, however often the pickle names it
                self._storages[key] = self._storage_from(data.read())
            return self._storages[key]
        if not isinstance(data, bytes):
            raise MalformedPickle(f"a storage pickled as a {type(data).__name__}, not bytes")
        return self._storage_from(data)

    def _storage_from(self, data: bytes) -> Any:
        storage = load_torch_bytes(data, param="generator", name=f"{self.name} (an embedded storage)")
        if not isinstance(storage, torch.storage.TypedStorage):
            raise MalformedPickle(f"an embedded storage that is a {type(storage).__name__}")
        return storage

    def reconstruct_array(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        # numpy's _reconstruct allocates ``shape`` at once; the reference always asks for an empty (0,) array
        if subtype is not NDARRAY or not isinstance(shape, (tuple, list)) or tuple(shape) != (0,):
            raise MalformedPickle(f"an array reconstructed as {_short(subtype)} of shape {_short(shape)}; the reference "
                                  "writes empty numpy.ndarray placeholders only")
        return _numpy_core("_reconstruct")(self._array_type, (0,), dtype)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


#: what :func:`restricted_load` expects a file to be, by default (error messages)
STYLEGAN2_PICKLES = "NVlabs or TensorFlow StyleGAN2 network pickle"


def restricted_load(data: bytes, *, name: str = "network pickle") -> Any:
    """Unpickle ``data`` (the whole file ``name``) with :class:`RestrictedUnpickler`."""
    return _load(PickleSource.of_bytes(data), name)


def restricted_load_file(path: str | Path, *, expected: str = STYLEGAN2_PICKLES) -> Any:
    """Unpickle the file ``path`` with :class:`RestrictedUnpickler`, streaming it (see the module's Memory).
    ``expected``: what a damaged file should have been, for the error message."""
    path = Path(path)
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        descriptor = handle.fileno()
        source = PickleSource(handle, size, lambda offset, length: os.pread(descriptor, length, offset))
        return _load(source, path.name, expected)


def _load(source: PickleSource, name: str, expected: str = STYLEGAN2_PICKLES) -> Any:
    try:
        return RestrictedUnpickler(source, name=name).load()
    except WeightsMismatchError:
        raise
    except MalformedPickle as error:
        raise invalid("generator", f"{name}: {error}", f"an {expected}",
                      "Nothing from the file was run; the file is corrupt or crafted", cls=WeightsMismatchError) from None
    except Exception as error:  # truncated or malformed pickles raise many types
        raise invalid("generator", f"{name}: not a readable network pickle ({type(error).__name__})",
                      f"a complete {expected}",
                      "Nothing from the file was run; it may be truncated — download it again", cls=WeightsMismatchError) from None
