"""The edit plan: one immutable value that says what an edit renders.

An :class:`EditPlan` holds the rows (a *row source*: :class:`SeedRows`, or :class:`LatentRows` — the
latents of a file such as ``latentdirs invert`` writes), the classes, the truncation ψ, the directions'
indices and the layers they move, the strengths (alphas, or calibrated amounts with the clamp policy)
and whether the directions may meet other weights than their own. :func:`latentdirs.edit.traverse` renders it, :func:`latentdirs.render.render_edits` writes
its files, and the manifest and the command line that reproduces a run are both derived from it here
(:meth:`EditPlan.describe`, :meth:`EditPlan.command_words`), so the two never drift apart.

Grid order is always direction, then class, then row, then strength.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence

import torch

from latentdirs.measure import IMAGE_MEASURES
from latentdirs.errors import invalid
from latentdirs.latent_file import Latents, check_mapping

if TYPE_CHECKING:
    from latentdirs.directions import Directions
    from latentdirs.generators.base import GeneratorAdapter

#: the strengths a plan uses when none are given (the CLI's default too)
DEFAULT_ALPHAS = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)
#: how many directions an edit renders when no indices are given
DEFAULT_INDEX_COUNT = 5


class RowSource(Protocol):
    """Where an edit's rows come from: one starting latent per row, in the row source's :attr:`space`.

    :func:`~latentdirs.edit.traverse` maps the rows from :attr:`space` to the directions' space with
    ``generator.to_space`` (:meth:`EditPlan.check` refuses a mapping the family cannot do).
    """

    kind: str

    @property
    def space(self) -> str:
        """The latent space of :meth:`latents`: ``"z"`` for seeds, what the file says for latents."""

    def __len__(self) -> int: ...

    def latents(self, generator: GeneratorAdapter, truncation: float | None) -> torch.Tensor:
        """``[R, D]`` or ``[R, L, D]`` starting latents in :attr:`space` on the generator's device, row order kept."""

    def key(self, position: int) -> dict[str, Any]:
        """What identifies row ``position`` in a manifest, e.g. ``{"seed": 3}``."""

    def label(self, position: int) -> str:
        """The row's label in grids, e.g. ``"seed 3"``."""

    def short_label(self, position: int) -> str:
        """A shorter label, after a class name in grids of several classes, e.g. ``"s3"``."""

    def file_tag(self, position: int) -> str:
        """A file-name fragment for the row's strip, e.g. ``"seed3"``."""

    def describe(self) -> dict[str, Any]:
        """JSON-able description for the manifest."""

    def command_words(self) -> list[str] | None:
        """The CLI words that give the same rows, e.g. ``["--seeds", "0,1,2"]``; None when no words can
        (latents never saved to a file)."""


@dataclass(frozen=True)
class SeedRows:
    """Rows drawn from seeds: row ``k`` starts at ``generator.sample_seeds([seeds[k]])``."""

    seeds: tuple[int, ...]
    kind: str = "seeds"

    def __post_init__(self) -> None:
        if not self.seeds:
            raise invalid("seeds", list(self.seeds), "at least one seed", "e.g. --seeds 0-7")
        bad = [s for s in self.seeds if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2 ** 63]
        if bad:
            raise invalid("seeds", bad[:5], "integers in 0 … 2^63-1")

    @property
    def space(self) -> str:
        return "z"  # seeds are drawn in z and mapped from there

    def __len__(self) -> int:
        return len(self.seeds)

    def latents(self, generator: GeneratorAdapter, truncation: float | None) -> torch.Tensor:
        return generator.sample_seeds(list(self.seeds), space="z", truncation=truncation)

    def key(self, position: int) -> dict[str, Any]:
        return {"seed": self.seeds[position]}

    def label(self, position: int) -> str:
        return f"seed {self.seeds[position]}"

    def short_label(self, position: int) -> str:
        return f"s{self.seeds[position]}"

    def file_tag(self, position: int) -> str:
        return f"seed{self.seeds[position]}"

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "seeds": list(self.seeds)}

    def command_words(self) -> list[str]:
        return ["--seeds", ",".join(map(str, self.seeds))]


