"""Per-image correction of calibrated steps: measure each edit, and step again until it achieves the request.

A calibration (Plumerault's g, :mod:`latentdirs.calibration`) gives every latent the step along the
direction that achieves the requested amount *on average*. On a learned generator the same step moves
one image's object 25–45 % more or less than the next (docs/testbed.md, "Why one g cannot do better"),
so a global g misses a large request by that fraction of it. With correction on, each edit is
rendered, its achieved amount measured against the unedited image — by registration
(:func:`latentdirs.measure.measure_amounts`, the measurement the calibration itself was fitted to) or by
the saliency barycentre (:func:`latentdirs.saliency.saliency_amounts`, for one object on a plain
background) — and its step updated for :data:`ROUNDS` rounds: rescaled by request / achieved (a secant
through the origin, since a zero step achieves nothing) until one step is known to overshoot, then
interpolated between the longest step known to fall short and the shortest known to overshoot (regula
falsi). The step whose edit came closest is kept.

This is not Plumerault's method: it costs ``ROUNDS`` more renders and measurements per image, and it
trusts its measurement on every image, so it is as good as that measurement is on the generator's images.
It is deterministic (rendering and both measurements are), so sharded runs stay byte-identical.
"""

from __future__ import annotations

from typing import Callable

import torch

from latentdirs.errors import invalid
from latentdirs.measure import IMAGE_MEASURES, amounts_by
from latentdirs.saliency import FADED

#: correction rounds after the calibrated step (each: one render and one measurement per image)
ROUNDS = 3
#: a corrected step stays within this factor of the calibrated one (same sign): a registration that locked
#: onto something else must not send the edit far off the calibrated range
MAX_FACTOR = 3.0
#: registration grid points over the search span (the calibration's recalibration uses 31; finer here,
#: since these readings set the final step)
GRID = 121


def corrected_steps(render: Callable[[torch.Tensor], torch.Tensor], steps: torch.Tensor, requested: torch.Tensor,
                    fixed: torch.Tensor, transform: str, span: float, by: str = "registration") -> torch.Tensor:
    """Steps ``[B]`` along the direction whose edits achieve ``requested [B]`` (the transform's units), as
    measured ``by`` (:data:`~latentdirs.measure.IMAGE_MEASURES`), starting from the calibrated ``steps [B]``.

    ``render(steps [B]) -> images [B, 3, H, W]`` renders every row moved by its step (step 0: the unedited
    image). Rows where ``fixed [B]`` (bool) is set (requests clamped to the calibrated range) and zero
    requests keep their calibrated step. ``span``: registration searches amounts in ±span.
    """
    if by not in IMAGE_MEASURES:  # refused before anything is rendered
        raise invalid("by", by, " or ".join(map(repr, IMAGE_MEASURES)))
    steps = steps.detach().float().cpu()
    requested = requested.detach().float().cpu()
    active = ~fixed.cpu() & (requested != 0) & (steps != 0)
    if not bool(active.any()):
        return steps
    sources = render(torch.zeros_like(steps))

    def measure(edited: torch.Tensor) -> torch.Tensor:  # [B] on the CPU; a faded object (saliency): NaN
        return amounts_by(by, sources, edited, transform, span=span, steps=GRID, faded=FADED).float().cpu()

    best, best_error = steps.clone(), torch.full_like(steps, float("inf"))
    # the bracket: the longest step known to fall short (from step 0, which achieves 0) and the shortest
    # known to overshoot (NaN until one is seen), each with its reading
    short_step, short_read = torch.zeros_like(steps), torch.zeros_like(steps)
    over_step, over_read = torch.full_like(steps, float("nan")), torch.full_like(steps, float("nan"))
    low, high = torch.minimum(steps / MAX_FACTOR, steps * MAX_FACTOR), torch.maximum(steps / MAX_FACTOR,
                                                                                     steps * MAX_FACTOR)
    current = steps.clone()
    for _ in range(ROUNDS + 1):
        achieved = measure(render(current))
        error = (achieved - requested).abs().nan_to_num(float("inf"))
        better = active & (error < best_error)
        best[better], best_error[better] = current[better], error[better]
        right_way = achieved * requested > 0  # False for NaN readings too
        falls_short = right_way & (achieved.abs() < requested.abs())
        longer = falls_short & (current.abs() > short_step.abs())
        short_step[longer], short_read[longer] = current[longer], achieved[longer]
        shorter = right_way & ~falls_short & ~(current.abs() >= over_step.abs())  # NaN compares False
        over_step[shorter], over_read[shorter] = current[shorter], achieved[shorter]
        # before an overshoot is known: rescale by request / achieved, or push on where it went the wrong way
        ratio = torch.where(right_way, requested / torch.where(right_way, achieved, torch.ones_like(achieved)),
                            torch.full_like(achieved, 1.5))
        fraction = ((requested - short_read) / (over_read - short_read)).clamp(0, 1)
        proposed = torch.where(over_step.isnan(), current * ratio, short_step + fraction * (over_step - short_step))
        # no reading (the edit lost its object): back halfway to the longest step known to fall short
        proposed = torch.where(achieved.isnan(), 0.5 * (short_step + current), proposed)
        current = torch.where(active, torch.clamp(proposed.nan_to_num(0.0), low, high), current)
    return torch.where(active, best, steps)


__all__ = ["GRID", "MAX_FACTOR", "ROUNDS", "corrected_steps"]
