"""Write the files of an edit run: labelled grids, per-row strips, animations and a manifest.

Consumes :func:`latentdirs.edit.traverse` batch by batch. Memory stays flat: only the current
direction's current grid page (at most ``max_rows`` rows of uint8 tiles, :class:`_GridPager`) is held,
and PNG encoding runs on a small thread pool (zlib releases the GIL while compressing) with a bounded
queue, so the generator keeps rendering while files are written. A page's strips reuse the grid's
compressed bands (:mod:`latentdirs.png`), so they cost no second compression.

With ``Output(paste_back=True)`` (latents rows only), each edited image is also pasted back into its
full-size source photo (:mod:`latentdirs.pasteback`), written as ``paste/…png`` like every other file.

A run is all or nothing: files are written into a staging folder inside the output directory and
moved into place, with the manifest last, only when every image is written
(:class:`~latentdirs.atomic.StagedDirectory`); files an earlier run's manifest listed and this run does
not write again are removed, so the directory holds exactly what the new manifest lists.

Under ``torchrun``, :func:`render_edits_sharded` writes the same files from several processes: the plan
is cut into :func:`shard_plan`'s shards (whole batches, whole grid pages), each rendered and written by
one rank into a staging folder a rerun finds again, with a journal that lets an interrupted run resume
(docs/scale.md).
"""

from __future__ import annotations

import json
import re
import shlex
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from latentdirs.atomic import StagedDirectory, check_writable_directory
from latentdirs.directions import Directions
from latentdirs.distributed import Journal, Ranks, ResumableStaging, assign, run_key
from latentdirs.edit import EditBatch, EditItem, render_jobs, traverse
from latentdirs.errors import check_count, invalid
from latentdirs.images import compose_grid, grid_image, save_animation, save_grid_and_strips, to_uint8
from latentdirs.pasteback import PasteBack
from latentdirs.plan import EditPlan, generator_words
from latentdirs.version import __version__

if TYPE_CHECKING:
    from latentdirs.generators.base import GeneratorAdapter

MANIFEST_SCHEMA = "latentdirs.edit-manifest"
MANIFEST_NAME = "manifest.json"
ANIMATIONS = ("gif", "webp")
#: the names an edit run writes; only these are ever removed as an earlier run's stale outputs
_OWN_FILE = re.compile(r"(grid_d\d{3}(_p\d+)?\.png|anim_d\d{3}\.(gif|webp)|strips/d\d{3}_[A-Za-z0-9_]+\.png"
                       r"|paste/d\d{3}_[A-Za-z0-9_]+_[-+][0-9.e+-]+\.png)")


@dataclass(frozen=True)
class Output:
    """How an edit run's files are written (what is rendered is the :class:`~latentdirs.plan.EditPlan`).

    ``strips``: one strip per row and direction; ``animate``: ``"gif"`` or ``"webp"`` sweeps the
    strength; ``max_rows``: grid rows per page; ``paste_back``: each edited image pasted back into its
    full-size source photo (latents rows whose file records the photo; :mod:`latentdirs.pasteback`).
    """

    strips: bool = True
    animate: str | None = None
    max_rows: int = 16
    paste_back: bool = False

    def __post_init__(self) -> None:
        if self.animate is not None and self.animate not in ANIMATIONS:
            raise invalid("animate", self.animate, " or ".join(ANIMATIONS))
        if isinstance(self.max_rows, bool) or not isinstance(self.max_rows, int) or self.max_rows < 1:
            raise invalid("max_rows", self.max_rows, "an integer ≥ 1")
        if not isinstance(self.paste_back, bool):
            raise invalid("paste_back", self.paste_back, "True or False")

    def command_words(self) -> list[str]:
        return ((["--no-strips"] if not self.strips else []) + (["--animate", self.animate] if self.animate else [])
                + (["--paste-back"] if self.paste_back else []))


