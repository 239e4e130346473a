"""Content and style of a generator's latents (issue 15, after MUNIT): a measured split and ``mix``.

MUNIT splits an image's code into *content* (spatial structure) and *style* (global appearance, injected
by AdaIN as per-channel scale and shift). A pretrained GAN has the same split, found here from the
generator, never hard-coded:

* **flat** spaces (DCGANs, ``synthetic``, module generators): a style *subspace* of z — the directions
  whose effect on a feature map is mostly a per-channel affine change (:mod:`.flat`); content is its
  orthogonal complement. ``mix(content, style) = content − P content + P style`` (P the projector onto
  the style basis).
* **layered** spaces (StyleGAN2 ``w+``, BigGAN ``blocks``): a set of style *rows*, the later rows whose
  resampling changes appearance but keeps structure (:mod:`.layered`). ``mix`` takes those rows from
  ``style`` and the rest from ``content``.

>>> import latentdirs
>>> generator = latentdirs.load_generator("synthetic", device="cpu")
>>> split = latentdirs.content_style_split(generator, samples=8)
>>> split.kind, split.space, split.style_dims
('flat', 'z', 2)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from latentdirs.atomic import write_bytes_atomic
from latentdirs.content_style import flat as _flat
from latentdirs.content_style import layered as _layered
from latentdirs.content_style.split_file import (BASIS_NAME, HEADER_KEY, SCHEMA_NAME, SCHEMA_VERSION,
                                                 ContentStyleFileError, check_basis, check_layers, is_split_file,
                                                 read_file)
from latentdirs.directions import GeneratorStamped, creation_time
from latentdirs.errors import (FingerprintMismatchError, InvalidValueError, NotSupportedError, check_count,
                               check_seed, invalid)
from latentdirs.generators.base import GeneratorAdapter
from latentdirs.version import __version__


@dataclass(frozen=True, eq=False)
class ContentStyleSplit(GeneratorStamped):
    """Which part of a latent is content and which is style, for one generator, with its measurements.

    Attributes:
        generator: the generator's ``describe()`` record (spec, options, fingerprint, spaces, …).
        kind: ``"flat"`` or ``"layered"``.
        space: where mixing happens: ``"z"`` (flat) or the layered space (``"w+"``, ``"blocks"``).
        style_basis: flat: float32 ``[K, D]`` orthonormal rows spanning the style subspace (CPU); None
            for layered.
        style_layers: layered: the rows of ``space`` that carry style, ascending; ``()`` for flat.
        measurements: JSON-able figures the split was chosen from (per direction / per row, threshold or
            boundary, how it was chosen).
        created: ISO-8601 time the split was made (``SOURCE_DATE_EPOCH`` honoured), or None.
    """

    generator: dict
    kind: str
    space: str
    style_basis: torch.Tensor | None
    style_layers: tuple[int, ...]
    measurements: dict
    created: str | None = field(default=None)

    def __post_init__(self) -> None:
        if self.kind not in ("flat", "layered"):
            raise invalid("kind", self.kind, "'flat' or 'layered'")
        if not isinstance(self.generator, dict):
            raise invalid("generator", type(self.generator).__name__, "the generator's describe() record (a dict)")
        if self.kind == "flat":
            if self.style_layers:
                raise invalid("style_layers", self.style_layers, "() for a flat split")
            object.__setattr__(self, "style_basis", check_basis(self.style_basis, self._space_dim(), where="split"))
        else:
            if self.style_basis is not None:
                raise invalid("style_basis", "a tensor", "None for a layered split")
            object.__setattr__(self, "style_layers", check_layers(list(self.style_layers), self.num_layers,
                                                                  where="split"))

    # ------------------------------------------------------------------ views
    def _space_record(self) -> dict[str, Any]:
        spaces = self.generator.get("spaces")
        record = spaces.get(self.space) if isinstance(spaces, dict) else None
        return record if isinstance(record, dict) else {}

    def _space_dim(self) -> int:
        dim = self._space_record().get("dim")
        if isinstance(dim, int) and dim >= 1:
            return dim
        return int(self.style_basis.shape[-1]) if isinstance(self.style_basis, torch.Tensor) else 0

    @property
    def latent_dim(self) -> int:
        """D: the dimension of (each row of) :attr:`space`."""
        return self._space_dim()

    @property
    def num_layers(self) -> int:
        """L: the rows of :attr:`space` (1 for flat)."""
        layers = self._space_record().get("num_layers", 1)
        return layers if isinstance(layers, int) and layers >= 1 else 1

    @property
    def style_dims(self) -> int:
        """K, the dimension of the style subspace (flat), or the number of style rows (layered)."""
        return int(self.style_basis.shape[0]) if self.style_basis is not None else len(self.style_layers)

    @property
    def content_layers(self) -> tuple[int, ...]:
        """Layered: the rows that carry content (the complement of :attr:`style_layers`); ``()`` for flat."""
        if self.kind == "flat":
            return ()
        return tuple(i for i in range(self.num_layers) if i not in self.style_layers)

    @property
    def meta(self) -> dict[str, Any]:
        """The JSON header of the split file (see :mod:`latentdirs.content_style.split_file`)."""
        return {
            "schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "library_version": __version__,
            "created": self.created, "generator": self.generator, "kind": self.kind, "space": self.space,
            "latent_dim": self.latent_dim, "num_layers": self.num_layers,
            "style_dims": self.style_dims, "style_layers": list(self.style_layers),
            "content_layers": list(self.content_layers), "measurements": self.measurements,
        }

    def __repr__(self) -> str:
        part = f"{self.style_dims} style dims" if self.kind == "flat" else f"style rows {list(self.style_layers)}"
        return f"<ContentStyleSplit {self.kind} in {self.space!r} of {self.generator_spec!r}: {part}>"

    # ------------------------------------------------------------------ mixing
    def mix(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Latents of :attr:`space` with the content of ``content`` and the style of ``style``.

        ``content``: ``[N, D]`` (flat) or ``[N, L, D]`` (layered); ``style``: the same shape, or one
        latent (``[1, …]``) for every row. Flat: ``content − P content + P style`` with ``P = SᵀS``
        (S the style basis); layered: the style rows from ``style``, the others from ``content``.
        Returns a new tensor on ``content``'s device and dtype (differentiable in both inputs).
        """
        expected = (self.latent_dim,) if self.kind == "flat" else (self.num_layers, self.latent_dim)
        for name, tensor in (("content", content), ("style", style)):
            if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape[1:]) != expected or tensor.shape[0] < 1:
                found = f"shape {tuple(tensor.shape)}" if isinstance(tensor, torch.Tensor) else type(tensor).__name__
                raise invalid(name, found, f"latents of shape {('N', *expected)} in space {self.space!r}")
        if style.shape[0] not in (1, content.shape[0]):
            raise invalid("style", f"{style.shape[0]} latents", f"1 or {content.shape[0]} (one per content latent)")
        style = style.to(content.device, content.dtype)
        if self.kind == "layered":
            return _layered.mix_rows(content, style, self.style_layers)
        basis = self.style_basis.to(content.device, content.dtype)
        return content + (style - content) @ basis.T @ basis

    # ------------------------------------------------------------------ generator checks and files
    def check_generator(self, generator: GeneratorAdapter) -> None:
        """Refuse a generator with other weights (fingerprint) or without this split's space and shape."""
        expected, actual = self.fingerprint, generator.fingerprint()
        if expected is not None and expected != actual:
            raise FingerprintMismatchError(
                f"content-style: the split was made on {self.generator_spec!r} with fingerprint {expected[:19]}…, "
                f"but the generator {generator.spec!r} has {actual[:19]}…; a split of other weights means nothing "
                "there. Use the matching generator, or make a split for this one (content_style_split)")
        space = generator.space(self.space) if self.space in generator.spaces else None
        if space is None or space.dim != self.latent_dim or space.num_layers != self.num_layers:
            raise invalid("split", f"space {self.space!r} ({self.num_layers} × {self.latent_dim})",
                          f"a space of {generator.spec!r}: "
                          + ", ".join(f"{n} ({s.num_layers} × {s.dim})" for n, s in generator.spaces.items()))

    def to_bytes(self) -> bytes:
        from safetensors.torch import save

        from latentdirs.latent_file import _jsonable

        tensors = {BASIS_NAME: self.style_basis} if self.style_basis is not None else {}
        header = json.dumps(_jsonable(self.meta), sort_keys=True, allow_nan=False)
        return save(tensors, metadata={HEADER_KEY: header})

    def save(self, path: str | Path) -> Path:
        """Write the split file atomically (temp file + rename); returns the path."""
        path = Path(path)
        write_bytes_atomic(path, self.to_bytes())
        return path

    @classmethod
    def load(cls, path: str | Path, generator: GeneratorAdapter | None = None) -> "ContentStyleSplit":
        """Read and validate a split file; with ``generator``, also refuse other weights (one line)."""
        path = Path(path)
        meta, tensors = read_file(path)
        try:
            split = cls(generator=meta["generator"], kind=meta["kind"], space=meta["space"],
                        style_basis=tensors.get(BASIS_NAME), style_layers=tuple(meta["style_layers"]),
                        measurements=meta["measurements"], created=meta.get("created"))
        except InvalidValueError as error:
            raise ContentStyleFileError(f"content-style: {str(path)!r}: {error}") from None
        if split.latent_dim != meta["latent_dim"] or split.num_layers != meta["num_layers"]:
            raise invalid(f"{str(path)!r} latent_dim/num_layers", [meta["latent_dim"], meta["num_layers"]],
                          f"[{split.latent_dim}, {split.num_layers}] (the generator record's space {split.space!r})",
                          cls=ContentStyleFileError)
        if generator is not None:
            split.check_generator(generator)
        return split


