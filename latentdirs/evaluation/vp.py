"""Variation predictability (Zhu et al., ECCV 2020): can a small CNN tell which direction changed?

Pairs of images differ along exactly one direction of a set: ``G(x)`` and ``G(x + δ·q_k)`` with ``k``
uniform and ``|δ|`` uniform in [strength/2, strength]. A small CNN learns ``k`` from the difference
image (downsampled to 32 px); VP is its accuracy on held-out pairs. Chance is 1/K; the floor reported
beside it is the same procedure on a random orthonormal basis of the same size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def random_basis(count: int, dim: int, seed: int) -> torch.Tensor:
    """``count`` random orthonormal rows in R^dim (count ≤ dim)."""
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(dim, count, generator=generator))
    return (q * torch.sign(torch.diagonal(r))).T.contiguous()


def _pairs(generator, vectors: torch.Tensor, *, count: int, strength: float, seed: int, space: str,
           layers: list[int] | None, class_id: int | None, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    draws = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, vectors.shape[0], (count,), generator=draws)
    magnitudes = strength * (0.5 + 0.5 * torch.rand(count, generator=draws))
    signs = torch.randint(0, 2, (count,), generator=draws) * 2 - 1
    latents = generator.sample(count, seed=seed, space=space, classes=class_id)
    inputs = []
    with torch.no_grad():
        for start in range(0, count, batch):
            part = slice(start, start + batch)
            base = latents[part]
            step = (signs[part] * magnitudes[part]).unsqueeze(1).to(base) * vectors[labels[part]].to(base)
            if base.dim() == 3:
                mask = torch.zeros(base.shape[1], 1, device=base.device)
                mask[layers if layers is not None else slice(None)] = 1
                step = step.unsqueeze(1) * mask
            difference = (generator.synthesize(base + step, space=space, classes=class_id)
                          - generator.synthesize(base, space=space, classes=class_id))
            inputs.append(F.interpolate(difference, size=32, mode="area").cpu())
    return torch.cat(inputs), labels


class _PairNet(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                                      nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU())
        self.head = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def variation_predictability(generator, vectors: torch.Tensor, *, pairs: int = 2000, epochs: int = 4,
                             strength: float = 3.0, seed: int = 0, space: str = "z", layers: list[int] | None = None,
                             class_id: int | None = None) -> dict[str, float]:
    """VP of ``vectors`` ``[K, D]``: held-out accuracy (20 % of the pairs), plus timing of each part."""
    import time

    started = time.perf_counter()
    inputs, labels = _pairs(generator, vectors, count=pairs, strength=strength, seed=seed, space=space,
                            layers=layers, class_id=class_id)
    rendered = time.perf_counter()
    torch.manual_seed(seed)
    scale = inputs.flatten(1).std(dim=1).mean().clamp_min(1e-6)  # normalise the overall contrast
    inputs = inputs / scale
    held = max(1, pairs // 5)
    train_x, train_y, test_x, test_y = inputs[held:], labels[held:], inputs[:held], labels[:held]
    network = _PairNet(vectors.shape[0])
    optimiser = torch.optim.Adam(network.parameters(), lr=2e-3)
    order_generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(train_y), generator=order_generator)
        for start in range(0, len(order), 64):
            idx = order[start:start + 64]
            loss = F.cross_entropy(network(train_x[idx]), train_y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        accuracy = (network(test_x).argmax(dim=1) == test_y).float().mean().item()
    trained = time.perf_counter()
    return {"accuracy": accuracy, "chance": 1 / vectors.shape[0], "render_seconds": rendered - started,
            "train_seconds": trained - rendered}
