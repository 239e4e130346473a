"""Measure an edit's shift or zoom by the barycentre and spread of a saliency map — no downloaded model.

Plumerault et al. measured their calibrated edits by "a saliency model's barycentre and area"; no
saliency weights can be fetched here, so the map is a weight-free one: the *contrast saliency* of a
pixel is the squared distance of its colour to the image's median colour (per channel). On one object
over a plain or nearly plain background (the testbed's scenes, product shots) that map is the object:
its barycentre is the object's centre and its radius of gyration grows with the object's size, whatever
colour the object has. Squaring keeps faint background texture and generator noise from pulling the
barycentre towards the image centre.

Unlike registration (:mod:`latentdirs.measure`), which asks which shift of the whole source best matches
the edit, the barycentre follows the object when the edit also changes its colour or outline; it is
wrong where the background is busy or the image holds several objects (the median colour is then not
the background), so it is a choice, not the default.

Known answer (tests): on renderer scenes at 64 px the barycentre is the true centre to 0.01 px on average
(under 0.1 px for every scene) and a scale ×1.2 reads as a zoom of 0.204.
"""

from __future__ import annotations

import torch

from latentdirs.errors import invalid

#: the transforms the saliency map measures
SALIENCY_TRANSFORMS = ("shift-x", "shift-y", "zoom")
#: for the correction, a shifted image that kept less than this fraction of its source's saliency mass has
#: no shift reading (measured on shapes-stylegan2: 0.5 helped ``--correct-amounts saliency`` most, 0.7 less)
FADED = 0.5


def contrast_saliency(images: torch.Tensor) -> torch.Tensor:
    """``[N, H, W]`` ≥ 0: the squared distance of each pixel's colour to its image's median colour.

    ``images``: ``[N, C, H, W]``, any range (the generators' [-1, 1])."""
    median = images.flatten(2).median(dim=2).values[:, :, None, None]
    return ((images - median) ** 2).sum(1)


def saliency_moments(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Barycentre ``x``, ``y`` (fractions of the width / height from the image centre, y down), radius of
    gyration (fraction of the width) and mass (the map's sum) of each image's contrast saliency: four ``[N]``
    tensors.

    An image with no contrast at all (a flat colour) has no barycentre: NaN in all four."""
    weights = contrast_saliency(images.float())
    n, height, width = weights.shape
    xs = (torch.arange(width, dtype=weights.dtype, device=weights.device) + 0.5) / width - 0.5
    ys = (torch.arange(height, dtype=weights.dtype, device=weights.device) + 0.5) / height - 0.5
    mass = weights.flatten(1).sum(1)
    mass = torch.where(mass > 0, mass, torch.full_like(mass, float("nan")))
    x = (weights.sum(1) * xs).sum(1) / mass
    y = (weights.sum(2) * ys).sum(1) / mass
    # second moment about the barycentre, y measured in widths so that a zoom spreads both axes alike
    dx = xs[None, None, :] - x[:, None, None]
    dy = (ys[None, :, None] - y[:, None, None]) * (height / width)
    spread = (weights * (dx ** 2 + dy ** 2)).flatten(1).sum(1) / mass
    return x, y, spread.sqrt(), mass


def saliency_amounts(sources: torch.Tensor, edited: torch.Tensor, transform: str, *,
                     faded: float = 0.0) -> torch.Tensor:
    """Achieved amounts ``[N]`` between ``sources`` and ``edited`` ``[N, C, H, W]``, in the transform's units:
    the barycentre's move (shift-x: fraction of the width, positive right; shift-y: of the height, positive
    down) or the radius of gyration's ratio − 1 (zoom). NaN for an image without contrast, and, given
    ``faded`` > 0 (the correction passes :data:`FADED`), for a shift whose edit kept less than ``faded`` of
    its source's saliency mass: a moved object keeps its contrast, so such an edit faded the object or pushed
    it out of the frame, and its barycentre says nothing of where the object went. A measurement (``measure
    --by saliency``) reads every edit (``faded`` = 0), so a faded object's error is counted, not dropped."""
    if transform not in SALIENCY_TRANSFORMS:
        raise invalid("transform", transform, f"{', '.join(SALIENCY_TRANSFORMS)} (the transforms the saliency "
                      "barycentre measures)", "Measure it by registration")
    if sources.shape != edited.shape or sources.dim() != 4:
        raise invalid("images", f"{tuple(sources.shape)} and {tuple(edited.shape)}", "two [N, C, H, W] batches")
    before, after = saliency_moments(sources), saliency_moments(edited)
    if transform == "zoom":
        return after[2] / before[2] - 1
    axis = 0 if transform == "shift-x" else 1
    moved = after[axis] - before[axis]
    return torch.where(after[3] < faded * before[3], torch.full_like(moved, float("nan")), moved)


__all__ = ["FADED", "SALIENCY_TRANSFORMS", "contrast_saliency", "saliency_amounts", "saliency_moments"]
