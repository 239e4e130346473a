"""Editing maths: shift latents along directions and render traversals in fixed-size batches.

Pure tensor code: no files, no images on disk (that is :mod:`latentdirs.images` and the CLI).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from latentdirs.calibration import calibrated_steps
from latentdirs.directions import Directions
from latentdirs.errors import OutOfRangeError, invalid


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
        raise OutOfRangeError(f"index: got {index}; allowed: 0-{vectors.shape[0] - 1}")
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
    mask = torch.zeros(latents.shape[1], 1, dtype=latents.dtype, device=latents.device)
    if layers is None:
        mask[:] = 1
    else:
        bad = [i for i in layers if not 0 <= i < latents.shape[1]]
        if bad:
            raise OutOfRangeError(f"layers: got {list(layers)}; allowed: 0-{latents.shape[1] - 1}")
        mask[list(layers)] = 1
    return latents + delta * mask


@dataclass(frozen=True)
class EditItem:
    """Where one rendered image sits in a traversal (``amount`` set for calibrated edits)."""

    index: int  # direction
    seed: int
    alpha: float
    class_id: int | None
    amount: float | None = None


@dataclass
class EditBatch:
    """A batch of rendered edits: ``images`` float32 ``[B, 3, H, W]`` in [-1, 1] on the CPU, one item each."""

    images: torch.Tensor
    items: list[EditItem]


def traverse(generator, directions: Directions, *, seeds: Sequence[int], indices: Sequence[int],
             alphas: Sequence[float] | None = None, classes: Sequence[int | str] | int | str | None = None,
             truncation: float | None = None, batch_size: int = 32, amounts: Sequence[float] | None = None,
             clamp_amounts: bool = False) -> Iterator[EditBatch]:
    """Render every (direction, class, seed, strength) combination, ``batch_size`` images at a time.

    Order: direction, then class, then seed, then strength — so each direction's grid completes before
    the next starts, and memory depends on ``batch_size`` only, never on the total count.

    Latents are drawn per seed in ``z``, mapped to the directions' space with the row's class and the
    truncation ψ (as the generator defines it), shifted by ``alpha`` along the direction, and rendered
    under ``torch.no_grad``. With ``amounts`` instead of ``alphas`` (calibrated files only), each seed
    is moved by the strength that changes the factor by exactly that amount
    (:func:`latentdirs.calibration.calibrated_steps`); ``clamp_amounts`` clamps requests beyond the
    calibrated range (with a warning) instead of refusing them.
    """
    if batch_size < 1:
        raise invalid("batch_size", batch_size, "an integer ≥ 1")
    if (alphas is None) == (amounts is None):
        raise invalid("alphas/amounts", (alphas, amounts), "exactly one of alphas and amounts")
    if amounts is not None and not directions.calibration:
        raise invalid("amounts", list(amounts), "alphas only: this direction file is not calibrated",
                      "Use --alphas, or a file from a calibrated method such as -m regression")
    calibrated = amounts is not None
    if calibrated and len(directions) != 1:
        raise invalid("amounts", list(amounts), "a calibrated file with one direction (its calibration is per file)")
    values = list(amounts if calibrated else alphas)  # type: ignore[arg-type]
    for index in indices:
        directions.check_index(index)
    if not seeds or not values or not indices:
        raise invalid("seeds/indices/alphas", (len(seeds), len(indices), len(values)), "at least one of each")
    class_ids = _class_ids(generator, classes)
    vectors = directions.vectors.to(generator.device)
    base_z = generator.sample_seeds(list(seeds), space="z", truncation=truncation)  # [S, z_dim], small
    jobs = ((index, class_id, position, value) for index in indices for class_id in class_ids
            for position in range(len(seeds)) for value in values)
    batch: list[tuple[int, int | None, int, float]] = []
    mode = ("amount", clamp_amounts) if calibrated else None
    for job in jobs:
        batch.append(job)
        if len(batch) == batch_size:
            yield _render(generator, directions, vectors, base_z, seeds, batch, truncation, mode)
            batch = []
    if batch:
        yield _render(generator, directions, vectors, base_z, seeds, batch, truncation, mode)


def _class_ids(generator, classes) -> list[int | None]:
    if classes is None or isinstance(classes, (int, str)):
        return [generator.resolve_class(classes)]
    ids = [generator.resolve_class(c) for c in classes]
    return ids or [generator.resolve_class(None)]


@torch.inference_mode()
def _render(generator, directions: Directions, vectors: torch.Tensor, base_z: torch.Tensor, seeds: Sequence[int],
            batch: list[tuple[int, int | None, int, float]], truncation: float | None,
            calibrated: tuple[str, bool] | None = None) -> EditBatch:
    class_list = [c for _, c, _, _ in batch]
    classes = None if class_list[0] is None else torch.tensor(class_list)
    z = base_z[[position for _, _, position, _ in batch]]
    latents = generator.to_space(z, "z", directions.space, truncation=truncation, classes=classes)
    strengths = torch.tensor([value for *_, value in batch], dtype=latents.dtype, device=latents.device)
    requested = strengths
    if calibrated is not None:
        if latents.dim() != 2:
            raise invalid("amounts", "a layered space", "calibrated edits in a flat latent space")
        index = batch[0][0]  # calibrated files hold one direction
        strengths = calibrated_steps(latents, vectors[index], directions.calibration["knots_x"],
                                     directions.calibration["knots_y"], strengths, clamp=calibrated[1])
    moved = torch.empty_like(latents)
    for index in dict.fromkeys(i for i, *_ in batch):  # usually one direction per batch
        rows = torch.tensor([k for k, job in enumerate(batch) if job[0] == index], device=latents.device)
        moved[rows] = shift(latents[rows], vectors, index=index, alpha=strengths[rows],
                            layers=directions.layers if latents.dim() == 3 else None)
    images = generator.synthesize(moved, space=directions.space, classes=classes, truncation=truncation)
    items = [EditItem(index, int(seeds[position]), float(alpha), class_id,
                      float(amount) if calibrated is not None else None)
             for (index, class_id, position, _), alpha, amount in zip(batch, strengths.tolist(), requested.tolist())]
    return EditBatch(images.float().cpu(), items)
