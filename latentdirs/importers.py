"""Importers for direction files other tools publish.

* SeFa / InterFaceGAN ``.npy``: a ``[D]``, ``[1, D]`` or ``[K, D]`` float array of directions (an
  InterFaceGAN boundary is one unit normal ``[1, D]``).
* GANSpace ``.npz``: arrays ``lat_comp [K, 1, D]`` (unit principal components, strongest first),
  ``lat_stdev [K]`` (standard deviation along each), ``lat_mean``; activation-space arrays are ignored.

Arrays are read with ``allow_pickle=False``: no code in a user's file ever runs. Each array's header
is checked (numeric dtype, element count, stored size) before its data is read, and only the arrays
named above are read from an archive.
"""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentdirs.directions import Directions
from latentdirs.errors import DirectionFileError, invalid
from latentdirs.weights import library_reason


#: most elements one imported array may hold (64 Mi: a [K, D] table far beyond any published file)
MAX_IMPORT_ELEMENTS = 1 << 26
#: element kinds read: floats and integers (no strings, objects, booleans, complex or structured records)
_NUMERIC_KINDS = "fiu"
#: an .npz member may inflate to twice the archive's size plus this
_INFLATE_MARGIN = 16 << 20
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_FIX = "Export plain numeric arrays: np.save(path, directions) or GANSpace's lat_comp/lat_stdev .npz"


def import_directions(path: str | Path, generator, *, space: str | None = None,
                      layers: list[int] | None = None) -> Directions:
    """Read a foreign ``.npy`` / ``.npz`` direction file into :class:`Directions` for ``generator``.

    Recognised by content (``.npy`` magic or a zip archive), whatever the suffix. Every array header
    is checked before its data is read — numeric dtype, at most :data:`MAX_IMPORT_ELEMENTS` elements,
    exactly as many bytes stored as declared — so no declared size is ever allocated on trust. Rows
    are normalised to unit length; their order is kept; signs are kept as published (flipping a
    published boundary would invert its meaning).
    """
    path = Path(path)
    if not path.is_file():
        raise DirectionFileError(f"source: no file at {str(path)!r}")
    with open(path, "rb") as handle:
        magic = handle.read(6)
    scores = None
    score_kind = None
    if magic.startswith(_ZIP_MAGIC):
        arrays = _read_npz(path, ("lat_comp", "lat_stdev"))
        if "lat_comp" not in arrays:
            raise invalid("source", f"{path.name}: arrays {sorted(arrays['*'])}", "a GANSpace .npz with 'lat_comp' "
                          "[K, 1, D] (and optionally 'lat_stdev' [K])", _FIX, cls=DirectionFileError)
        vectors = _as_rows(arrays["lat_comp"], path, "lat_comp", dims=(2, 3))
        if "lat_stdev" in arrays:
            scores, score_kind = arrays["lat_stdev"].astype(np.float64).reshape(-1), "stdev"
            if scores.shape[0] != vectors.shape[0] or not np.all(np.isfinite(scores)):
                raise invalid("source", f"{path.name}: lat_stdev of shape {arrays['lat_stdev'].shape}",
                              f"{vectors.shape[0]} finite values, one per lat_comp row", _FIX, cls=DirectionFileError)
        source_format = "ganspace-npz"
    elif magic == _NPY_MAGIC:
        vectors = _as_rows(_read_npy(path), path, "the array", dims=(1, 2, 3))
        source_format = "sefa-interfacegan-npy"
    else:
        raise invalid("source", f"{path.name}: a file starting {magic!r}", "a .npy array or a .npz archive", _FIX,
                      cls=DirectionFileError)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if not np.all(np.isfinite(vectors)) or np.any(norms == 0):
        raise invalid("source", f"{path.name}: zero or non-finite directions", "finite, non-zero rows", _FIX,
                      cls=DirectionFileError)
    space_name = space or generator.default_space
    dim = generator.space(space_name).dim
    if vectors.shape[1] != dim:
        raise invalid("source", f"{vectors.shape[1]}-d directions in {path.name}",
                      f"{dim}-d directions for space {space_name!r} of {generator.spec!r}",
                      "Pick the generator (and --space) the file was made for")
    options: dict[str, Any] = {"source": path.name, "format": source_format}
    return Directions.from_method(torch.from_numpy(vectors / norms), None if scores is None else torch.from_numpy(scores),
                                  generator=generator, method="import", options=options, space=space_name,
                                  layers=layers, score_kind=score_kind)


