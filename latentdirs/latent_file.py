"""The ``Latents`` object and its file (schema v1 and v2; normative text: docs/inversion.md, "The latents file").

A latents file is the sibling of the direction file (:mod:`latentdirs.directions`): one
``.safetensors`` file with

* tensor ``latents`` float32 ``[N, D]`` (flat space) or ``[N, L, D]`` (layered space such as ``w+``),
  one row per image, every value finite;
* schema v2 only: tensor ``offsets`` float32 ``[N, C, H, W]``, the *feature offsets* each row renders
  with (added after the generator's first layer: ``GeneratorAdapter.feature_offset_shape``; z of
  DCGANs). A v1 reader would ignore the tensor and render other images, hence the version: a file
  with offsets is v2, one without stays v1;
* header metadata key ``latentdirs`` — one JSON object: schema ``"latentdirs.latents"`` and version,
  library version, creation time, the generator's identity (``describe()``: spec, load options,
  fingerprint), the space and the tensor's shape, the truncation ψ the latents render with, optional
  class ids per row, a label per row, per-row provenance (``rows``) and the inversion's settings.

It is what passes from inversion (``latentdirs invert``) to editing (``latentdirs edit --latents``),
where :class:`latentdirs.plan.LatentRows` makes its rows the rows of an edit.

Reading validates everything before a tensor is allocated: the file size, the declared header size,
every header field's JSON type, the tensor's dtype, shape and extent against the header, then that
every value is finite.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch

from latentdirs.atomic import write_bytes_atomic
from latentdirs.directions import GeneratorStamped, creation_time
from latentdirs.errors import FingerprintMismatchError, InvalidValueError, LatentDirsError, NotSupportedError, invalid
from latentdirs.version import __version__

if TYPE_CHECKING:
    from latentdirs.generators.base import GeneratorAdapter
    from latentdirs.photos import PhotoRecord

SCHEMA_NAME = "latentdirs.latents"
#: the newest schema version this latentdirs reads (v2: v1 and the optional ``offsets`` tensor)
SCHEMA_VERSION = 2
#: the version of a file with feature offsets; a file without them is written as v1, readable by older readers
OFFSETS_SCHEMA_VERSION = 2
HEADER_KEY = "latentdirs"
TENSOR_NAME = "latents"
OFFSETS_NAME = "offsets"
#: the largest latents file read (bytes): 1 GiB ≈ 14 000 rows of StyleGAN2-1024 w+ (18 × 512)
MAX_FILE_BYTES = 2**30
#: the largest safetensors header (JSON: tensor table and metadata with per-row provenance) read
MAX_HEADER_BYTES = 64 * 2**20
#: the longest row label kept (characters)
MAX_LABEL_CHARACTERS = 200


class LatentsFileError(LatentDirsError, ValueError):
    """A latents file is unreadable, corrupt, inconsistent, or of a schema this version cannot read."""


class Latents(GeneratorStamped):
    """Latents of images (inverted photos, usually) in one space of one generator, with their provenance.

    Attributes:
        tensor: float32 ``[N, D]`` or ``[N, L, D]`` on the CPU, finite.
        offsets: float32 ``[N, C, H, W]`` on the CPU, finite: the feature offsets each row renders with
            (schema v2), or None.
        meta: the JSON header (a dict; see docs/inversion.md).
        path: the file it was loaded from or last saved to (None until then).
        sha256: hex SHA-256 of that file's bytes (None until loaded or saved).
    """

    def __init__(self, tensor: torch.Tensor, *, meta: Mapping[str, Any] | None = None,
                 offsets: torch.Tensor | None = None) -> None:
        tensor = torch.as_tensor(tensor).detach().to("cpu", torch.float32).contiguous()
        if tensor.dim() not in (2, 3) or 0 in tensor.shape:
            raise invalid("latents", f"shape {tuple(tensor.shape)}", "[N, D] or [N, L, D] with N, L, D ≥ 1")
        if not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).any(dim=tuple(range(1, tensor.dim()))).sum())
            raise invalid("latents", f"{bad} rows with NaN or infinite values", "finite values only")
        count = tensor.shape[0]
        offsets = None if offsets is None else _checked_offsets(offsets, count)
        header = dict(meta or {})
        header.setdefault("schema", SCHEMA_NAME)
        header["schema_version"] = OFFSETS_SCHEMA_VERSION if offsets is not None else 1
        if offsets is not None:
            header["offsets"] = list(offsets.shape)
        else:  # a v1 header stays exactly what v1 readers know
            header.pop("offsets", None)
        header.setdefault("library_version", __version__)
        header.setdefault("created", None)
        header.setdefault("generator", {})
        header.setdefault("space", "z")
        header.setdefault("truncation", None)
        header.setdefault("classes", None)
        header.setdefault("labels", [f"row {k}" for k in range(count)])
        header.setdefault("rows", [{} for _ in range(count)])
        header.setdefault("inversion", None)
        header["shape"] = list(tensor.shape)
        _check_meta(header, "latents", InvalidValueError)
        self.tensor = tensor
        self.offsets = offsets
        self.meta: dict[str, Any] = header
        self.path: Path | None = None
        self.sha256: str | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, tensor: torch.Tensor, *, generator: GeneratorAdapter, space: str,
               labels: Sequence[str] | None = None, rows: Sequence[Mapping[str, Any]] | None = None,
               classes: Sequence[int | str] | None = None, truncation: float | None = None,
               inversion: Mapping[str, Any] | None = None, offsets: torch.Tensor | None = None) -> "Latents":
        """Stamp latents with ``generator``'s identity (``describe()``) and the time (``SOURCE_DATE_EPOCH``).

        Args:
            tensor: ``[N, D]`` or ``[N, L, D]`` in ``space`` (shape checked against the generator's space).
            labels: one per row (default ``"row k"``); the file-name stem of each photo, usually.
            rows: per-row provenance, JSON objects (default ``{}``); ``"source"`` is a
                :meth:`latentdirs.photos.PhotoRecord.to_json`, which ``edit --paste-back`` reads;
                ``"metrics"`` (e.g. ``{"psnr": …, "ms_ssim": …}``), ``"steps"`` and anything else as given.
            classes: for conditional generators, one class (id or name) per row — the class the
                inversion found; None for unconditional generators (and for latents without a class of
                their own: they render under the edit's ``--class``, default class 0).
            truncation: the ψ the latents render with (None: none).
            inversion: the inversion's settings common to all rows (a JSON object), or None.
            offsets: feature offsets ``[N, *generator.feature_offset_shape]`` the rows render with (z of
                a DCGAN; the file is then schema v2), or None.
        """
        tensor = torch.as_tensor(tensor).detach().to("cpu", torch.float32)
        count = tensor.shape[0] if tensor.dim() else 0
        expected = generator.space(space).shape(count)
        if tuple(tensor.shape) != expected:
            raise invalid("latents", f"shape {tuple(tensor.shape)}", f"{expected} for space {space!r} of "
                          f"{generator.spec!r}")
        if offsets is not None:
            _check_offsets_fit(generator, space, tuple(offsets.shape), count, InvalidValueError)
        class_ids = None
        if classes is not None:
            if not generator.conditional:
                raise invalid("classes", list(classes), f"None: {generator.spec!r} is unconditional")
            class_ids = [generator.resolve_class(c) for c in classes]
        meta = {
            "created": creation_time(),
            "generator": generator.describe(),
            "space": space,
            "truncation": generator.check_truncation(truncation),
            "classes": class_ids,
            "labels": [str(label) for label in labels] if labels is not None else [f"row {k}" for k in range(count)],
            "rows": [_jsonable(dict(row)) for row in rows] if rows is not None else [{} for _ in range(count)],
            "inversion": None if inversion is None else _jsonable(dict(inversion)),
        }
        return cls(tensor, meta=meta, offsets=offsets)

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __repr__(self) -> str:
        return f"<Latents {tuple(self.tensor.shape)} in {self.space!r} of {self.generator_spec!r}>"

    @property
    def space(self) -> str:
        return str(self.meta["space"])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    @property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])

    @property
    def classes(self) -> list[int] | None:
        """One class id per row (conditional generators), or None."""
        classes = self.meta.get("classes")
        return None if classes is None else [int(c) for c in classes]

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Per-row provenance, one JSON object per row."""
        return [dict(row) for row in self.meta["rows"]]

    @property
    def truncation(self) -> float | None:
        return self.meta.get("truncation")

    def source(self, position: int) -> PhotoRecord | None:
        """Row ``position``'s source photo (its ``rows[k]["source"]``, validated), or None when not recorded."""
        from latentdirs.photos import ImageInputError, PhotoRecord

        record = self.meta["rows"][position].get("source")
        if record is None:
            return None
        try:
            return PhotoRecord.from_json(record, param=f"rows[{position}].source")
        except ImageInputError as error:
            raise LatentsFileError(f"latents: {self._where()}: {error}") from None

    def _where(self) -> str:
        return repr(str(self.path)) if self.path is not None else "in memory"

    # ------------------------------------------------------------------ generator checks and spaces
    def check_generator(self, generator: GeneratorAdapter, *, strict: bool = True) -> None:
        """Refuse (strict) other weights than the file's (fingerprint); check space, shape and classes."""
        expected, actual = self.fingerprint, generator.fingerprint()
        if strict and expected is not None and expected != actual:
            raise FingerprintMismatchError(
                f"latents: {self._where()} was inverted on {self.generator_spec!r} with fingerprint "
                f"{expected[:19]}…, but the generator {generator.spec!r} has {actual[:19]}…; latents of other "
                "weights render other images. Use the matching generator, or allow it explicitly "
                "(--allow-other-generator / strict=False)")
        if self.space not in generator.spaces:
            raise invalid("latents", f"space {self.space!r}", f"a space of {generator.spec!r}: "
                          f"{', '.join(generator.spaces)}", "Invert the photos on this generator again",
                          cls=LatentsFileError)
        expected_shape = generator.space(self.space).shape(len(self))
        if self.shape != expected_shape:
            raise invalid("latents", f"shape {self.shape}", f"{expected_shape} for space {self.space!r} of "
                          f"{generator.spec!r}", cls=LatentsFileError)
        classes = self.classes
        if classes is not None and not generator.conditional:
            raise invalid("latents classes", classes[:5], f"none: {generator.spec!r} is unconditional",
                          cls=LatentsFileError)
        if classes is not None and any(c >= generator.num_classes for c in classes):
            raise invalid("latents classes", sorted(set(classes))[-5:], f"ids 0-{generator.num_classes - 1} of "
                          f"{generator.spec!r}", cls=LatentsFileError)
        if self.offsets is not None:
            _check_offsets_fit(generator, self.space, tuple(self.offsets.shape), len(self), LatentsFileError)

    def in_space(self, generator: GeneratorAdapter, space: str) -> torch.Tensor:
        """The latents mapped to ``space`` on ``generator``'s device (z → w → w+, w → w+, z → BigGAN blocks).

        Uses ``generator.to_space`` with the recorded truncation and classes; a mapping the family
        cannot do (e.g. w → z: nothing inverts a mapping network) is refused with one line.
        """
        check_mapping(generator, self.space, space, truncation=self.truncation)
        classes = None if self.classes is None else torch.tensor(self.classes)
        with torch.no_grad():
            return generator.to_space(self.tensor.to(generator.device), self.space, space,
                                      truncation=self.truncation, classes=classes)

    def to_space(self, generator: GeneratorAdapter, space: str) -> "Latents":
        """A new :class:`Latents` in ``space`` (see :meth:`in_space`); the header records ``converted_from``.

        Latents with feature offsets are refused: an offset lives after the first layer of z and has no
        counterpart in another space."""
        if space == self.space:
            return self
        if self.offsets is not None:
            raise invalid("latents", f"space {self.space!r} with feature offsets", f"latents without offsets to "
                          f"map to {space!r} (an offset exists only in z of a DCGAN)",
                          f"Use directions found in {self.space!r}, or invert again with --no-feature-offset",
                          cls=NotSupportedError)
        tensor = self.in_space(generator, space).cpu()
        meta = {**self.meta, "space": space, "converted_from": self.space}
        return Latents(tensor, meta=meta)

    # ------------------------------------------------------------------ file I/O
    def to_bytes(self) -> bytes:
        from safetensors.torch import save

        tensors = {TENSOR_NAME: self.tensor, **({} if self.offsets is None else {OFFSETS_NAME: self.offsets})}
        return save(tensors, metadata={HEADER_KEY: json.dumps(self.meta, sort_keys=True)})

    def save(self, path: str | Path) -> Path:
        """Write the file atomically (temp file + rename); sets :attr:`path` and :attr:`sha256`; returns the path."""
        path = Path(path)
        data = self.to_bytes()
        write_bytes_atomic(path, data)
        self.path, self.sha256 = path, hashlib.sha256(data).hexdigest()
        return path

    @classmethod
    def load(cls, path: str | Path, *, generator: GeneratorAdapter | None = None,
             strict: bool = True) -> "Latents":
        """Read and validate a latents file; with ``generator``, also check fingerprint, space, shape, classes."""
        path = Path(path)
        meta, data = _read_checked(path)
        from safetensors.torch import load

        try:
            tensors = load(data)  # validates the whole container; the latents entry was checked above
        except Exception as error:  # safetensors raises its own error types for bad files
            raise _not_safetensors(path, error) from None
        try:
            latents = cls(tensors[TENSOR_NAME], meta=meta, offsets=tensors.get(OFFSETS_NAME))
        except LatentDirsError as error:
            raise LatentsFileError(f"latents: {str(path)!r}: {error}") from None
        latents.path, latents.sha256 = path, hashlib.sha256(data).hexdigest()
        if generator is not None:
            latents.check_generator(generator, strict=strict)
        return latents


def read_header(path: str | Path) -> dict[str, Any]:
    """The validated JSON header of a latents file, without reading its tensor."""
    path = Path(path)
    size = _check_file(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
        header_length = _header_length(path, head, size)
        raw = handle.read(header_length)
    return _parse_header(path, raw, size=size)


def check_mapping(generator: GeneratorAdapter, src: str, dst: str, *, truncation: float | None = None) -> None:
    """Refuse, with one line, latents of space ``src`` that ``generator`` cannot map to ``dst``.

    Probes ``generator.to_space`` with one zero latent (cheap: at most one mapping-network pass).
    """
    if src == dst:
        return
    generator.space(src), generator.space(dst)
    probe = torch.zeros(generator.space(src).shape(1), device=generator.device)
    try:
        with torch.no_grad():
            generator.to_space(probe, src, dst, truncation=truncation, classes=None)
    except NotSupportedError:
        raise invalid("latents", f"space {src!r}", f"latents {generator.spec!r} can map to {dst!r} (z → w → w+, "
                      "w → w+; never back)", f"Invert the photos in {dst!r} (invert --space {dst}), or use "
                      f"directions found in {src!r}") from None


# ---------------------------------------------------------------------------------------------- reading
def _check_file(path: Path) -> int:
    try:
        info = os.stat(path)
    except OSError:
        raise LatentsFileError(f"latents: no file at {str(path)!r}; give the path of a .safetensors latents "
                               "file written by 'latentdirs invert'") from None
    if not stat.S_ISREG(info.st_mode):
        raise LatentsFileError(f"latents: {str(path)!r} is not a regular file; give a .safetensors latents file")
    if info.st_size > MAX_FILE_BYTES:
        raise invalid("latents", str(path), f"files of at most {MAX_FILE_BYTES // 2**20} MiB",
                      f"It has {info.st_size / 2**20:.0f} MiB; split the photos over several files",
                      cls=LatentsFileError)
    if info.st_size < 8:
        raise _not_safetensors(path, ValueError(f"{info.st_size} bytes, shorter than a safetensors header"))
    return info.st_size


def _header_length(path: Path, head: bytes, size: int) -> int:
    length = int.from_bytes(head[:8], "little")
    if length > MAX_HEADER_BYTES or 8 + length > size:
        raise _not_safetensors(path, ValueError(f"its header declares {length:,} bytes, but the file has "
                                                f"{size:,}" if length <= MAX_HEADER_BYTES else
                                                f"its header declares {length:,} bytes (at most "
                                                f"{MAX_HEADER_BYTES:,} are read)"))
    return length


def _read_checked(path: Path) -> tuple[dict[str, Any], bytes]:
    """``(validated header, the file's bytes)``: the size, the declared header size, the header and the
    tensor's entry are all checked before the tensor's bytes are read."""
    size = _check_file(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
        raw = handle.read(_header_length(path, head, size))
        meta = _parse_header(path, raw, size=size)
        data = head + raw + handle.read(size - 8 - len(raw) + 1)  # +1: a file that grew is caught
    if len(data) != size:
        raise LatentsFileError(f"latents: {str(path)!r} changed while being read; read it again")
    return meta, data


def _not_safetensors(path: Path, error: Exception) -> LatentsFileError:
    reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
    return LatentsFileError(f"latents: {str(path)!r} is not a readable safetensors latents file ({reason}); "
                            "it may be truncated or of another format — re-create it with 'latentdirs invert'")


def _parse_header(path: Path, raw: bytes, *, size: int | None = None) -> dict[str, Any]:
    """The ``latentdirs`` header, every field checked, and the ``latents`` tensor entry against it."""
    try:
        table = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise _not_safetensors(path, error) from None
    if not isinstance(table, dict):
        raise _not_safetensors(path, ValueError("its header is not a JSON object"))
    metadata = table.get("__metadata__")
    text = metadata.get(HEADER_KEY) if isinstance(metadata, dict) else None
    if not isinstance(text, str):
        raise LatentsFileError(f"latents: {str(path)!r} is a safetensors file without a latentdirs latents header; "
                               "write latents files with 'latentdirs invert' or Latents.save")
    try:
        meta = json.loads(text)
    except ValueError as error:
        raise LatentsFileError(f"latents: {str(path)!r} has a corrupt header ({error})") from None
    where = repr(str(path))
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA_NAME:
        found = meta.get("schema") if isinstance(meta, dict) else type(meta).__name__
        hint = " (a direction file: give it as DIRECTIONS, not --latents)" if found == "latentdirs.directions" else ""
        raise LatentsFileError(f"latents: {where} has schema {found!r}, expected {SCHEMA_NAME!r}{hint}")
    version = meta.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise invalid(f"latents {where}: schema_version", version, "1 (an integer)", cls=LatentsFileError)
    if version > SCHEMA_VERSION:
        raise LatentsFileError(f"latents: {where} uses schema v{version}, newer than this latentdirs {__version__} "
                               f"reads (v{SCHEMA_VERSION}); upgrade: pip install --upgrade latentdirs")
    _check_meta(meta, f"latents {where}", LatentsFileError)
    _check_entry(path, table.get(TENSOR_NAME), meta["shape"], len(raw), size)
    if meta.get("offsets") is not None:
        _check_entry(path, table.get(OFFSETS_NAME), meta["offsets"], len(raw), size, name=OFFSETS_NAME)
    elif OFFSETS_NAME in table:
        raise LatentsFileError(f"latents: {where} holds an '{OFFSETS_NAME}' tensor its header does not declare "
                               "(offsets: null); the file is corrupt — re-create it")
    return meta


def _check_entry(path: Path, entry: Any, shape: list[int], header_length: int, size: int | None, *,
                 name: str = TENSOR_NAME) -> None:
    """The safetensors entry of tensor ``name``: float32, the header's shape, an extent inside the file."""
    where = f"latents: {str(path)!r}"
    if not isinstance(entry, dict):
        raise LatentsFileError(f"{where} holds no '{name}' tensor; re-create it with 'latentdirs invert'")
    if entry.get("dtype") != "F32":
        raise invalid(f"{where}: tensor dtype", entry.get("dtype"), "F32 (float32)", cls=LatentsFileError)
    if entry.get("shape") != shape:
        raise LatentsFileError(f"{where} holds a '{name}' tensor of shape {_short(entry.get('shape'))} but its "
                               f"header says {shape}; the file is corrupt — re-create it")
    offsets = entry.get("data_offsets")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in offsets)):
        raise invalid(f"{where}: data_offsets", _short(offsets), "two byte offsets", cls=LatentsFileError)
    needed = 4 * math.prod(shape)
    if offsets[1] - offsets[0] != needed or (size is not None and 8 + header_length + offsets[1] > size):
        raise LatentsFileError(f"{where}: its '{name}' tensor of shape {shape} needs {needed:,} bytes, but the file "
                               f"gives it {offsets[1] - offsets[0]:,} (offsets {offsets}); it is truncated or corrupt")


def _short(value: Any) -> str:
    from latentdirs.errors import show

    return show(value, 80)


def _check_meta(meta: dict[str, Any], where: str, cls: type[LatentDirsError]) -> None:
    """Every header field's JSON type and its agreement with ``shape`` (``[N, D]`` or ``[N, L, D]``)."""
    def bad(key: str, value: Any, allowed: str) -> LatentDirsError:
        return invalid(f"{where}: {key}", value, allowed, "The file's header is malformed; re-create it", cls=cls)

    for key in ("library_version",):
        if not isinstance(meta.get(key), str):
            raise bad(key, meta.get(key), "a string")
    if meta.get("created") is not None and not isinstance(meta.get("created"), str):
        raise bad("created", meta.get("created"), "an ISO-8601 string or null")
    check_generator_record(meta.get("generator"), bad)
    space = meta.get("space")
    if not isinstance(space, str) or not space.strip() or len(space) > 64:
        raise bad("space", space, "a space name such as 'z', 'w' or 'w+'")
    shape = meta.get("shape")
    if (not isinstance(shape, list) or len(shape) not in (2, 3)
            or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 2**31 for v in shape)):
        raise bad("shape", shape, "[N, D] or [N, L, D]: integers ≥ 1")
    if 4 * math.prod(shape) > MAX_FILE_BYTES:
        raise bad("shape", shape, f"a tensor of at most {MAX_FILE_BYTES // 2**20} MiB")
    count = shape[0]
    truncation = meta.get("truncation")
    if truncation is not None and (isinstance(truncation, bool) or not isinstance(truncation, (int, float))
                                   or not 0 < truncation <= 1):
        raise bad("truncation", truncation, "null or a number in (0, 1]")
    classes = meta.get("classes")
    if classes is not None and (not isinstance(classes, list) or len(classes) != count or any(
            isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in classes)):
        raise bad("classes", classes, f"null or {count} class ids (integers ≥ 0), one per row")
    labels = meta.get("labels")
    if (not isinstance(labels, list) or len(labels) != count
            or any(not isinstance(s, str) or not s.strip() or len(s) > MAX_LABEL_CHARACTERS for s in labels)):
        raise bad("labels", labels, f"{count} non-empty strings of at most {MAX_LABEL_CHARACTERS} characters, "
                  "one per row")
    rows = meta.get("rows")
    if not isinstance(rows, list) or len(rows) != count or any(not isinstance(r, dict) for r in rows):
        raise bad("rows", rows, f"{count} objects (per-row provenance), one per row")
    if meta.get("inversion") is not None and not isinstance(meta.get("inversion"), dict):
        raise bad("inversion", meta.get("inversion"), "null or an object")
    if meta.get("converted_from") is not None and not isinstance(meta.get("converted_from"), str):
        raise bad("converted_from", meta.get("converted_from"), "null or a space name")
    offsets = meta.get("offsets")
    if offsets is not None:
        if meta.get("schema_version") != OFFSETS_SCHEMA_VERSION:
            raise bad("offsets", _short(offsets), f"null in a schema v{meta.get('schema_version')} file (feature "
                      f"offsets are schema v{OFFSETS_SCHEMA_VERSION})")
        if (not isinstance(offsets, list) or len(offsets) != 4 or offsets[0] != count
                or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 2**31 for v in offsets)):
            raise bad("offsets", _short(offsets),
                      f"null or the offsets tensor's shape [{count}, C, H, W]: integers ≥ 1")
        if 4 * (math.prod(offsets) + math.prod(shape)) > MAX_FILE_BYTES:
            raise bad("offsets", offsets, f"tensors of at most {MAX_FILE_BYTES // 2**20} MiB together")


