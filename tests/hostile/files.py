"""Real files of every kind latentdirs reads, and the hostile or careless variants built from them.

Kinds: StyleGAN2 NVlabs / TensorFlow pickles and rosinality ``.pt`` (tests/stylegan2_fixtures),
BigGAN directories (tests/biggan_tiny), direction ``.safetensors``, trajectory ``.safetensors``,
OroJaR checkpoints, ``.npy`` / ``.npz`` imports. Payloads that would *run* something write a marker
file, so a test sees whether they ran.
"""

from __future__ import annotations

import builtins
import collections
import importlib
import io
import json
import os
import pickle
import runpy
import struct
import subprocess
import re
import types
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from tests.stylegan2_fixtures import _fake_modules

#: the JSON values a careless or hostile writer may put in any header field
WRONG_JSON = {"null": None, "true": True, "int": 7, "negative": -3, "float": 2.5, "nan": float("nan"),
              "string": "abc", "empty-list": [], "list": [1, "x"], "object": {"a": 1}, "huge": 10**30}


# ---------------------------------------------------------------------- code-execution payloads
class Payload:
    """Pickles as a call of ``function(*args)`` — what a malicious file asks an unpickler to do."""

    def __init__(self, function: Callable[..., Any], *args: Any) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.function, self.args


def sibling_module(folder: Path, marker: Path, name: str) -> Path:
    """A ``.py`` beside the hostile file that writes ``marker`` when imported or run."""
    path = folder / f"{name}.py"
    path.write_text(f"open({str(marker)!r}, 'w').close()\n\ndef make(*args, **kwargs):\n    return None\n")
    return path


def payloads(marker: Path, sibling: Path) -> dict[str, Payload]:
    """Seven ways a pickle can run code, each writing ``marker`` if it ever runs."""
    text = str(marker)
    return {
        "os.system": Payload(os.system, f"touch '{text}'"),
        "builtins.exec": Payload(builtins.exec, f"open({text!r}, 'w').close()"),
        "builtins.eval": Payload(builtins.eval, f"open({text!r}, 'w').close()"),
        "builtins.open": Payload(builtins.open, text, "w"),
        "subprocess.call": Payload(subprocess.call, ["touch", text]),
        "importlib.import_module": Payload(importlib.import_module, sibling.stem),
        "runpy.run_path": Payload(runpy.run_path, str(sibling)),
    }


PAYLOAD_NAMES = ("os.system", "builtins.exec", "builtins.eval", "builtins.open", "subprocess.call",
                 "importlib.import_module", "runpy.run_path")


# ---------------------------------------------------------------------- NVlabs-style pickles
def persistent_pickle(content: Any, *, protocol: int = 4) -> bytes:
    """Pickle ``content`` in which :class:`Record` objects stand for NVlabs persistent modules."""
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # never called: latentdirs hands out an inert record
        raise AssertionError("not for loading")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    Record.reconstruct = staticmethod(_reconstruct_persistent_obj)
    with _fake_modules(torch_utils=types.ModuleType("torch_utils"), **{"torch_utils.persistence": persistence}):
        return pickle.dumps(content, protocol=protocol)


class Record:
    """An NVlabs persistent module: pickles as ``_reconstruct_persistent_obj(meta)``."""

    reconstruct: Callable[..., Any]

    def __init__(self, meta: Any) -> None:
        self.meta = meta

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self).reconstruct, (self.meta,)


def module_meta(parameters: dict[str, Any] | None = None, modules: dict[str, Any] | None = None, **state: Any) -> dict:
    return {"type": "class", "version": 6, "module_src": "raise SystemExit('ran')\n", "class_name": "Module",
            "state": {"_parameters": collections.OrderedDict(parameters or {}), "_buffers": collections.OrderedDict(),
                      "_modules": collections.OrderedDict(modules or {}), **state}}


class Rebuild:
    """Pickles as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, …)`` with any declaration."""

    def __init__(self, storage: torch.storage.TypedStorage, offset: int, size: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self) -> tuple[Any, ...]:
        return torch._utils._rebuild_tensor_v2, (self.storage, self.offset, self.size, self.stride, False,
                                                 collections.OrderedDict())


class LoadFromBytes:
    """Pickles as ``torch.storage._load_from_bytes(blob)`` with any blob (a hostile inner torch file)."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def __reduce__(self) -> tuple[Any, ...]:
        return torch.storage._load_from_bytes, (self.blob,)


def storage(values: int) -> torch.storage.TypedStorage:
    """A float32 storage of ``values`` zeros (the TypedStorage a pickled tensor refers to)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TypedStorage is what pickles hold, deprecated or not
        return torch.zeros(values).storage()


_STORAGE_NUMEL = re.compile(rb"(X\x03\x00\x00\x00cpu(?:q.)?)K(.)", re.S)


