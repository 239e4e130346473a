"""The figures of :mod:`latentdirs.vary`: diversity, content preservation, colour and factor distances."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import torch

from latentdirs.content_style.layered import colour_statistics
from latentdirs.transforms import gaussian_blur

if TYPE_CHECKING:
    from latentdirs.content_style import ContentStyleSplit
    from latentdirs.generators.base import GeneratorAdapter
    from latentdirs.vary.core import _Content

#: the blur of the edge maps, in pixels at 64 px (scaled with the resolution): edges one pixel apart match
EDGE_SIGMA_AT_64 = 1.0


def edge_map(images: torch.Tensor) -> torch.Tensor:
    """The blurred colour-gradient magnitude of ``[N, 3, H, W]`` images: ``[N, H, W]``.

    Gradients of all three channels count, so an edge between two colours of the same brightness is
    still an edge; the blur (σ = :data:`EDGE_SIGMA_AT_64` px at 64 px) lets edges a pixel apart match."""
    dx = torch.nn.functional.pad(images[..., :, 1:] - images[..., :, :-1], (0, 1, 0, 0))
    dy = torch.nn.functional.pad(images[..., 1:, :] - images[..., :-1, :], (0, 0, 0, 1))
    magnitude = (dx.square() + dy.square()).sum(1, keepdim=True).sqrt()
    return gaussian_blur(magnitude, EDGE_SIGMA_AT_64 * images.shape[-1] / 64).squeeze(1)


def edge_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Content preservation: the Pearson correlation of the edge maps (:func:`edge_map`) of ``a`` and
    ``b`` (``[N, 3, H, W]`` each), ``[N]`` in [−1, 1]; 1 = edges in the same places with proportional
    strength, whatever the colours. Flat images (no edges) correlate 0 with anything."""
    x, y = edge_map(a).flatten(1), edge_map(b).flatten(1)
    x, y = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    return (x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1)).clamp_min(1e-12)


def _rms(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).square().flatten(1).mean(1).sqrt()


def _mean_pairwise(values: torch.Tensor, distance) -> float | None:
    """Mean of ``distance`` over the pairs of rows of ``values`` (None for fewer than two)."""
    count = values.shape[0]
    if count < 2:
        return None
    first, second = torch.triu_indices(count, count, offset=1)
    return float(distance(values[first], values[second]).mean())


def _norm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).norm(dim=1)


def measure(generator: GeneratorAdapter, split: ContentStyleSplit, sources: torch.Tensor, images: torch.Tensor,
            style_images: torch.Tensor, *, content: _Content | None = None, mixed: torch.Tensor | None = None,
            reference: bool = False) -> tuple[dict[str, Any], ...]:
    """Per source, the figures of the module docstring (JSON-able), from ``sources [S, 3, H, W]``,
    ``images [S, V, 3, H, W]`` and ``style_images [V, 3, H, W]``; ``reference``: the one column took the
    style of ``style_images[0]`` (:func:`style_from`)."""
    count, columns = images.shape[:2]
    flat = images.flatten(0, 1)
    repeated = sources.repeat_interleave(columns, 0)
    preservation = edge_similarity(flat, repeated).view(count, columns)
    floor = edge_similarity(style_images.repeat(count, 1, 1, 1), repeated).view(count, columns)
    statistics = colour_statistics(flat).view(count, columns, 6)
    source_statistics = colour_statistics(sources)
    factors = _factor_figures(generator, sources, images, style_images, reference)
    coordinates = _coordinate_changes(generator, split, content, mixed)
    records = []
    for s in range(count):
        record: dict[str, Any] = {
            "diversity": _mean_pairwise(images[s].flatten(1), _rms),
            "colour_diversity": _mean_pairwise(statistics[s], _norm),
            "content_preservation": float(preservation[s].mean()),
            "content_preservation_min": float(preservation[s].min()),
            "content_floor": float(floor[s].mean()),
        }
        if reference:
            target = colour_statistics(style_images[:1])[0]
            record["style_distance"] = float((statistics[s, 0] - target).norm())
            record["style_distance_before"] = float((source_statistics[s] - target).norm())
        if factors is not None:
            record.update({key: {name: value[s] for name, value in table.items()} for key, table in factors.items()})
        if coordinates is not None:
            record["coordinate_change"] = {name: value[s] for name, value in coordinates.items()}
        records.append(record)
    return tuple(records)


