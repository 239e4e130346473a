"""Paste-back: each edited crop resized back into its full-size photo, blended in with a feathered border.

For a row of a latents file whose provenance records its source photo (``rows[k]["source"]``, a
:class:`~latentdirs.photos.PhotoRecord`), every edited image ``R × R`` is resized (Lanczos) to the
recorded ``crop`` (source pixels of the upright photo) and blended into the photo with an alpha that
is 1 inside the crop and falls smoothly (smoothstep) to 0 over a border of :data:`FEATHER_FRACTION` of
the crop's side; outside the crop the photo is unchanged, byte for byte.

The photo is re-read from the recorded absolute path exactly as it was prepared (EXIF orientation,
RGB conversion: :func:`latentdirs.photos.read_photo`), and refused when its sha256 differs from the
recorded one — before anything is rendered. Output: ``paste/d{index:03d}_{row tag}[_c{class}]_{strength}.png``,
one full-size PNG per direction, row and strength (upright, no EXIF).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from PIL import Image

from latentdirs.atomic import write_bytes_atomic
from latentdirs.errors import invalid
from latentdirs.photos import CropBox, PhotoRecord, read_photo
from latentdirs.plan import EditPlan, LatentRows
from latentdirs.png import encode_png

if TYPE_CHECKING:
    from latentdirs.edit import EditItem

#: the feathered border's width, as a fraction of the crop's shorter side
FEATHER_FRACTION = 0.08
#: decoded originals kept between uses (bytes); beyond it a photo is re-read (and re-checked) when needed
CACHE_BYTES = 512 * 2**20
FOLDER = "paste"


def feather_mask(width: int, height: int, fraction: float = FEATHER_FRACTION) -> np.ndarray:
    """float32 ``[height, width]`` alpha: 1 inside, a smoothstep ramp to ~0 over ``fraction`` of the shorter side
    at every edge (pixel centres: the outermost pixels get a small, non-zero weight)."""
    ramp = max(1.0, fraction * min(width, height))
    across = np.arange(width, dtype=np.float32) + 0.5
    down = np.arange(height, dtype=np.float32) + 0.5
    distance = np.minimum(np.minimum(across, width - across)[None, :], np.minimum(down, height - down)[:, None])
    t = np.clip(distance / ramp, 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def paste_back(original: np.ndarray, edited: np.ndarray, crop: CropBox, *,
               fraction: float = FEATHER_FRACTION) -> np.ndarray:
    """``original`` uint8 ``[H, W, 3]`` with ``edited`` uint8 ``[r, r, 3]`` resized into ``crop`` and feathered in.

    Returns a new uint8 ``[H, W, 3]``; pixels outside ``crop`` are those of ``original``.
    """
    if original.dtype != np.uint8 or original.ndim != 3 or original.shape[2] != 3:
        raise invalid("original", f"{original.dtype} array of shape {original.shape}", "uint8 [H, W, 3]")
    if not crop.inside((original.shape[1], original.shape[0])):
        raise invalid("crop", crop.as_list(), f"a box inside the {original.shape[1]}×{original.shape[0]} photo")
    resized = Image.fromarray(np.ascontiguousarray(edited)).resize((crop.width, crop.height), Image.Resampling.LANCZOS)
    alpha = feather_mask(crop.width, crop.height, fraction)[..., None]
    out = original.copy()
    rows, columns = slice(crop.y, crop.y + crop.height), slice(crop.x, crop.x + crop.width)
    region = out[rows, columns].astype(np.float32)
    out[rows, columns] = np.clip(np.rint(region + alpha * (np.asarray(resized, dtype=np.float32) - region)), 0, 255)
    return out


def strength_tag(value: float) -> str:
    """A strength in a file name: its shortest exact decimal with a sign, e.g. ``+3.0``, ``-0.5``."""
    text = repr(float(value))
    return text if text.startswith("-") else "+" + text


def _paste_and_save(original: np.ndarray, tile: np.ndarray, crop: CropBox, path: Path, fraction: float) -> None:
    write_bytes_atomic(path, encode_png(paste_back(original, tile, crop, fraction=fraction)))


class PasteBack:
    """The paste-back output of one edit run (used by :func:`latentdirs.render.render_edits`).

    Built before rendering: refuses rows that are not latents with recorded sources, and sources whose
    file is gone, changed (sha256) or no longer holds the recorded crop. :meth:`add` then turns each
    rendered tile into a pasted file (written by the run's writer pool, into its staging folder);
    :attr:`records` are the manifest's entries.
    """

    def __init__(self, plan: EditPlan, *, fraction: float = FEATHER_FRACTION, cache_bytes: int = CACHE_BYTES) -> None:
        rows = plan.rows
        if not isinstance(rows, LatentRows):
            raise invalid("paste_back", True, "only with latents rows (--latents FILE from latentdirs invert)",
                          "Drop --paste-back for seed rows: they have no photo to paste into")
        self.plan, self.rows, self.fraction = plan, rows, fraction
        self.sources: list[PhotoRecord] = []
        for position in range(len(rows)):
            record = rows.source.source(position)
            if record is None:
                raise invalid("paste_back", rows.label(position), "rows whose latents file records the source photo "
                              "(rows[k].source)", "Drop --paste-back, or invert the photo with latentdirs invert")
            self.sources.append(record)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_bytes = cache_bytes
        for position in range(len(rows)):  # every source checked now, so a changed photo fails before rendering
            self._original(position)
        self.records: list[dict[str, Any]] = []
        self._names: set[str] = set()
        self._submit: Callable[..., None] | None = None
        self._folder: Path | None = None

    def bind(self, folder: Path, submit: Callable[..., None]) -> None:
        """Where files go (the staging folder) and how jobs are run (the writer pool's ``submit``)."""
        self._folder, self._submit = folder, submit

    def _original(self, position: int) -> np.ndarray:
        if position in self._cache:
            self._cache.move_to_end(position)
            return self._cache[position]
        record = self.sources[position]
        image, _ = read_photo(record.absolute, sha256=record.sha256)
        if image.size != record.size or not record.crop.inside(image.size):
            raise invalid("paste_back", record.absolute, f"the {record.size[0]}×{record.size[1]} photo the latents "
                          f"file records", f"It is {image.size[0]}×{image.size[1]} now; invert it again")
        pixels = np.asarray(image, dtype=np.uint8)
        self._cache[position] = pixels
        while sum(a.nbytes for a in self._cache.values()) > self._cache_bytes and len(self._cache) > 1:
            self._cache.popitem(last=False)
        return pixels

    def name(self, item: EditItem) -> str:
        several = len(self.plan.classes) > 1 and item.class_id is not None
        suffix = f"_c{item.class_id}" if several else ""
        return f"{FOLDER}/d{item.index:03d}_{self.rows.file_tag(item.position)}{suffix}_{strength_tag(item.value)}.png"

    def add(self, tile: np.ndarray, item: EditItem) -> None:
        """One rendered tile uint8 ``[R, R, 3]`` and its item: queue its pasted photo, record it."""
        if self._submit is None or self._folder is None:
            raise RuntimeError("PasteBack.bind() must be called before add()")
        name = self.name(item)
        if name in self._names:  # the same strength twice in a plan: the same image, written once
            return
        self._names.add(name)
        record = self.sources[item.position]
        self._submit(_paste_and_save, self._original(item.position), tile, record.crop, self._folder / name,
                     self.fraction)
        singular = "amount" if self.plan.strengths.calibrated else "alpha"
        entry: dict[str, Any] = {"file": name, "kind": "paste", "index": item.index, **dict(item.row),
                                 "class": item.class_id, singular: item.value, "strength": item.alpha,
                                 "source": record.absolute, "crop": record.crop.as_list(), "feather": self.fraction}
        if self.plan.strengths.calibrated:
            entry["clamped"] = item.clamped
        self.records.append(entry)


__all__ = ["FEATHER_FRACTION", "PasteBack", "feather_mask", "paste_back", "strength_tag"]