def lie_numel(program: bytes, numel: int) -> bytes:
    """A torch pickle whose (single) storage declaration states ``numel`` elements instead of the true count."""
    assert len(_STORAGE_NUMEL.findall(program)) == 1, "layout of torch.save's pickle changed"
    return _STORAGE_NUMEL.sub(lambda m: m.group(1) + b"J" + struct.pack("<i", numel), program)


def legacy_storage_blob(numel: int, stored: int) -> bytes:
    """A legacy torch.save of a float storage whose pickle declares ``numel`` elements but holds ``stored``."""
    return lie_numel(torch_bytes(storage(stored), legacy=True), numel)


def nvlabs_with(tensors: dict[str, Any], *, protocol: int = 4, **g_ema_state: Any) -> bytes:
    """An NVlabs-style pickle ``{"G_ema": record}`` whose record holds ``tensors`` as parameters."""
    g_ema = Record(module_meta(tensors, **g_ema_state))
    return persistent_pickle({"G_ema": g_ema, "G": None, "D": None}, protocol=protocol)


class Reconstruct:
    """Pickles as numpy's ``_reconstruct(subtype, shape, dtype)`` with any arguments."""

    def __init__(self, subtype: Any, shape: Any, dtype: Any = b"b") -> None:
        self.subtype, self.shape, self.dtype = subtype, shape, dtype

    def __reduce__(self) -> tuple[Any, ...]:
        multiarray = getattr(np, "_core", None) or np.core
        return multiarray.multiarray._reconstruct, (self.subtype, self.shape, self.dtype)


class ArrayState:
    """Pickles as an empty ndarray rebuilt and then given ``state`` (shape, dtype, data) — any state."""

    def __init__(self, state: tuple) -> None:
        self.state = state

    def __reduce__(self) -> tuple[Any, ...]:
        multiarray = getattr(np, "_core", None) or np.core
        return multiarray.multiarray._reconstruct, (np.ndarray, (0,), b"b"), self.state


# ---------------------------------------------------------------------- torch files
def torch_bytes(obj: Any, *, legacy: bool = False) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def rewrite_zip(data: bytes, *, program: bytes | None = None, compression: int = zipfile.ZIP_STORED,
                extra: dict[str, bytes] | None = None) -> bytes:
    """The zip torch file ``data`` with its data.pkl replaced by ``program`` and/or entries re-compressed."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as target:
        for info in source.infolist():
            body = source.read(info.filename)
            if program is not None and info.filename.endswith("data.pkl"):
                body = program
            target.writestr(info.filename, body)
        for name, body in (extra or {}).items():
            target.writestr(name, body)
    return out.getvalue()


def data_pkl(data: bytes) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(data))
    return source.read(next(n for n in source.namelist() if n.endswith("data.pkl")))


def torch_declaring(size: tuple[int, ...], stride: tuple[int, ...], *, stored: int = 4, offset: int = 0,
                    legacy: bool = False, numel: int | None = None, key: str = "w") -> bytes:
    """A ``torch.save`` file of ``{key: tensor}`` whose pickle declares ``size``/``stride``/``offset`` over a
    storage of ``stored`` floats (and, with ``numel``, a storage element count other than the stored one)."""
    data = torch_bytes({key: Rebuild(storage(stored), offset, size, stride)}, legacy=legacy)
    if numel is None:
        return data
    return lie_numel(data, numel) if legacy else rewrite_zip(data, program=lie_numel(data_pkl(data), numel))


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------- BigGAN directories
def biggan_dir(folder: Path, config: Any, weights: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = config if isinstance(config, (str, bytes)) else json.dumps(config)
    (folder / "config.json").write_bytes(text.encode() if isinstance(text, str) else text)
    (folder / "pytorch_model.bin").write_bytes(weights)
    return folder


# ---------------------------------------------------------------------- safetensors files
def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata=metadata)


def raw_safetensors(header: dict[str, Any], body: bytes = b"") -> bytes:
    """A safetensors file with exactly ``header`` (any JSON) and ``body``: for what safetensors must refuse."""
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + body


def safetensors_header(data: bytes) -> dict[str, Any]:
    """The JSON header of a safetensors file's bytes."""
    length = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + length])


def with_header(data: bytes, header: Any, *, raw: str | None = None) -> bytes:
    """A direction file's bytes with its ``latentdirs`` header replaced (``raw``: exact JSON text)."""
    from safetensors.torch import load

    tensors = load(data)
    return safetensors_bytes(tensors, {"latentdirs": raw if raw is not None else json.dumps(header)})


def truncations(data: bytes, count: int) -> list[int]:
    """``count`` cut points spread over ``data`` (never the full length), the first bytes included."""
    points = {1, 2, 4, 8, 9, 16, 64}
    points |= {int(len(data) * (i + 1) / (count + 1)) for i in range(count)}
    return sorted(p for p in points if 0 < p < len(data))[:count]
