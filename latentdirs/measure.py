"""Measure the transform an edit achieved, by registration — no downloaded model needed.

For a source image and its edited version, the achieved amount of a transform is the amount ``a``
whose transform of the blurred source best matches the blurred edit (mean squared error over the
pixels both define), found by a grid search over candidate amounts and refined by a parabola through
the best three. Batched over pairs and candidates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import torch

from latentdirs.errors import check_count, invalid
from latentdirs.saliency import SALIENCY_TRANSFORMS, saliency_amounts
from latentdirs.transforms import gaussian_blur, get_transform

if TYPE_CHECKING:  # only annotations: measure is imported by the modules that hold these types
    from latentdirs.directions import Directions
    from latentdirs.distributed import Ranks
    from latentdirs.edit import EditBatch
    from latentdirs.generators.base import GeneratorAdapter
    from latentdirs.plan import EditPlan


def measure_amounts(sources: torch.Tensor, edited: torch.Tensor, transform: str, *, low: float, high: float,
                    steps: int = 81, sigma: float | None = None, ranks: Ranks | None = None) -> torch.Tensor:
    """Achieved amounts ``[N]`` between ``sources`` and ``edited`` ``[N, C, H, W]`` (in [-1, 1]).

    ``low``…``high`` bound the search (in the transform's units); ``sigma`` is the blur in pixels
    (default: 1.5 px per 64 px of width). ``ranks`` (torchrun; every rank passes the same images): the
    chunks the images are registered in are dealt to the ranks and every rank returns all ``N`` amounts,
    each chunk computed exactly as one process computes it, so the amounts are the one-process ones.
    """
    from latentdirs.evaluation.sharing import share

    if sources.shape != edited.shape or sources.dim() != 4:
        raise invalid("images", f"{tuple(sources.shape)} and {tuple(edited.shape)}", "two [N, C, H, W] batches")
    if not high > low or steps < 3:
        raise invalid("search range", (low, high, steps), "low < high and at least 3 steps")
    sigma = 1.5 * sources.shape[-1] / 64 if sigma is None else sigma
    # every image is compared with `steps` transformed copies of its source: chunk the images so that the
    # copies stay near 2**24 values per tensor (64 MiB), whatever the resolution and the batch
    chunk = max(1, (1 << 24) // (steps * sources[0].numel()))

    def register(unit: int) -> torch.Tensor:  # the chunk's amounts (on the CPU when they travel between ranks)
        rows = slice(unit * chunk, (unit + 1) * chunk)
        amounts = _register(sources[rows], edited[rows], transform, low=low, high=high, steps=steps, sigma=sigma)
        return amounts if ranks is None else amounts.cpu()

    parts = share(-(-sources.shape[0] // chunk), register, ranks)
    return torch.cat(parts).to(sources.device) if parts else torch.empty(0, dtype=sources.dtype, device=sources.device)


#: the measurements that need nothing but the two images (``by`` of :func:`amounts_by`)
IMAGE_MEASURES = ("registration", "saliency")


def amounts_by(by: str, sources: torch.Tensor, edited: torch.Tensor, transform: str, *, span: float, steps: int,
               faded: float = 0.0) -> torch.Tensor:
    """Achieved amounts ``[N]`` between ``sources`` and ``edited`` ``[N, C, H, W]``, measured ``by``
    registration (:func:`measure_amounts`, searching ±``span`` on ``steps`` grid points) or by the saliency
    barycentre (:func:`latentdirs.saliency.saliency_amounts`, ``faded`` as it takes it)."""
    if by == "saliency":
        return saliency_amounts(sources, edited, transform, faded=faded)
    if by != "registration":
        raise invalid("by", by, " or ".join(map(repr, IMAGE_MEASURES)))
    return measure_amounts(sources, edited, transform, low=-span, high=span, steps=steps)


def _register(sources: torch.Tensor, edited: torch.Tensor, transform: str, *, low: float, high: float, steps: int,
              sigma: float) -> torch.Tensor:
    """:func:`measure_amounts` for one chunk: grid search over the amounts, refined by a parabola."""
    apply = get_transform(transform).apply
    candidates = torch.linspace(low, high, steps, dtype=sources.dtype, device=sources.device)
    n, count = sources.shape[0], candidates.shape[0]
    with torch.no_grad():
        target = gaussian_blur(edited, sigma).repeat_interleave(count, dim=0)
        moved, mask = apply(sources.repeat_interleave(count, dim=0), candidates.repeat(n))
        moved = gaussian_blur(moved, sigma)
        mask = (mask.expand_as(moved) > 0).to(moved.dtype)
        errors = (((moved - target) ** 2) * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)
        errors = errors.view(n, count)
        best = errors.argmin(dim=1).clamp(1, count - 2)
        left, centre, right = (errors.gather(1, (best + o).unsqueeze(1)).squeeze(1) for o in (-1, 0, 1))
        curvature = left - 2 * centre + right
        offset = torch.where(curvature > 0, 0.5 * (left - right) / curvature, torch.zeros_like(curvature))
        step = (high - low) / (steps - 1)
        return candidates[best] + offset.clamp(-1, 1) * step


@dataclass
class AccuracyRow:
    """Achieved amounts for one requested amount: mean and standard deviation over seeds, the mean
    absolute error ``|achieved − requested|`` and the achieved amount of each seed (in ``seeds`` order)."""

    requested: float
    mean: float
    std: float
    count: int
    abs_error: float = float("nan")
    values: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    clamped: int = 0


def accuracy_table(requested: torch.Tensor, achieved: torch.Tensor, seeds: torch.Tensor | None = None,
                   clamped: torch.Tensor | None = None) -> list[AccuracyRow]:
    """Group achieved ``[N]`` by requested ``[N]`` amounts (``seeds [N]``: the seed of each, kept per row;
    ``clamped [N]`` bool: whose request was clamped to its calibrated range, counted per row)."""
    rows = []
    for amount in torch.unique(requested):
        chosen = requested == amount
        values = achieved[chosen]
        rows.append(AccuracyRow(float(amount), float(values.mean()),
                                float(values.std()) if values.numel() > 1 else 0.0, int(values.numel()),
                                float((values - amount).abs().mean()), values.tolist(),
                                seeds[chosen].tolist() if seeds is not None else [],
                                int(clamped[chosen].sum()) if clamped is not None else 0))
    return rows


#: how the factor reader measures a transform: the factor it reads, and whether the amount is a ratio − 1
READER_MEASURES: dict[str, tuple[str, bool]] = {"shift-x": ("x", False), "shift-y": ("y", False),
                                                "zoom": ("scale", True)}
#: the ways :func:`measure_calibration` can measure an edit (saliency: :mod:`latentdirs.saliency`)
MEASURES = ("registration", "factors", "saliency")


def read_amounts(generator: GeneratorAdapter, sources: torch.Tensor, edited: torch.Tensor,
                 transform: str) -> torch.Tensor:
    """Achieved amounts ``[N]`` read by the generator's factor reader
    (:meth:`~latentdirs.generators.base.GeneratorAdapter.read_factors`) from ``sources`` and ``edited``
    ``[N, 3, R, R]``: the change of the object's x (shift-x, fraction of the width) or y (shift-y,
    fraction of the height), or its scale ratio − 1 (zoom) — in the transform's own units."""
    from latentdirs.errors import NotSupportedError

    if transform not in READER_MEASURES:
        raise invalid("transform", transform, f"{', '.join(READER_MEASURES)} (the transforms the factor reader "
                      "measures)", "Measure it by registration")
    before = generator.read_factors(sources)
    if before is None:
        raise invalid("generator", generator.spec, "a generator that reads its images' factors (shapes-dcgan, "
                      "shapes-stylegan2)", "Measure it by registration", cls=NotSupportedError)
    after = generator.read_factors(edited)
    name, ratio = READER_MEASURES[transform]
    return after[name] / before[name] - 1 if ratio else after[name] - before[name]


