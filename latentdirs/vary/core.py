"""The renders of :mod:`latentdirs.vary`: sources, styles, batches and shards (no files)."""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch

from latentdirs.errors import check_count, check_seed, invalid
from latentdirs.latent_file import Latents
from latentdirs.plan import LatentRows, RowSource, SeedRows

from latentdirs.vary.measures import measure, summarise

if TYPE_CHECKING:
    from latentdirs.content_style import ContentStyleSplit
    from latentdirs.generators.base import GeneratorAdapter

#: most variations per source (a grid wider than this is unreadable, and memory grows with it)
MAX_VARIATIONS = 256


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

