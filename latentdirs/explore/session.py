"""What the explorer can show, label and save: the files named on the command line, and nothing else.

An :class:`ExploreSession` holds one generator, the direction files (by position: requests name a
file by its number, never by a path) and optionally a latents file whose photos can be the source.
A :class:`View` is one image: a direction of a file moved by one strength from one seed (or photo),
with a class, truncation ψ and layers. It is rendered through the same :class:`~latentdirs.plan.EditPlan`
and :func:`~latentdirs.edit.traverse` as ``latentdirs edit``, so the page shows exactly the tile an
edit renders; :meth:`ExploreSession.save` writes the view with :func:`~latentdirs.render.render_edits`
into a folder of the save directory, and its manifest's ``command`` reproduces those files byte for byte.

Every request value is parsed here with the CLI's own parsers and checks (:mod:`latentdirs.specs`,
:meth:`~latentdirs.plan.EditPlan.build`), so a bad value is refused with the message the CLI prints.
"""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from latentdirs.atomic import check_writable_directory
from latentdirs.directions import Directions, relabel
from latentdirs.errors import OutputError, invalid, unknown
from latentdirs.images import to_uint8
from latentdirs.latent_file import Latents
from latentdirs.plan import DEFAULT_ALPHAS, EditPlan, LatentRows
from latentdirs.png import encode_png
from latentdirs.specs import parse_alphas, parse_index_spec

if TYPE_CHECKING:
    from latentdirs.generators.base import GeneratorAdapter

#: the request fields a view is made of (``client`` and ``token`` are the server's)
VIEW_FIELDS = ("file", "index", "strength", "seed", "photo", "class", "truncation", "layers")
#: a folder name Save may create inside the save directory: no separators, no leading dot
_FOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: the longest label the page may write
MAX_LABEL = 200
#: images per forward pass when saving (recorded in the manifest's command)
SAVE_BATCH_SIZE = 32


@dataclass(frozen=True)
class View:
    """One image of the explorer: direction ``index`` of file ``file`` moved by ``strength`` (an alpha,
    or an amount of the factor for calibrated files) from ``seed`` or from row ``photo`` of the latents."""

    file: int
    index: int
    strength: float
    seed: int | None = None
    photo: int | None = None
    class_id: int | None = None
    truncation: float | None = None
    layers: tuple[int, ...] | None = None


