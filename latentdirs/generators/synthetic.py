"""``synthetic``: a procedural, differentiable generator whose factor directions are known exactly.

A soft-edged disc on a shaded background, 64 px. The latent ``z ∈ R^16`` passes through one linear
layer whose units form *population codes*: factor ``f`` owns ``m_f`` units, all with weight vector
``a_f`` (rows of a fixed random orthonormal matrix). The renderer reads each factor's value as the
mean of its units, ``s_f = a_f · z``, and maps it smoothly to an image property. Hence

* the true direction of factor ``f`` is ``a_f`` (see :attr:`SyntheticAdapter.true_directions`);
* SeFa's matrix (unit-normalised columns) is ``Σ_f m_f a_f a_fᵀ`` with eigenvalues ``m_f`` — distinct,
  so SeFa must recover each ``a_f`` exactly, in the order of :data:`FACTORS`;
* the 16 − 5 remaining latent dimensions are inert: they change nothing in the image.

Factor mappings (``s`` is standard normal under the prior):

======== ============================================ ==============================
factor   image property                               per unit of ``s``, near s = 0
======== ============================================ ==============================
x        disc centre, fraction of width: 0.5 + 0.3·tanh(s/2)   0.15 width (9.6 px)
y        disc centre, fraction of height (down), same map      0.15 height
size     radius, fraction of width: 0.16·exp(0.25·tanh(s))     ×1.28
hue      hue turn: 0.35 + 0.3·tanh(s/2)                        0.15 turn
value    brightness of the disc: 0.65 + 0.3·tanh(s/2)          0.15
======== ============================================ ==============================
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from latentdirs.generators.base import GeneratorAdapter, LatentSpace

#: (factor name, number of population-code units = its SeFa eigenvalue)
FACTORS: tuple[tuple[str, int], ...] = (("x", 10), ("y", 8), ("size", 6), ("hue", 4), ("value", 2))
LATENT_DIM = 16
RESOLUTION = 64
_BASIS_SEED = 20260101  # fixes the orthonormal factor basis: part of the generator's identity


def _orthonormal_rows(rows: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(dim, rows, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))  # unique QR: deterministic across LAPACK builds
    return q.T.float().contiguous()


class SyntheticRenderer(nn.Module):
    """The network: ``code = Linear(z)`` (population code), then an analytic, differentiable renderer."""

    def __init__(self, latent_dim: int = LATENT_DIM, resolution: int = RESOLUTION) -> None:
        super().__init__()
        basis = _orthonormal_rows(len(FACTORS), latent_dim, _BASIS_SEED)
        units = [count for _, count in FACTORS]
        self.code = nn.Linear(latent_dim, sum(units), bias=False)
        with torch.no_grad():
            self.code.weight.copy_(torch.repeat_interleave(basis, torch.tensor(units), dim=0))
        # mean-pooling matrix: code units → factor values
        pool = torch.zeros(len(FACTORS), sum(units))
        start = 0
        for f, count in enumerate(units):
            pool[f, start:start + count] = 1.0 / count
            start += count
        self.register_buffer("pool", pool)
        coords = (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution
        self.register_buffer("grid_y", coords.view(1, resolution, 1).expand(1, resolution, resolution).clone())
        self.register_buffer("grid_x", coords.view(1, 1, resolution).expand(1, resolution, resolution).clone())
        self.resolution = resolution

    def factor_values(self, z: torch.Tensor) -> torch.Tensor:
        """``[N, 5]`` scores ``s_f = a_f · z`` (the latent coordinates along the true directions)."""
        return self.code(z) @ self.pool.T

    def factor_properties(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """The rendered properties, each ``[N]``: x, y (fractions), radius (fraction), hue (turns), value."""
        s = self.factor_values(z)
        return {
            "x": 0.5 + 0.3 * torch.tanh(s[:, 0] / 2),
            "y": 0.5 + 0.3 * torch.tanh(s[:, 1] / 2),
            "size": 0.16 * torch.exp(0.25 * torch.tanh(s[:, 2])),
            "hue": 0.35 + 0.3 * torch.tanh(s[:, 3] / 2),
            "value": 0.65 + 0.3 * torch.tanh(s[:, 4] / 2),
        }

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        p = self.factor_properties(z)
        x, y, radius = p["x"].view(-1, 1, 1), p["y"].view(-1, 1, 1), p["size"].view(-1, 1, 1)
        distance = torch.sqrt((self.grid_x - x) ** 2 + (self.grid_y - y) ** 2 + 1e-12)
        softness = 1.5 / self.resolution  # edge width ≈ 1.5 px: smooth gradients, crisp look
        mask = torch.sigmoid((radius - distance) / softness).unsqueeze(1)
        colour = _hsv_to_rgb(p["hue"], torch.full_like(p["hue"], 0.8), p["value"]).view(-1, 3, 1, 1)
        background = (0.25 + 0.2 * self.grid_y).unsqueeze(1).expand(-1, 3, -1, -1)
        image = background * (1 - mask) + colour * mask
        return image * 2 - 1


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Differentiable HSV → RGB for ``[N]`` tensors in [0, 1]; returns ``[N, 3]``."""
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(n + h * 6, 6.0)
        channels.append(v - v * s * torch.clamp(torch.minimum(k, 4 - k), 0, 1))
    return torch.stack(channels, dim=1)


class SyntheticAdapter(GeneratorAdapter):
    """Adapter over :class:`SyntheticRenderer`; exposes :attr:`true_directions` and :attr:`factor_names`."""

    family = "synthetic"

    def __init__(self, *, device: str | torch.device = "auto") -> None:
        renderer = SyntheticRenderer()
        super().__init__(spec="synthetic", network=renderer, spaces=[LatentSpace("z", LATENT_DIM)],
                         resolution=RESOLUTION, device=device)

    @property
    def factor_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in FACTORS)

    @property
    def true_directions(self) -> dict[str, torch.Tensor]:
        """Factor name → unit direction ``[16]`` (CPU float32) along which only that factor changes
        (the base hook :attr:`GeneratorAdapter.true_directions`, which the evaluation scores against)."""
        weight = self.network.code.weight.detach().cpu()
        rows, start = {}, 0
        for name, count in FACTORS:
            rows[name] = weight[start] / weight[start].norm()
            start += count
        return rows

    def factor_properties(self, latents: torch.Tensor) -> dict[str, torch.Tensor]:
        """Ground-truth rendered properties of latents ``[N, 16]`` (see the module table)."""
        return self.network.factor_properties(latents.to(self.device, torch.float32))

    def _synthesize(self, latents: torch.Tensor, space: str, classes: torch.Tensor | None,
                    truncation: float | None) -> torch.Tensor:
        return self.network(latents)

    def projection_weights(self, layers: Sequence[int] | None = None) -> list[torch.Tensor]:
        """The population-code layer, transposed: ``[16, 30]``."""
        self.check_layers(layers)
        return [self.network.code.weight.detach().T.float().cpu()]


def load_synthetic(argument: str | None = None, *, device: str | torch.device = "auto") -> SyntheticAdapter:
    """``synthetic``: the built-in known-answer generator."""
    return SyntheticAdapter(device=device)


__all__ = ["FACTORS", "LATENT_DIM", "SyntheticAdapter", "load_synthetic"]
