"""``shapes-stylegan2``: a StyleGAN2 trained in this project on the scene renderer of :mod:`latentdirs.scenes`.

The network is this project's own StyleGAN2 (:mod:`latentdirs.generators.stylegan2.network`), small
(z = w in R^64, 2 mapping layers, 32 px: the renderer's 64 px scenes area-downsampled), trained by
``training/train_stylegan2.py`` (recipe there and in the catalogue) and shipped as
``checkpoints/shapes-stylegan2.safetensors``: a float16 safetensors state dict with NVlabs parameter
names. It loads through exactly the code path of ``stylegan2:FILE``
(:func:`~latentdirs.generators.stylegan2.loaders.read_checkpoint`, then
:class:`~latentdirs.generators.stylegan2.StyleGAN2Adapter`), after a sha256 check against the
catalogue, so both specs give the same network and fingerprint; this adapter clamps its images to
[-1, 1] (the raw StyleGAN2 output overshoots; ``stylegan2:FILE`` renders it unclamped). What a latent direction does to its
images can be *measured* with :meth:`ShapesStyleGAN2Adapter.read_factors` (the factor reader;
the 32 px images are resized to the reader's 64 px). Its factor directions are unknown:
:attr:`~latentdirs.generators.base.GeneratorAdapter.true_directions` stays ``None``.
"""

from __future__ import annotations

import torch

from latentdirs.catalogue import shipped_weights
from latentdirs.errors import invalid
from latentdirs.generators.stylegan2 import StyleGAN2Adapter
from latentdirs.generators.stylegan2.loaders import read_checkpoint

WEIGHTS_FILE = "shapes-stylegan2.safetensors"
NAME = "shapes-stylegan2"


class ShapesStyleGAN2Adapter(StyleGAN2Adapter):
    """A :class:`~latentdirs.generators.stylegan2.StyleGAN2Adapter` that can also read its images' scene factors."""

    #: the factors :meth:`read_factors` returns (see :mod:`latentdirs.scenes` for units and ranges)
    factor_names = ("x", "y", "scale", "rotation", "hue", "background", "shape")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        from latentdirs.factor_reader import scene_factor_reader

        self._scene_factors = scene_factor_reader(self.device)  # loads the reader on first use

    # StyleGAN2's skip output is linear and overshoots the data's [-1, 1] (this one: ~10 % of pixels past
    # ±1.05, up to ±5, mostly on black backgrounds); NVlabs clamp when they save images, this adapter
    # clamps every rendering, so its images are in range for the contract, the factor reader and losses.
    # ``stylegan2:FILE`` of the same file renders the raw output (equal to this one inside [-1, 1]).
    def _synthesize(self, latents: torch.Tensor, space: str, classes: torch.Tensor | None,
                    truncation: float | None) -> torch.Tensor:
        return super()._synthesize(latents, space, classes, truncation).clamp(-1, 1)

    def synthesize_with_noise(self, latents: torch.Tensor, *, space: str, noise) -> torch.Tensor:
        """As :meth:`StyleGAN2Adapter.synthesize_with_noise`, clamped to [-1, 1] like every rendering here."""
        return super().synthesize_with_noise(latents, space=space, noise=noise).clamp(-1, 1)

    def read_factors(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scene factors of ``images`` ``[N, 3, 32, 32]`` (any square size) in [-1, 1], read by the factor
        reader after resizing to 64 px: ``{name: [N]}`` on the CPU in the renderer's units (``shape``
        int64, ``rotation`` NaN where a disc is read, plus ``shape_probability`` ``[N, 4]``)."""
        return self._scene_factors(images)


def load_shapes_stylegan2(argument: str | None = None, *, device: str | torch.device = "auto",
                          noise_mode: str = "const", truncation_cutoff: int | None = None) -> ShapesStyleGAN2Adapter:
    """``shapes-stylegan2``: the shipped weights, checked against the catalogue's sha256 when it lists them."""
    if argument is not None:
        raise invalid("generator", f"{NAME}:{argument}", f"'{NAME}' without ':…'",
                      "use 'stylegan2:PATH' for another StyleGAN2 file")
    path = shipped_weights(NAME, WEIGHTS_FILE, retrain="training/train_stylegan2.py")
    config, state, source_format = read_checkpoint(path)
    return ShapesStyleGAN2Adapter(config, state, spec=NAME, source_format=source_format, noise_mode=noise_mode,
                                  truncation_cutoff=truncation_cutoff, device=device)
