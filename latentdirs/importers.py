"""Importers for direction files other tools publish.

* SeFa / InterFaceGAN ``.npy``: a ``[D]``, ``[1, D]`` or ``[K, D]`` float array of directions (an
  InterFaceGAN boundary is one unit normal ``[1, D]``).
* GANSpace ``.npz``: arrays ``lat_comp [K, 1, D]`` (unit principal components, strongest first),
  ``lat_stdev [K]`` (standard deviation along each), ``lat_mean``; activation-space arrays are ignored.

Arrays are read with ``allow_pickle=False``: no code in a user's file ever runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentdirs.directions import Directions
from latentdirs.errors import DirectionFileError, invalid


def import_directions(path: str | Path, generator, *, space: str | None = None,
                      layers: list[int] | None = None) -> Directions:
    """Read a foreign ``.npy`` / ``.npz`` direction file into :class:`Directions` for ``generator``.

    Rows are normalised to unit length; their order is kept; signs are kept as published (flipping
    a published boundary would invert its meaning).
    """
    path = Path(path)
    if not path.is_file():
        raise DirectionFileError(f"source: no file at {str(path)!r}")
    suffix = path.suffix.lower()
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as error:  # numpy raises ValueError/OSError/… for bad or pickled files
        raise DirectionFileError(f"source: {str(path)!r} is not a plain .npy/.npz array file ({error})") from None
    scores = None
    score_kind = None
    if suffix == ".npz" or isinstance(loaded, np.lib.npyio.NpzFile):
        if "lat_comp" not in loaded:
            raise DirectionFileError(f"source: {str(path)!r} has arrays {sorted(loaded.files)}; "
                                     "a GANSpace file needs 'lat_comp'")
        vectors = np.asarray(loaded["lat_comp"], dtype=np.float64).reshape(loaded["lat_comp"].shape[0], -1)
        if "lat_stdev" in loaded:
            scores, score_kind = np.asarray(loaded["lat_stdev"], dtype=np.float64).reshape(-1), "stdev"
        source_format = "ganspace-npz"
    else:
        vectors = np.asarray(loaded, dtype=np.float64)
        vectors = vectors.reshape(1, -1) if vectors.ndim == 1 else vectors.reshape(vectors.shape[0], -1)
        source_format = "sefa-interfacegan-npy"
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if vectors.size == 0 or not np.all(np.isfinite(vectors)) or np.any(norms == 0):
        raise DirectionFileError(f"source: {str(path)!r} holds empty, zero or non-finite directions")
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
