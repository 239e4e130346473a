"""Content kept, style resampled: :func:`vary` and :func:`style_from` over a content/style split.

A :class:`~latentdirs.content_style.ContentStyleSplit` says which part of a latent is *content*
(structure) and which is *style* (appearance), and mixes two latents with
:meth:`~latentdirs.content_style.ContentStyleSplit.mix`. Here that is used two ways (MUNIT's
"multimodal" outputs and its style transfer, on a pretrained GAN):

* :func:`vary` — every source keeps its content and gets ``variations`` resampled styles. Column ``v``
  takes its style from the seed :func:`style_seeds` derives from ``(seed, v)``, the same for every
  source, so a column reads as one style across the rows;
* :func:`style_from` — every source's content with one reference's style (a seed, or one row of a
  latents file).

Sources are seeds or the rows of a latents file (``latentdirs invert``); rows with feature offsets keep
their offset, which belongs to the content. Everything is rendered in batches under
``torch.inference_mode``, and measured (:func:`measure`):

* ``diversity``: the mean pairwise RMS difference (images in [−1, 1]) between a source's variations;
* ``content_preservation``: the *edge correlation* of each variation with its source — the Pearson
  correlation of their blurred colour-gradient magnitudes (:func:`edge_similarity`; 1 = the same edges,
  wherever the colours went) — next to ``content_floor``, the same measure between the source and the
  style images themselves (what unrelated content scores);
* ``colour_diversity`` / ``style_distance``: distances of the per-channel mean and standard deviation
  of the images (the statistics AdaIN sets: :func:`latentdirs.content_style.layered.colour_statistics`,
  in [−1, 1] units), between variations, and for :func:`style_from` from each
  output to the reference (``style_distance_before``: from the source);
* on generators that read their images' factors (``read_factors``: the test-bed ``shapes-*``), the mean
  absolute change of every factor from the source, in the factor's units
  (:func:`latentdirs.evaluation.factors.factor_changes`), and for :func:`style_from` each factor's
  distance to the reference's; on generators that know their factor directions (``synthetic``, mixed
  in its own space), the largest change of each true factor coordinate ``a_f · z``.
"""

from __future__ import annotations

import abc
import hashlib
import json
import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import torch

from latentdirs.atomic import StagedDirectory, check_not_an_input, check_writable_directory
from latentdirs.content_style.layered import colour_statistics
from latentdirs.errors import SpecError, check_count, check_seed, invalid
from latentdirs.latent_file import Latents
from latentdirs.plan import LatentRows, RowSource, SeedRows, generator_words
from latentdirs.specs import parse_index_spec
from latentdirs.transforms import gaussian_blur
from latentdirs.version import __version__

if TYPE_CHECKING:
    from latentdirs.content_style import ContentStyleSplit
    from latentdirs.distributed import Ranks
    from latentdirs.generators.base import GeneratorAdapter

#: most variations per source (a grid wider than this is unreadable, and memory grows with it)
MAX_VARIATIONS = 256
#: the blur of the edge maps, in pixels at 64 px (scaled with the resolution): edges one pixel apart match
EDGE_SIGMA_AT_64 = 1.0


# ---------------------------------------------------------------------------------------------- styles
def style_seeds(seed: int, count: int) -> list[int]:
    """The style seeds of variations ``0 … count − 1`` for ``seed``: the first 63 bits of
    ``sha256("latentdirs.vary:{seed}:{v}")``, so they never coincide with the small seeds sources use."""
    seed = check_seed("seed", seed)
    return [int.from_bytes(hashlib.sha256(f"latentdirs.vary:{seed}:{v}".encode()).digest()[:8], "big") >> 1
            for v in range(count)]


@dataclass(frozen=True, eq=False)
class StyleReference:
    """Where :func:`style_from` takes its style: a ``seed``, or row ``index`` of a latents file."""

    seed: int | None = None
    latents: Latents | None = None
    index: int | None = None

    def __post_init__(self) -> None:
        if (self.seed is None) == (self.latents is None):
            raise invalid("reference", "both" if self.seed is not None else "neither",
                          "a seed, or a latents file with a row index", "e.g. --style-from 7 or FILE:0")
        if self.seed is not None:
            object.__setattr__(self, "seed", check_seed("reference", self.seed))
            return
        count = len(self.latents)  # type: ignore[arg-type]
        if isinstance(self.index, bool) or not isinstance(self.index, int) or not 0 <= self.index < count:
            raise invalid("reference", self.index, f"a row index 0-{count - 1} of the latents file", "e.g. FILE:0")

    def describe(self) -> dict[str, Any]:
        """JSON-able identity for the manifest."""
        if self.seed is not None:
            return {"seed": self.seed}
        source = self.latents
        assert source is not None  # __post_init__: a seed or a file
        return {"latents": None if source.path is None else str(source.path.resolve()), "sha256": source.sha256,
                "index": self.index, "label": source.labels[self.index]}  # type: ignore[index]

    def label(self) -> str:
        if self.seed is not None:
            return f"seed {self.seed}"
        return self.latents.labels[self.index]  # type: ignore[union-attr, index]

    def words(self) -> str | None:
        """The ``--style-from`` value that names this reference; None for latents never saved."""
        if self.seed is not None:
            return str(self.seed)
        path = self.latents.path  # type: ignore[union-attr]
        return None if path is None else f"{path.resolve()}:{self.index}"