def _checked_offsets(offsets: Any, count: int) -> torch.Tensor:
    """``offsets`` as a float32 CPU tensor ``[count, C, H, W]`` of finite values, or an error."""
    offsets = torch.as_tensor(offsets).detach().to("cpu", torch.float32).contiguous()
    if offsets.dim() != 4 or offsets.shape[0] != count or 0 in offsets.shape:
        raise invalid("offsets", f"shape {tuple(offsets.shape)}", f"[{count}, C, H, W]: one feature offset per row")
    if not bool(torch.isfinite(offsets).all()):
        bad = int((~torch.isfinite(offsets)).flatten(1).any(1).sum())
        raise invalid("offsets", f"{bad} rows with NaN or infinite values", "finite values only")
    return offsets


def _check_offsets_fit(generator: "GeneratorAdapter", space: str, shape: tuple[int, ...], count: int,
                       cls: type[LatentDirsError]) -> None:
    """Refuse feature offsets of ``shape`` that ``generator`` cannot render with latents of ``space``."""
    wanted = generator.feature_offset_shape if space == "z" else None
    if wanted is None:
        raise invalid("offsets", f"shape {shape}", f"none: {generator.spec!r} renders no feature offsets in space "
                      f"{space!r} (they exist in z of DCGAN-family generators)",
                      "Use the generator the latents were inverted on, or invert again with --no-feature-offset",
                      cls=cls)
    if shape != (count, *wanted):
        raise invalid("offsets", f"shape {shape}", f"{(count, *wanted)} for {generator.spec!r}",
                      "The file's offsets belong to another generator; invert the photos again", cls=cls)


def check_generator_record(record: Any, bad: Any) -> None:
    if not isinstance(record, dict):
        raise bad("generator", record, "an object (the generator's describe(): spec, options, fingerprint, …)")
    for key in ("spec", "fingerprint", "family"):
        if record.get(key) is not None and not isinstance(record.get(key), str):
            raise bad(f"generator.{key}", record.get(key), "a string")
    if record.get("options") is not None and not isinstance(record.get("options"), dict):
        raise bad("generator.options", record.get("options"), "an object of loader options")
    if record.get("classes") is not None and (not isinstance(record.get("classes"), list)
                                              or any(not isinstance(c, str) for c in record["classes"])):
        raise bad("generator.classes", record.get("classes"), "a list of class names")


def _jsonable(value: Any) -> Any:
    """Provenance as JSON: tensors → lists, paths → strings, non-finite floats → None, unknown → str."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _jsonable(value.item())
    return str(value)


__all__ = ["HEADER_KEY", "Latents", "LatentsFileError", "MAX_FILE_BYTES", "OFFSETS_SCHEMA_VERSION", "SCHEMA_NAME",
           "SCHEMA_VERSION", "check_mapping", "creation_time", "read_header"]