def read_header(path: str | Path) -> dict[str, Any]:
    """The checked JSON header of a split file (for ``latentdirs inspect``)."""
    return read_file(Path(path))[0]


def summary_lines(meta: dict[str, Any]) -> list[str]:
    """What ``latentdirs inspect`` prints for a split header (checked by :func:`read_header`): kind,
    space, style dims or rows, how they were chosen (threshold or boundary, with the figures), generator."""
    generator, figures = meta.get("generator") or {}, meta["measurements"]
    lines = [f"schema:      {meta['schema']} v{meta['schema_version']} (latentdirs {meta.get('library_version')})",
             f"generator:   {generator.get('spec')}  {str(generator.get('fingerprint'))[:23]}…",
             f"kind:        {meta['kind']} split in {meta['space']!r} ({meta['num_layers']} × {meta['latent_dim']})"]
    if meta["kind"] == "flat":
        fractions = figures.get("fractions") or []
        shown = ", ".join(f"{v:.3f}" for v in fractions[:12] if isinstance(v, (int, float)))
        lines += [f"style:       {meta['style_dims']} of {meta['latent_dim']} dims (content: the other "
                  f"{meta['latent_dim'] - meta['style_dims']})",
                  f"chosen by:   {figures.get('chosen_by')} (fraction ≥ {_number(figures.get('threshold'))} at layer "
                  f"{figures.get('layer')!r}, {figures.get('projection')}; baseline "
                  f"{_number(figures.get('baseline'))}; {figures.get('samples')} samples)",
                  f"fractions:   {shown}{' …' if len(fractions) > 12 else ''}"]
    else:
        lines += [f"style rows:  {meta['style_layers']}   content rows: {meta['content_layers']}",
                  f"chosen by:   {figures.get('chosen_by')} (measured boundary: row {figures.get('boundary')}, the "
                  f"largest margin = appearance share − structure share of resampling all rows, ≥ "
                  f"{figures.get('min_margin')}; {figures.get('samples')} samples)"]
        for suffix in figures.get("suffixes") or []:
            if isinstance(suffix, dict):
                lines.append(f"  rows {suffix.get('from_row')}-{meta['num_layers'] - 1} resampled: structure "
                             f"{_number(suffix.get('structure'))}, appearance {_number(suffix.get('appearance'))}, "
                             f"margin {_number(suffix.get('margin'))}")
    return lines


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


