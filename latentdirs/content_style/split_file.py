"""The content/style split file (schema ``latentdirs.content-style`` v1), a sibling of direction files.

One ``.safetensors`` file:

* tensor ``style_basis`` float32 ``[K, D]`` — flat splits only: orthonormal rows spanning the style
  subspace of ``space`` (1 ≤ K < D); a layered split holds no tensor;
* header metadata key ``latentdirs`` — one JSON object: ``schema``, ``schema_version``,
  ``library_version``, ``created``, ``generator`` (the generator's ``describe()``: spec, options,
  fingerprint, …), ``kind`` (``"flat"`` | ``"layered"``), ``space``, ``latent_dim``, ``num_layers``,
  ``style_dims`` (K; flat), ``style_layers`` (rows of the layered space that carry style; ``[]`` for
  flat) and ``measurements`` (the figures the split was chosen from).

Reading checks, before any tensor is allocated, the file size, the declared header size and every
header field; then the tensor's dtype, shape, finiteness and orthonormality. The generator record is
checked by the same function latents files use (:mod:`latentdirs.latent_file`).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import torch

from latentdirs.directions import is_int
from latentdirs.errors import InvalidValueError, LatentDirsError, invalid
from latentdirs.latent_file import check_generator_record
from latentdirs.version import __version__

SCHEMA_NAME = "latentdirs.content-style"
SCHEMA_VERSION = 1
HEADER_KEY = "latentdirs"
BASIS_NAME = "style_basis"
KINDS = ("flat", "layered")
#: the largest split file read (bytes): a 4096 × 4096 float32 basis is 64 MiB
MAX_FILE_BYTES = 64 * 2**20
#: the largest safetensors header read (JSON: the measurements, a few KiB in practice)
MAX_HEADER_BYTES = 4 * 2**20
#: how far from orthonormal a stored basis may be (max |S Sᵀ − I|): float32 rounding is ~1e-7
ORTHONORMAL_TOLERANCE = 1e-4
_FIX = "The file is damaged or was edited; re-create it with content_style_split(…).save(…)"


class ContentStyleFileError(LatentDirsError, ValueError):
    """A content/style split file is unreadable, corrupt, inconsistent, or of a schema this version cannot read."""


def check_basis(basis: Any, dim: int, *, where: str, cls: type[LatentDirsError] = InvalidValueError) -> torch.Tensor:
    """``basis`` as float32 ``[K, dim]`` with finite, orthonormal rows and ``1 ≤ K < dim``, else one line."""
    if not isinstance(basis, torch.Tensor) or not basis.dtype.is_floating_point or basis.dim() != 2:
        found = (f"a {tuple(basis.shape)} {basis.dtype} tensor" if isinstance(basis, torch.Tensor)
                 else type(basis).__name__)
        raise invalid(f"{where} style_basis", found, f"a float32 [K, {dim}] tensor", _FIX, cls=cls)
    rows, columns = basis.shape
    if columns != dim or not 1 <= rows < dim:
        raise invalid(f"{where} style_basis", f"shape {tuple(basis.shape)}", f"[K, {dim}] with 1 ≤ K < {dim}", _FIX,
                      cls=cls)
    if not bool(torch.isfinite(basis).all()):
        raise invalid(f"{where} style_basis", "NaN or infinite values", "finite values", _FIX, cls=cls)
    basis = basis.detach().to("cpu", torch.float32).contiguous()
    gram = basis.double() @ basis.double().T
    error = float((gram - torch.eye(rows, dtype=torch.float64)).abs().max())
    if error > ORTHONORMAL_TOLERANCE:
        raise invalid(f"{where} style_basis", f"rows {error:.3g} from orthonormal (max |S Sᵀ − I|)",
                      f"orthonormal rows (within {ORTHONORMAL_TOLERANCE:g})", _FIX, cls=cls)
    return basis


def check_layers(style: Any, count: int, *, where: str,
                 cls: type[LatentDirsError] = InvalidValueError) -> tuple[int, ...]:
    """``style`` as a sorted tuple of distinct rows of ``0…count−1``, at least one, not all."""
    values = list(style) if isinstance(style, (list, tuple)) else None
    if values is None or not values or any(not is_int(v) or v >= count for v in values) \
            or len(set(values)) != len(values) or len(values) >= count:
        raise invalid(f"{where} style_layers", style, f"distinct rows of 0-{count - 1}, at least one and not all",
                      _FIX, cls=cls)
    return tuple(sorted(values))


def check_header(meta: Any, where: str) -> dict[str, Any]:
    """Every field of a split header (see the module text), one line for the first bad one."""
    def bad(key: str, value: Any, allowed: str) -> ContentStyleFileError:
        return invalid(f"{where} {key}", value, allowed, _FIX, cls=ContentStyleFileError)  # type: ignore[return-value]

    if not isinstance(meta, dict):
        raise bad("header", type(meta).__name__, "one JSON object")
    if meta.get("schema") != SCHEMA_NAME:
        raise bad("schema", meta.get("schema"), repr(SCHEMA_NAME))
    version = meta.get("schema_version")
    if not is_int(version, 1):
        raise bad("schema_version", version, "1 (an integer)")
    if version > SCHEMA_VERSION:
        raise ContentStyleFileError(f"content-style: {where} uses schema v{version}, newer than this latentdirs "
                                    f"{__version__} reads (v{SCHEMA_VERSION}); "
                                    "upgrade: pip install --upgrade latentdirs")
    if meta.get("kind") not in KINDS:
        raise bad("kind", meta.get("kind"), " or ".join(repr(k) for k in KINDS))
    if not isinstance(meta.get("space"), str) or not meta["space"]:
        raise bad("space", meta.get("space"), "a space name such as \"z\" or \"w+\"")
    for key in ("latent_dim", "num_layers"):
        if not is_int(meta.get(key), 1) or meta[key] > 2**20:
            raise bad(key, meta.get(key), "an integer from 1 to 2**20")
    if not isinstance(meta.get("measurements"), dict):
        raise bad("measurements", type(meta.get("measurements")).__name__, "a JSON object")
    check_generator_record(meta.get("generator"), bad)
    if meta["kind"] == "layered":
        check_layers(meta.get("style_layers"), meta["num_layers"], where=where, cls=ContentStyleFileError)
    elif meta.get("style_layers") != [] or not is_int(meta.get("style_dims"), 1):
        raise bad("style_layers/style_dims", [meta.get("style_layers"), meta.get("style_dims")],
                  "[] and an integer K ≥ 1 for a flat split")
    return meta


# ---------------------------------------------------------------------------------------------- reading
def read_file(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(checked header, tensors)`` of the split file at ``path``."""
    from safetensors.torch import load

    where = repr(str(path))
    data, raw = _read_bytes(path, where)
    try:
        table = json.loads(raw)
        text = table["__metadata__"][HEADER_KEY] if isinstance(table, dict) else None
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise ContentStyleFileError(f"content-style: {where} is not a latentdirs content/style split file "
                                    f"({type(error).__name__}); write one with content_style_split(…).save(…)"
                                    ) from None
    try:
        meta = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError) as error:
        raise ContentStyleFileError(f"content-style: {where} has a corrupt header ({str(error)[:120]})") from None
    meta = check_header(meta, where)
    expected = {BASIS_NAME} if meta["kind"] == "flat" else set()
    if set(table) - {"__metadata__"} != expected:
        found = sorted(set(table) - {"__metadata__"})
        raise invalid(f"{where} tensors", found, f"{sorted(expected)} for a {meta['kind']} split", _FIX,
                      cls=ContentStyleFileError)
    try:
        tensors = load(data)  # validates every tensor's extent
    except Exception as error:  # safetensors raises its own error types for bad files
        reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        raise ContentStyleFileError(f"content-style: {where} is not a readable safetensors file ({reason})") from None
    return meta, tensors


