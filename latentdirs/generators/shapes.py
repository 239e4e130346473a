"""``shapes-dcgan``: a DCGAN trained in this project on the scene renderer of :mod:`latentdirs.scenes`.

The network is the dcgan-faces kind (the PyTorch DCGAN-tutorial stack, rebuilt by
:func:`~latentdirs.generators.dcgan.build_dcgan`), z in R^64, 64 px, trained by
``training/train_dcgan.py`` (recipe there and in the catalogue) and shipped as
``checkpoints/shapes-dcgan.safetensors`` in float16 (cast to float32 on load; safetensors, so loading
runs no code). Its images show one object on a grey background, like the renderer's; what a latent
direction does to them can be *measured* with :meth:`ShapesDCGANAdapter.read_factors`, the factor
reader of :mod:`latentdirs.factor_reader`. Nobody knows its factor directions, so
:attr:`~latentdirs.generators.base.GeneratorAdapter.true_directions` stays ``None``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from latentdirs.catalogue import shipped_weights
from latentdirs.errors import WeightsMismatchError, invalid
from latentdirs.generators.dcgan import DCGANAdapter

WEIGHTS_FILE = "shapes-dcgan.safetensors"
NAME = "shapes-dcgan"


class ShapesDCGANAdapter(DCGANAdapter):
    """A :class:`~latentdirs.generators.dcgan.DCGANAdapter` that can also read its images' scene factors."""

    #: the factors :meth:`read_factors` returns (see :mod:`latentdirs.scenes` for units and ranges)
    factor_names = ("x", "y", "scale", "rotation", "hue", "background", "shape")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        from latentdirs.factor_reader import scene_factor_reader

        self._scene_factors = scene_factor_reader(self.device)  # loads the reader on first use

    def read_factors(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scene factors of ``images`` ``[N, 3, 64, 64]`` in [-1, 1], as read by the factor reader.

        Returns ``{name: [N]}`` on the CPU in the renderer's units (see
        :meth:`latentdirs.factor_reader.FactorReader.read`; ``shape`` is int64, ``rotation`` NaN
        where a disc is read, plus ``shape_probability`` ``[N, 4]``). The reader loads on first use.
        """
        return self._scene_factors(images)


def load_shapes_dcgan(argument: str | None = None, *, device: str | torch.device = "auto") -> ShapesDCGANAdapter:
    """``shapes-dcgan``: the shipped weights, checked against the catalogue's sha256 when it lists them."""
    if argument is not None:
        raise invalid("generator", f"{NAME}:{argument}", f"'{NAME}' without ':…'")
    path = shipped_weights(NAME, WEIGHTS_FILE, retrain="training/train_dcgan.py")
    return ShapesDCGANAdapter(spec=NAME, state=_read_state(path), device=device)


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        stored = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise WeightsMismatchError(f"generator: {str(path)!r} is not a readable safetensors file ({error})") from None
    return {k: v.float() if v.is_floating_point() else v for k, v in stored.items()}