def _as_rows(array: np.ndarray, path: Path, what: str, *, dims: tuple[int, ...]) -> np.ndarray:
    """``[D]`` → ``[1, D]``; ``[K, D]`` and ``[K, 1, D]`` → ``[K, D]`` float64; anything empty is refused."""
    if array.ndim not in dims or array.size == 0:
        raise invalid("source", f"{path.name}: {what} of shape {array.shape}",
                      f"a non-empty array of {' or '.join(str(d) for d in dims)} dimensions ([D], [K, D] or [K, 1, D])",
                      _FIX, cls=DirectionFileError)
    rows = array.reshape(1, -1) if array.ndim == 1 else array.reshape(array.shape[0], -1)
    return rows.astype(np.float64)


def _check_array_header(header: tuple[tuple[int, ...], bool, np.dtype], stored: int, path: Path, what: str) -> int:
    """Refuse a header whose dtype is not numeric, whose element count passes the cap, or whose data
    size differs from the ``stored`` bytes; return the element count."""
    shape, _, dtype = header
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise invalid("source", f"{path.name}: {what} of dtype {dtype}", "numeric arrays (float or integer); string "
                      "and object arrays are never read", _FIX, cls=DirectionFileError)
    count = math.prod(shape)
    if count > MAX_IMPORT_ELEMENTS:
        raise invalid("source", f"{path.name}: {what} of shape {shape} ({count} elements)",
                      f"at most {MAX_IMPORT_ELEMENTS} elements", _FIX, cls=DirectionFileError)
    if count * dtype.itemsize != stored:
        raise invalid("source", f"{path.name}: {what} declaring {count * dtype.itemsize} bytes of data but holding "
                      f"{stored}", "complete arrays", "The file is truncated or damaged", cls=DirectionFileError)
    return count


def _read_header(stream: Any, path: Path, what: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(stream)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(stream)
        raise ValueError(f"format version {version}")
    except Exception as error:  # numpy raises ValueError/EOFError/… for damaged headers
        raise invalid("source", f"{path.name}: {what} with an unreadable header ({library_reason(error)})",
                      ".npy format 1.0 or 2.0", _FIX, cls=DirectionFileError) from None


def _read_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as handle:
        header = _read_header(handle, path, "the array")
        start = handle.tell()
    _check_array_header(header, path.stat().st_size - start, path, "the array")
    return _load_array(path, path, "the array")


def _read_npz(path: Path, names: tuple[str, ...]) -> dict[str, Any]:
    """The arrays ``names`` of an ``.npz`` (others are never read), plus ``"*"``: every array name in it."""
    try:
        archive = zipfile.ZipFile(path)
    except Exception as error:  # BadZipFile, OSError, …
        raise invalid("source", f"{path.name}: a damaged zip archive ({type(error).__name__})", "a .npz archive",
                      _FIX, cls=DirectionFileError) from None
    with archive:
        members = {info.filename: info for info in archive.infolist()}
        arrays: dict[str, Any] = {"*": [name[:-4] for name in members if name.endswith(".npy")]}
        for name in names:
            info = members.get(f"{name}.npy")
            if info is None:
                continue
            what = f"{name}.npy"
            # what a member inflates to is bounded before it is inflated: direction arrays barely compress
            if info.file_size > 2 * path.stat().st_size + _INFLATE_MARGIN:
                raise invalid("source", f"{path.name}: {what} inflating to {info.file_size} bytes from a file of "
                              f"{path.stat().st_size}", f"members of at most twice the archive's size plus "
                              f"{_INFLATE_MARGIN >> 20} MiB (numeric direction arrays barely compress)", _FIX,
                              cls=DirectionFileError)
            try:
                data = archive.read(info)
            except Exception as error:
                raise invalid("source", f"{path.name}: an unreadable {what} ({type(error).__name__})",
                              "a complete .npz archive", _FIX, cls=DirectionFileError) from None
            stream = io.BytesIO(data)
            header = _read_header(stream, path, what)
            _check_array_header(header, len(data) - stream.tell(), path, what)
            arrays[name] = _load_array(io.BytesIO(data), path, what)
    return arrays


def _load_array(source: Any, path: Path, what: str) -> np.ndarray:
    try:
        return np.load(source, allow_pickle=False)
    except Exception as error:  # numpy's own words may advise loading "unsafely": never passed on
        raise invalid("source", f"{path.name}: {what} that numpy cannot read ({library_reason(error)})",
                      "a plain numeric .npy array", _FIX, cls=DirectionFileError) from None