_UNSAFE = re.compile(r"[^A-Za-z0-9]+")


def file_tag(label: str, limit: int = 40) -> str:
    """A file-name fragment of ``label``: runs of other characters than ``A-Z a-z 0-9`` become ``_``."""
    return _UNSAFE.sub("_", label).strip("_")[:limit].strip("_") or "row"


@dataclass(frozen=True, eq=False)
class LatentRows:
    """Rows from a :class:`~latentdirs.latent_file.Latents` (inverted photos): row ``k`` is ``latents.tensor[k]``.

    Rows are labelled by the file's labels (the photos' file-name stems) and keep its space (``z``,
    ``w``, ``w+``, …). When the file records a class per row and the edit gives no class, each row
    renders under its own class (:attr:`EditPlan.row_classes`). The latents render with the truncation
    they were inverted with; an edit may not ask for another. Rows of a file with feature offsets
    (schema v2) render with their row's offset (:meth:`offsets`): a z edit then moves the image exactly
    as it moves ``G(z)``, the offset being a constant after the generator's affine first layer.
    """

    source: Latents
    kind: str = "latents"
    _tags: tuple[str, ...] = field(init=False, repr=False)
    _digests: tuple[str | None, ...] = field(init=False, repr=False)
    _labels: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.source, Latents):
            raise invalid("rows", type(self.source).__name__, "a Latents object (latentdirs.latent_file)")
        object.__setattr__(self, "_labels", tuple(self.source.labels))
        object.__setattr__(self, "_tags", _unique_tags(self._labels))
        records = [self.source.source(k) for k in range(len(self.source))]  # validated once, here
        object.__setattr__(self, "_digests", tuple(None if r is None else r.sha256 for r in records))

    @property
    def space(self) -> str:
        return self.source.space

    @property
    def classes(self) -> list[int] | None:
        """The class recorded per row, or None."""
        return self.source.classes

    def __len__(self) -> int:
        return len(self.source)

    def latents(self, generator: GeneratorAdapter, truncation: float | None) -> torch.Tensor:
        return self.source.tensor.to(generator.device)  # truncation: checked equal to the file's in check()

    def offsets(self, generator: GeneratorAdapter) -> torch.Tensor | None:
        """The feature offsets ``[R, C, H, W]`` the rows render with, on the generator's device, or None."""
        return None if self.source.offsets is None else self.source.offsets.to(generator.device)

    def key(self, position: int) -> dict[str, Any]:
        return {"latent": position, "label": self._labels[position], "source_sha256": self._digests[position]}

    def label(self, position: int) -> str:
        return self._labels[position]

    def short_label(self, position: int) -> str:
        label = self._labels[position]
        return label if len(label) <= 12 else label[:11] + "…"

    def file_tag(self, position: int) -> str:
        return self._tags[position]

    def describe(self) -> dict[str, Any]:
        path = self.source.path
        described = {"kind": self.kind, "path": None if path is None else str(path),
                     "absolute": None if path is None else str(path.resolve()), "sha256": self.source.sha256,
                     "space": self.space, "count": len(self), "labels": self.source.labels,
                     "classes": self.source.classes, "truncation": self.source.truncation}
        if self.source.offsets is not None:  # only then: manifests of v1 latents stay as they were
            described["feature_offsets"] = list(self.source.offsets.shape)
        return described

    def command_words(self) -> list[str] | None:
        if self.source.path is None:
            return None  # never saved: nothing on a command line names these rows
        return ["--latents", str(self.source.path.resolve())]

    def check(self, generator: GeneratorAdapter, plan: "EditPlan") -> None:
        """Refuse what these rows cannot render under ``plan``: other weights (unless allowed), another
        space shape, classes the generator lacks, another truncation than the inversion's."""
        self.source.check_generator(generator, strict=not plan.allow_other_generator)
        if plan.truncation != self.source.truncation:
            recorded = "none" if self.source.truncation is None else f"ψ = {self.source.truncation!r}"
            raise invalid("truncation", plan.truncation, f"the truncation the latents were inverted with ({recorded})",
                          "Drop --truncation: an inverted photo renders as it was inverted")


