"""Effect profile of each direction and, on ``synthetic``, the ground truth.

Effect profile (on blurred images, σ = 1 px per 64 px): for a few seeds and strengths ±a, ±a/2:

* ``change`` — RMS image change per unit of strength;
* ``linearity`` — R² of the image change against ``α · J`` (J fitted by least squares): 1 = the
  change grows linearly along the path;
* ``area`` — fraction of the image that carries 90 % of the change energy: small = local, 1 = global.

A direction whose change is float noise (below ``INERT_CHANGE``, e.g. SeFa's directions in the null
space of the first layer) is marked ``inert``; its linearity and area are ``None``, since an R² and an
energy map of rounding errors would only look like numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from latentdirs.evaluation.sharing import share
from latentdirs.generators.base import GeneratorAdapter
from latentdirs.latents import along_layers
from latentdirs.transforms import gaussian_blur

if TYPE_CHECKING:
    from latentdirs.distributed import Ranks

#: RMS change per unit strength (images in [-1, 1]) below which a direction does nothing visible
INERT_CHANGE = 1e-5


def effect_profile(generator: GeneratorAdapter, vectors: torch.Tensor, *, seeds: int = 8, strength: float = 3.0,
                   seed: int = 0, space: str = "z", layers: list[int] | None = None,
                   class_id: int | None = None, ranks: Ranks | None = None) -> list[dict[str, float]]:
    """One ``{"change", "linearity", "area", "inert"}`` per row of ``vectors`` (``[K, D]``).

    Under ``ranks`` (torchrun) the directions are dealt to the ranks (each renders the shared unedited
    batch too, the same batch as in one process) and every rank returns all profiles, in order."""
    alphas = torch.tensor([-strength, -strength / 2, strength / 2, strength])
    latents = generator.sample(seeds, seed=seed + 7919, space=space, classes=class_id)
    sigma = generator.resolution / 64
    with torch.no_grad():
        base = gaussian_blur(generator.synthesize(latents, space=space, classes=class_id), sigma)

        def profile(index: int) -> dict[str, float]:
            vector = vectors[index]
            changes = []
            for alpha in alphas:
                step = along_layers(alpha * vector.to(latents), latents, layers)
                moved = gaussian_blur(generator.synthesize(latents + step, space=space, classes=class_id), sigma)
                changes.append(moved - base)
            d = torch.stack(changes)  # [A, N, C, H, W]
            shape = (-1,) + (1,) * (d.dim() - 1)
            slope = (alphas.view(shape) * d).sum(0) / alphas.square().sum()
            residual = (d - alphas.view(shape) * slope).square().sum()
            total = d.square().sum().clamp_min(1e-12)
            energy = d.square().sum(dim=(0, 2)).flatten(1)  # [N, H*W]
            ordered = energy.sort(dim=1, descending=True).values.cumsum(dim=1)
            needed = (ordered < 0.9 * ordered[:, -1:]).sum(dim=1).float() + 1
            change = float(d.square().mean(dim=(2, 3, 4)).sqrt().mean() / alphas.abs().mean())
            inert = change < INERT_CHANGE
            return {"change": change, "inert": inert,
                    "linearity": None if inert else float(1 - residual / total),
                    "area": None if inert else float((needed / energy.shape[1]).mean())}

        return share(len(vectors), profile, ranks)


def ground_truth(true_directions: dict[str, torch.Tensor], vectors: torch.Tensor) -> list[dict[str, float]]:
    """Per true factor: the best-aligned direction, its |cos|, and how many directions the factor spreads
    over (participation ratio of cos² across the file's directions: 1 = one direction holds it all)."""
    rows = []
    for name, truth in true_directions.items():
        cosines = (vectors @ truth.to(vectors)).abs()
        weights = cosines.square()
        spread = float(weights.sum().square() / weights.square().sum().clamp_min(1e-12))
        best = int(cosines.argmax())
        rows.append({"factor": name, "best_index": best, "abs_cos": float(cosines[best]), "spread": spread})
    return rows