def probe_amounts(calibration: dict) -> list[float] | None:
    """Requests ``[-a, -a/2, 0, a/2, a]`` with a = half the smaller side of a file's calibrated ``range``
    (header ``calibration``), so most seeds can take them without clamping; None if the range does not
    straddle 0."""
    low, high = calibration["range"]
    reach = 0.5 * min(-low, high)
    return [-reach, -reach / 2, 0.0, reach / 2, reach] if reach > 0 else None


def measure_calibration(generator: GeneratorAdapter, directions: Directions, *, seeds: list[int], amounts: list[float],
                        clamp: bool = False, batch_size: int = 32, by: str = "registration",
                        class_id: int | str | None = None, ranks: Ranks | None = None,
                        correct: bool | str = False) -> list[AccuracyRow]:
    """For a calibrated direction file: request each amount on each seed and measure what was achieved,
    ``by`` registration, by the generator's factor reader (``"factors"``, :func:`read_amounts`) or by the
    saliency barycentre (``"saliency"``, :func:`latentdirs.saliency.saliency_amounts`).
    ``class_id``: the class a conditional generator renders (default: the class the file was calibrated
    on, else class 0). ``ranks`` (torchrun): shared by the ranks, see :func:`measure_calibration_by`.

    Returns one :class:`AccuracyRow` per requested amount (mean and spread over the seeds).
    """
    return measure_calibration_by(generator, directions, seeds=seeds, amounts=amounts, clamp=clamp,
                                  batch_size=batch_size, ways=(by,), class_id=class_id, ranks=ranks,
                                  correct=correct)[by]