def _unique_tags(labels: Sequence[str]) -> tuple[str, ...]:
    """File tags of ``labels``; tags two labels share get ``_r{position}``, so no strip overwrites another."""
    tags = [file_tag(label) for label in labels]
    counts: dict[str, int] = {}
    for tag in tags:
        counts[tag] = counts.get(tag, 0) + 1
    tags = [f"{tag}_r{k}" if counts[tag] > 1 else tag for k, tag in enumerate(tags)]
    if len(set(tags)) < len(tags):  # a label that already ended in _rK: fall back to positions
        tags = [f"r{k}_{tag}" for k, tag in enumerate(tags)]
    return tuple(tags)


@dataclass(frozen=True)
class Strengths:
    """The columns of every grid: ``alphas`` (latent steps), or calibrated ``amounts`` of the factor.

    ``clamp`` (calibrated only): a request that leaves a row's calibrated range is clamped to it (and the
    manifest says so) instead of refused. ``correct`` (calibrated only): the measurement — ``"registration"``
    or ``"saliency"`` — by which each image's step is corrected (:mod:`latentdirs.correction`) instead of
    taken from the calibration alone; ``None``: not corrected.
    """

    values: tuple[float, ...]
    calibrated: bool = False
    clamp: bool = False
    correct: str | None = None

    def __post_init__(self) -> None:
        if not self.values:
            raise invalid(self.key, [], "at least one strength", "e.g. --alphas -3:3:7")
        if self.clamp and not self.calibrated:
            raise invalid("clamp_amounts", True, "only with amounts (a calibrated edit)", "Drop --clamp-amounts")
        if self.correct is not None and self.correct not in IMAGE_MEASURES:
            raise invalid("correct_amounts", self.correct,
                          " or ".join(map(repr, IMAGE_MEASURES)) + " (True: registration)")
        if self.correct and not self.calibrated:
            raise invalid("correct_amounts", self.correct, "only with amounts (a calibrated edit)",
                          "Drop --correct-amounts, or give --amounts with a calibrated direction file")

    @property
    def key(self) -> str:
        """``"amounts"`` or ``"alphas"``: the manifest field and the CLI option's name."""
        return "amounts" if self.calibrated else "alphas"

    def column_labels(self) -> list[str]:
        return [f"{value:+.3g}" for value in self.values]

    def command_words(self) -> list[str]:
        words = [f"--{self.key}", ",".join(repr(value) for value in self.values)]  # repr: shortest exact
        words += ["--clamp-amounts"] if self.clamp else []
        return words + (["--correct-amounts", self.correct] if self.correct else [])


