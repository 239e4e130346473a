"""A small generator for ``module:`` specs in tests: a linear map into a 3×8×8 image, then tanh.

Importable as ``module:tests.linear_generator:make``; weights are fixed by a seed so the fingerprint is
stable across imports.
"""

from __future__ import annotations

import torch
from torch import nn


class LinearImageGenerator(nn.Module):
    latent_dim = 6

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(5)
        self.fc = nn.Linear(self.latent_dim, 3 * 8 * 8)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(3 * 8 * 8, self.latent_dim, generator=generator) * 0.3)
            self.fc.bias.zero_()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(z)).view(-1, 3, 8, 8)


def make() -> LinearImageGenerator:
    return LinearImageGenerator()


def not_a_module() -> str:
    return "nope"
