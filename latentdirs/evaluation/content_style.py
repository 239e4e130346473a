"""The content/style figures of ``latentdirs evaluate --content-style``: the generator's computed split,
then :func:`latentdirs.vary.vary` and :func:`latentdirs.vary.style_from` on fixed seeds, measured as
``latentdirs vary --json`` measures them (diversity, content preservation against its floor, colour
distance to a reference, and on the test bed the factor changes)."""

from __future__ import annotations

from typing import Any

from latentdirs.generators.base import GeneratorAdapter

#: source seeds 0 … SOURCES − 1, and the reference seed of the style-from figures (not a source)
SOURCES = 8
VARIATIONS = 4
REFERENCE_SEED = 1000


def content_style_figures(generator: GeneratorAdapter, *, seed: int = 0, split: Any = None) -> dict[str, Any]:
    """The split (kind, space, style dims or layers) and the mean figures of ``vary`` (seeds 0-7, 4 styles
    drawn with ``seed``) and ``style_from`` (reference seed 1000). ``split``: a
    :class:`~latentdirs.content_style.ContentStyleSplit` of ``generator``; default: computed."""
    from latentdirs.content_style import content_style_split
    from latentdirs.vary import style_from, vary

    split = split if split is not None else content_style_split(generator)
    seeds = list(range(SOURCES))
    varied = vary(generator, split, seeds, variations=VARIATIONS, seed=seed)
    styled = style_from(generator, split, seeds, REFERENCE_SEED)
    return {
        "split": {"kind": split.kind, "space": split.space,
                  "style_dims": None if split.style_basis is None else int(split.style_basis.shape[0]),
                  "style_layers": list(split.style_layers)},
        "sources": seeds, "variations": VARIATIONS, "reference_seed": REFERENCE_SEED,
        "vary": varied.measurements, "style_from": styled.measurements,
    }


def content_style_markdown(spec: str, figures: dict[str, Any]) -> list[str]:
    """Markdown lines of one generator's :func:`content_style_figures` (or the error that stopped them)."""
    if "error" in figures:
        return [f"Content/style of {spec}: not measured: {figures['error']}", ""]
    split, varied, styled = figures["split"], figures["vary"], figures["style_from"]
    chosen = (f"{split['style_dims']} style dims of {split['space']}" if split["kind"] == "flat"
              else f"style layers {split['style_layers']} of {split['space']}")
    lines = [f"Content/style of {spec} ({chosen}; seeds 0-{SOURCES - 1}, {VARIATIONS} styles, reference seed "
             f"{REFERENCE_SEED}):", "",
             "| run | diversity | content preservation | unrelated floor | colour distance to reference (source) |",
             "|---|---|---|---|---|",
             f"| vary | {_number(varied['diversity'])} | {_number(varied['content_preservation'])} | "
             f"{_number(varied['content_floor'])} | — |",
             f"| style-from | — | {_number(styled['content_preservation'])} | {_number(styled['content_floor'])} | "
             f"{_number(styled['style_distance'])} ({_number(styled['style_distance_before'])}) |"]
    if varied.get("factor_change"):
        names = [n for n, v in varied["factor_change"].items() if v is not None]
        lines += ["", "| mean abs change of | " + " | ".join(names) + " |", "|---|" + "---|" * len(names),
                  "| vary, from the source | " + " | ".join(_number(varied["factor_change"][n]) for n in names) + " |"]
        distance = styled.get("factor_distance_to_reference") or {}
        before = styled.get("factor_distance_to_reference_before") or {}
        lines.append("| style-from, to the reference (source) | "
                     + " | ".join(f"{_number(distance.get(n))} ({_number(before.get(n))})" for n in names) + " |")
    return lines + [""]


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"
