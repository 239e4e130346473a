"""The outputs of ``latentdirs vary``: sources and references parsed, grid pages, the split file and the
manifest, staged all-or-nothing (sharded under torchrun)."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from latentdirs.atomic import StagedDirectory, check_not_an_input, check_writable_directory
from latentdirs.errors import SpecError, check_count, invalid
from latentdirs.latent_file import Latents
from latentdirs.plan import LatentRows, RowSource, SeedRows, generator_words
from latentdirs.specs import parse_index_spec
from latentdirs.version import __version__

from latentdirs.vary.core import (MAX_VARIATIONS, StyleReference, VaryResult, _row_source, _run, _run_shards,
                                  _style_columns, _Styles, vary_shards)
from latentdirs.vary.measures import summarise

if TYPE_CHECKING:
    from latentdirs.content_style import ContentStyleSplit
    from latentdirs.distributed import Ranks
    from latentdirs.generators.base import GeneratorAdapter

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
    # a launched run probes on rank 0 alone, when it prepares the staging folder
    out_dir = check_writable_directory(out_dir, param="out") if ranks is None else Path(out_dir)
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
        check_writable_directory(out_dir, param="out")
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


