"""A restricted unpickler for StyleGAN network pickles: rebuilds weights, never runs code from the file.

NVlabs pickles reduce every network module to ``torch_utils.persistence._reconstruct_persistent_obj(meta)``
whose ``meta["module_src"]`` is the source of the module's file — the original loader *executes* it.
Here that call returns an inert :class:`PersistentRecord` holding ``meta`` (the source text is kept as
text and never run). Old TensorFlow pickles hold ``dnnlib.tflib.network.Network`` objects, rebuilt
as inert :class:`TFNetworkRecord` s. Tensors and arrays come back through PyTorch's and NumPy's own
rebuild functions; storages through ``torch.load(weights_only=True)``, each after its declared sizes
were checked against the bytes it really holds (:mod:`latentdirs.weights`).

Any global outside :data:`ALLOWED` is refused with an error that names it, before anything runs; a
tensor view that does not fit its storage or repeats elements (a stride-0 "expanded" tensor), an
array asked to be allocated at a declared shape, and views beyond twice the file's size are refused
before anything is allocated for them.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
from typing import Any, Callable

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


def _latin1_encode(text: Any, encoding: str = "latin1") -> bytes:
    # protocol-2 pickles store bytes as _codecs.encode(str, "latin1"); nothing else is accepted
    if encoding != "latin1" or not isinstance(text, str):
        raise MalformedPickle(f"_codecs.encode asked for {encoding!r} of a {type(text).__name__}; only latin1 text is allowed")
    return text.encode("latin1")


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


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` hands out only :data:`ALLOWED` objects.

    Tensors are rebuilt only as views that fit their storage and repeat no element, storages only
    through :func:`latentdirs.weights.load_torch_bytes` (declared sizes checked), arrays only empty and
    then filled with exactly their declared bytes; all of them together within twice the file's size.
    """

    def __init__(self, stream: io.BytesIO, *, name: str, file_size: int) -> None:
        super().__init__(stream)
        self.name = name
        self.budget = ViewBudget(file_size, param="generator", name=name)
        self._array_type = type("PickledArray", (PickledArray,), {"budget": self.budget})

    def find_class(self, module: str, name: str) -> Any:
        try:
            found = ALLOWED[(module, name)]
        except KeyError:
            raise invalid("generator", f"{self.name}: the pickle references the global {module}.{name}",
                          "the globals of StyleGAN network pickles (NVlabs persistence, dnnlib, torch and numpy "
                          "tensor rebuilding)", "Nothing from the file was run; load the original NVlabs, TensorFlow "
                          "or rosinality file", cls=WeightsMismatchError) from None
        return getattr(self, found) if isinstance(found, str) else found

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
        if not isinstance(data, bytes):
            raise MalformedPickle(f"a storage pickled as a {type(data).__name__}, not bytes")
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


def restricted_load(data: bytes, *, name: str = "network pickle") -> Any:
    """Unpickle ``data`` (the whole file ``name``) with :class:`RestrictedUnpickler`."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), name=name, file_size=len(data)).load()
    except WeightsMismatchError:
        raise
    except MalformedPickle as error:
        raise invalid("generator", f"{name}: {error}", "an NVlabs or TensorFlow StyleGAN2 network pickle",
                      "Nothing from the file was run; the file is corrupt or crafted", cls=WeightsMismatchError) from None
    except Exception as error:  # truncated or malformed pickles raise many types
        raise invalid("generator", f"{name}: not a readable network pickle ({type(error).__name__})",
                      "a complete NVlabs or TensorFlow StyleGAN2 network pickle",
                      "Nothing from the file was run; it may be truncated — download it again", cls=WeightsMismatchError) from None