@dataclass(frozen=True)
class EditPlan:
    """What an edit renders: ``rows × classes`` rows per direction, one column per strength.

    Attributes:
        rows: the row source (:class:`SeedRows`, :class:`LatentRows`).
        indices: the directions rendered, in order.
        strengths: alphas or calibrated amounts (:class:`Strengths`).
        classes: class ids, one grid row block each; ``(None,)`` for unconditional generators, and with
            ``row_classes``.
        truncation: ψ in (0, 1], or None.
        layers: for layered spaces, the layers moved (None: the direction file's own layers).
        allow_other_generator: render even when the generator's fingerprint differs from the file's
            (the direction file's, and a latents file's).
        row_classes: each row renders under the class its row source records (:class:`LatentRows` of a
            conditional generator's inversion); ``classes`` is then ``(None,)``.
    """

    rows: RowSource
    indices: tuple[int, ...]
    strengths: Strengths
    classes: tuple[int | None, ...] = (None,)
    truncation: float | None = None
    layers: tuple[int, ...] | None = None
    allow_other_generator: bool = False
    row_classes: bool = False

    @classmethod
    def build(cls, generator: GeneratorAdapter, directions: Directions, *, seeds: Sequence[int] | None = None,
              rows: RowSource | Latents | None = None, indices: Sequence[int] | None = None,
              alphas: Sequence[float] | None = None, amounts: Sequence[float] | None = None,
              clamp_amounts: bool = False, correct_amounts: bool | str = False,
              classes: Sequence[int | str] | int | str | None = None,
              truncation: float | None = None, layers: Sequence[int] | None = None,
              allow_other_generator: bool = False) -> "EditPlan":
        """A validated plan from the keyword form users type (the API's and the CLI's common case).

        Exactly one of ``seeds`` / ``rows`` (a row source, or a :class:`~latentdirs.latent_file.Latents`,
        taken as :class:`LatentRows`) and at most one of ``alphas`` / ``amounts`` (default: alphas −3 … 3);
        ``indices`` default to the first five directions; ``classes`` are names or ids;
        ``correct_amounts``: ``True`` (by registration) or the measurement's name, ``"saliency"``.
        With :class:`LatentRows` rows: no ``classes`` means each row's recorded class (when the file
        records them), and no ``truncation`` means the one the latents were inverted with.
        """
        if (seeds is None) == (rows is None):
            raise invalid("seeds/rows", "both" if seeds is not None else "neither", "exactly one of seeds and rows")
        if alphas is not None and amounts is not None:
            raise invalid("alphas/amounts", "both", "exactly one of alphas and amounts", "Give one of them")
        if isinstance(rows, Latents):  # a Latents object is a row source as it is
            rows = LatentRows(rows)
        source = rows if rows is not None else SeedRows(tuple(int(s) for s in seeds))  # type: ignore[union-attr]
        calibrated = amounts is not None
        strengths = Strengths(tuple(float(v) for v in (amounts if calibrated else alphas or DEFAULT_ALPHAS)),
                              calibrated=calibrated, clamp=bool(clamp_amounts),
                              correct="registration" if correct_amounts is True else (correct_amounts or None))
        chosen = list(range(min(DEFAULT_INDEX_COUNT, len(directions)))) if indices is None else list(indices)
        own_classes = (isinstance(source, LatentRows) and source.classes is not None and generator.conditional
                       and (classes is None or (not isinstance(classes, (int, str)) and not list(classes))))
        if own_classes:
            class_ids: tuple[int | None, ...] = (None,)
        elif classes is None or isinstance(classes, (int, str)):
            class_ids = (generator.resolve_class(classes),)
        else:
            class_ids = tuple(generator.resolve_class(c) for c in classes) or (generator.resolve_class(None),)
        if truncation is None and isinstance(source, LatentRows):
            truncation = source.source.truncation
        plan = cls(rows=source, indices=tuple(chosen), strengths=strengths, classes=class_ids,
                   truncation=generator.check_truncation(truncation),
                   layers=None if layers is None else tuple(int(i) for i in layers),
                   allow_other_generator=bool(allow_other_generator), row_classes=own_classes)
        plan.check(generator, directions)
        return plan

    # ------------------------------------------------------------------ validation
    def check(self, generator: GeneratorAdapter, directions: Directions) -> None:
        """Refuse a plan these directions and this generator cannot render (before any rendering)."""
        directions.check_generator(generator, strict=not self.allow_other_generator)
        if not self.indices:
            raise invalid("indices", [], "at least one direction index", f"e.g. 0-{len(directions) - 1}")
        for index in self.indices:
            directions.check_index(index, param="indices")
        space = generator.space(directions.space)
        if self.layers is not None:
            if not space.layered:
                raise invalid("layers", list(self.layers), f"none: space {space.name!r} has one layer",
                              "Drop --layers")
            bad = [i for i in self.layers if not 0 <= i < space.num_layers]
            if bad or not self.layers:
                raise invalid("layers", list(self.layers), f"layers 0-{space.num_layers - 1} of {space.name!r}")
        if self.strengths.calibrated:
            if not directions.calibration:
                raise invalid("amounts", list(self.strengths.values), "alphas only: this direction file is not "
                              "calibrated", "Use --alphas, or a file from a calibrated method such as -m regression")
            if len(directions) != 1 or space.layered:
                raise invalid("amounts", list(self.strengths.values),
                              "a calibrated file with one direction in a flat space")
        self._check_rows(generator, directions)

    def _check_rows(self, generator: GeneratorAdapter, directions: Directions) -> None:
        """The rows' own checks, their classes, and that their space maps to the directions' space."""
        if isinstance(self.rows, LatentRows):
            self.rows.check(generator, self)
        if self.row_classes and (not isinstance(self.rows, LatentRows) or self.rows.classes is None
                                 or self.classes != (None,)):
            raise invalid("row_classes", True, "only with LatentRows that record classes, and classes (None,)")
        generator.space(self.rows.space)
        check_mapping(generator, self.rows.space, directions.space, truncation=self.truncation)

    # ------------------------------------------------------------------ shape of the run
    @property
    def rows_per_direction(self) -> int:
        return len(self.classes) * len(self.rows)

    @property
    def total(self) -> int:
        """Number of images the plan renders."""
        return len(self.indices) * self.rows_per_direction * len(self.strengths.values)

    def jobs(self) -> Iterator[tuple[int, int | None, int, float]]:
        """``(direction index, class id, row position, strength value)`` in grid order."""
        row_classes = self.rows.classes if self.row_classes and isinstance(self.rows, LatentRows) else None
        for index in self.indices:
            for class_id in self.classes:
                for position in range(len(self.rows)):
                    chosen = row_classes[position] if row_classes is not None else class_id
                    for value in self.strengths.values:
                        yield index, chosen, position, value

    def effective_layers(self, directions: Directions) -> list[int] | None:
        return list(self.layers) if self.layers is not None else directions.layers

    # ------------------------------------------------------------------ records
    def describe(self) -> dict[str, Any]:
        """The plan as manifest fields (JSON-able)."""
        described: dict[str, Any] = {
            "rows": self.rows.describe(), "indices": list(self.indices), "classes": list(self.classes),
            "truncation": self.truncation, "layers": None if self.layers is None else list(self.layers),
            self.strengths.key: list(self.strengths.values),
            "clamp_amounts": self.strengths.clamp, "allow_other_generator": self.allow_other_generator,
        }
        if isinstance(self.rows, SeedRows):  # flat field kept for readers of manifest v1
            described["seeds"] = list(self.rows.seeds)
        if self.row_classes:
            described["row_classes"] = True
        if self.strengths.correct:  # only when on: manifests of plain edits keep their fields
            described["correct_amounts"] = self.strengths.correct
        return described

    def command_words(self) -> list[str] | None:
        """The ``latentdirs edit`` options that render this plan (everything explicit); None when the rows
        cannot be named on a command line (latents never saved)."""
        row_words = self.rows.command_words()
        if row_words is None:
            return None
        words = row_words + ["--indices", ",".join(map(str, self.indices))]
        words += self.strengths.command_words()
        for class_id in self.classes:
            if class_id is not None:
                words += ["--class", str(class_id)]
        if self.truncation is not None:
            words += ["--truncation", repr(self.truncation)]
        if self.layers is not None:
            words += ["--layers", ",".join(map(str, self.layers))]
        if self.allow_other_generator:
            words.append("--allow-other-generator")
        return words


def generator_words(generator: GeneratorAdapter) -> list[str]:
    """``-g SPEC`` and one ``--gen-opt KEY=VALUE`` per load option: the CLI words that reload ``generator``."""
    words = ["-g", generator.spec]
    for key, value in sorted(generator.load_options.items()):
        words += ["--gen-opt", f"{key}={_option_text(value)}"]
    return words


def _option_text(value: Any) -> str:
    """VALUE of ``--gen-opt KEY=VALUE`` that reads back as ``value`` (the CLI parses JSON when it can)."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return value  # plain text stays plain text
    return json.dumps(value)


__all__ = ["DEFAULT_ALPHAS", "EditPlan", "LatentRows", "RowSource", "SeedRows", "Strengths", "file_tag",
           "generator_words"]