class ExploreSession:
    """The generator and the files the explorer may read and write.

    Args:
        generator: the loaded generator every file is checked against (fingerprint, space).
        direction_paths: the direction files, in command-line order; labels are written back to them.
        latents_path: a latents file (``latentdirs invert``) whose photos the page offers as sources.
        save_dir: the folder Save writes into (one sub-folder per save; created if missing); None disables Save.
    """

    def __init__(self, generator: GeneratorAdapter, direction_paths: Sequence[str | Path], *,
                 latents_path: str | Path | None = None, save_dir: str | Path | None = None) -> None:
        if not direction_paths:
            raise invalid("directions", [], "one or more direction files", "e.g. latentdirs explore faces.safetensors")
        self.generator = generator
        self.paths = [Path(p) for p in direction_paths]
        self.directions = [Directions.load(p, generator=generator) for p in self.paths]
        self.latents_path = None if latents_path is None else Path(latents_path)
        self._photos: list[LatentRows] = []
        if self.latents_path is not None:
            latents = Latents.load(self.latents_path)
            latents.check_generator(generator)
            self._photos = [LatentRows(_one_row(latents, k)) for k in range(len(latents))]
        self.save_dir = None if save_dir is None else check_writable_directory(save_dir, param="save_dir")

    # ------------------------------------------------------------------ what the page shows
    def config(self) -> dict[str, Any]:
        """Everything the page builds its controls from (JSON-able): files, directions, ranges, classes."""
        generator = self.generator
        return {
            "generator": {"spec": generator.spec, "resolution": generator.resolution,
                          "classes": list(generator.class_names)},
            "files": [self._file_config(k) for k in range(len(self.paths))],
            "photos": [rows.label(0) for rows in self._photos],
            "save": self.save_dir is not None,
            "save_dir": None if self.save_dir is None else str(self.save_dir),
        }

    def _file_config(self, position: int) -> dict[str, Any]:
        directions = self.directions[position]
        space = self.generator.space(directions.space)
        calibration = directions.meta.get("calibration") if directions.calibration else None
        if calibration:  # amounts of the factor, relative to each seed; clamped to what the seed can reach
            low, high = (float(v) for v in calibration.get("range", (-1.0, 1.0)))
            width = high - low
            strength = {"min": -width, "max": width, "step": width / 200, "units": calibration.get("units"),
                        "factor": calibration.get("factor"), "calibrated": True}
        else:  # latent steps: the range `latentdirs edit` sweeps by default
            bound = max(abs(a) for a in DEFAULT_ALPHAS)
            strength = {"min": -bound, "max": bound, "step": 0.05, "units": None, "factor": None,
                        "calibrated": False}
        return {"name": self.paths[position].name, "space": directions.space, "layered": space.layered,
                "num_layers": space.num_layers, "layers": directions.layers, "strength": strength,
                "directions": [{"index": i, "label": directions.labels.get(i, "")} for i in range(len(directions))]}

    # ------------------------------------------------------------------ request values
    def parse_view(self, fields: Mapping[str, Any]) -> View:
        """A :class:`View` from request fields (strings, or JSON numbers), every one validated.

        Unknown fields are refused, so a misspelt one never silently falls back to a default.
        """
        extra = sorted(set(fields) - set(VIEW_FIELDS))
        if extra:
            raise unknown("parameter", extra[0], VIEW_FIELDS)
        file = _whole(fields.get("file"), "file", len(self.paths),
                      f"0-{len(self.paths) - 1} (the direction files named on the command line)")
        directions = self.directions[file]
        index = _single(parse_index_spec(_text(fields.get("index"), "indices"), param="indices"), "indices")
        directions.check_index(index, param="indices")
        key = "amounts" if directions.calibration else "alphas"
        strength = _single(parse_alphas(_text(fields.get("strength"), key), param=key), key)
        seed, photo = fields.get("seed"), fields.get("photo")
        if (seed in (None, "")) == (photo in (None, "")):
            raise invalid("seeds/photo", "both" if seed not in (None, "") else "neither",
                          "exactly one of seed and photo")
        return View(
            file=file, index=index, strength=strength,
            seed=None if seed in (None, "") else _single(parse_index_spec(_text(seed, "seeds"), param="seeds"),
                                                          "seeds"),
            photo=None if photo in (None, "") else _whole(photo, "photo", len(self._photos),
                                                          f"0-{len(self._photos) - 1} (the photos of --latents)"
                                                          if self._photos else "none: no --latents file was given"),
            class_id=None if fields.get("class") in (None, "") else self.generator.resolve_class(
                _class_value(fields["class"])),
            truncation=_truncation(fields.get("truncation")),
            layers=None if fields.get("layers") in (None, "") else tuple(
                parse_index_spec(_text(fields["layers"], "layers"), param="layers")),
        )

    # ------------------------------------------------------------------ rendering
    def render(self, view: View) -> tuple[bytes, dict[str, Any]]:
        """The view as PNG bytes, and what it got: ``alpha`` (the latent step), ``clamped``, ``ms``."""
        from latentdirs.edit import traverse

        started = time.perf_counter()
        directions = self.directions[view.file]
        rows = self._photos[view.photo] if view.photo is not None else None
        plan = self._plan(view, directions, rows, strengths=[view.strength])
        with warnings.catch_warnings():  # a clamped amount is reported in the response, not on the console
            warnings.simplefilter("ignore", UserWarning)
            batch = next(iter(traverse(self.generator, directions, plan, batch_size=1)))
        png = encode_png(to_uint8(batch.images)[0])
        item = batch.items[0]
        return png, {"alpha": item.alpha, "clamped": item.clamped, "label": directions.label_of(view.index),
                     "ms": round((time.perf_counter() - started) * 1000, 1)}

    def _plan(self, view: View, directions: Directions, rows: LatentRows | None,
              strengths: Sequence[float]) -> EditPlan:
        calibrated = bool(directions.calibration)
        return EditPlan.build(
            self.generator, directions, seeds=None if rows is not None else [view.seed], rows=rows,
            indices=[view.index], alphas=None if calibrated else list(strengths),
            amounts=list(strengths) if calibrated else None, clamp_amounts=calibrated,
            classes=None if view.class_id is None else [view.class_id], truncation=view.truncation,
            layers=view.layers)

    # ------------------------------------------------------------------ writing
    def label(self, file: Any, index: Any, name: Any) -> dict[int, str]:
        """Label direction ``index`` of file ``file`` as ``latentdirs label`` does: an atomic rewrite under
        the file's exclusive lock, re-reading it first so labels written meanwhile are kept. An empty
        name removes the label. Returns the file's labels."""
        position = _whole(file, "file", len(self.paths), f"0-{len(self.paths) - 1}")
        number = _single(parse_index_spec(_text(index, "index"), param="index"), "index")
        if not isinstance(name, str) or len(name) > MAX_LABEL or _CONTROL.search(name):
            raise invalid("name", name, f"text of at most {MAX_LABEL} characters without control characters")
        path = self.paths[position]
        directions = relabel(path, number, name.strip())  # what `latentdirs label` does
        self.directions[position] = directions
        return directions.labels

    def save(self, view: View, folder: Any) -> dict[str, Any]:
        """Write ``view`` as an edit into ``save_dir/folder`` (grid, strip, ``manifest.json``); return the manifest.

        The grid's columns are the strengths 0 and the view's (one column when it is 0), so the saved
        grid shows the image before and after. The direction file and the latents file are read
        afresh, as ``latentdirs edit`` reads them, and named by absolute path: the manifest's
        ``command`` then writes the same files byte for byte. A photo source saves every photo of the
        latents file as a row (a command line names a latents file, not one of its rows).
        """
        from latentdirs.render import Output, render_edits

        out = self._save_folder(folder)
        path = self.paths[view.file].resolve()
        directions = Directions.load(path)
        rows = None
        if view.photo is not None and self.latents_path is not None:
            rows = LatentRows(Latents.load(self.latents_path.resolve()))
        plan = self._plan(view, directions, rows, strengths=sorted({0.0, view.strength}))
        manifest = render_edits(self.generator, directions, plan, out, output=Output(),
                                batch_size=SAVE_BATCH_SIZE, directions_path=path)
        self.directions[view.file] = directions
        return manifest

    def _save_folder(self, folder: Any) -> Path:
        if self.save_dir is None:
            raise invalid("save", folder, "nothing: Save is off", "Start latentdirs explore with --save-dir DIR")
        if not isinstance(folder, str) or not _FOLDER.fullmatch(folder) or ".." in folder:
            raise invalid("folder", folder, "a folder name of letters, digits, '.', '_' and '-' (at most 64, "
                          "no '..', no path separators)", "e.g. yaw-seed3")
        root = self.save_dir.resolve()
        out = root / folder
        if out.resolve().parent != root:  # a symlink placed in the save dir must not lead out of it
            raise OutputError(f"folder: got {folder!r}, which leads out of {str(root)!r}; allowed: a folder "
                              "inside the save directory. Choose another name")
        return out


