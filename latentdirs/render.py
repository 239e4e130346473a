"""Write the files of an edit run: labelled grids, per-seed strips, animations and a manifest.

Consumes :func:`latentdirs.edit.traverse` batch by batch. Memory stays flat: only the current
direction's current grid page (at most ``max_rows`` rows of uint8 tiles) is held, and PNG encoding runs
on a small thread pool (zlib releases the GIL while compressing) with a bounded queue, so the
generator keeps rendering while files are written. A page's strips reuse the grid's compressed bands
(:mod:`latentdirs.png`), so they cost no second compression.
"""

from __future__ import annotations

import json
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from latentdirs import __version__
from latentdirs.atomic import check_writable_directory, write_text_atomic
from latentdirs.directions import Directions
from latentdirs.edit import EditItem, traverse
from latentdirs.images import compose_grid, grid_image, save_animation, save_grid_and_strips, to_uint8

MANIFEST_SCHEMA = "latentdirs.edit-manifest"


def format_alpha(alpha: float) -> str:
    return f"{alpha:+.3g}"


class _Writer:
    """A bounded pool of background image writers; errors surface on the main thread."""

    def __init__(self, workers: int = 2, max_pending: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="latentdirs-png")
        self._pending: deque[Future[Any]] = deque()
        self._max_pending = max_pending

    def submit(self, function: Callable[..., Any], *args: Any) -> None:
        self._pending.append(self._pool.submit(function, *args))
        while len(self._pending) > self._max_pending:
            self._pending.popleft().result()

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


def render_edits(generator, directions: Directions, *, out_dir: str | Path, seeds: Sequence[int],
                 indices: Sequence[int], alphas: Sequence[float] | None = None,
                 classes: Sequence[int | str] | None = None,
                 truncation: float | None = None, batch_size: int = 32, strips: bool = True,
                 animate: str | None = None, max_rows: int = 16, directions_path: str | None = None,
                 command: str | None = None, progress: Callable[[int], None] | None = None,
                 amounts: Sequence[float] | None = None, clamp_amounts: bool = False) -> dict[str, Any]:
    """Render ``seeds × indices × alphas`` (× classes) edits into ``out_dir``; return the manifest.

    With ``amounts`` instead of ``alphas`` (calibrated files), columns are requested amounts of the
    factor, each seed moved by its own calibrated strength (see :func:`latentdirs.edit.traverse`).

    Files (all written atomically): ``grid_d{index:03d}[_p{page}].png`` with rows = (class, seed) and
    columns = strengths; ``strips/d{index:03d}_seed{seed}[_c{class}].png``; with ``animate`` = ``"gif"``
    or ``"webp"``, ``anim_d{index:03d}.{animate}`` sweeping the strength; and ``manifest.json``, which
    reproduces every image (generator spec and fingerprint, seeds, class, truncation, index, strength).
    """
    out_dir = check_writable_directory(out_dir)
    class_ids = [generator.resolve_class(c) for c in classes] if classes else [generator.resolve_class(None)]
    rows_per_direction = [(c, s) for c in class_ids for s in seeds]
    calibrated = amounts is not None
    values = list(amounts if calibrated else alphas or [])
    strength_key = "amounts" if calibrated else "alphas"
    column_labels = [format_alpha(a) for a in values]
    frame_labels = [f"{'amount' if calibrated else 'alpha'}={label}" for label in column_labels]
    records: list[dict[str, Any]] = []
    writer = _Writer()

    def row_label(class_id: int | None, seed: int) -> str:
        if class_id is None:
            return f"seed {seed}"
        name = generator.class_names[class_id] if class_id < len(generator.class_names) else str(class_id)
        return f"{name} s{seed}" if len(class_ids) > 1 else f"seed {seed}"

    page: list[np.ndarray] = []
    page_rows: list[tuple[int | None, int]] = []
    row_tiles: list[np.ndarray] = []
    state = {"index": None, "page": 0, "animated": False}

    def flush_page() -> None:
        if not page:
            return
        index = state["index"]
        pages = -(-len(rows_per_direction) // max_rows)
        name = f"grid_d{index:03d}.png" if pages == 1 else f"grid_d{index:03d}_p{state['page']}.png"
        title = f"{directions.label_of(index)} | {generator.spec}"
        tiles = np.stack(page)
        strip_names = [strip_name(index, class_id, seed) if strips else None for class_id, seed in page_rows]
        writer.submit(_write_page, tiles, out_dir / name, [out_dir / n if n else None for n in strip_names],
                      [row_label(*r) for r in page_rows], column_labels, title)
        records.append({"file": name, "kind": "grid", "index": index,
                        "rows": [{"seed": s, "class": c} for c, s in page_rows], strength_key: values})
        records.extend({"file": n, "kind": "strip", "index": index, "seed": s, "class": c, strength_key: values}
                       for n, (c, s) in zip(strip_names, page_rows) if n)
        if animate and not state["animated"]:
            anim = f"anim_d{index:03d}.{animate}"
            writer.submit(_animate_and_save, tiles, out_dir / anim, frame_labels, title)
            records.append({"file": anim, "kind": "animation", "index": index,
                            "rows": [{"seed": s, "class": c} for c, s in page_rows], strength_key: values})
            state["animated"] = True
        page.clear()
        page_rows.clear()
        state["page"] += 1

    def strip_name(index: int, class_id: int | None, seed: int) -> str:
        suffix = "" if class_id is None or len(class_ids) == 1 else f"_c{class_id}"
        return f"strips/d{index:03d}_seed{seed}{suffix}.png"

    def finish_row(item: EditItem) -> None:
        page.append(np.stack(row_tiles))
        page_rows.append((item.class_id, item.seed))
        row_tiles.clear()
        if len(page) == max_rows:
            flush_page()

    try:
        for batch in traverse(generator, directions, seeds=seeds, indices=indices, alphas=alphas, amounts=amounts,
                              clamp_amounts=clamp_amounts,
                              classes=class_ids, truncation=truncation, batch_size=batch_size):
            for tile, item in zip(to_uint8(batch.images), batch.items):
                if item.index != state["index"]:
                    flush_page()
                    state.update(index=item.index, page=0, animated=False)
                row_tiles.append(tile)
                if len(row_tiles) == len(values):
                    finish_row(item)
            if progress:
                progress(len(batch.items))
        flush_page()
    finally:
        writer.close()

    manifest = {
        "schema": MANIFEST_SCHEMA,
        "schema_version": 1,
        "library_version": __version__,
        "generator": generator.describe(),
        "directions": {"path": directions_path, "method": directions.method_name, "space": directions.space,
                       "layers": directions.layers, "labels": directions.meta.get("labels", {}),
                       "fingerprint": directions.fingerprint},
        "seeds": list(seeds), "indices": list(indices), strength_key: values,
        "calibration": directions.meta.get("calibration"),
        "classes": class_ids, "truncation": truncation,
        "how_to_reproduce": ("z = generator.sample_seeds([seed], truncation=truncation) mapped to the "
                             "directions' space; latentdirs.shift(z, directions, index=index, alpha=alpha); "
                             "generator.synthesize(…, classes=class)"),
        "command": command,
        "images": records,
    }
    write_text_atomic(out_dir / "manifest.json", json.dumps(manifest, indent=1))
    return manifest


__all__ = ["render_edits", "format_alpha"]
