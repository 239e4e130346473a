"""The factor reader: a small CNN that reads the scene factors of :mod:`latentdirs.scenes` from a 64 px image.

It was trained on renderer images only (``training/train_factor_reader.py``) and ships as
``checkpoints/shapes-factor-reader.safetensors`` (float16). It measures what a generator's images show
— where the object is, how big, which shape and colour — without any factor values to start from, and
its penultimate features (:meth:`FactorReader.features`, 256-d) are the space of the testbed's Fréchet
distance. Held-out accuracy per factor is in docs/testbed.md.

Rotation is read as ``k·θ`` for a shape of ``k``-fold symmetry (:data:`latentdirs.scenes.SYMMETRY`):
a square turned by 90° is the same image, so only the angle modulo ``2π/k`` can be read; each
non-round shape has its own (cos kθ, sin kθ) head, and the disc has none (its rotation is NaN).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from latentdirs import scenes
from latentdirs.errors import MissingWeightsError, WeightsMismatchError, invalid

WEIGHTS_FILE = "shapes-factor-reader.safetensors"
FEATURES = 256
#: rows of the output vector: regression targets first, then the shape logits
OUTPUTS: tuple[str, ...] = ("x", "y", "scale", "square_cos", "square_sin", "triangle_cos", "triangle_sin",
                            "heart_cos", "heart_sin", "hue_cos", "hue_sin", "background",
                            *(f"logit_{name}" for name in scenes.SHAPES))
REGRESSION = 12
#: per rotating shape index: the output rows of its (cos kθ, sin kθ) head
ROTATION_HEADS: dict[int, tuple[int, int]] = {0: (3, 4), 2: (5, 6), 3: (7, 8)}


def normalise(name: str, value: torch.Tensor) -> torch.Tensor:
    """Map a factor from its units to about [-1, 1] (the reader's regression targets)."""
    low, high = scenes.FACTOR_RANGES[name]
    return (value - (low + high) / 2) / ((high - low) / 2)


def denormalise(name: str, value: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalise`."""
    low, high = scenes.FACTOR_RANGES[name]
    return value * ((high - low) / 2) + (low + high) / 2


class FactorReader(nn.Module):
    """``[N, 3, 64, 64]`` in [-1, 1] → ``[N, 16]`` outputs (:data:`OUTPUTS`); four strided convs, two linears."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        channels = (3, width, 2 * width, 4 * width, 4 * width)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels[-1] * 16, FEATURES), nn.LeakyReLU(0.2))
        self.head = nn.Linear(FEATURES, len(OUTPUTS))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``[N, 256]`` (the Fréchet-distance space)."""
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images))

    @torch.no_grad()
    def read(self, images: torch.Tensor, *, batch_size: int = 256) -> dict[str, torch.Tensor]:
        """Read the factors of ``images`` ``[N, 3, 64, 64]`` in [-1, 1] in the renderer's units.

        Returns ``{name: [N]}`` for ``x``, ``y``, ``scale``, ``hue`` (turns in [0, 1)), ``background``,
        ``rotation`` (radians in [0, 2π/k) for the read shape's symmetry k; NaN when it reads a disc),
        ``shape`` (int64 index into :data:`latentdirs.scenes.SHAPES`), and ``shape_probability``
        ``[N, 4]``. All on the CPU, float32.
        """
        check_images(images)
        device = next(self.parameters()).device
        outputs = torch.cat([self(chunk.to(device, torch.float32)).float().cpu()
                             for chunk in images.detach().split(batch_size)])
        return decode(outputs)


def decode(outputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Turn raw reader outputs ``[N, 16]`` into factor values (see :meth:`FactorReader.read`)."""
    read = {name: denormalise(name, outputs[:, OUTPUTS.index(name)]) for name in ("x", "y", "scale", "background")}
    hue = torch.atan2(outputs[:, OUTPUTS.index("hue_sin")], outputs[:, OUTPUTS.index("hue_cos")])
    read["hue"] = (hue / (2 * math.pi)).remainder(1.0)
    probability = outputs[:, REGRESSION:].softmax(dim=1)
    shape = probability.argmax(dim=1)
    rotation = torch.full_like(hue, float("nan"))
    for index, (cos_row, sin_row) in ROTATION_HEADS.items():
        k = scenes.SYMMETRY[index]
        angle = torch.atan2(outputs[:, sin_row], outputs[:, cos_row]).remainder(2 * math.pi) / k
        rotation = torch.where(shape == index, angle, rotation)
    read["rotation"] = rotation
    read["shape"] = shape
    read["shape_probability"] = probability
    return read


def check_images(images: torch.Tensor) -> None:
    """Refuse anything but a float tensor ``[N, 3, 64, 64]``."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != (3, 64, 64) \
            or not images.is_floating_point():
        shown = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise invalid("images", shown, "a float tensor [N, 3, 64, 64] in [-1, 1]")


def load_factor_reader(path: str | Path | None = None, *, device: str | torch.device = "cpu") -> FactorReader:
    """The trained reader from ``path`` (default: the shipped ``checkpoints/shapes-factor-reader.safetensors``).

    Safetensors only (no code runs on load); the stored float16 weights are cast to float32. A file
    whose tensor names or shapes differ raises :class:`~latentdirs.errors.WeightsMismatchError`.
    """
    from safetensors.torch import load_file

    from latentdirs.catalogue import checkpoints_dir
    from latentdirs.devices import resolve_device

    path = Path(path) if path is not None else checkpoints_dir() / WEIGHTS_FILE
    if not path.is_file():
        raise invalid("path", str(path), "an existing .safetensors file of the factor reader",
                      "pass the file written by training/train_factor_reader.py", cls=MissingWeightsError)
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    reader = FactorReader()
    try:
        reader.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise WeightsMismatchError(f"path: {str(path)!r} is not a factor reader ({str(error).splitlines()[0]}); "
                                   "use shapes-factor-reader.safetensors") from None
    return reader.eval().requires_grad_(False).to(resolve_device(device))


class SceneFactorReader:
    """What a ``shapes-*`` adapter's :meth:`~latentdirs.generators.base.GeneratorAdapter.read_factors`
    calls: ``images [N, 3, R, R]`` in [-1, 1] → :meth:`FactorReader.read`'s dict, for any square ``R``.

    The reader loads on first call (an adapter that is never asked pays nothing). Images that are not
    64 px are resized to 64 px first (bilinear, antialiased), so a 32 px generator of the same scenes is
    read in the same units — positions and scale are fractions of the width, whatever the resolution.
    """

    def __init__(self, *, device: str | torch.device = "cpu", path: str | Path | None = None) -> None:
        self.device = device
        self.path = path
        self._reader: FactorReader | None = None

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3 \
                or images.shape[2] != images.shape[3] or not images.is_floating_point():
            shown = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise invalid("images", shown, "a float tensor [N, 3, R, R] in [-1, 1]")
        if self._reader is None:
            self._reader = load_factor_reader(self.path, device=self.device)
        if images.shape[-1] != scenes.RESOLUTION:
            images = torch.nn.functional.interpolate(images.detach().float(), size=scenes.RESOLUTION,
                                                     mode="bilinear", align_corners=False, antialias=True)
        return self._reader.read(images)


def scene_factor_reader(device: str | torch.device = "cpu") -> SceneFactorReader:
    """The shipped factor reader as an adapter's ``read_factors``: keep one per adapter and call it.

    Usage in an adapter of renderer scenes (``shapes-dcgan``, ``shapes-stylegan2``)::

        def read_factors(self, images):
            return self._scene_factors(images)   # self._scene_factors = scene_factor_reader(self.device)
    """
    return SceneFactorReader(device=device)