def _one_row(latents: Latents, position: int) -> Latents:
    """Row ``position`` of ``latents`` as a one-row :class:`Latents` (same header), so a view renders one image."""
    meta = dict(latents.meta)
    meta["labels"] = [latents.labels[position]]
    meta["rows"] = [latents.meta["rows"][position]]
    meta["classes"] = None if latents.classes is None else [latents.classes[position]]
    return Latents(latents.tensor[position:position + 1], meta=meta)


def _text(value: Any, param: str) -> str:
    """A request value as the text the CLI would have parsed (JSON numbers accepted)."""
    if isinstance(value, bool) or value is None or not isinstance(value, (str, int, float)):
        raise invalid(param, value, "a value (it is required)" if value is None else "text or a number")
    return value if isinstance(value, str) else repr(value)


def _single(values: list[Any], param: str) -> Any:
    if len(values) != 1:
        raise invalid(param, values, "exactly one value")
    return values[0]


def _whole(value: Any, param: str, count: int, allowed: str) -> int:
    text = _text(value, param)
    if not re.fullmatch(r"[0-9]{1,9}", text.strip()) or int(text) >= count:
        raise invalid(param, value, allowed)
    return int(text)


def _class_value(value: Any) -> int | str:
    """A class name, or an id when the value is all digits (as ``--class 6`` is)."""
    text = _text(value, "class").strip()
    return int(text) if re.fullmatch(r"[0-9]{1,9}", text) else text


def _truncation(value: Any) -> float | None:
    if value in (None, ""):
        return None
    text = _text(value, "truncation")
    try:
        return float(text)  # its range is checked by the generator, with the CLI's message
    except ValueError:
        raise invalid("truncation", value, "a number in (0, 1]", "Use e.g. --truncation 0.7") from None


__all__ = ["ExploreSession", "View", "VIEW_FIELDS"]