def _read_bytes(path: Path, where: str) -> tuple[bytes, bytes]:
    """``(the file's bytes, its JSON header's bytes)`` after checking the size and the declared header size."""
    try:
        info = os.stat(path)
    except OSError:
        raise ContentStyleFileError(f"content-style: no file at {where}; give a split file written by "
                                    "ContentStyleSplit.save") from None
    if not stat.S_ISREG(info.st_mode):
        raise ContentStyleFileError(f"content-style: {where} is not a regular file")
    if info.st_size > MAX_FILE_BYTES or info.st_size < 8:
        raise invalid("content-style", str(path), f"files of 8 bytes to {MAX_FILE_BYTES // 2**20} MiB",
                      f"It has {info.st_size:,} bytes; it is not a split file", cls=ContentStyleFileError)
    with open(path, "rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    length = int.from_bytes(data[:8], "little")
    if length > MAX_HEADER_BYTES or 8 + length > len(data):
        raise invalid(f"{where} header size", length, f"at most {min(MAX_HEADER_BYTES, len(data) - 8):,} bytes",
                      _FIX, cls=ContentStyleFileError)
    return data, data[8:8 + length]


def is_split_file(path: str | Path) -> bool:
    """Whether ``path`` is a safetensors file whose latentdirs header says schema ``latentdirs.content-style``
    (cheap: reads the header only; any doubt is False, and the file's own reader then says what is wrong)."""
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if length > MAX_HEADER_BYTES:
                return False
            table = json.loads(handle.read(length))
        return json.loads(table["__metadata__"][HEADER_KEY]).get("schema") == SCHEMA_NAME
    except Exception:  # noqa: BLE001 - a probe: every failure means "not a split file"
        return False


__all__ = ["BASIS_NAME", "ContentStyleFileError", "HEADER_KEY", "SCHEMA_NAME", "SCHEMA_VERSION", "check_basis",
           "check_header", "check_layers", "is_split_file", "read_file"]
