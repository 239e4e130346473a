"""Variation predictability (Zhu et al., ECCV 2020): can a small CNN tell which direction changed?

Pairs of images differ along exactly one direction of a set: ``G(x)`` and ``G(x + δ·q_k)`` with ``k``
uniform and ``|δ|`` uniform in ``strength = (low, high)``. A small CNN learns ``k`` from the difference
image (downsampled to 32 px); VP is its accuracy on held-out pairs. Chance is 1/K; the floor reported
beside it is the same procedure on a random orthonormal basis of the same size.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from latentdirs.errors import invalid
from latentdirs.evaluation.sharing import on_main, share_to_main
from latentdirs.generators.base import GeneratorAdapter
from latentdirs.latents import along_layers

if TYPE_CHECKING:
    from latentdirs.distributed import Ranks

#: VP pairs rendered per batch: the unit the ranks share under torchrun
PAIR_BATCH = 64


def random_basis(count: int, dim: int, seed: int) -> torch.Tensor:
    """``count`` random orthonormal rows in R^dim (count ≤ dim)."""
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(dim, count, generator=generator))
    return (q * torch.sign(torch.diagonal(r))).T.contiguous()


def pair_batches(pairs: int) -> int:
    """How many batches of :data:`PAIR_BATCH` the VP pairs are rendered in (the units ranks share)."""
    return -(-pairs // PAIR_BATCH)


def _pair_differences(generator: GeneratorAdapter, vector_sets: Sequence[torch.Tensor], *, count: int,
                      strength: tuple[float, float], seed: int,
                      space: str, layers: list[int] | None, class_id: int | None, batch: int = PAIR_BATCH,
                      ranks: Ranks | None = None) -> tuple[list[torch.Tensor] | None, torch.Tensor]:
    """Difference images ``[count, 3, 32, 32]`` per set of ``[K, D]`` directions, and the labels ``[count]``.

    Every set gets the same latents, labels and strengths, so the unedited images are rendered once
    and shared (the floor costs one render per pair instead of two). Under ``ranks``, whole batches are
    dealt to the ranks and the images gathered on rank 0 (None on the others)."""
    draws = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, vector_sets[0].shape[0], (count,), generator=draws)
    low, high = strength
    magnitudes = low + (high - low) * torch.rand(count, generator=draws)
    signs = torch.randint(0, 2, (count,), generator=draws) * 2 - 1
    latents = generator.sample(count, seed=seed, space=space, classes=class_id)

    def render(unit: int) -> list[torch.Tensor]:
        part = slice(unit * batch, (unit + 1) * batch)
        base = latents[part]
        unedited = generator.synthesize(base, space=space, classes=class_id)
        out = []
        for vectors in vector_sets:
            step = (signs[part] * magnitudes[part]).unsqueeze(1).to(base) * vectors[labels[part]].to(base)
            edited = generator.synthesize(base + along_layers(step, base, layers), space=space, classes=class_id)
            out.append(F.interpolate(edited - unedited, size=32, mode="area").cpu())
        return out

    with torch.no_grad():
        parts = share_to_main(-(-count // batch), render, ranks)
    if parts is None:
        return None, labels
    return [torch.cat([part[k] for part in parts]) for k in range(len(vector_sets))], labels


class _PairNet(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                                      nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU())
        self.head = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def variation_predictability(generator: GeneratorAdapter, vector_sets: Sequence[torch.Tensor], *, pairs: int = 2000,
                             epochs: int = 4, strength: tuple[float, float] = (1.5, 3.0), seed: int = 0,
                             space: str = "z", layers: list[int] | None = None,
                             class_id: int | None = None, ranks: Ranks | None = None) -> list[dict[str, float]]:
    """VP of each set of directions ``[K, D]`` (all of the same K) on the same pairs' latents and labels.

    Returns per set the held-out accuracy (20 % of the pairs), chance 1/K, and its training seconds;
    ``render_seconds`` (shared rendering) is given to the first set only, so sums stay true.
    Under ``ranks`` (torchrun) the pairs' batches are rendered by the ranks, the classifier is trained on
    rank 0 on the gathered images and every rank returns rank 0's results."""
    if len({vectors.shape[0] for vectors in vector_sets}) != 1:
        raise invalid("vector_sets", [vectors.shape[0] for vectors in vector_sets],
                      "one or more sets with the same count of directions")
    started = time.perf_counter()
    sets, labels = _pair_differences(generator, vector_sets, count=pairs, strength=strength, seed=seed, space=space,
                                     layers=layers, class_id=class_id, ranks=ranks)
    rendered = time.perf_counter() - started

    def train() -> list[dict[str, float]]:
        assert sets is not None  # rank 0 (or one process) holds every pair's images
        results = [{"render_seconds": rendered if i == 0 else 0.0} for i in range(len(sets))]
        for inputs, result in zip(sets, results):
            trained = time.perf_counter()
            result["accuracy"] = _train_and_score(inputs, labels, classes=vector_sets[0].shape[0], epochs=epochs,
                                                  seed=seed)
            result["chance"] = 1 / vector_sets[0].shape[0]
            result["train_seconds"] = time.perf_counter() - trained
        return results

    return on_main(train, ranks)


def _train_and_score(inputs: torch.Tensor, labels: torch.Tensor, *, classes: int, epochs: int, seed: int) -> float:
    """Train a fresh :class:`_PairNet` on 80 % of the pairs; its accuracy on the held-out first 20 %."""
    torch.manual_seed(seed)
    scale = inputs.flatten(1).std(dim=1).mean().clamp_min(1e-6)  # normalise the overall contrast
    inputs = inputs / scale
    held = max(1, len(labels) // 5)
    train_x, train_y, test_x, test_y = inputs[held:], labels[held:], inputs[:held], labels[:held]
    network = _PairNet(classes)
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
        return (network(test_x).argmax(dim=1) == test_y).float().mean().item()
