"""The ``Directions`` object and its file format (schema v1; normative text: docs/direction-format.md).

A direction file is one ``.safetensors`` file:

* tensor ``directions`` float32 ``[K, D]`` — unit rows, ordered (strongest first), signs canonical;
* tensor ``scores`` float32 ``[K]`` — optional, meaning given by the header's ``score_kind``;
* tensors ``calibration.<name>`` — optional, described by the header's ``calibration`` entry;
* header metadata key ``latentdirs`` — one JSON object (schema, generator identity, space, layers,
  method and options, labels, …).

It is the only thing that passes from discovery to editing.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from latentdirs.version import __version__
from latentdirs.atomic import write_bytes_atomic
from latentdirs.calibration import KIND as CALIBRATION_KIND
from latentdirs.errors import (DirectionFileError, FingerprintMismatchError, InvalidValueError, LatentDirsError,
                               OutOfRangeError, describe_allowed, invalid)

SCHEMA_NAME = "latentdirs.directions"
SCHEMA_VERSION = 1
HEADER_KEY = "latentdirs"
UNIT_TOLERANCE = 1e-3


def canonical_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Flip each row ``[K, D]`` so that its largest-magnitude entry is positive (ties: first)."""
    peak = vectors.abs().argmax(dim=1, keepdim=True)
    signs = torch.sign(torch.gather(vectors, 1, peak))
    signs[signs == 0] = 1
    return vectors * signs


class GeneratorStamped:
    """The generator identity a file's JSON header records (direction, latents and encoder files)."""

    meta: dict[str, Any]

    @property
    def generator_spec(self) -> str | None:
        return (self.meta.get("generator") or {}).get("spec")

    @property
    def fingerprint(self) -> str | None:
        return (self.meta.get("generator") or {}).get("fingerprint")


