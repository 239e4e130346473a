"""``stylegan2:PATH``: StyleGAN2 networks from the files users have, without their repositories.

Loads NVlabs network pickles (stylegan2-ada-pytorch, stylegan3 repository's StyleGAN2), old TensorFlow
pickles and rosinality checkpoints (see :mod:`.loaders`) into this project's own implementation
(:mod:`.network`). No code from a file is ever run (:mod:`.unpickle`).

Spaces: ``z`` (default), ``w`` (``[N, w_dim]``) and ``w+`` (``[N, num_ws, w_dim]``). Truncation ψ (and
``truncation_cutoff``) is applied in the mapping z → w, towards ``w_avg``; z itself is never scaled.
SeFa factorises the modulation affines: projection layer ``i`` is the affine of the layer that consumes
W+ slot ``i`` (convolutions in order; the last slot's only consumer is the final ToRGB), so
``--layers 0-3`` edits exactly W+ slots 0-3.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from latentdirs.errors import WeightsMismatchError, invalid
from latentdirs.generators.base import GeneratorAdapter
from latentdirs.generators.stylegan_spaces import StyleSpaces, as_rgb, check_family_options
from latentdirs.generators.stylegan2.loaders import read_checkpoint
from latentdirs.generators.stylegan2.network import (NOISE_MODES, StyleGAN2Config, StyleGAN2Generator,
                                                   parameter_count)
from latentdirs.weights import build_with_state


class StyleGAN2Adapter(StyleSpaces, GeneratorAdapter):
    """Adapter over :class:`~.network.StyleGAN2Generator`."""

    family = "stylegan2"

    def sefa_space(self, layers: Sequence[int] | None) -> str:
        """SeFa factorises the modulation affines, which read W+ slots: its directions live in ``w+``."""
        return "w+"

    def __init__(self, config: StyleGAN2Config, state: dict[str, torch.Tensor], *, spec: str, source_format: str,
                 noise_mode: str = "const", truncation_cutoff: int | None = None,
                 device: str | torch.device = "auto") -> None:
        if noise_mode not in NOISE_MODES:
            raise invalid("noise_mode", noise_mode, ", ".join(NOISE_MODES))
        spaces = check_family_options(config, spec, truncation_cutoff)
        _check_implied_size(config, state, spec)
        # built on the meta device and given the file's tensors themselves: one copy of the weights
        network = build_with_state(lambda: StyleGAN2Generator(config), state, param="generator", source=spec,
                                   what="the StyleGAN2 generator its tensor shapes describe",
                                   fix="The file is damaged or was edited; use the original network file")
        self.config = config
        self.source_format = source_format
        self.noise_mode = noise_mode
        self.truncation_cutoff = truncation_cutoff
        super().__init__(spec=spec, network=network, spaces=spaces, resolution=config.img_resolution,
                         class_names=[str(i) for i in range(config.c_dim)], device=device)
        if torch.isnan(self.network.mapping.w_avg).any():
            self._estimate_w_avg()

    def _estimate_w_avg(self, samples: int = 10_000) -> None:
        warnings.warn(f"{self.spec}: the checkpoint has no average w (latent_avg); estimating it from "
                      f"{samples} samples for truncation", stacklevel=3)
        z = torch.randn(samples, self.z_dim, generator=torch.Generator().manual_seed(0)).to(self.device)
        classes = self.class_tensor(torch.zeros(samples, dtype=torch.long) if self.conditional else None, samples)
        with torch.no_grad():
            self.network.mapping.w_avg.copy_(self._map(z, classes, 1.0)[:, 0].mean(dim=0))

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        described.update(source_format=self.source_format, noise_mode=self.noise_mode,
                         truncation_cutoff=self.truncation_cutoff, architecture=self.config.architecture,
                         conv_clamp=self.config.conv_clamp)
        return described

    # ------------------------------------------------------------------ spaces
    def _synthesize(self, latents: torch.Tensor, space: str, classes: torch.Tensor | None,
                    truncation: float | None) -> torch.Tensor:
        ws = self._ws(latents, space, classes, truncation)
        return as_rgb(self.network.synthesis(ws, noise_mode=self.noise_mode))

    # ------------------------------------------------------------------ inversion support
    def noise_resolutions(self) -> list[int]:
        """Side ``R`` of each synthesis conv's noise map, in order; ``[]`` for nets without noise inputs."""
        if not self.config.use_noise:
            return []
        return [layer.resolution for layer in self.network.synthesis.conv_layers()]

    def synthesize_with_noise(self, latents: torch.Tensor, *, space: str, noise: Sequence[torch.Tensor]) -> torch.Tensor:
        """Render ``w [N, D]`` or ``w+ [N, L, D]`` with explicit noise maps ``[N, 1, R, R]`` (one per
        :meth:`noise_resolutions` entry) instead of the noise mode's; differentiable in both (inversion)."""
        if space not in ("w", "w+"):
            raise invalid("space", space, "w or w+ (explicit noise maps render synthesis-space latents)")
        ws = latents.unsqueeze(1).repeat(1, self.config.num_ws, 1) if space == "w" else latents
        images = self.network.synthesis(ws.to(self.device, torch.float32), noise_mode=self.noise_mode,
                                        noise=list(noise))
        return as_rgb(images)

    # ------------------------------------------------------------------ SeFa
    @property
    def projection_layers(self) -> tuple[str, ...]:
        names = {id(module): name for name, module in self.network.synthesis.named_modules()}
        return tuple(names[id(layer)] for layer in self.network.synthesis.style_layers())

    def projection_weights(self, layers: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Modulation affines ``[w_dim, C_in]`` of the chosen W+ slots (default: all)."""
        chosen = self.check_layers(layers) or list(range(self.config.num_ws))
        style_layers = self.network.synthesis.style_layers()
        return [style_layers[i].affine.weight.detach().T.float().cpu().contiguous() for i in chosen]


def _check_implied_size(config: StyleGAN2Config, state: dict[str, Any], spec: str) -> None:
    """Refuse shapes that describe a network much larger than the weights stored: conv1 ``[C, 1, 3, 3]``
    costs 36·C bytes in a file and implies ``[C, C, 3, 3]`` (C = 50 000: 90 GB) once the network is built."""
    implied = parameter_count(config)
    stored = sum(value.numel() for value in state.values() if isinstance(value, torch.Tensor))
    if implied > 2 * stored:
        raise invalid("generator", f"{spec}: tensor shapes describing a network of {implied} values, with "
                      f"{stored} stored", "a file holding every weight of the network its shapes describe",
                      "The file is damaged or crafted; nothing was allocated for the network",
                      cls=WeightsMismatchError)


def load_stylegan2(argument: str | None, *, device: str | torch.device = "auto", noise_mode: str = "const",
                   truncation_cutoff: int | None = None) -> StyleGAN2Adapter:
    """``stylegan2:PATH`` — an NVlabs or TensorFlow network pickle, or a rosinality checkpoint."""
    config, state, source_format = read_checkpoint(Path(str(argument)))
    return StyleGAN2Adapter(config, state, spec=f"stylegan2:{argument}", source_format=source_format,
                            noise_mode=noise_mode, truncation_cutoff=truncation_cutoff, device=device)