class _Writer:
    """A bounded pool of background image writers; errors surface on the main thread."""

    def __init__(self, workers: int = 2, max_pending: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="latentdirs-png")
        self._pending: deque[Future[Any]] = deque()
        self._max_pending = max_pending

    def submit(self, function: Callable[..., Any], *args: Any) -> Future[Any]:
        future = self._pool.submit(function, *args)
        self._pending.append(future)
        while len(self._pending) > self._max_pending:
            self._pending.popleft().result()
        return future

    def close(self) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _write_page(tiles: np.ndarray, path: Path, strip_paths: Sequence[Path | None], rows: Sequence[str],
                columns: Sequence[str], title: str) -> None:
    grid = compose_grid(tiles, row_labels=rows, column_labels=columns, title=title)
    save_grid_and_strips(grid, path, strip_paths)


def _animate_and_save(tiles: np.ndarray, path: Path, strengths: Sequence[str], title: str, per_row: int = 8) -> None:
    count, steps = tiles.shape[:2]
    columns = min(count, per_row)
    rows = -(-count // columns)
    frames = []
    for step in range(steps):
        page = np.full((rows * columns,) + tiles.shape[2:], 255, dtype=np.uint8)
        page[:count] = tiles[:, step]
        frames.append(grid_image(page.reshape(rows, columns, *tiles.shape[2:]),
                                 title=f"{title}  {strengths[step]}"))
    save_animation(frames, path)


class _GridPager:
    """Gathers one direction's rows into grid pages of at most ``max_rows`` rows and hands each full page
    (and the direction's first page as an animation) to the writer; keeps the manifest's file records."""

    def __init__(self, generator: GeneratorAdapter, directions: Directions, plan: EditPlan, output: Output,
                 folder: Path, writer: _Writer) -> None:
        self.generator, self.directions, self.plan, self.output = generator, directions, plan, output
        self.folder, self.writer = folder, writer
        self.records: list[dict[str, Any]] = []
        self.columns = plan.strengths.column_labels()
        self.pages = -(-plan.rows_per_direction // output.max_rows)
        self._index: int | None = None
        self._page_number = 0
        self._animated = False
        self._tiles: list[np.ndarray] = []  # the page's finished rows, each [C, H, W, 3]
        self._rows: list[list[EditItem]] = []  # their items, one per column
        self._row_tiles: list[np.ndarray] = []
        self._row_items: list[EditItem] = []

    def start_at(self, index: int, page_number: int) -> None:
        """Continue as if the pages before ``page_number`` of direction ``index`` were written (a shard of a
        sharded run starts there; the direction's animation comes with its first page)."""
        self._index, self._page_number, self._animated = index, page_number, page_number > 0

    def add(self, tile: np.ndarray, item: EditItem) -> None:
        """One rendered tile ``[H, W, 3]`` uint8, in the plan's order."""
        if item.index != self._index:
            self.flush()
            self._index, self._page_number, self._animated = item.index, 0, False
        self._row_tiles.append(tile)
        self._row_items.append(item)
        if len(self._row_tiles) == len(self.columns):
            self._tiles.append(np.stack(self._row_tiles))
            self._rows.append(self._row_items)
            self._row_tiles, self._row_items = [], []
            if len(self._tiles) == self.output.max_rows:
                self.flush()

    def flush(self) -> None:
        """Write the current page (if any rows are waiting)."""
        if not self._tiles:
            return
        index = self._index
        assert index is not None  # rows only exist after add() set the direction
        name = f"grid_d{index:03d}.png" if self.pages == 1 else f"grid_d{index:03d}_p{self._page_number}.png"
        title = f"{self.directions.label_of(index)} | {self.generator.spec}"
        tiles = np.stack(self._tiles)
        strips = [self._strip_name(index, items[0]) if self.output.strips else None for items in self._rows]
        self.writer.submit(_write_page, tiles, self.folder / name, [self.folder / s if s else None for s in strips],
                           [self._row_label(items[0]) for items in self._rows], self.columns, title)
        key = self.plan.strengths.key
        values = list(self.plan.strengths.values)
        row_records = [self._row_record(items) for items in self._rows]
        self.records.append({"file": name, "kind": "grid", "index": index, "rows": row_records, key: values})
        self.records.extend({"file": strip, "kind": "strip", "index": index, **row, key: values}
                            for strip, row in zip(strips, row_records) if strip)
        if self.output.animate and not self._animated:
            animation = f"anim_d{index:03d}.{self.output.animate}"
            frames = [f"{'amount' if self.plan.strengths.calibrated else 'alpha'}={c}" for c in self.columns]
            self.writer.submit(_animate_and_save, tiles, self.folder / animation, frames, title)
            self.records.append({"file": animation, "kind": "animation", "index": index, "rows": row_records,
                                 key: values})
            self._animated = True
        self._tiles, self._rows = [], []
        self._page_number += 1

    def _several_classes(self) -> bool:
        return len(self.plan.classes) > 1

    def _row_label(self, item: EditItem) -> str:
        if item.class_id is None or not self._several_classes():
            return self.plan.rows.label(item.position)
        names = self.generator.class_names
        name = names[item.class_id] if item.class_id < len(names) else str(item.class_id)
        return f"{name} {self.plan.rows.short_label(item.position)}"

    def _strip_name(self, index: int, item: EditItem) -> str:
        suffix = f"_c{item.class_id}" if item.class_id is not None and self._several_classes() else ""
        return f"strips/d{index:03d}_{self.plan.rows.file_tag(item.position)}{suffix}.png"

    def _row_record(self, items: list[EditItem]) -> dict[str, Any]:
        """The row's key, class, and per column the strength each image actually got (and, for calibrated
        amounts, whether its request was clamped)."""
        first = items[0]
        record: dict[str, Any] = {**dict(first.row), "class": first.class_id,
                                  "strengths": [item.alpha for item in items]}
        if self.plan.strengths.calibrated:
            record["clamped"] = [item.clamped for item in items]
        return record


def render_edits(generator: GeneratorAdapter, directions: Directions, plan: EditPlan, out_dir: str | Path, *,
                 output: Output = Output(), batch_size: int = 32, directions_path: str | Path | None = None,
                 progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Render ``plan`` into ``out_dir``; return the manifest (also written as ``manifest.json``).

    Files: ``grid_d{index:03d}[_p{page}].png`` with rows = (class, row) and columns = strengths;
    ``strips/d{index:03d}_{row}[_c{class}].png``; with ``output.animate``, ``anim_d{index:03d}.{gif|webp}``
    sweeping the strength; and ``manifest.json``, which records the plan, the generator (spec, load
    options, fingerprint), the strength every image actually got, and — when ``directions_path`` is
    given — the ``latentdirs edit`` command that writes the same files. All or nothing (module docstring).
    """
    out_dir = check_writable_directory(out_dir)
    plan.check(generator, directions)
    paste = PasteBack(plan) if output.paste_back else None  # checks every source photo before rendering
    stale_before = listed_files(out_dir)
    staging = StagedDirectory(out_dir)
    writer = _Writer()
    pager = _GridPager(generator, directions, plan, output, staging.path, writer)
    if paste is not None:
        paste.bind(staging.path, writer.submit)
    try:
        try:
            _feed(traverse(generator, directions, plan, batch_size=batch_size), pager, paste, progress)
        finally:
            writer.close()
        records = pager.records + (paste.records if paste is not None else [])
        manifest = _manifest(generator, directions, plan, output, records, batch_size=batch_size,
                             directions_path=directions_path, out_dir=out_dir)
        written = [record["file"] for record in records]
        staging.commit(written, MANIFEST_NAME, json.dumps(manifest, indent=1),
                       stale=sorted(set(stale_before) - set(written)))
    except BaseException:
        staging.discard()
        raise
    _warn_unlisted(out_dir, set(written))
    return manifest


def _feed(batches: Iterable[EditBatch], pager: "_GridPager", paste: PasteBack | None,
          progress: Callable[[int], None] | None) -> None:
    """Hand every rendered tile to the grid pager (and paste-back), then flush the last page."""
    for batch in batches:
        for tile, item in zip(to_uint8(batch.images), batch.items):
            pager.add(tile, item)
            if paste is not None:
                paste.add(tile, item)
        if progress:
            progress(len(batch.items))
    pager.flush()


def _manifest(generator: GeneratorAdapter, directions: Directions, plan: EditPlan, output: Output,
              records: list[dict[str, Any]], *, batch_size: int, directions_path: str | Path | None,
              out_dir: Path) -> dict[str, Any]:
    """The manifest: the plan's record and, derived from the same plan, the command that reproduces it."""
    command = None
    plan_words = plan.command_words()  # None for rows no command line can name (latents never saved)
    if directions_path is not None and plan_words is not None:
        words = (["latentdirs", "edit", str(Path(directions_path).resolve())] + generator_words(generator)
                 + plan_words + output.command_words()
                 + ["--batch-size", str(batch_size), "-o", str(out_dir.resolve())])
        command = shlex.join(words)
    return {
        "schema": MANIFEST_SCHEMA,
        "schema_version": 1,
        "library_version": __version__,
        "generator": generator.describe(),
        "directions": {"path": None if directions_path is None else str(directions_path),
                       "method": directions.method_name, "space": directions.space,
                       "layers": plan.effective_layers(directions), "labels": directions.meta.get("labels", {}),
                       "fingerprint": directions.fingerprint},
        **plan.describe(),
        "calibration": directions.meta.get("calibration"),
        "output": {"strips": output.strips, "animate": output.animate, "max_rows": output.max_rows,
                   "batch_size": batch_size, **({"paste_back": True} if output.paste_back else {})},
        "how_to_reproduce": ("z = the row's latent (generator.sample_seeds([seed], truncation=truncation) for "
                             "seed rows; Latents.load(rows.path).tensor[latent] for latents rows) mapped from "
                             "the rows' space to the directions' space; latentdirs.shift(z, directions, "
                             "index=index, alpha=strength) on the recorded layers; "
                             "generator.synthesize(…, classes=class)"),
        "command": command,
        "images": records,
    }


def listed_files(out_dir: Path, schema: str = MANIFEST_SCHEMA, own_file: re.Pattern[str] = _OWN_FILE) -> list[str]:
    """The output files an earlier run's manifest (of ``schema``) in ``out_dir`` lists — only names such a
    run writes (``own_file``), so a crafted manifest cannot have another file removed as stale."""
    try:
        manifest = json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
        images = manifest.get("images") if manifest.get("schema") == schema else None
        names = [record.get("file") for record in images] if isinstance(images, list) else []
    except (OSError, ValueError, AttributeError):
        return []
    return [name for name in names if isinstance(name, str) and own_file.fullmatch(name)]


def _warn_unlisted(out_dir: Path, written: set[str]) -> None:
    """Say which edit-output files remain that the new manifest does not list (an earlier run's, unlisted)."""
    found = [p.relative_to(out_dir).as_posix()
             for p in [*out_dir.glob("*"), *out_dir.glob("strips/*"), *out_dir.glob("paste/*")]]
    stale = sorted(name for name in found if _OWN_FILE.fullmatch(name) and name not in written)
    if stale:
        shown = ", ".join(stale[:5]) + (f", … ({len(stale)} in all)" if len(stale) > 5 else "")
        warnings.warn(f"out: {len(stale)} files in {str(out_dir)!r} are not from this run and not in its "
                      f"manifest: {shown}; remove them or use an empty directory", stacklevel=3)


# ---------------------------------------------------------------------- sharded runs (torchrun)
@dataclass(frozen=True)
class Shard:
    """A unit of a sharded edit: images ``start`` … ``stop`` − 1 in grid order, a run of whole batches
    (``start`` is a multiple of the batch size) that begins where a grid page begins — page ``page`` of
    direction ``index`` — and ends where one ends. One rank renders it and writes all of its pages'
    files, so each image is computed in the same batch, and each file from the same images, as in a
    single-process run."""

    start: int
    stop: int
    index: int
    page: int

    def check(self) -> dict[str, int]:
        """What a journal entry must match to stand for this shard."""
        return {"start": self.start, "stop": self.stop, "index": self.index, "page": self.page}


def shard_plan(plan: EditPlan, output: Output, batch_size: int) -> list[Shard]:
    """The shards of ``plan`` (in grid order, covering every image once) for this batch size and page size."""
    columns = len(plan.strengths.values)
    starts: list[tuple[int, int, int]] = []  # (row in grid order, direction index, page number) of each page
    current: int | None = None
    count = page = row = 0
    for index in plan.indices:  # mirrors _GridPager.add: another index starts page 0; max_rows rows fill a page
        for _ in range(plan.rows_per_direction):
            if index != current:
                current, count, page = index, 0, 0
            if count == 0:
                starts.append((row, index, page))
            count += 1
            if count == output.max_rows:
                count, page = 0, page + 1
            row += 1
    cuts = [(r * columns, index, page) for r, index, page in starts if r * columns % batch_size == 0]
    stops = [start for start, _, _ in cuts[1:]] + [plan.total]
    return [Shard(start, stop, index, page) for (start, index, page), stop in zip(cuts, stops)]


class _TrackedWriter:
    """The run's writer, keeping the futures of one shard's files (its journal entry waits for them)."""

    def __init__(self, writer: _Writer) -> None:
        self.writer = writer
        self.futures: list[Future[Any]] = []

    def submit(self, function: Callable[..., Any], *args: Any) -> None:
        self.futures.append(self.writer.submit(function, *args))


def render_edits_sharded(generator: GeneratorAdapter, directions: Directions, plan: EditPlan, out_dir: str | Path,
                         ranks: Ranks, *, output: Output = Output(), batch_size: int = 32,
                         directions_path: str | Path | None = None,
                         progress: Callable[[int], None] | None = None) -> dict[str, Any] | None:
    """:func:`render_edits` on every rank of a launched run (:func:`latentdirs.distributed.setup`): the same
    files, byte for byte, as one process writes, whatever the number of ranks; returns the manifest on
    rank 0 and None on the others. Every rank must call it with the same arguments.

    The plan is cut into :func:`shard_plan`'s shards, dealt round-robin to the ranks
    (:func:`latentdirs.distributed.assign`; more ranks than shards is refused); each rank renders its
    shards and writes their files into one staging folder named by what the run renders, journalling
    each finished shard (records, sizes, sha256). After every rank is done, rank 0 writes the manifest
    and commits the run. A rerun of an interrupted run renders only the shards whose journalled files
    are missing or differ; ``progress`` counts the images this rank renders.
    """
    batch_size = check_count("batch_size", batch_size)
    out_dir = Path(out_dir)
    plan.check(generator, directions)
    shards = shard_plan(plan, output, batch_size)
    mine = assign(len(shards), ranks, what=f"shards (runs of whole {batch_size}-image batches that end where a "
                  "grid page ends)", fix="Launch fewer processes, or render more rows or directions")
    paste = PasteBack(plan) if output.paste_back else None  # checks every source photo before rendering
    key = run_key(_manifest(generator, directions, plan, output, [], batch_size=batch_size,
                            directions_path=directions_path, out_dir=out_dir))

    def expected(number: int) -> dict[str, int] | None:
        return shards[number].check() if 0 <= number < len(shards) else None

    def prepare() -> tuple[list[str], dict[int, Any]]:
        check_writable_directory(out_dir)
        staging = ResumableStaging(out_dir, key)
        finished = Journal(staging.path, 0).finished(expected)
        return listed_files(out_dir), {n: data for n, data in finished.items() if _trusted(data)}

    stale_before, finished = ranks.on_main(prepare)
    staging = ResumableStaging(out_dir, key, create=False)
    todo = [number for number in mine if number not in finished]
    made = _render_shards(generator, directions, plan, output, batch_size, [(n, shards[n]) for n in todo],
                          staging, Journal(staging.path, ranks.rank), paste, progress)
    gathered = ranks.gather(made)
    result: list[dict[str, Any]] = []

    def finish() -> None:
        done = dict(finished)
        for part in gathered or []:
            done.update(part)
        if sorted(done) != list(range(len(shards))):
            raise RuntimeError(f"sharded edit: shards {sorted(set(range(len(shards))) - set(done))} were not rendered")
        records = ([r for n in range(len(shards)) for r in done[n]["grid"]]
                   + [r for n in range(len(shards)) for r in done[n]["paste"]])  # one process's order
        manifest = _manifest(generator, directions, plan, output, records, batch_size=batch_size,
                             directions_path=directions_path, out_dir=out_dir)
        written = [record["file"] for record in records]
        others = staging.others()
        staging.commit(written, MANIFEST_NAME, json.dumps(manifest, indent=1),
                       stale=sorted(set(stale_before) - set(written)))
        _warn_unlisted(out_dir, set(written))
        if others:
            warnings.warn(f"out: {len(others)} staging folders of unfinished sharded edits remain in "
                          f"{str(out_dir)!r} ({', '.join(p.name for p in others[:3])}); rerun those edits to "
                          "finish them, or delete the folders", stacklevel=2)
        result.append(manifest)

    ranks.on_main(finish)
    return result[0] if result else None


def _trusted(data: Any) -> bool:
    """A journal entry's records look like this module's own (file names it writes), so a rerun may reuse them."""
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("grid", "paste")):
        return False
    records = data["grid"] + data["paste"]
    return all(isinstance(r, dict) and isinstance(r.get("file"), str) and _OWN_FILE.fullmatch(r["file"])
               for r in records)


def _render_shards(generator: GeneratorAdapter, directions: Directions, plan: EditPlan, output: Output,
                   batch_size: int, shards: list[tuple[int, Shard]], staging: ResumableStaging, journal: Journal,
                   paste: PasteBack | None, progress: Callable[[int], None] | None) -> dict[int, dict[str, Any]]:
    """Render and write ``shards`` (``(number, shard)``, ascending); return ``{number: records}`` of each.

    A shard is journalled once its files are written (checked when the next shard is rendered, so the
    writer pool keeps working meanwhile); on an interruption the shards already written are journalled.
    """
    writer = _Writer()
    made: dict[int, dict[str, Any]] = {}
    waiting: deque[tuple[int, Shard, dict[str, Any], list[Future[Any]]]] = deque()

    def settle(entry: tuple[int, Shard, dict[str, Any], list[Future[Any]]]) -> None:
        number, shard, data, futures = entry
        for future in futures:
            future.result()
        journal.record(number, shard.check(), [r["file"] for r in data["grid"] + data["paste"]], data)
        made[number] = data

    jobs, cursor = plan.jobs(), 0
    try:
        for number, shard in shards:
            deque(islice(jobs, shard.start - cursor), maxlen=0)  # skip to the shard's first image
            own = list(islice(jobs, shard.stop - shard.start))
            cursor = shard.stop
            tracked = _TrackedWriter(writer)
            pager = _GridPager(generator, directions, plan, output, staging.path, tracked)  # type: ignore[arg-type]
            pager.start_at(shard.index, shard.page)
            first_paste = len(paste.records) if paste is not None else 0
            if paste is not None:
                paste.bind(staging.path, tracked.submit)
            # the batches one process renders: a shard starts on a batch boundary (start % batch_size == 0)
            _feed(render_jobs(generator, directions, plan, own, batch_size), pager, paste, progress)
            pasted = paste.records[first_paste:] if paste is not None else []
            waiting.append((number, shard, {"grid": pager.records, "paste": pasted}, tracked.futures))
            while len(waiting) > 1:
                settle(waiting.popleft())
    finally:
        try:
            writer.close()
        finally:
            while waiting and all(f.done() and not f.cancelled() and f.exception() is None for f in waiting[0][3]):
                settle(waiting.popleft())
    return made


__all__ = ["MANIFEST_SCHEMA", "Output", "Shard", "render_edits", "render_edits_sharded", "shard_plan"]