class Directions(GeneratorStamped):
    """Ordered unit directions in one latent space of one generator, with their provenance.

    Attributes:
        vectors: float32 ``[K, D]``, unit rows.
        scores: float32 ``[K]`` or ``None`` (e.g. SeFa eigenvalues; see ``meta["score_kind"]``).
        meta: the JSON header (a dict), see docs/direction-format.md.
        calibration: name → tensor, for calibrated directions (``meta["calibration"]`` describes them).
    """

    def __init__(self, vectors: torch.Tensor, scores: torch.Tensor | None = None, *,
                 meta: Mapping[str, Any] | None = None,
                 calibration: Mapping[str, torch.Tensor] | None = None) -> None:
        vectors = torch.as_tensor(vectors).detach().to("cpu", torch.float32)
        if vectors.dim() != 2 or vectors.shape[0] == 0:
            raise invalid("vectors", f"shape {tuple(vectors.shape)}", "a [K, D] tensor with K ≥ 1")
        norms = vectors.norm(dim=1)
        if not torch.all((norms - 1).abs() <= UNIT_TOLERANCE):
            raise invalid("vectors", f"row norms {norms.min():.4g}…{norms.max():.4g}", "unit rows",
                          "Normalise each row (v / v.norm())")
        if scores is not None:
            scores = torch.as_tensor(scores).detach().to("cpu", torch.float32).flatten()
            if scores.shape[0] != vectors.shape[0]:
                raise invalid("scores", f"{scores.shape[0]} values", f"{vectors.shape[0]} (one per direction)")
        self.vectors = vectors.contiguous()
        self.scores = scores
        self.calibration = {k: torch.as_tensor(v).detach().cpu().contiguous() for k, v in (calibration or {}).items()}
        if meta is not None and not isinstance(meta, Mapping):
            raise invalid("meta", f"a {type(meta).__name__}", "a dict (the JSON header, see docs/direction-format.md)")
        header = dict(meta or {})
        header.setdefault("schema", SCHEMA_NAME)
        header.setdefault("schema_version", SCHEMA_VERSION)
        header.setdefault("library_version", __version__)
        header.setdefault("space", "z")
        header.setdefault("layers", None)
        header.setdefault("labels", {})
        header["latent_dim"] = int(vectors.shape[1])
        header["num_directions"] = int(vectors.shape[0])
        validate_header(header, where="meta", cls=InvalidValueError)
        _check_calibration(header, self.calibration, where="meta", cls=InvalidValueError)
        header["labels"] = {str(int(k)): v for k, v in header["labels"].items()}
        self.meta: dict[str, Any] = header

    # ------------------------------------------------------------------ construction by methods
    @classmethod
    def from_method(cls, vectors: torch.Tensor, scores: torch.Tensor | None, *, generator: Any, method: str,
                    options: Mapping[str, Any], space: str, layers: Sequence[int] | None = None,
                    score_kind: str | None = None, seed: int | None = None,
                    calibration: Mapping[str, torch.Tensor] | None = None,
                    calibration_meta: Mapping[str, Any] | None = None) -> "Directions":
        """Stamp a method's result with the generator's identity and the method's name, options, seed."""
        meta = {
            "created": creation_time(),
            "generator": generator.describe(),
            "space": space,
            "layers": list(layers) if layers is not None else None,
            "method": {"name": method, "options": _jsonable(dict(options)), "seed": seed},
            "score_kind": score_kind,
            "calibration": dict(calibration_meta) if calibration_meta else None,
            "labels": {},
        }
        return cls(vectors, scores, meta=meta, calibration=calibration)

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return self.vectors.shape[0]

    def __repr__(self) -> str:
        return (f"<Directions {len(self)}×{self.latent_dim} in {self.space!r} of "
                f"{self.generator_spec!r} by {self.method_name!r}>")

    @property
    def latent_dim(self) -> int:
        return self.vectors.shape[1]

    @property
    def space(self) -> str:
        return str(self.meta["space"])

    @property
    def layers(self) -> list[int] | None:
        return self.meta.get("layers")

    @property
    def labels(self) -> dict[int, str]:
        """Direction index → human label (only labelled directions)."""
        return {int(k): v for k, v in self.meta.get("labels", {}).items()}

    @property
    def method_name(self) -> str | None:
        return (self.meta.get("method") or {}).get("name")

    def label_of(self, index: int) -> str:
        """``"d3 yaw"`` or ``"d3"``: the name used in grids and file names."""
        label = self.labels.get(index)
        return f"d{index} {label}" if label else f"d{index}"

    def check_index(self, index: int, *, param: str = "index") -> int:
        if not 0 <= int(index) < len(self):
            raise invalid(param, index, f"0-{len(self) - 1} (this file holds {len(self)} directions)",
                          cls=OutOfRangeError)
        return int(index)

    def set_label(self, index: int, name: str | None) -> None:
        """Label direction ``index`` (``None`` or ``""`` removes the label)."""
        self.check_index(index)
        labels = dict(self.meta.get("labels", {}))
        if name:
            labels[str(int(index))] = str(name)
        else:
            labels.pop(str(int(index)), None)
        self.meta["labels"] = labels

    def check_generator(self, generator: Any, *, strict: bool = True) -> None:
        """Refuse (strict) a generator whose fingerprint differs from the file's; check the space."""
        expected = self.fingerprint
        actual = generator.fingerprint()
        if strict and expected is not None and expected != actual:
            raise FingerprintMismatchError(
                f"directions: made on {self.generator_spec!r} with fingerprint {expected[:19]}…, "
                f"but the generator {generator.spec!r} has {actual[:19]}…; directions of other weights "
                "rarely mean the same thing. Use the matching generator, or allow it explicitly "
                "(--allow-other-generator / strict=False)")
        space = generator.space(self.space)
        if space.dim != self.latent_dim:
            raise invalid("directions", f"{self.latent_dim}-d directions in space {self.space!r}",
                          f"{space.dim}-d directions for {generator.spec!r}")
        beyond = [layer for layer in self.layers or () if layer >= space.num_layers]
        if beyond:  # an edit would index W+ slots (or blocks) the generator does not have
            raise invalid("directions", f"layers {describe_allowed(beyond, 4)} of space {self.space!r}",
                          f"layers 0-{space.num_layers - 1} ({generator.spec!r} has {space.num_layers} in "
                          f"{self.space!r})", "The file was made for another generator, or its header was edited",
                          cls=OutOfRangeError)

    # ------------------------------------------------------------------ file I/O
    def to_bytes(self) -> bytes:
        from safetensors.torch import save

        tensors = {"directions": self.vectors}
        if self.scores is not None:
            tensors["scores"] = self.scores
        for name, tensor in self.calibration.items():
            tensors[f"calibration.{name}"] = tensor
        return save(tensors, metadata={HEADER_KEY: json.dumps(self.meta, sort_keys=True)})

    def save(self, path: str | Path) -> Path:
        """Write the file atomically (temp file + rename); returns the path."""
        path = Path(path)
        write_bytes_atomic(path, self.to_bytes())
        return path

    @classmethod
    def load(cls, path: str | Path, *, generator: Any = None, strict: bool = True) -> "Directions":
        """Read and validate a direction file; with ``generator``, also check its fingerprint and space."""
        meta, tensors = _read(Path(path))
        _check_shapes(path, meta, tensors)
        calibration = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("calibration.")}
        try:
            directions = cls(tensors["directions"], tensors.get("scores"), meta=meta, calibration=calibration)
        except ValueError as error:
            raise DirectionFileError(f"directions: {path}: {error}") from None
        if generator is not None:
            directions.check_generator(generator, strict=strict)
        return directions


