"""Generator adapters: one module per family; see :mod:`latentdirs.generators.base`."""

from latentdirs.generators.base import GeneratorAdapter, LatentSpace

__all__ = ["GeneratorAdapter", "LatentSpace"]