def calibrated_class(generator: GeneratorAdapter, directions: Directions, class_id: int | str | None) -> int | None:
    """``class_id`` resolved, or (``None``) the class recorded in the file's method options, or class 0;
    ``None`` for unconditional generators."""
    if class_id is None and generator.conditional:
        class_id = ((directions.meta.get("method") or {}).get("options") or {}).get("class_id")
    return generator.resolve_class(class_id)


def measure_calibration_by(generator: GeneratorAdapter, directions: Directions, *, seeds: list[int],
                           amounts: list[float], clamp: bool = False, batch_size: int = 32,
                           ways: tuple[str, ...] = MEASURES, class_id: int | str | None = None,
                           ranks: Ranks | None = None, correct: bool | str = False) -> dict[str, list[AccuracyRow]]:
    """:func:`measure_calibration` for several ways of measuring the same edits (rendered once):
    ``{way: rows}`` for each of ``ways`` (:data:`MEASURES`). ``correct``: each edit's step corrected by
    measuring it (:mod:`latentdirs.correction`, ``edit --correct-amounts``): ``True`` by registration, or
    the name of the measurement (``"saliency"``).

    The unedited sources (one image per seed) and the edits (seed-major, each seed's amounts in order)
    are rendered in batches of ``batch_size``, as :func:`~latentdirs.edit.traverse` renders them.
    ``ranks`` (torchrun; every rank calls this alike): those batches, then the registration's chunks
    (:func:`measure_amounts`), are dealt round-robin to the ranks and their results exchanged, so every
    rank returns the one-process rows (docs/scale.md, "Evaluate"); the factor reader reads every image
    on every rank (it is cheap).
    """
    bad = [way for way in ways if way not in MEASURES]
    if bad or not ways:
        raise invalid("by", list(ways), " or ".join(map(repr, MEASURES)))
    calibration = directions.meta.get("calibration")
    if not calibration:
        raise invalid("directions", directions.method_name, "a calibrated direction file (e.g. from -m regression)")
    transform = calibration["transform"]
    if "factors" in ways and transform not in READER_MEASURES:  # refused before any rendering
        raise invalid("transform", transform, f"{', '.join(READER_MEASURES)} (the transforms the factor reader "
                      "measures)", "Measure it by registration")
    if "saliency" in ways and transform not in SALIENCY_TRANSFORMS:
        raise invalid("transform", transform, f"{', '.join(SALIENCY_TRANSFORMS)} (the transforms the saliency "
                      "barycentre measures)", "Measure it by registration")
    classes = calibrated_class(generator, directions, class_id)
    with torch.no_grad():
        sources = torch.cat([batch.images for batch in render_batches(
            generator, directions, _plan(generator, directions, seeds=seeds, indices=[0], alphas=[0.0],
                                         classes=classes), batch_size, ranks)])
        if "factors" in ways:  # a generator that reads nothing is refused before the edits are rendered
            read_amounts(generator, sources[:1], sources[:1], transform)
        edits = render_batches(generator, directions, _plan(generator, directions, seeds=seeds, indices=[0],
                                                            amounts=amounts, clamp_amounts=clamp,
                                                            correct_amounts=correct, classes=classes),
                               batch_size, ranks)
    images = torch.cat([b.images for b in edits])
    items = [item for b in edits for item in b.items]
    position = {seed: k for k, seed in enumerate(seeds)}
    source_rows = sources[[position[item.seed] for item in items]]
    requested = torch.tensor([item.value for item in items])
    seed_of = torch.tensor([item.seed for item in items])
    was_clamped = torch.tensor([bool(item.clamped) for item in items])
    tables = {}
    for way in ways:
        if way == "registration":
            span = registration_span(amounts)
            measured = measure_amounts(source_rows, images, transform, low=-span, high=span, steps=121, ranks=ranks)
        elif way == "saliency":
            measured = saliency_amounts(source_rows, images, transform)
        else:
            measured = read_amounts(generator, source_rows, images, transform)
        tables[way] = accuracy_table(requested, measured.cpu(), seed_of, was_clamped)
    return tables