def _factor_figures(generator: GeneratorAdapter, sources: torch.Tensor, images: torch.Tensor,
                    style_images: torch.Tensor, reference: bool) -> dict[str, dict[str, list[float]]] | None:
    """Read factors (generators with ``read_factors``): per factor and source, the mean |change| from the
    source; for a reference, also the mean |distance| to the reference's factors after and before."""
    from latentdirs.evaluation.factors import factor_changes

    count, columns = images.shape[:2]
    before = generator.read_factors(sources)
    if before is None:
        return None
    after = generator.read_factors(images.flatten(0, 1))
    expanded = {name: value.repeat_interleave(columns, 0) for name, value in before.items()}
    figures = {"factor_change": _per_source(factor_changes(expanded, after), count, columns)}
    if reference:
        target = generator.read_factors(style_images[:1])
        to_target = {name: value.expand(count * columns, *value.shape[1:]) for name, value in target.items()}
        figures["factor_distance_to_reference"] = _per_source(factor_changes(to_target, after), count, columns)
        figures["factor_distance_to_reference_before"] = _per_source(
            factor_changes({n: v[:1].expand(count, *v.shape[1:]) for n, v in target.items()}, before), count, 1)
    return figures


def _per_source(changes: dict[str, torch.Tensor], count: int, columns: int) -> dict[str, list[float]]:
    """Mean |change| per source (NaN entries — rotation of discs — left out; None when all are NaN)."""
    table = {}
    for name, values in changes.items():
        grouped = values.abs().view(count, columns)
        valid = ~torch.isnan(grouped)
        sums = torch.where(valid, grouped, torch.zeros_like(grouped)).sum(1)
        numbers = valid.sum(1)
        table[name] = [float(total / n) if n else None for total, n in zip(sums, numbers)]
    return table


def _coordinate_changes(generator: GeneratorAdapter, split: ContentStyleSplit, content: _Content | None,
                        mixed: torch.Tensor | None) -> dict[str, list[float]] | None:
    """Known factor directions (``synthetic``), latents mixed in their space without offsets: per factor
    and source, the largest |change| of the coordinate ``a_f · z`` from the source's."""
    truth = generator.true_directions
    if (truth is None or content is None or mixed is None or content.offsets is not None
            or split.space != generator.default_space or mixed.dim() != 3):
        return None
    basis = torch.stack(list(truth.values()))  # [F, D]
    before = content.latents.cpu().float() @ basis.T  # [S, F]
    after = mixed.float() @ basis.T  # [S, V, F]
    largest = (after - before.unsqueeze(1)).abs().amax(1)  # [S, F]
    return {name: [float(v) for v in largest[:, f]] for f, name in enumerate(truth)}


def summarise(per_source: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The mean over sources of each figure (nested factor tables per factor); None where no source has one."""
    summary: dict[str, Any] = {"sources": len(per_source)}
    keys = dict.fromkeys(key for record in per_source for key in record)
    for key in keys:
        values = [record.get(key) for record in per_source]
        if any(isinstance(v, dict) for v in values):
            names = dict.fromkeys(name for v in values if isinstance(v, dict) for name in v)
            summary[key] = {name: _mean([v.get(name) for v in values if isinstance(v, dict)]) for name in names}
        else:
            summary[key] = _mean(values)
    return summary


def _mean(values: Sequence[Any]) -> float | None:
    numbers = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(numbers) / len(numbers) if numbers else None