# ---------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class VaryResult:
    """What :func:`vary` / :func:`style_from` rendered and measured.

    Attributes:
        sources: ``[S, 3, H, W]`` float32 in [−1, 1] (CPU): each source as it is.
        images: ``[S, V, 3, H, W]`` float32 in [−1, 1] (CPU): source ``s`` with style ``v``.
        latents: ``[S, V, D]`` or ``[S, V, L, D]`` (CPU): the mixed latents in ``space``.
        space: the split's space the latents live in (``"z"``, ``"w+"``, ``"blocks"``).
        style_images: ``[V, 3, H, W]``: each style latent rendered alone (the reference for
            :func:`style_from`), what the floor of the content measure compares with.
        styles: per column, where its style came from: ``{"style_seed": n}`` or ``{"reference": {…}}``.
        rows: per source, its identity (``{"seed": 3}``, or the latents row's key).
        per_source: per source, :func:`measure`'s figures.
    """

    sources: torch.Tensor
    images: torch.Tensor
    latents: torch.Tensor
    space: str
    style_images: torch.Tensor
    styles: tuple[dict[str, Any], ...]
    rows: tuple[dict[str, Any], ...]
    per_source: tuple[dict[str, Any], ...]

    @property
    def measurements(self) -> dict[str, Any]:
        """The per-source figures averaged over the sources (:func:`summarise`)."""
        return summarise(self.per_source)


# ---------------------------------------------------------------------------------------------- API
def vary(generator: GeneratorAdapter, split: ContentStyleSplit, sources: Sequence[int] | Latents | RowSource, *,
         variations: int = 8, seed: int = 0, truncation: float | None = None, class_id: int | str | None = None,
         batch_size: int = 32) -> VaryResult:
    """Render every source with its content kept and ``variations`` resampled styles.

    Args:
        split: the content/style split of ``generator`` (its fingerprint must match).
        sources: seeds, a :class:`~latentdirs.latent_file.Latents` (inverted photos), or a row source
            (:class:`~latentdirs.plan.SeedRows` / :class:`~latentdirs.plan.LatentRows`).
        variations: styles per source, 1 … :data:`MAX_VARIATIONS`.
        seed: the style resampling's seed (:func:`style_seeds`).
        truncation: ψ in (0, 1] for seeds and style samples; latents render with their own.
        class_id: conditional generators: the class of seed sources (latents keep their recorded class).

    Returns:
        A :class:`VaryResult` with ``images [S, V, 3, H, W]`` and the mixed latents ``[S, V, …]``.
    """
    styles, style = _style_columns(None, variations, seed)
    return _run(generator, split, sources, styles, style, truncation=truncation, class_id=class_id,
                batch_size=batch_size, reference=False)


def style_from(generator: GeneratorAdapter, split: ContentStyleSplit,
               sources: Sequence[int] | Latents | RowSource, reference: StyleReference | int, *,
               truncation: float | None = None, class_id: int | str | None = None,
               batch_size: int = 32) -> VaryResult:
    """Render every source's content with ``reference``'s style (one column, ``V = 1``).

    ``reference``: a seed, or a :class:`StyleReference` (one row of a latents file of this generator;
    its feature offset, if any, stays with the reference's content and is not transferred). The
    reference image the measures compare with is the reference as it renders (with its offset).
    """
    if not isinstance(reference, StyleReference):
        reference = StyleReference(seed=reference)
    styles, style = _style_columns(reference, 1, 0)
    return _run(generator, split, sources, styles, style, truncation=truncation,
                class_id=class_id, batch_size=batch_size, reference=True)