def relabel(path: str | Path, index: int, name: str) -> Directions:
    """Name direction ``index`` of the file at ``path`` (an empty ``name`` removes the label) and rewrite
    the file atomically; returns the rewritten directions.

    The file is re-read under its exclusive lock, so labellers working at the same time (two shells,
    the explorer's page) each keep the others' labels instead of the last writer winning.
    """
    from latentdirs.atomic import exclusive_lock

    with exclusive_lock(path):
        directions = Directions.load(path)
        directions.set_label(index, name)
        directions.save(path)
    return directions


def read_header(path: str | Path) -> dict[str, Any]:
    """The validated JSON header of a direction file, without reading its tensors."""
    from safetensors import safe_open

    path = Path(path)
    _check_exists(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(HEADER_KEY)
    except Exception as error:  # safetensors raises its own error types for bad headers
        raise _not_safetensors(path, error) from None
    return _parse_header(path, raw)


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise DirectionFileError(f"directions: no file at {str(path)!r}; give the path of a .safetensors "
                                 "direction file written by 'latentdirs discover'")


def _not_safetensors(path: Path, error: Exception) -> DirectionFileError:
    reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
    return DirectionFileError(f"directions: {str(path)!r} is not a readable safetensors direction file "
                              f"({reason}); it may be truncated or of another format — re-create it with "
                              "'latentdirs discover', or convert a .npy/.npz with 'latentdirs import'")


def _parse_header(path: Path, raw: str | None) -> dict[str, Any]:
    if raw is None:
        raise DirectionFileError(f"directions: {str(path)!r} is a safetensors file without a latentdirs "
                                 "header; convert foreign directions with 'latentdirs import'")
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError) as error:  # JSONDecodeError, over-long numbers, nesting too deep
        raise DirectionFileError(f"directions: {str(path)!r} has a corrupt header ({type(error).__name__}: "
                                 f"{str(error)[:120]})") from None
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA_NAME:
        raise DirectionFileError(f"directions: {str(path)!r} has schema {meta.get('schema') if isinstance(meta, dict) else meta!r}, "
                                 f"expected {SCHEMA_NAME!r}")
    version = meta.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DirectionFileError(f"directions: {str(path)!r} has schema_version {version!r}; allowed: 1")
    if version > SCHEMA_VERSION:
        raise DirectionFileError(
            f"directions: {str(path)!r} uses schema v{version}, newer than this latentdirs "
            f"{__version__} reads (v{SCHEMA_VERSION}); upgrade: pip install --upgrade latentdirs")
    return validate_header(meta, where=str(path))


# ---------------------------------------------------------------------- header structure (schema v1)
#: longest ``layers`` list a header may hold (a StyleGAN2 at 1024 px has 18 W+ slots)
MAX_HEADER_LAYERS = 100_000
_FIX_HEADER = "The header is damaged or was edited by hand; re-create the file with 'latentdirs discover' (or 'import')"


