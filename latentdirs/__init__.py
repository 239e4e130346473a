"""latentdirs: discover interpretable directions in the latent space of pretrained GANs and edit with them.

Data flows one way: generator adapter → discovery method → direction file → editing.

>>> import latentdirs
>>> generator = latentdirs.load_generator("synthetic", device="cpu")
>>> directions = latentdirs.discover(generator, "sefa", num_directions=5)
>>> directions.vectors.shape
torch.Size([5, 16])
"""

from __future__ import annotations

__version__ = "0.1.0"

from latentdirs.api import discover  # noqa: E402
from latentdirs.directions import Directions  # noqa: E402
from latentdirs.edit import shift, traverse  # noqa: E402
from latentdirs.errors import LatentDirsError  # noqa: E402
from latentdirs.registry import list_generators, list_methods, load_generator  # noqa: E402

__all__ = ["Directions", "LatentDirsError", "__version__", "discover", "list_generators", "list_methods",
           "load_generator", "shift", "traverse"]
