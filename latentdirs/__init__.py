"""latentdirs: discover interpretable directions in the latent space of pretrained GANs and edit with them.

Data flows one way: generator adapter → discovery method → direction file → editing.

>>> import latentdirs
>>> generator = latentdirs.load_generator("synthetic", device="cpu")
>>> directions = latentdirs.discover(generator, "sefa", num_directions=5)
>>> directions.vectors.shape
torch.Size([5, 16])
"""

from __future__ import annotations

from latentdirs.api import discover
from latentdirs.content_style import ContentStyleSplit, content_style_split
from latentdirs.directions import Directions
from latentdirs.edit import shift, traverse
from latentdirs.errors import LatentDirsError
from latentdirs.invert import invert
from latentdirs.latent_file import Latents
from latentdirs.registry import list_generators, list_methods, load_generator
from latentdirs.vary import mix, style_from, vary
from latentdirs.version import __version__

__all__ = ["ContentStyleSplit", "Directions", "LatentDirsError", "Latents", "__version__", "content_style_split",
           "discover", "invert", "list_generators",
           "list_methods", "load_generator", "mix", "shift", "style_from", "traverse", "vary"]
