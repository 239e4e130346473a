"""Editing maths: shift latents along directions and render traversals in fixed-size batches.

Pure tensor code: no files, no images on disk (that is :mod:`latentdirs.images` and the CLI).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from latentdirs.calibration import calibrated_steps_and_clamps
from latentdirs.correction import corrected_steps
from latentdirs.directions import Directions
from latentdirs.errors import OutOfRangeError, check_count, invalid
from latentdirs.latents import layer_mask
from latentdirs.plan import EditPlan, LatentRows

if TYPE_CHECKING:
    from latentdirs.generators.base import GeneratorAdapter


def shift(latents: torch.Tensor, directions: Directions | torch.Tensor, *, index: int, alpha: float | torch.Tensor,
          layers: Sequence[int] | None = None) -> torch.Tensor:
    """Move latents along one direction: ``latents + alpha · directions[index]``.

    Args:
        latents: ``[N, D]`` (flat space) or ``[N, L, D]`` (layered space such as ``w+``).
        directions: a :class:`Directions` or a ``[K, D]`` tensor of unit rows.
        index: which direction (0 … K−1).
        alpha: a scalar strength, or ``[N]`` strengths, one per latent.
        layers: for ``[N, L, D]`` latents, the layers to move (default: the file's ``layers``, else all);
            must be ``None`` for flat latents.

    Returns:
        New latents of the same shape (the input is not modified).
    """
    vectors = directions.vectors if isinstance(directions, Directions) else directions
    if layers is None and isinstance(directions, Directions):
        layers = directions.layers if latents.dim() == 3 else None
    if not 0 <= index < vectors.shape[0]:
        raise invalid("index", index, f"0-{vectors.shape[0] - 1}", cls=OutOfRangeError)
    if latents.shape[-1] != vectors.shape[1]:
        raise invalid("latents", f"shape {tuple(latents.shape)}", f"last dimension {vectors.shape[1]} (the directions' D)")
    step = torch.as_tensor(alpha, dtype=latents.dtype, device=latents.device).reshape(-1, *([1] * (latents.dim() - 1)))
    delta = step * vectors[index].to(latents.device, latents.dtype)
    if latents.dim() == 2:
        if layers is not None:
            raise invalid("layers", list(layers), "None for flat [N, D] latents")
        return latents + delta
    if latents.dim() != 3:
        raise invalid("latents", f"shape {tuple(latents.shape)}", "[N, D] or [N, L, D]")
    return latents + delta * layer_mask(latents.shape[1], layers, like=latents)  # [N, 1, D] · [L, 1]


@dataclass(frozen=True)
class EditItem:
    """Where one rendered image sits in a traversal, and the strength it actually got.

    ``value`` is the plan's requested strength (an alpha, or a calibrated amount); ``alpha`` the latent
    step applied (equal to ``value`` for alphas; per row for calibrated amounts); ``clamped`` whether a
    calibrated request was clamped to the row's calibrated range (always False for alphas).
    """

    index: int  # direction
    position: int  # row of the plan's row source
    class_id: int | None
    value: float
    alpha: float
    clamped: bool = False
    row: tuple[tuple[str, Any], ...] = ()  # the row's manifest key, e.g. (("seed", 3),)

    @property
    def seed(self) -> int | None:
        """The row's seed when its rows are seeds."""
        return dict(self.row).get("seed")


@dataclass
class EditBatch:
    """A batch of rendered edits: ``images`` float32 ``[B, 3, H, W]`` in [-1, 1] on the CPU, one item each."""

    images: torch.Tensor
    items: list[EditItem]


def traverse(generator: GeneratorAdapter, directions: Directions, plan: EditPlan | None = None, *,
             batch_size: int = 32, **plan_options: Any) -> Iterator[EditBatch]:
    """Render an :class:`~latentdirs.plan.EditPlan`, ``batch_size`` images at a time.

    ``plan_options`` are the keyword form of :meth:`EditPlan.build` for the common case (``seeds``,
    ``indices``, ``alphas`` or ``amounts`` with ``clamp_amounts``, ``classes``, ``truncation``,
    ``layers``, ``allow_other_generator``); give either a plan or them.

    Order: direction, then class, then row, then strength — so each direction's grid completes before
    the next starts, and memory depends on ``batch_size`` only, never on the total count.

    Row latents come from the plan's row source in its ``space`` (``z`` for seeds), are mapped to the
    directions' space with the row's class and the truncation ψ (as the generator defines it), shifted
    along the direction, and rendered under ``torch.inference_mode``. Calibrated amounts move each row by the strength that
    changes the factor by exactly that amount (:func:`latentdirs.calibration.calibrated_steps`);
    requests beyond the calibrated range are refused, or clamped (with a warning) when the plan says so.
    """
    batch_size = check_count("batch_size", batch_size)
    if plan is None:
        plan = EditPlan.build(generator, directions, **plan_options)
    elif plan_options:
        raise invalid("traverse", sorted(plan_options), "a plan or keyword options, not both")
    else:
        plan.check(generator, directions)  # the fingerprint is checked wherever directions meet a generator
    return render_jobs(generator, directions, plan, plan.jobs(), batch_size)


def render_jobs(generator: GeneratorAdapter, directions: Directions, plan: EditPlan,
                jobs: Iterable[tuple[int, int | None, int, float]], batch_size: int) -> Iterator[EditBatch]:
    """Render some of a checked plan's jobs (``(index, class, position, value)`` from :meth:`EditPlan.jobs`,
    in its order), ``batch_size`` at a time: what :func:`traverse` does for all of them. A sharded run
    renders each rank's runs of whole batches this way, so every image is computed in the batch one
    process computes it in."""
    vectors = directions.vectors.to(generator.device)
    base_z = plan.rows.latents(generator, plan.truncation)  # [R, z_dim], small
    # inverted photos with feature offsets: each item renders with its row's offset [R, C, H, W]
    offsets = plan.rows.offsets(generator) if isinstance(plan.rows, LatentRows) else None
    batch: list[tuple[int, int | None, int, float]] = []
    for job in jobs:
        batch.append(job)
        if len(batch) == batch_size:
            yield _render(generator, directions, plan, vectors, base_z, batch, offsets)
            batch = []
    if batch:
        yield _render(generator, directions, plan, vectors, base_z, batch, offsets)


@torch.inference_mode()
def _render(generator: GeneratorAdapter, directions: Directions, plan: EditPlan, vectors: torch.Tensor,
            base_z: torch.Tensor, batch: list[tuple[int, int | None, int, float]],
            offsets: torch.Tensor | None = None) -> EditBatch:
    class_list = [c for _, c, _, _ in batch]
    classes = None if class_list[0] is None else torch.tensor(class_list)
    positions = [position for _, _, position, _ in batch]
    z = base_z[positions]
    latents = generator.to_space(z, plan.rows.space, directions.space, truncation=plan.truncation, classes=classes)
    requested = torch.tensor([value for *_, value in batch], dtype=latents.dtype, device=latents.device)
    strengths, clamped = requested, torch.zeros(len(batch), dtype=torch.bool)
    if plan.strengths.calibrated:
        index = batch[0][0]  # calibrated files hold one direction
        strengths, clamped = calibrated_steps_and_clamps(
            latents, vectors[index], directions.calibration["knots_x"], directions.calibration["knots_y"],
            requested, clamp=plan.strengths.clamp)
    layers = plan.effective_layers(directions) if latents.dim() == 3 else None

    def render(steps: torch.Tensor) -> torch.Tensor:
        moved = torch.empty_like(latents)
        for index in dict.fromkeys(i for i, *_ in batch):  # usually one direction per batch
            rows = torch.tensor([k for k, job in enumerate(batch) if job[0] == index], device=latents.device)
            moved[rows] = shift(latents[rows], vectors, index=index, alpha=steps[rows], layers=layers)
        return generator.synthesize(moved, space=directions.space, classes=classes, truncation=plan.truncation,
                                    offsets=None if offsets is None else offsets[positions])

    if plan.strengths.correct:
        from latentdirs.measure import registration_span

        # the span of the plan's requests, not the batch's: an image's step does not depend on the batch size
        strengths = corrected_steps(lambda steps: render(steps.to(latents)).float().cpu(), strengths, requested,
                                    clamped, directions.meta["calibration"]["transform"],
                                    registration_span(plan.strengths.values), by=plan.strengths.correct).to(latents)
    images = render(strengths)
    applied = ([_shortest(a) for a in strengths.tolist()] if plan.strengths.calibrated
               else [value for *_, value in batch])
    items = [EditItem(index, position, class_id, value, alpha, bool(was_clamped),
                      tuple(plan.rows.key(position).items()))
             for (index, class_id, position, value), alpha, was_clamped in zip(batch, applied, clamped.tolist())]
    return EditBatch(images.float().cpu(), items)


def _shortest(value: float) -> float:
    """A float32 result as the shortest decimal that round-trips in float32 (0.2, not 0.20000000298…)."""
    return float(str(np.float32(value)))