def registration_span(amounts: Sequence[float]) -> float:
    """The half-width of the registration search for edits that request ``amounts``: 1.5× the largest.
    Shared by ``measure`` and ``edit --correct-amounts`` so the loop reads edits as the measurement does;
    a wider search on small objects finds far-off false alignments (the background matched, the object
    lost)."""
    return 1.5 * max(abs(a) for a in amounts) + 1e-3


def _plan(generator: GeneratorAdapter, directions: Directions, **options: Any) -> EditPlan:
    """:meth:`EditPlan.build` (imported on use, like this module's other editing imports)."""
    from latentdirs.plan import EditPlan

    return EditPlan.build(generator, directions, **options)


def render_batches(generator: GeneratorAdapter, directions: Directions, plan: EditPlan, batch_size: int,
                   ranks: Ranks | None = None) -> list[EditBatch]:
    """``list(traverse(generator, directions, plan, batch_size=batch_size))``: the plan's images, float32
    ``[B, 3, H, W]`` in [-1, 1] on the CPU, in batches of ``batch_size``. Under ``ranks`` each batch is
    rendered by one rank (round-robin), exactly as one process renders it, and every rank gets them all
    (a small plan: the batches travel to every rank)."""
    from latentdirs.evaluation.sharing import share

    batch_size = check_count("batch_size", batch_size)
    jobs = list(plan.jobs())
    return share(-(-len(jobs) // batch_size),
                 lambda unit: render_batch(generator, directions, plan, jobs, batch_size, unit), ranks)


def render_batch(generator: GeneratorAdapter, directions: Directions, plan: EditPlan,
                 jobs: list[tuple[int, int | None, int, float]], batch_size: int, unit: int) -> EditBatch:
    """Batch ``unit`` of a checked plan's ``jobs``: the ``unit``-th batch :func:`~latentdirs.edit.traverse` yields."""
    from latentdirs.edit import render_jobs

    batch = jobs[unit * batch_size:(unit + 1) * batch_size]
    return next(iter(render_jobs(generator, directions, plan, batch, batch_size)))


def plot_accuracy(rows: list[AccuracyRow], path, *, title: str, units: str) -> None:
    """Write :func:`accuracy_chart` as a PNG file (atomically)."""
    from latentdirs.images import save_image

    save_image(accuracy_chart(rows, title=title, units=units), path)


def accuracy_chart(rows: list[AccuracyRow], *, title: str, units: str):
    """A 360 px square PIL image: achieved (mean ± std) against requested amounts, with the ideal diagonal."""
    from PIL import Image, ImageDraw

    from latentdirs.images import _font

    size, margin = 360, 48
    low = min(min(r.requested, r.mean - r.std) for r in rows)
    high = max(max(r.requested, r.mean + r.std) for r in rows)
    pad = 0.1 * (high - low or 1)
    low, high = low - pad, high + pad

    def to_px(x: float, y: float) -> tuple[float, float]:
        scale = (size - 2 * margin) / (high - low)
        return margin + (x - low) * scale, size - margin - (y - low) * scale

    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    draw.rectangle([margin, margin, size - margin, size - margin], outline=(120, 120, 120))
    draw.line([to_px(low, low), to_px(high, high)], fill=(180, 180, 180), width=1)
    for row in rows:
        x, y = to_px(row.requested, row.mean)
        _, top = to_px(row.requested, row.mean + row.std)
        _, bottom = to_px(row.requested, row.mean - row.std)
        draw.line([(x, top), (x, bottom)], fill=(30, 90, 200), width=2)
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(30, 90, 200))
    draw.text((margin, 8), title, fill=(20, 20, 20), font=font)
    draw.text((margin, size - margin + 12), f"requested ({units}), from {low:.2f} to {high:.2f}",
              fill=(20, 20, 20), font=font)
    draw.text((4, margin - 16), "achieved (mean ± std)", fill=(20, 20, 20), font=font)
    return canvas