def mix(split: ContentStyleSplit, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """``split.mix(content, style)``: latents of ``split.space`` with ``content``'s content and ``style``'s
    style (``[N, …]``; ``style`` may be ``[1, …]``), as a function for ``latentdirs.mix``."""
    return split.mix(content, style)


# ---------------------------------------------------------------------------------------------- internals
@dataclass(frozen=True)
class _Content:
    """The sources, ready to mix: latents in the split's space, offsets, classes, truncation."""

    rows: RowSource
    latents: torch.Tensor  # [S, ...] in split.space, on the device
    offsets: torch.Tensor | None  # [S, C, H, W] on the device
    classes: torch.Tensor | None  # [S] long
    truncation: float | None


class _Styles(abc.ABC):
    """Style latents in the split's space for given row classes, and the style images (rendered alone)."""

    @abc.abstractmethod
    def latents(self, generator: GeneratorAdapter, split: ContentStyleSplit, columns: list[int],
                classes: torch.Tensor | None, truncation: float | None) -> torch.Tensor:
        """``[B, …]`` style latents in ``split.space`` for the columns ``columns`` (one per job)."""

    @abc.abstractmethod
    def images(self, generator: GeneratorAdapter, split: ContentStyleSplit, count: int,
               classes: torch.Tensor | None, truncation: float | None) -> torch.Tensor:
        """``[count, 3, H, W]``: each column's style rendered alone."""

    def check(self, generator: GeneratorAdapter, split: ContentStyleSplit) -> None:
        """Refuse, before anything renders, a style these cannot give (default: nothing to check)."""


class _SeedStyles(_Styles):
    """Styles drawn from seeds in z and mapped with each row's class (conditional mappings differ)."""

    def __init__(self, seeds: list[int]) -> None:
        self.seeds = seeds

    def latents(self, generator, split, columns, classes, truncation):
        z = generator.sample_seeds([self.seeds[c] for c in columns], space="z", truncation=truncation)
        return generator.to_space(z, "z", split.space, truncation=truncation, classes=classes)

    def images(self, generator, split, count, classes, truncation):
        first = None if classes is None else classes[:1].expand(count)
        latents = self.latents(generator, split, list(range(count)), first, truncation)
        return generator.synthesize(latents, space=split.space, classes=first, truncation=truncation)


class _ReferenceStyle(_Styles):
    """One style: a seed (drawn like :class:`_SeedStyles`) or a latents row mapped with its own class."""

    def __init__(self, reference: StyleReference) -> None:
        self.reference = reference
        self._seeded = _SeedStyles([reference.seed]) if reference.seed is not None else None
        self._mapped: torch.Tensor | None = None

    def check(self, generator: GeneratorAdapter, split: ContentStyleSplit) -> None:
        """A file's row: refuse other weights and a space that does not map to the split's (one line each)."""
        if self.reference.latents is not None:
            self.reference.latents.check_generator(generator)  # other weights: FingerprintMismatchError
            self._mapped = self.reference.latents.in_space(generator, split.space)[self.reference.index]

    def latents(self, generator, split, columns, classes, truncation):
        if self._seeded is not None:
            return self._seeded.latents(generator, split, columns, classes, truncation)
        if self._mapped is None:
            self.check(generator, split)
        mapped = self._mapped
        return mapped.unsqueeze(0).expand(len(columns), *mapped.shape)

    def images(self, generator, split, count, classes, truncation):
        if self._seeded is not None:
            return self._seeded.images(generator, split, count, classes, truncation)
        source, index = self.reference.latents, self.reference.index
        row_class = None if source.classes is None else torch.tensor(source.classes[index:index + 1])
        offsets = None if source.offsets is None else source.offsets[index:index + 1].to(generator.device)
        latent = source.tensor[index:index + 1].to(generator.device)
        return generator.synthesize(latent, space=source.space, classes=row_class, truncation=source.truncation,
                                    offsets=offsets)


def _row_source(sources: Sequence[int] | Latents | RowSource) -> RowSource:
    if isinstance(sources, Latents):
        return LatentRows(sources)
    if isinstance(sources, (SeedRows, LatentRows)):
        return sources
    if isinstance(sources, (str, bytes)) or not isinstance(sources, (Sequence, range)):
        raise invalid("sources", sources, "seeds (a list of integers), a Latents, or a row source")
    seeds = [check_seed("sources", s) for s in sources]
    return SeedRows(tuple(seeds))


def _prepare(generator: GeneratorAdapter, split: ContentStyleSplit, sources: Sequence[int] | Latents | RowSource,
             truncation: float | None, class_id: int | str | None) -> _Content:
    """The sources' latents in the split's space, with their offsets and classes; inputs checked."""
    split.check_generator(generator)  # other weights, or a space the generator lacks: one line
    rows = _row_source(sources)
    offsets = None
    if isinstance(rows, LatentRows):
        source = rows.source
        source.check_generator(generator)  # other weights: one line (FingerprintMismatchError)
        if truncation is not None and generator.check_truncation(truncation) != source.truncation:
            raise invalid("truncation", truncation, "the truncation the latents were inverted with "
                          f"({source.truncation!r})", "Drop --truncation: an inverted photo renders as it was inverted")
        truncation = source.truncation
        if source.classes is not None and class_id is not None:
            raise invalid("class", class_id, "none: the latents file records each row's class", "Drop --class")
        classes = None if source.classes is None else torch.tensor(source.classes, device=generator.device)
        if source.offsets is not None and split.space != source.space:
            raise invalid("split", f"space {split.space!r}", f"the latents' own space {source.space!r}: their "
                          "feature offsets belong to it", "Use a split of that space")
        latents = source.in_space(generator, split.space)
        offsets = rows.offsets(generator)
    else:
        truncation = generator.check_truncation(truncation)
        classes = generator.class_tensor(generator.resolve_class(class_id), len(rows))
        with torch.inference_mode():
            z = rows.latents(generator, truncation)
            latents = generator.to_space(z, "z", split.space, truncation=truncation, classes=classes)
    return _Content(rows, latents, offsets, classes, truncation)


def _style_columns(reference: StyleReference | None, variations: int,
                   seed: int) -> tuple[tuple[dict[str, Any], ...], _Styles]:
    """The columns' identities and where their styles come from: ``variations`` seeded styles, or the reference."""
    if reference is not None:
        return ({"reference": reference.describe()},), _ReferenceStyle(reference)
    variations = check_count("variations", variations, 1, MAX_VARIATIONS)
    seeds = style_seeds(seed, variations)
    return tuple({"style_seed": s} for s in seeds), _SeedStyles(seeds)


def vary_shards(count: int, columns: int, batch_size: int, max_rows: int = 16) -> list[tuple[int, int]]:
    """The shards of a run of ``count`` sources and ``columns`` styles: ``(first row, end row)`` runs of whole
    grid pages (``max_rows`` rows of ``columns + 1`` images) that begin where a batch of ``batch_size``
    begins, so a shard renders in exactly the batches one process renders (and is measured alone: the
    figures of one process and of any number of ranks are the same numbers)."""
    per_row = columns + 1
    starts = [row for row in range(0, count, max_rows) if row * per_row % batch_size == 0]
    return list(zip(starts, [*starts[1:], count]))


def _batches(start_row: int, stop_row: int, columns: int, batch_size: int) -> Iterator[list[tuple[int, int]]]:
    """``(row, column)`` jobs of rows ``start_row … stop_row − 1`` in grid order, ``batch_size`` at a time;
    column −1 is the source itself. ``start_row`` begins a batch (:func:`vary_shards`)."""
    jobs = [(s, v) for s in range(start_row, stop_row) for v in range(-1, columns)]
    for start in range(0, len(jobs), batch_size):
        yield jobs[start:start + batch_size]


@torch.inference_mode()
def _run(generator: GeneratorAdapter, split: ContentStyleSplit, sources: Sequence[int] | Latents | RowSource,
         styles: tuple[dict[str, Any], ...], style: _Styles, *, truncation: float | None,
         class_id: int | str | None, batch_size: int, reference: bool, max_rows: int = 16) -> VaryResult:
    parts = _run_shards(generator, split, sources, styles, style, truncation=truncation, class_id=class_id,
                        batch_size=batch_size, reference=reference, max_rows=max_rows)
    return _joined([part for _, part in parts])


@torch.inference_mode()
def _run_shards(generator: GeneratorAdapter, split: ContentStyleSplit, sources: Sequence[int] | Latents | RowSource,
                styles: tuple[dict[str, Any], ...], style: _Styles, *, truncation: float | None,
                class_id: int | str | None, batch_size: int, reference: bool, max_rows: int,
                only: Sequence[int] | None = None) -> list[tuple[int, VaryResult]]:
    """``(first row, result of the shard's rows)`` of each :func:`vary_shards` shard (those numbered ``only``,
    or all). The content latents are mapped for every row at once (one process's batch) on every rank."""
    batch_size = check_count("batch_size", batch_size, 1)
    content = _prepare(generator, split, sources, truncation, class_id)
    style.check(generator, split)
    count, columns = len(content.rows), len(styles)
    style_images = style.images(generator, split, columns, content.classes, content.truncation).float().cpu()
    plan = vary_shards(count, columns, batch_size, max_rows)
    return [(plan[n][0], _render_shard(generator, split, content, style, styles, style_images, plan[n],
                                       batch_size=batch_size, reference=reference))
            for n in (range(len(plan)) if only is None else only)]


def _joined(parts: list[VaryResult]) -> VaryResult:
    """The results of consecutive shards as one (rows in order)."""
    first = parts[0]
    return VaryResult(torch.cat([p.sources for p in parts]), torch.cat([p.images for p in parts]),
                      torch.cat([p.latents for p in parts]), first.space, first.style_images, first.styles,
                      tuple(k for p in parts for k in p.rows), tuple(r for p in parts for r in p.per_source))


def _render_shard(generator: GeneratorAdapter, split: ContentStyleSplit, content: _Content, style: _Styles,
                  styles: tuple[dict[str, Any], ...], style_images: torch.Tensor, shard: tuple[int, int], *,
                  batch_size: int, reference: bool) -> VaryResult:
    """Rows ``shard[0] … shard[1] − 1`` rendered in one process's batches, and measured."""
    first, stop = shard
    columns = len(styles)
    rendered: dict[tuple[int, int], torch.Tensor] = {}
    mixed: dict[tuple[int, int], torch.Tensor] = {}
    for batch in _batches(first, stop, columns, batch_size):
        rows = [s for s, _ in batch]
        classes = None if content.classes is None else content.classes[rows]
        base = content.latents[rows]
        varied = [k for k, (_, v) in enumerate(batch) if v >= 0]
        latents = base.clone()
        if varied:
            picked = [batch[k][1] for k in varied]
            style_latents = style.latents(generator, split, picked, None if classes is None else classes[varied],
                                          content.truncation)
            latents[varied] = split.mix(base[varied], style_latents)
        offsets = None if content.offsets is None else content.offsets[rows]
        images = generator.synthesize(latents, space=split.space, classes=classes, truncation=content.truncation,
                                      offsets=offsets).float().cpu()
        for k, job in enumerate(batch):
            rendered[job] = images[k]
            if job[1] >= 0:
                mixed[job] = latents[k].cpu()
    own = range(first, stop)
    source_images = torch.stack([rendered[(s, -1)] for s in own])
    images = torch.stack([torch.stack([rendered[(s, v)] for v in range(columns)]) for s in own])
    latents = torch.stack([torch.stack([mixed[(s, v)] for v in range(columns)]) for s in own])
    part = _Content(content.rows, content.latents[first:stop],
                    None if content.offsets is None else content.offsets[first:stop],
                    None if content.classes is None else content.classes[first:stop], content.truncation)
    per_source = measure(generator, split, source_images, images, style_images, content=part, mixed=latents,
                         reference=reference)
    keys = tuple(content.rows.key(s) for s in own)
    return VaryResult(source_images, images, latents, split.space, style_images, styles, keys, per_source)


# ---------------------------------------------------------------------------------------------- measures
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


# ---------------------------------------------------------------------------------------------- files
MANIFEST_SCHEMA = "latentdirs.vary-manifest"
#: the split file a run that computed its split writes beside the grid (the manifest's command reads it)
SPLIT_NAME = "split.safetensors"
#: most images one run renders (sources × (variations + 1)): all are held in memory until the grid is written
MAX_IMAGES = 8192
#: the smallest tile side in a grid (pixels): smaller images are enlarged by a whole factor (tile_scale)
MIN_TILE = 64
_SEED_SPEC = re.compile(r"[0-9,\-\s]+")
_OWN_FILE = re.compile(r"grid(_p\d+)?\.png|" + re.escape(SPLIT_NAME))
_SOURCES_HELP = "seeds such as '0-3' or '0,5,9', or a latents file written by latentdirs invert"


def parse_sources(text: str) -> SeedRows | Latents:
    """``SOURCES`` of ``latentdirs vary``: a seed spec (digits, commas, ranges) or a latents file's path."""
    if _SEED_SPEC.fullmatch(text):
        return SeedRows(tuple(parse_index_spec(text, param="SOURCES")))  # a bad range: one line naming it
    path = Path(text)
    if not path.is_file():
        raise invalid("SOURCES", text, _SOURCES_HELP, "No such file, and not a seed spec", cls=SpecError)
    return Latents.load(path)


def parse_reference(text: str) -> StyleReference:
    """``--style-from``: a seed (``7``) or ``FILE:INDEX``, one row of a latents file (``me.safetensors:0``)."""
    stripped = text.strip()
    if stripped.isdigit():
        return StyleReference(seed=int(stripped))
    name, sep, index = stripped.rpartition(":")
    if not sep or not index.strip().isdigit() or not name:
        raise invalid("style_from", text, "a seed such as 7, or FILE:INDEX (one row of a latents file)",
                      "e.g. --style-from me.safetensors:0", cls=SpecError)
    if not Path(name).is_file():
        raise invalid("style_from", text, "FILE:INDEX with an existing latents file", "No such file", cls=SpecError)
    return StyleReference(latents=Latents.load(name), index=int(index))


def write_vary(generator: GeneratorAdapter, split: ContentStyleSplit, sources: Sequence[int] | Latents | RowSource,
               out_dir: str | Path, *, variations: int = 8, seed: int = 0,
               reference: StyleReference | int | None = None,
               truncation: float | None = None, class_id: int | str | None = None, batch_size: int = 32,
               split_path: str | Path | None = None, max_rows: int = 16, ranks: Ranks | None = None) -> dict[str, Any]:
    """Render :func:`vary` (or, with ``reference``, :func:`style_from`) into ``out_dir``; return the manifest.

    Files: ``grid.png`` (``grid_p{page}.png`` beyond ``max_rows`` sources) — rows = sources, first
    column the source, then one column per style (for a reference: the styled source, then the
    reference), images under 64 px enlarged by :func:`tile_scale`; ``split.safetensors`` when ``split_path`` is None (the split was not read from a file);
    ``manifest.json`` with the generator, the split, every row's identity and class, every column's
    style seed or reference, the measurements, and the ``latentdirs vary`` command that writes the same
    bytes. All or nothing (:class:`~latentdirs.atomic.StagedDirectory`); no input file is overwritten
    or removed.

    ``ranks`` (a launched run, :func:`latentdirs.distributed.setup`; every rank calls this with the same
    arguments): the same files, byte for byte, whatever the number of ranks (:func:`_write_sharded`).
    """
    out_dir = check_writable_directory(out_dir, param="out")
    rows = _row_source(sources)
    if isinstance(reference, int) and not isinstance(reference, bool):
        reference = StyleReference(seed=reference)
    columns = 1 if reference is not None else check_count("variations", variations, 1, MAX_VARIATIONS)
    if len(rows) * (columns + 1) > MAX_IMAGES:
        raise invalid("SOURCES", f"{len(rows)} sources × {columns + 1} columns", f"at most {MAX_IMAGES} images "
                      "in one run", "Give fewer sources, or split the run")
    inputs = _inputs(rows, reference, split_path)
    names = ["manifest.json", *([] if split_path is not None else [SPLIT_NAME])]
    for name in names:
        check_not_an_input(out_dir / name, inputs, param="out")
    styles, style = _style_columns(reference, columns, seed)
    common = dict(truncation=truncation, class_id=class_id, batch_size=batch_size, reference=reference is not None,
                  max_rows=max_rows)
    if ranks is not None:
        return _write_sharded(generator, split, rows, out_dir, ranks, styles, style, common, reference=reference,
                              seed=seed, split_path=split_path, inputs=inputs)
    result = _run(generator, split, rows, styles, style, **common)
    pages = _pages(result, rows, reference, generator, split, max_rows)
    for name, _ in pages:
        check_not_an_input(out_dir / name, inputs, param="out")
    from latentdirs.render import listed_files  # with the grid writer (PIL): not at library import

    stale_before = listed_files(out_dir, MANIFEST_SCHEMA, _OWN_FILE)
    staging = StagedDirectory(out_dir)
    try:
        records = [_write_page(staging.path, name, grid) for name, grid in pages]
        if split_path is None:
            split.save(staging.path / SPLIT_NAME)
            records.append({"file": SPLIT_NAME, "kind": "split"})
        manifest = _manifest(generator, split, rows, result, records, reference=reference, seed=seed,
                             truncation=truncation, class_id=class_id, batch_size=batch_size, max_rows=max_rows,
                             split_path=Path(split_path) if split_path is not None else out_dir / SPLIT_NAME,
                             out_dir=out_dir)
        written = [record["file"] for record in records]
        protected = {str(Path(p).resolve()) for p in inputs}
        stale = [name for name in stale_before
                 if name not in written and str((out_dir / name).resolve()) not in protected]
        staging.commit(written, "manifest.json", json.dumps(manifest, indent=1), stale=sorted(stale))
    except BaseException:
        staging.discard()
        raise
    return manifest


@dataclass(frozen=True)
class _Summary:
    """What the manifest needs of a sharded run's :class:`VaryResult`: the columns, and the rows' keys and figures."""

    styles: tuple[dict[str, Any], ...]
    rows: tuple[dict[str, Any], ...]
    per_source: tuple[dict[str, Any], ...]


def _write_sharded(generator: GeneratorAdapter, split: ContentStyleSplit, rows: RowSource, out_dir: Path,
                   ranks: Ranks, styles: tuple[dict[str, Any], ...], style: _Styles, common: dict[str, Any], *,
                   reference: StyleReference | None, seed: int, split_path: str | Path | None,
                   inputs: list[Path]) -> dict[str, Any]:
    """:func:`write_vary` on every rank of a launched run; the manifest, on every rank.

    The rows are cut into :func:`vary_shards` (whole grid pages starting on a batch boundary), dealt
    round-robin (:func:`latentdirs.distributed.assign`: more ranks than shards is refused); each rank
    renders, measures and writes its shards' pages into one staging folder named by the run, journalling
    each shard (files with size and sha256, rows, figures). Rank 0 then writes the split file (when it was
    computed) and the manifest, and commits. A rerun of an interrupted run renders only the shards whose
    journalled pages are missing or differ.
    """
    from latentdirs.distributed import Journal, ResumableStaging, assign, run_key
    from latentdirs.render import listed_files  # with the grid writer (PIL): not at library import

    max_rows, batch_size = common["max_rows"], check_count("batch_size", common["batch_size"], 1)
    shards = vary_shards(len(rows), len(styles), batch_size, max_rows)
    mine = assign(len(shards), ranks, what=f"shards (runs of whole {max_rows}-source grid pages that begin where a "
                  f"{batch_size}-image batch begins)", fix="Launch fewer processes, or give more sources")
    key = run_key({"schema": MANIFEST_SCHEMA, "version": __version__, "generator": generator.describe(),
                   "split": hashlib.sha256(split.to_bytes()).hexdigest(), "sources": rows.describe(),
                   "styles": list(styles), "common": {k: v for k, v in common.items() if k != "reference"},
                   "seed": seed, "out": str(out_dir.resolve()), "split_path": None if split_path is None else str(
                       Path(split_path).resolve())})

    def expected(number: int) -> dict[str, Any] | None:
        return {"rows": list(shards[number])} if 0 <= number < len(shards) else None

    def prepare() -> tuple[list[str], dict[int, Any]]:
        staging = ResumableStaging(out_dir, key)
        finished = Journal(staging.path, 0).finished(expected)
        return listed_files(out_dir, MANIFEST_SCHEMA, _OWN_FILE), {n: d for n, d in finished.items() if _trusted(d)}

    stale_before, finished = ranks.on_main(prepare)
    staging = ResumableStaging(out_dir, key, create=False)
    journal = Journal(staging.path, ranks.rank)
    todo = [number for number in mine if number not in finished]
    made: dict[int, dict[str, Any]] = {}
    parts = _run_shards(generator, split, rows, styles, style, only=todo, **common) if todo else []
    for number, (first, part) in zip(todo, parts):
        pages = _pages(part, rows, reference, generator, split, max_rows, first)
        for name, _ in pages:
            check_not_an_input(out_dir / name, inputs, param="out")
        data = {"grid": [_write_page(staging.path, name, page) for name, page in pages], "rows": list(part.rows),
                "per_source": list(part.per_source)}
        journal.record(number, expected(number), [r["file"] for r in data["grid"]], data)  # type: ignore[arg-type]
        made[number] = data
    gathered = ranks.gather(made)

    def finish() -> dict[str, Any]:
        done = dict(finished)
        for part in gathered or []:
            done.update(part)
        if sorted(done) != list(range(len(shards))):
            raise RuntimeError(f"sharded vary: shards {sorted(set(range(len(shards))) - set(done))} were not rendered")
        records = [record for n in range(len(shards)) for record in done[n]["grid"]]  # one process's order
        if split_path is None:
            split.save(staging.path / SPLIT_NAME)
            records.append({"file": SPLIT_NAME, "kind": "split"})
        summary = _Summary(styles, tuple(k for n in range(len(shards)) for k in done[n]["rows"]),
                           tuple(r for n in range(len(shards)) for r in done[n]["per_source"]))
        manifest = _manifest(generator, split, rows, summary, records, reference=reference, seed=seed,
                             truncation=common["truncation"], class_id=common["class_id"], batch_size=batch_size,
                             max_rows=max_rows, split_path=Path(split_path) if split_path is not None
                             else out_dir / SPLIT_NAME, out_dir=out_dir)
        written = [record["file"] for record in records]
        protected = {str(Path(p).resolve()) for p in inputs}
        stale = [name for name in stale_before
                 if name not in written and str((out_dir / name).resolve()) not in protected]
        staging.commit(written, "manifest.json", json.dumps(manifest, indent=1), stale=sorted(stale))
        return manifest

    return ranks.on_main(finish)


def _trusted(data: Any) -> bool:
    """A journal entry looks like this module's own (its page names, rows and figures), so a rerun may reuse it."""
    return (isinstance(data, dict) and all(isinstance(data.get(k), list) for k in ("grid", "rows", "per_source"))
            and all(isinstance(r, dict) and isinstance(r.get("file"), str) and _OWN_FILE.fullmatch(r["file"])
                    for r in data["grid"]))


def _inputs(rows: RowSource, reference: StyleReference | None, split_path: str | Path | None) -> list[Path]:
    """The files a run reads (never overwritten nor removed as stale)."""
    inputs = [] if split_path is None else [Path(split_path)]
    if isinstance(rows, LatentRows) and rows.source.path is not None:
        inputs.append(rows.source.path)
    if reference is not None and reference.latents is not None and reference.latents.path is not None:
        inputs.append(reference.latents.path)
    return inputs


def _pages(result: VaryResult, rows: RowSource, reference: StyleReference | None, generator: GeneratorAdapter,
           split: ContentStyleSplit, max_rows: int, first: int = 0) -> list[tuple[str, Any]]:
    """The composed grid pages ``(file name, (Grid, first row, end row))``: rows = sources, columns = the
    source, then the styles (for a reference: the styled source, then the reference). ``result`` holds
    rows ``first …`` (a shard: ``first`` is a multiple of ``max_rows``) of the run's ``len(rows)``."""
    from latentdirs.images import compose_grid, to_uint8  # PIL: imported when a grid is made, not with the library

    count, columns = result.images.shape[:2]
    blocks = [result.sources.unsqueeze(1), result.images]
    if reference is not None:  # the reference itself, in every row, beside what it gave
        blocks.append(result.style_images[:1].unsqueeze(0).expand(count, 1, *result.style_images.shape[1:]))
        labels = ["source", "styled", "reference"]
        title = f"style of {reference.label()} | {generator.spec}"
    else:
        labels = ["source", *[f"v{v}" for v in range(columns)]]
        title = f"vary | {generator.spec} | {_split_words(split)}"
    images = torch.cat(blocks, dim=1)
    scale = tile_scale(generator.resolution)
    tiles = to_uint8(images.flatten(0, 1)).repeat(scale, axis=1).repeat(scale, axis=2)
    block = tiles.reshape(count, images.shape[1], *tiles.shape[1:])
    page_count = -(-len(rows) // max_rows)  # the run's pages: a page's name does not depend on the shard
    pages = []
    for page in range(-(-count // max_rows)):
        start, stop = page * max_rows, min(count, (page + 1) * max_rows)
        grid = compose_grid(np.ascontiguousarray(block[start:stop]), column_labels=labels, title=title,
                            row_labels=[rows.label(first + s) for s in range(start, stop)])
        number = first // max_rows + page
        pages.append(("grid.png" if page_count == 1 else f"grid_p{number}.png", (grid, first + start, first + stop)))
    return pages


def tile_scale(resolution: int) -> int:
    """How many grid pixels one image pixel takes: small images (32 px) are enlarged (nearest) to at
    least :data:`MIN_TILE` px, so their column labels fit and the grid stays readable; else 1."""
    return max(1, MIN_TILE // max(1, resolution))


def _split_words(split: ContentStyleSplit) -> str:
    if split.kind == "flat":
        return f"style: {split.style_basis.shape[0]} dims of {split.space}"
    layers = list(split.style_layers)
    return f"style: {split.space} layers {layers[0]}-{layers[-1]}" if layers else f"style: no layers of {split.space}"


def _write_page(folder: Path, name: str, page: tuple[Any, int, int]) -> dict[str, Any]:
    from latentdirs.images import save_grid_and_strips

    grid, start, stop = page
    save_grid_and_strips(grid, folder / name)
    return {"file": name, "kind": "grid", "rows": list(range(start, stop))}


def _manifest(generator: GeneratorAdapter, split: ContentStyleSplit, rows: RowSource, result: VaryResult | _Summary,
              records: list[dict[str, Any]], *, reference: StyleReference | None, seed: int,
              truncation: float | None, class_id: int | str | None, batch_size: int, max_rows: int,
              split_path: Path, out_dir: Path) -> dict[str, Any]:
    """The manifest: what was rendered, how to render any image again, and the command that writes the same files."""
    resolved_class = None if isinstance(rows, LatentRows) else generator.resolve_class(class_id)
    command = _command(generator, rows, reference, seed=seed, variations=len(result.styles),
                       truncation=truncation, class_id=resolved_class, batch_size=batch_size,
                       split_path=split_path, out_dir=out_dir)
    row_classes = rows.classes if isinstance(rows, LatentRows) else None
    return {
        "schema": MANIFEST_SCHEMA,
        "schema_version": 1,
        "library_version": __version__,
        "generator": generator.describe(),
        "split": {"path": str(split_path.resolve()), "kind": split.kind, "space": split.space,
                  "style_dims": None if split.style_basis is None else int(split.style_basis.shape[0]),
                  "style_layers": list(split.style_layers), "measurements": split.measurements},
        "mode": "style-from" if reference is not None else "vary",
        "sources": rows.describe(),
        "rows": [{**key, "class": resolved_class if row_classes is None else row_classes[k]}
                 for k, key in enumerate(result.rows)],
        "columns": [{"kind": "source"}, *({"kind": "style", **style} for style in result.styles),
                    *([{"kind": "reference"}] if reference is not None else [])],
        "seed": seed,
        "truncation": None if isinstance(rows, LatentRows) else generator.check_truncation(truncation),
        "output": {"max_rows": max_rows, "batch_size": batch_size, "tile_scale": tile_scale(generator.resolution)},
        "measurements": summarise(result.per_source),
        "per_source": list(result.per_source),
        "how_to_reproduce": (
            "content = the row's latent (generator.sample_seeds([seed], truncation=truncation) for seed rows; "
            "Latents.load(sources.path).tensor[latent] for latents rows, with its feature offset) mapped to the "
            "split's space; style = generator.sample_seeds([style_seed], truncation=truncation) mapped to the "
            "split's space with the row's class (or the reference's latent); "
            "generator.synthesize(ContentStyleSplit.load(split.path).mix(content, style), space=split.space, "
            "classes=class, offsets=offset); the source column renders the content unmixed"),
        "command": command,
        "images": records,
    }


def _command(generator: GeneratorAdapter, rows: RowSource, reference: StyleReference | None, *, seed: int,
             variations: int, truncation: float | None, class_id: int | None, batch_size: int, split_path: Path,
             out_dir: Path) -> str | None:
    """The ``latentdirs vary`` command that writes the same files; None when an input was never saved."""
    if isinstance(rows, SeedRows):
        source_words = [",".join(map(str, rows.seeds))]
    elif rows.command_words() is not None:
        source_words = [str(rows.source.path.resolve())]  # type: ignore[union-attr]
    else:
        return None
    words = ["latentdirs", "vary", *source_words, *generator_words(generator), "--split", str(split_path.resolve())]
    if reference is not None:
        ref = reference.words()
        if ref is None:
            return None
        words += ["--style-from", ref]
    else:
        words += ["--variations", str(variations), "--seed", str(seed)]
    if truncation is not None and isinstance(rows, SeedRows):
        words += ["--truncation", repr(float(truncation))]
    if class_id is not None:
        words += ["--class", str(class_id)]
    words += ["--batch-size", str(batch_size), "-o", str(out_dir.resolve())]
    return shlex.join(words)


__all__ = ["MANIFEST_SCHEMA", "MAX_VARIATIONS", "StyleReference", "VaryResult", "edge_map",
           "edge_similarity", "measure", "mix", "parse_reference", "parse_sources", "style_from", "style_seeds",
           "summarise", "vary", "vary_shards", "write_vary"]
