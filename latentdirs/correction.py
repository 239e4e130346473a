"""Per-image correction of calibrated steps: measure each edit, and step again until it achieves the request.

A calibration (Plumerault's g, :mod:`latentdirs.calibration`) gives every latent the step along the
direction that achieves the requested amount *on average*. On a learned generator the same step moves
one image's object 25–45 % more or less than the next (docs/testbed.md, "Why one g cannot do better"),
so a global g misses a large request by that fraction of it. With correction on, each edit is
rendered, its achieved amount measured by registration against the unedited image
(:func:`latentdirs.measure.measure_amounts`, the measurement the calibration itself was fitted to),
and its step rescaled by request / achieved — a secant through the origin, since a zero step achieves
nothing — for :data:`ROUNDS` rounds; the step whose edit came closest is kept.

This is not Plumerault's method: it costs ``ROUNDS`` more renders and registrations per image, and it
trusts registration on every image, so it is as good as registration is on the generator's images.
It is deterministic (rendering and registration are), so sharded runs stay byte-identical.
"""

from __future__ import annotations

from typing import Callable

import torch

#: correction rounds after the calibrated step (each: one render and one registration per image)
ROUNDS = 3
#: a corrected step stays within this factor of the calibrated one (same sign): a registration that locked
#: onto something else must not send the edit far off the calibrated range
MAX_FACTOR = 3.0
#: registration grid points over the search span (the calibration's recalibration uses 31; finer here,
#: since these readings set the final step)
GRID = 121


def corrected_steps(render: Callable[[torch.Tensor], torch.Tensor], steps: torch.Tensor, requested: torch.Tensor,
                    fixed: torch.Tensor, transform: str, span: float) -> torch.Tensor:
    """Steps ``[B]`` along the direction whose edits achieve ``requested [B]`` (the transform's units), by
    registration, starting from the calibrated ``steps [B]``.

    ``render(steps [B]) -> images [B, 3, H, W]`` renders every row moved by its step (step 0: the unedited
    image). Rows where ``fixed [B]`` (bool) is set (requests clamped to the calibrated range) and zero
    requests keep their calibrated step. ``span``: registration searches amounts in ±span.
    """
    from latentdirs.measure import measure_amounts

    steps = steps.detach().float().cpu()
    requested = requested.detach().float().cpu()
    active = ~fixed.cpu() & (requested != 0) & (steps != 0)
    if not bool(active.any()):
        return steps
    sources = render(torch.zeros_like(steps))
    best, best_error = steps.clone(), torch.full_like(steps, float("inf"))
    current = steps.clone()
    for _ in range(ROUNDS + 1):
        achieved = measure_amounts(sources, render(current), transform, low=-span, high=span, steps=GRID).float().cpu()
        error = (achieved - requested).abs()
        better = active & (error < best_error)
        best[better], best_error[better] = current[better], error[better]
        # rescale by request / achieved where the edit moved the right way; otherwise push a little further
        right_way = achieved * requested > 0
        ratio = torch.where(right_way, requested / torch.where(right_way, achieved, torch.ones_like(achieved)),
                            torch.full_like(achieved, 1.5))
        proposed = current * ratio
        low, high = torch.minimum(steps / MAX_FACTOR, steps * MAX_FACTOR), torch.maximum(steps / MAX_FACTOR,
                                                                                         steps * MAX_FACTOR)
        current = torch.where(active, torch.clamp(proposed, low, high), current)
    return torch.where(active, best, steps)


__all__ = ["GRID", "MAX_FACTOR", "ROUNDS", "corrected_steps"]
