"""The latent spaces StyleGAN2 and StyleGAN3 share: z → w (the mapping network, ψ towards ``w_avg``) → w+.

Both adapters mix :class:`StyleSpaces` in before :class:`~latentdirs.generators.base.GeneratorAdapter`;
they hold ``self.network.mapping`` (NVlabs' MappingNetwork computation), ``self.config.num_ws`` and
``self.truncation_cutoff``, and render W+ with their own synthesis network.
"""

from __future__ import annotations

from typing import Any

import torch

from latentdirs.errors import NotSupportedError, invalid
from latentdirs.generators.base import LatentSpace


class StyleSpaces:
    """Spaces ``z`` ``[N, z_dim]``, ``w`` ``[N, w_dim]`` and ``w+`` ``[N, num_ws, w_dim]`` of a StyleGAN."""

    def _sample_z(self, n: int, generator: torch.Generator | None, truncation: float | None) -> torch.Tensor:
        return torch.randn(n, self.z_dim, generator=generator)  # ψ is applied in the mapping, not to z

    def _map(self, z: torch.Tensor, classes: torch.Tensor | None, psi: float) -> torch.Tensor:
        """z ``[N, z_dim]`` → w+ ``[N, num_ws, w_dim]`` with ψ (and the cutoff) towards ``w_avg``."""
        one_hot = None
        if self.conditional:
            one_hot = torch.nn.functional.one_hot(classes, self.num_classes).to(z.dtype)
        return self.network.mapping(z, one_hot, psi, self.truncation_cutoff)

    def to_space(self, latents: torch.Tensor, src: str, dst: str, *, truncation: float | None = None,
                 classes: Any = None) -> torch.Tensor:
        """z → w (ψ and cutoff applied; ``w`` is slot 0 then) → w+ (rows repeated)."""
        self.space(src), self.space(dst)
        if src == dst:
            return latents
        if src == "w" and dst == "w+":
            return latents.unsqueeze(1).repeat(1, self.config.num_ws, 1)
        if src == "z":
            ids = self.class_tensor(classes, latents.shape[0])
            ws = self._map(latents.to(self.device), ids, self.check_truncation(truncation) or 1.0)
            return ws if dst == "w+" else ws[:, 0]
        return super().to_space(latents, src, dst, truncation=truncation, classes=classes)

    def _ws(self, latents: torch.Tensor, space: str, classes: torch.Tensor | None,
            truncation: float | None) -> torch.Tensor:
        """Validated latents of ``space`` → the W+ ``[N, num_ws, w_dim]`` the synthesis network reads."""
        if space == "z":
            return self._map(latents, classes, truncation or 1.0)
        if space == "w":
            return latents.unsqueeze(1).repeat(1, self.config.num_ws, 1)
        return latents


def check_family_options(config: Any, spec: str, truncation_cutoff: Any) -> list[LatentSpace]:
    """Refuse what neither StyleGAN adapter renders (other than 1 or 3 channels) and a bad
    ``truncation_cutoff``; returns the spaces z, w, w+ of ``config`` (``z_dim``, ``w_dim``, ``num_ws``,
    ``img_channels``)."""
    if config.img_channels not in (1, 3):
        raise NotSupportedError(f"generator: {spec} renders {config.img_channels}-channel images; "
                                "supported: RGB (3) and grayscale (1, shown as RGB)")
    if truncation_cutoff is not None and not (isinstance(truncation_cutoff, int) and not isinstance(
            truncation_cutoff, bool) and 0 <= truncation_cutoff <= config.num_ws):
        raise invalid("truncation_cutoff", truncation_cutoff,
                      f"None (truncate every w) or an integer 0-{config.num_ws}: how many leading W+ rows ψ shrinks")
    return [LatentSpace("z", config.z_dim), LatentSpace("w", config.w_dim),
            LatentSpace("w+", config.w_dim, config.num_ws)]


def as_rgb(images: torch.Tensor) -> torch.Tensor:
    """``[N, 1 | 3, H, W]`` → ``[N, 3, H, W]``: grayscale nets are shown with the channel repeated."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