# ---------------------------------------------------------------------------------------------- finding it
def content_style_split(generator: GeneratorAdapter, *, content_layers: Sequence[int] | None = None,
                        style_dims: int | None = None, samples: int = 64, seed: int = 0,
                        layer: str | None = None) -> ContentStyleSplit:
    """Measure ``generator``'s content/style split (see the module text).

    Args:
        generator: any adapter. One with a layered space (``w+``, ``blocks``) is split by rows, any other
            by a style subspace of its default flat space.
        content_layers: layered only: the rows that are content (the rest are style), instead of the
            measured boundary.
        style_dims: flat only: K, the style subspace's dimension (1 ≤ K < D), instead of the threshold.
        samples: latents measured (≥ 2): flat, Jacobians at that many z; layered, images resampled.
        seed: seeds the sampled latents (and, layered, the donors: ``seed + 1``).
        layer: flat only: the feature map measured (a module name of the network, or ``"image"``);
            default the last spatial feature map, or the image where there is none.

    Returns:
        a :class:`ContentStyleSplit` stamped with ``generator.describe()``.
    """
    samples = check_count("samples", samples, minimum=2, maximum=100_000)
    seed = check_seed("seed", seed)
    space = _layered.layered_space(generator)
    if space is not None:
        if style_dims is not None:
            raise invalid("style_dims", style_dims,
                          f"None for {generator.spec!r}: it is split by the rows of {space!r}",
                          "Use content_layers (--content-layers) to choose the rows", cls=NotSupportedError)
        if layer is not None:
            raise invalid("layer", layer, f"None for {generator.spec!r} (split by the rows of {space!r})",
                          cls=NotSupportedError)
        return _layered_split(generator, space, content_layers, samples, seed)
    if content_layers is not None:
        raise invalid("content_layers", list(content_layers), f"None: {generator.spec!r} has no layered space "
                      "(it is split by a style subspace of z)", "Use style_dims (--style-dims) instead",
                      cls=NotSupportedError)
    return _flat_split(generator, generator.default_space, style_dims, samples, seed, layer)


