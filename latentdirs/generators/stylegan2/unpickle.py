"""A restricted unpickler for StyleGAN network pickles: rebuilds weights, never runs code from the file.

NVlabs pickles reduce every network module to ``torch_utils.persistence._reconstruct_persistent_obj(meta)``
whose ``meta["module_src"]`` is the source of the module's file — the original loader *executes* it.
Here that call returns an inert :class:`PersistentRecord` holding ``meta`` (the source text is kept as
text and never run). Old TensorFlow pickles hold ``dnnlib.tflib.network.Network`` objects, rebuilt
as inert :class:`TFNetworkRecord` s. Tensors and arrays come back through PyTorch's and NumPy's own
rebuild functions; storages through ``torch.load(weights_only=True)``.

Any global outside :data:`ALLOWED` is refused with an error that names it, before anything runs.
"""

from __future__ import annotations

import collections
import io
import pickle
from typing import Any, Callable

import numpy as np
import torch

from latentdirs.errors import WeightsMismatchError


class PersistentRecord:
    """What an NVlabs persistent object was: ``class_name``, ``module_src`` (text, never run), ``state``."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta = meta

    @property
    def class_name(self) -> str:
        return str(self.meta.get("class_name"))

    @property
    def state(self) -> dict[str, Any]:
        return self.meta.get("state") or {}

    def __repr__(self) -> str:
        return f"<PersistentRecord {self.class_name}>"


class TFNetworkRecord:
    """What a ``dnnlib.tflib.network.Network`` was: its pickled state (name, kwargs, variables, components)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.state = state


class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a plain dict (attribute access is not needed)."""


def _load_storage(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # protocol-2 pickles store bytes as _codecs.encode(str, "latin1"); nothing else is accepted
    if encoding != "latin1":
        raise WeightsMismatchError(f"weights: the pickle asks _codecs.encode for {encoding!r}; only latin1 is allowed")
    return text.encode("latin1")


def _numpy_core(name: str) -> Callable[..., Any]:
    multiarray = getattr(np, "_core", None) or np.core
    return getattr(multiarray.multiarray, name)


#: (module, name) → the object the unpickler hands out for it
ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentRecord,
    ("dnnlib.tflib.network", "Network"): TFNetworkRecord,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("_codecs", "encode"): _latin1_encode,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "scalar"): _numpy_core("scalar"),
    ("numpy._core.multiarray", "scalar"): _numpy_core("scalar"),
    ("numpy.core.multiarray", "_reconstruct"): _numpy_core("_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_core("_reconstruct"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` hands out only :data:`ALLOWED` objects."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise WeightsMismatchError(
                f"weights: the pickle references the global {module}.{name}, which is not on the allow-list "
                "of StyleGAN network pickles; refusing to load it (nothing from the file was run)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise WeightsMismatchError("weights: the pickle uses persistent ids (a torch.save file?); "
                                   "it is not an NVlabs or TensorFlow network pickle")


def restricted_load(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`."""
    try:
        return RestrictedUnpickler(io.BytesIO(data)).load()
    except WeightsMismatchError:
        raise
    except Exception as error:  # truncated or malformed pickles raise many types
        raise WeightsMismatchError(f"weights: not a readable network pickle ({type(error).__name__}: "
                                   f"{str(error)[:160]})") from None