def is_int(value: Any, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value < 2**63


def _is_text_or_null(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_label_key(key: Any) -> bool:
    return is_int(key) or (isinstance(key, str) and key.isascii() and key.isdigit() and len(key) < 19)


def _generator_ok(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and _is_text_or_null(value.get("spec"))
                             and _is_text_or_null(value.get("fingerprint"))
                             and isinstance(value.get("options", {}), (dict, type(None))))


def _method_ok(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and _is_text_or_null(value.get("name"))
                             and isinstance(value.get("options", {}), (dict, type(None)))
                             and (value.get("seed") is None or is_int(value.get("seed"), -2**63)))


def _calibration_ok(value: Any) -> bool:
    if value is None:
        return True
    if not isinstance(value, dict) or value.get("kind") != CALIBRATION_KIND:
        return False
    bounds = value.get("range")
    return (all(isinstance(value.get(key), str) for key in ("transform", "units"))
            and isinstance(value.get("factor", ""), str) and isinstance(bounds, list) and len(bounds) == 2
            and all(_is_finite_number(b) for b in bounds) and bounds[0] <= bounds[1])


def _layers_ok(value: Any) -> bool:
    return value is None or (isinstance(value, list) and len(value) <= MAX_HEADER_LAYERS
                             and all(is_int(layer) for layer in value))


def _labels_ok(value: Any) -> bool:
    return isinstance(value, dict) and all(_is_label_key(k) and isinstance(v, str) for k, v in value.items())


#: header key → (check, what is allowed); keys a header lacks are filled with defaults before the check
HEADER_FIELDS: dict[str, tuple[Any, str]] = {
    "library_version": (lambda v: isinstance(v, str), "a version string"),
    "created": (_is_text_or_null, "an ISO-8601 time string or null"),
    "generator": (_generator_ok, "null or an object whose 'spec' and 'fingerprint' are strings or null and "
                                 "whose 'options' is an object"),
    "space": (lambda v: isinstance(v, str) and bool(v), "a space name such as \"z\", \"w\" or \"w+\""),
    "latent_dim": (lambda v: is_int(v, 1), "an integer ≥ 1"),
    "num_directions": (lambda v: is_int(v, 1), "an integer ≥ 1"),
    "layers": (_layers_ok, f"null or a list of at most {MAX_HEADER_LAYERS} non-negative integers"),
    "method": (_method_ok, "null or an object {\"name\": string, \"options\": object, \"seed\": integer or null}"),
    "score_kind": (_is_text_or_null, "a string or null"),
    "calibration": (_calibration_ok, f"null or an object with kind {CALIBRATION_KIND!r}, transform, units (strings) "
                                     "and range [low, high] (finite numbers)"),
    "labels": (_labels_ok, "an object mapping direction indices (\"0\", \"1\", …) to label strings"),
}


def validate_header(meta: Any, *, where: str, cls: type[LatentDirsError] = DirectionFileError) -> dict[str, Any]:
    """Check every known field of a direction header (docs/direction-format.md) in one place; return it.

    ``where`` names the source in the error (a file path, or ``meta`` for a header passed from
    Python); ``cls`` is the error raised — :class:`DirectionFileError` for files. Unknown keys are
    kept (later v1 writers may add some); labels must name directions the file holds.
    """
    if not isinstance(meta, dict):
        raise invalid("directions", f"{where}: a header that is a JSON {type(meta).__name__}", "one JSON object",
                      _FIX_HEADER, cls=cls)
    for key, (check, allowed) in HEADER_FIELDS.items():
        if key in meta and not check(meta[key]):
            raise invalid("directions", f"{where}: header {key} = {_json_excerpt(meta[key])}", allowed, _FIX_HEADER,
                          cls=cls)
    count = meta.get("num_directions")
    beyond = [str(k) for k in meta.get("labels", {}) if is_int(count) and int(k) >= count]
    if beyond:
        raise invalid("directions", f"{where}: labels for directions {', '.join(beyond[:4])}",
                      f"labels of directions 0-{count - 1} (the file holds {count})", _FIX_HEADER, cls=cls)
    return meta


def _json_excerpt(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= limit else text[:limit] + "…"


def creation_time() -> str:
    """The ``created`` stamp of a new file: UTC now, or ``$SOURCE_DATE_EPOCH`` when it is set.

    ``SOURCE_DATE_EPOCH`` (https://reproducible-builds.org/specs/source-date-epoch/) makes the same
    discovery write byte-identical files; a value that is not a non-negative integer of seconds is an
    error naming it, never silently ignored.
    """
    raw = os.environ.get("SOURCE_DATE_EPOCH")
    if raw is None:
        return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    text = raw.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 12 and int(text) <= MAX_SOURCE_DATE_EPOCH):
        raise invalid("SOURCE_DATE_EPOCH", raw, f"a whole number of seconds since 1970-01-01 UTC, 0-"
                      f"{MAX_SOURCE_DATE_EPOCH} (the end of year 9999)",
                      "Unset it, or set it e.g. to the last commit's time: $(git log -1 --format=%ct)")
    return _dt.datetime.fromtimestamp(int(text), _dt.timezone.utc).isoformat(timespec="seconds")


#: 9999-12-31T23:59:59Z, the last second an ISO-8601 year of four digits can express
MAX_SOURCE_DATE_EPOCH = 253_402_300_799


def _read(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from safetensors.torch import load

    _check_exists(path)
    data = path.read_bytes()
    try:
        tensors = load(data)  # validates the header and every tensor's extent
        header_length = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8:8 + header_length]).get("__metadata__") or {}
    except Exception as error:  # safetensors raises its own error types for bad files
        raise _not_safetensors(path, error) from None
    return _parse_header(path, metadata.get(HEADER_KEY)), tensors


def _check_shapes(path: str | Path, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    vectors = tensors.get("directions")
    if vectors is None or vectors.dim() != 2:
        raise DirectionFileError(f"directions: {str(path)!r} lacks a 2-d 'directions' tensor")
    expected = (meta.get("num_directions"), meta.get("latent_dim"))
    if tuple(vectors.shape) != expected:
        raise DirectionFileError(f"directions: {str(path)!r} holds a {tuple(vectors.shape)} tensor but its "
                                 f"header says {expected}; the file is corrupt — re-create it")
    scores = tensors.get("scores")
    if not vectors.dtype.is_floating_point or (scores is not None and not scores.dtype.is_floating_point):
        found = f"directions {vectors.dtype}" + (f", scores {scores.dtype}" if scores is not None else "")
        raise invalid("directions", f"{Path(path).name}: {found}", "floating-point directions and scores",
                      _FIX_HEADER, cls=DirectionFileError)
    calibration = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("calibration.")}
    _check_calibration(meta, calibration, where=str(path), cls=DirectionFileError)


def _check_calibration(meta: dict[str, Any], calibration: Mapping[str, torch.Tensor], *, where: str,
                       cls: type[LatentDirsError]) -> None:
    """A calibrated header needs one direction and knots ``knots_x``, ``knots_y`` ``[J]`` (J ≥ 2, finite, x ascending)."""
    if meta.get("calibration") is None:
        return
    xs, ys = calibration.get("knots_x"), calibration.get("knots_y")
    if (meta.get("num_directions") != 1 or xs is None or ys is None or xs.dim() != 1 or xs.shape != ys.shape
            or xs.numel() < 2 or not (xs.dtype.is_floating_point and ys.dtype.is_floating_point)
            or not bool(torch.isfinite(xs).all() and torch.isfinite(ys).all()) or bool((xs[1:] < xs[:-1]).any())):
        found = ", ".join(f"{k} {tuple(v.shape)}" for k, v in sorted(calibration.items())) or "no knots"
        raise invalid("directions", f"{where}: a calibrated header with {meta.get('num_directions')} directions and "
                      f"{found}", "one direction with finite knots_x, knots_y [J], J ≥ 2, knots_x ascending",
                      _FIX_HEADER, cls=cls)


def _jsonable(value: Any) -> Any:
    """Options as JSON: tensors → lists, paths → strings, unknown objects → repr."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
