"""The layered split: which rows of a layered space (StyleGAN2 ``w+``, BigGAN ``blocks``) carry style.

For each row, and for each suffix of rows ``b…L−1``, the rows of ``N`` sampled latents are replaced by
those of ``N`` other samples (style mixing), and what changed in the images is measured:

* **structure** — ``1 − cos`` between the gradient fields of the blurred, standardised grayscale images
  (layout and edges; brightness and contrast are normalised away, so a pure recolouring scores ~0);
* **appearance** — the distance of the per-channel colour mean and standard deviation (6 numbers, in
  the images' [-1, 1] units);
* on the test bed (generators whose :meth:`read_factors` reads scene factors), the factor changes:
  content ``x``, ``y``, ``scale`` (mean absolute change, fractions of the width), ``shape`` (the rate of
  a changed shape), style ``hue`` (circular, turns) and ``background`` (grey level).

The boundary ``b`` maximises the *margin* of its suffix: the share of the full resample's appearance
change that resampling rows ``b…L−1`` keeps, minus the share of its structure change that it keeps
(both relative to resampling every row). Rows ``0…b−1`` are content, ``b…L−1`` style. A margin below
:data:`MIN_MARGIN` everywhere means the rows do not separate structure from appearance: no usable split.
Why a margin and not a tolerance on structure alone: on shapes-stylegan2 the structure of the suffixes
falls gradually after row 3 (0.35, 0.28, 0.25, 0.15 of a full resample), so any fixed tolerance lands
on one of those values by chance, while the margin peaks at one row for 32 and for 64 samples alike.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.nn import functional as nnf

from latentdirs.errors import NotSupportedError, OutOfRangeError, invalid
from latentdirs.generators.base import GeneratorAdapter

#: the smallest margin (appearance share − structure share) a style suffix needs
MIN_MARGIN = 0.25
#: images rendered per forward pass
BATCH = 16
#: the side structure is measured at (images are area-resized to it): low frequencies only
STRUCTURE_SIDE = 32
CONTENT_FACTORS = ("x", "y", "scale", "shape")
STYLE_FACTORS = ("hue", "background")


def layered_space(generator: GeneratorAdapter) -> str | None:
    """The space a layered split mixes in: ``w+`` where there is one, else the first layered space."""
    if "w+" in generator.spaces:
        return "w+"
    return next((name for name, space in generator.spaces.items() if space.layered), None)


# ---------------------------------------------------------------------------------------------- measures
def structure_descriptor(images: torch.Tensor) -> torch.Tensor:
    """``images [N, 3, H, W]`` in [-1, 1] → unit vectors ``[N, 2·S·S]``: the gradient field of the
    grayscale image area-resized to ``S = 32``, blurred (3 × 3 box) and standardised per image."""
    gray = images.float().mean(dim=1, keepdim=True)
    if gray.shape[-1] != STRUCTURE_SIDE:
        gray = nnf.interpolate(gray, size=(STRUCTURE_SIDE, STRUCTURE_SIDE), mode="area")
    gray = nnf.avg_pool2d(gray, 3, stride=1, padding=1, count_include_pad=False)
    gray = (gray - gray.mean(dim=(2, 3), keepdim=True)) / gray.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    gx = gray[..., :, 1:] - gray[..., :, :-1]
    gy = gray[..., 1:, :] - gray[..., :-1, :]
    field = torch.cat([gx.flatten(1), gy.flatten(1)], dim=1)
    return field / field.norm(dim=1, keepdim=True).clamp_min(1e-12)


def colour_statistics(images: torch.Tensor) -> torch.Tensor:
    """``images [N, 3, H, W]`` → ``[N, 6]``: per-channel mean and standard deviation."""
    flat = images.float().flatten(2)
    return torch.cat([flat.mean(dim=2), flat.std(dim=2)], dim=1)


def compare(generator: GeneratorAdapter, before: torch.Tensor, after: torch.Tensor) -> dict[str, float]:
    """Mean changes from images ``before`` to ``after`` (both ``[N, 3, H, W]``): structure, appearance,
    and on the test bed the factor changes (``factor.x`` …)."""
    structure = 1 - (structure_descriptor(before) * structure_descriptor(after)).sum(dim=1)
    appearance = (colour_statistics(before) - colour_statistics(after)).norm(dim=1)
    figures = {"structure": float(structure.mean()), "appearance": float(appearance.mean())}
    first, second = generator.read_factors(before), generator.read_factors(after)
    if first is not None and second is not None:
        figures.update(_factor_changes(first, second))
    return figures


def _factor_changes(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> dict[str, float]:
    changes: dict[str, float] = {}
    for name in ("x", "y", "scale", "background"):
        if name in first and name in second:
            changes[f"factor.{name}"] = float((first[name] - second[name]).abs().mean())
    if "hue" in first and "hue" in second:  # hue is circular: 0.95 and 0.05 are 0.1 apart
        turn = (first["hue"] - second["hue"]).abs() % 1.0
        changes["factor.hue"] = float(torch.minimum(turn, 1 - turn).mean())
    if "shape" in first and "shape" in second:
        changes["factor.shape"] = float((first["shape"] != second["shape"]).float().mean())
    return changes


# ---------------------------------------------------------------------------------------------- mixing
def render(generator: GeneratorAdapter, latents: torch.Tensor, space: str) -> torch.Tensor:
    """Images ``[N, 3, R, R]`` (CPU) of layered ``latents`` in batches of :data:`BATCH`, without gradients."""
    with torch.no_grad():
        return torch.cat([generator.synthesize(chunk, space=space).cpu() for chunk in latents.split(BATCH)])


def mix_rows(content: torch.Tensor, style: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
    """``content [N, L, D]`` with ``rows`` taken from ``style`` (``[N, L, D]`` or ``[1, L, D]``)."""
    mixed = content.clone()
    index = torch.as_tensor(list(rows), dtype=torch.long, device=content.device)
    mixed[:, index] = style.to(content.device, content.dtype).expand_as(content)[:, index]
    return mixed


def measure_layered(generator: GeneratorAdapter, *, space: str, samples: int, seed: int) -> dict[str, Any]:
    """Per-row and per-suffix figures (see the module text) for ``samples`` latents of ``space``.

    Returns ``{"rows": [{row, structure, appearance, factor.*…}], "suffixes": [{from_row, …, margin}]}``:
    ``rows[i]`` resamples row ``i`` only; ``suffixes[b]`` resamples rows ``b…L−1`` (``b = 0``: everything).
    """
    base = generator.sample(samples, seed=seed, space=space)
    donor = generator.sample(samples, seed=seed + 1, space=space)
    count = generator.space(space).num_layers
    images = render(generator, base, space)
    rows = [{"row": i, **compare(generator, images, render(generator, mix_rows(base, donor, [i]), space))}
            for i in range(count)]
    suffixes = [{"from_row": b, **compare(generator, images, render(generator, mix_rows(base, donor, range(b, count)),
                                                                     space))} for b in range(count)]
    everything = suffixes[0]
    for suffix in suffixes:
        suffix["margin"] = (_share(suffix["appearance"], everything["appearance"])
                            - _share(suffix["structure"], everything["structure"]))
    return {"rows": rows, "suffixes": suffixes}


def _share(part: float, whole: float) -> float:
    return part / whole if whole > 0 else 0.0


def choose_boundary(figures: dict[str, Any]) -> int | None:
    """The row ``b ≥ 1`` whose suffix has the largest margin (see the module text; ties: the earliest), or
    None when no margin reaches :data:`MIN_MARGIN`."""
    candidates = figures["suffixes"][1:]
    if not candidates:
        return None
    best = max(candidates, key=lambda suffix: (suffix["margin"], -suffix["from_row"]))
    return int(best["from_row"]) if best["margin"] >= MIN_MARGIN else None


def check_content_layers(layers: Sequence[int], count: int, space: str) -> tuple[int, ...]:
    """Validate a ``content_layers`` override against the ``count`` rows of ``space``: sorted, unique."""
    values = list(layers)
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < count]
    if bad or not values:
        raise invalid("content_layers", values, f"rows 0-{count - 1} of {space!r} (at least one)", cls=OutOfRangeError)
    chosen = tuple(sorted(set(values)))
    if len(chosen) == count:
        raise invalid("content_layers", values, f"a part of rows 0-{count - 1}: at least one row must stay for style",
                      f"e.g. 0-{max(count - 2, 0)}")
    return chosen


def no_split(generator: GeneratorAdapter, space: str, figures: dict[str, Any]) -> NotSupportedError:
    """The error for a layered space where no suffix reaches :data:`MIN_MARGIN`."""
    best = max(figures["suffixes"][1:] or figures["suffixes"], key=lambda suffix: suffix["margin"])
    return invalid("generator", generator.spec, f"a layered space whose later rows change appearance more than "
                   f"structure (margin ≥ {MIN_MARGIN:g}; in {space!r} the best, rows {best['from_row']}-"
                   f"{len(figures['suffixes']) - 1}, has {best['margin']:.3g})",
                   "Give the split yourself with content_layers (--content-layers)", cls=NotSupportedError)


__all__ = ["MIN_MARGIN", "check_content_layers", "choose_boundary", "compare",
           "layered_space", "measure_layered", "mix_rows"]
