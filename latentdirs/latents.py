"""Small latent-space helpers shared by editing, the methods and the evaluation.

* the w+ layer mask: which layers of a layered latent ``[N, L, D]`` a direction moves;
* the ball ``‖z‖ ≤ √D`` where a Gaussian prior's mass is, which inversions and regression stay inside.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from latentdirs.errors import OutOfRangeError, invalid


def layer_mask(num_layers: int, layers: Sequence[int] | None, *, like: torch.Tensor,
               param: str = "layers") -> torch.Tensor:
    """``[num_layers, 1]`` of ones on the chosen ``layers`` (all when ``None``), zeros elsewhere.

    Multiplying a per-layer step ``[…, 1, D]`` by it moves only those layers of ``[N, L, D]`` latents.
    Dtype and device are those of ``like``. A layer outside ``0 … num_layers − 1`` (negative ones
    included: they would silently index from the end) is refused with an :class:`OutOfRangeError`.
    """
    mask = torch.zeros(num_layers, 1, dtype=like.dtype, device=like.device)
    if layers is None:
        mask[:] = 1
        return mask
    chosen = list(layers)
    if any(not 0 <= i < num_layers for i in chosen):
        raise invalid(param, chosen, f"0-{num_layers - 1}" if num_layers else "none (no layers)",
                      cls=OutOfRangeError)
    mask[chosen] = 1
    return mask


def along_layers(step: torch.Tensor, latents: torch.Tensor, layers: Sequence[int] | None) -> torch.Tensor:
    """What to add to ``latents`` to move them by ``step`` on the chosen ``layers``.

    ``step`` is ``[N, D]`` (one per latent) or ``[D]`` (the same for all). Flat latents ``[N, D]`` get
    ``step`` unchanged; layered latents ``[N, L, D]`` get ``[N, L, D]`` (or ``[L, D]``, broadcasting)
    that is ``step`` on the chosen layers (all when ``None``) and zero on the others.
    """
    if latents.dim() != 3:
        return step
    return step.unsqueeze(-2) * layer_mask(latents.shape[1], layers, like=latents)


def _ball_scale(z: torch.Tensor) -> torch.Tensor:
    """Per-row factor ``[N, 1]`` ≤ 1 that brings each row of ``z [N, D]`` inside the ball of radius √D."""
    return torch.clamp(math.sqrt(z.shape[1]) / z.norm(dim=1, keepdim=True), max=1.0)


def clamp_to_ball(z: torch.Tensor) -> torch.Tensor:
    """Rows of ``z [N, D]`` with ``‖z‖ > √D`` scaled back onto the sphere of radius √D; returns ``[N, D]``.

    √D is where a standard Gaussian prior's mass lies: latents outside it are far off the training
    distribution. Rows already inside are unchanged.
    """
    return z * _ball_scale(z)


def clamp_to_ball_(z: torch.Tensor) -> torch.Tensor:
    """In-place :func:`clamp_to_ball` of ``z [N, D]`` (for an optimiser's parameter, under ``no_grad``)."""
    return z.mul_(_ball_scale(z))
