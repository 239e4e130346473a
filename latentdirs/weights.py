"""Safe reading of weight files: checksums, package-embedded files, ``torch.load(weights_only=True)``.

Nothing here executes code from a file: torch checkpoints are read with ``weights_only=True``, which
refuses every global outside PyTorch's tensor allow-list.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import torch

from latentdirs.errors import MissingWeightsError, WeightsMismatchError


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (memory stays flat for multi-GB files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def package_file(package: str, relative: str, *, pip_requirement: str) -> Path:
    """Locate ``relative`` inside an installed package *without importing it*.

    Some weight packages run code at import (one loads CUDA tensors and crashes on CPU machines), so
    the file is found through the import system's metadata only.
    """
    install = f"pip install --no-deps {pip_requirement}"
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(
            f"weights: the package {package!r} is not installed; install it with: {install}")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    raise MissingWeightsError(f"weights: {package!r} is installed but has no {relative!r}; "
                              f"reinstall it with: {install} --force-reinstall")


def verify_sha256(path: Path, expected: str, *, fix: str) -> None:
    """Refuse a file whose sha256 differs from the catalogue's."""
    actual = sha256_of(path)
    if actual != expected:
        raise WeightsMismatchError(f"weights: {path} has sha256 {actual}, expected {expected}. {fix}")


def load_torch_weights(path: str | Path) -> Any:
    """``torch.load`` on the CPU with ``weights_only=True``: tensors and plain containers only."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MissingWeightsError(f"weights: no file at {path}") from None
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, … for bad files
        raise WeightsMismatchError(f"weights: {path} is not a safe torch checkpoint "
                                   f"({type(error).__name__}: {str(error).splitlines()[0][:200]})") from None
