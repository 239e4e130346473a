"""The catalogue of checkpoints this project knows (``checkpoints/catalogue.json``).

The catalogue ships inside the package as ``latentdirs.checkpoints`` (setup.cfg maps the top-level
``checkpoints/`` folder there), together with curated direction files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from latentdirs.errors import unknown


@dataclass(frozen=True)
class CheckpointEntry:
    """One known checkpoint: where its weights come from and how to check them."""

    name: str
    adapter: str
    source: str
    package: str | None
    file: str | None
    pip: str | None
    sha256: str | None
    licence: str
    resolution: int
    notes: str = ""
    curated_directions: tuple[str, ...] = ()
    #: for weights trained here and shipped in checkpoints/: the command that reproduces them
    recipe: str = ""


@lru_cache(maxsize=1)
def catalogue() -> dict[str, CheckpointEntry]:
    """All catalogue entries by name."""
    raw: dict[str, Any] = json.loads(checkpoints_dir().joinpath("catalogue.json").read_text("utf-8"))
    return {item["name"]: CheckpointEntry(**{**item, "curated_directions": tuple(item.get("curated_directions", ()))})
            for item in raw["checkpoints"]}


def entry(name: str) -> CheckpointEntry:
    entries = catalogue()
    if name not in entries:
        raise unknown("checkpoint", name, entries)
    return entries[name]


def checkpoints_dir() -> Path:
    """The installed ``checkpoints/`` folder."""
    return Path(str(resources.files("latentdirs.checkpoints")))


def shipped_weights(name: str, file_name: str, *, retrain: str) -> Path:
    """Path of the weights file ``file_name`` a built-in generator ``name`` ships in ``checkpoints/``, its
    sha256 checked against the catalogue's entry when the catalogue lists one (a checkout whose catalogue
    predates the entry keeps only the loader's own checks). ``retrain``: the script that remakes it."""
    from latentdirs.errors import MissingWeightsError, UnknownNameError
    from latentdirs.weights import verify_sha256

    path = checkpoints_dir() / file_name
    if not path.is_file():
        raise MissingWeightsError(f"generator: {name} weights {str(path)!r} are missing; reinstall latentdirs "
                                  f"or retrain them with {retrain}")
    try:
        expected = entry(name).sha256
    except UnknownNameError:
        expected = None
    if expected:
        verify_sha256(path, expected, fix=f"Restore checkpoints/{file_name} from the repository")
    return path


def curated_file(name: str) -> Path:
    """Path of a curated direction file shipped in ``checkpoints/`` (e.g. ``dcgan-faces-sefa.safetensors``)."""
    path = checkpoints_dir() / name
    if not path.is_file():
        available = sorted(p.name for p in checkpoints_dir().glob("*.safetensors"))
        raise unknown("curated direction file", name, available, "Those are the files shipped in checkpoints/")
    return path