def _flat_split(generator: GeneratorAdapter, space: str, style_dims: int | None, samples: int, seed: int,
                layer: str | None) -> ContentStyleSplit:
    dim = generator.space(space).dim
    if style_dims is not None:
        style_dims = check_count("style_dims", style_dims, minimum=1, maximum=dim - 1)
    measurement = _flat.measure_flat(generator, space=space, layer=layer, samples=samples, seed=seed)
    fractions = measurement.fractions
    bar = _flat.THRESHOLD
    above = int((fractions >= bar).sum())
    count = style_dims if style_dims is not None else above
    if not 1 <= count < dim:
        raise invalid("generator", generator.spec, f"a generator with 1 to {dim - 1} directions of {space!r} whose "
                      f"effect on {measurement.layer!r} is at least {bar:.3g} an affine change "
                      f"(found {above}; the largest fraction is {float(fractions[0]):.3g})",
                      "Give the split yourself with style_dims (--style-dims), or measure another layer",
                      cls=NotSupportedError)
    gaps = fractions[:-1] - fractions[1:]
    widest = int(torch.argmax(gaps)) if gaps.numel() else 0
    measurements = {
        "method": "adain-explained-fraction",
        "layer": measurement.layer, "feature_shape": list(measurement.feature_shape),
        "projection": "colour-affine" if measurement.layer == _flat.IMAGE_LAYER else "per-channel-affine",
        "samples": samples, "seed": seed, "threshold": bar,
        "baseline": round(measurement.baseline, 6),
        "chosen_by": "style_dims" if style_dims is not None else "threshold",
        "style_dims": count, "above_threshold": above,
        "fractions": [round(float(v), 6) for v in fractions],
        "effects": [round(float(v), 6) for v in measurement.effects],
        "widest_gap": {"after": widest + 1, "size": round(float(gaps[widest]), 6) if gaps.numel() else 0.0},
    }
    return ContentStyleSplit(generator=generator.describe(), kind="flat", space=space,
                             style_basis=_flat.style_basis(measurement, count), style_layers=(),
                             measurements=measurements, created=creation_time())


def _layered_split(generator: GeneratorAdapter, space: str, content_layers: Sequence[int] | None, samples: int,
                   seed: int) -> ContentStyleSplit:
    count = generator.space(space).num_layers
    chosen = None if content_layers is None else _layered.check_content_layers(content_layers, count, space)
    figures = _layered.measure_layered(generator, space=space, samples=samples, seed=seed)
    if chosen is None:
        boundary = _layered.choose_boundary(figures)
        if boundary is None:
            raise _layered.no_split(generator, space, figures)
        chosen = tuple(range(boundary))
    style = tuple(i for i in range(count) if i not in chosen)
    measurements = {
        "method": "row-resampling", "samples": samples, "seed": seed,
        "min_margin": _layered.MIN_MARGIN,
        "chosen_by": "content_layers" if content_layers is not None else "boundary",
        "boundary": _layered.choose_boundary(figures),
        **_rounded(figures),
    }
    return ContentStyleSplit(generator=generator.describe(), kind="layered", space=space, style_basis=None,
                             style_layers=style, measurements=measurements, created=creation_time())


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


__all__ = ["ContentStyleFileError", "ContentStyleSplit", "content_style_split", "is_split_file", "read_header",
           "summary_lines"]
