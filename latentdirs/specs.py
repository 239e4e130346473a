"""Parsing of the small textual specs users type: index ranges, strengths, generator specs, options.

One parser per kind, each naming the bad token in its error (a :class:`~latentdirs.errors.SpecError`),
so the CLI and the API reject the same inputs with the same words.
"""

from __future__ import annotations

import json
import math
from typing import Any

from latentdirs.errors import SpecError, invalid

_RANGE_HELP = "comma-separated non-negative integers and ascending ranges, e.g. '0-7,12'"
_ALPHA_HELP = "START:STOP:NUM (NUM ≥ 1, e.g. '-3:3:7') or a comma list of numbers (e.g. '-2,0,2')"


def parse_index_spec(text: str | int | list[int] | tuple[int, ...], *, param: str = "indices",
                     upper: int | None = None) -> list[int]:
    """Parse ``"0-7,12"`` into ``[0, 1, …, 7, 12]`` (order kept, duplicates removed).

    ``upper`` is the exclusive bound when known (e.g. the number of directions); indices at or above
    it are refused. Descending ranges (``7-0``), empty items (``1,,2``) and negatives are errors, never
    an empty or surprising list.
    """
    if isinstance(text, int):
        items: list[int] = [text]
    elif isinstance(text, (list, tuple)):
        items = [int(v) for v in text]
    else:
        items = []
        stripped = str(text).strip()
        if not stripped:
            raise invalid(param, text, _RANGE_HELP, cls=SpecError)
        for token in stripped.split(","):
            token = token.strip()
            items.extend(_parse_range_token(token, text, param))
    for value in items:
        if value < 0:
            raise invalid(param, text, _RANGE_HELP, f"{value} is negative", cls=SpecError)
        if upper is not None and value >= upper:
            raise invalid(param, text, f"indices 0-{upper - 1}" if upper else "none (nothing to index)",
                          f"{value} is out of range", cls=SpecError)
    return list(dict.fromkeys(items))


def _parse_range_token(token: str, text: Any, param: str) -> list[int]:
    if not token:
        raise invalid(param, text, _RANGE_HELP, "It has an empty item", cls=SpecError)
    start_text, sep, stop_text = token.partition("-")
    if sep and not start_text.strip():  # "-1": a negative number, not a range
        raise invalid(param, text, _RANGE_HELP, f"'{token}' is negative", cls=SpecError)
    try:
        if not sep:
            return [int(token)]
        start, stop = int(start_text), int(stop_text)
    except ValueError:
        raise invalid(param, text, _RANGE_HELP, f"'{token}' is not an integer or range",
                      cls=SpecError) from None
    if stop < start:
        raise invalid(param, text, _RANGE_HELP,
                      f"'{token}' descends; write '{stop}-{start}'", cls=SpecError)
    return list(range(start, stop + 1))


def parse_alphas(text: str | float | list[float] | tuple[float, ...], *,
                 param: str = "alphas") -> list[float]:
    """Parse strengths: ``"-3:3:7"`` (inclusive linspace) or ``"-2,0,2"`` into a list of floats."""
    if isinstance(text, (int, float)):
        values = [float(text)]
    elif isinstance(text, (list, tuple)):
        values = [float(v) for v in text]
    else:
        stripped = str(text).strip()
        if ":" in stripped:
            values = _parse_linspace(stripped, text, param)
        else:
            tokens = [t.strip() for t in stripped.split(",")]
            try:
                if not all(tokens):
                    raise ValueError
                values = [float(t) for t in tokens]
            except ValueError:
                raise invalid(param, text, _ALPHA_HELP, cls=SpecError) from None
    if not values or not all(math.isfinite(v) for v in values):
        raise invalid(param, text, _ALPHA_HELP, "Values must be finite", cls=SpecError)
    return values


def _parse_linspace(stripped: str, text: Any, param: str) -> list[float]:
    parts = stripped.split(":")
    if len(parts) != 3:
        raise invalid(param, text, _ALPHA_HELP, "It needs exactly three parts", cls=SpecError)
    try:
        start, stop = float(parts[0]), float(parts[1])
    except ValueError:
        raise invalid(param, text, _ALPHA_HELP, "START and STOP must be numbers", cls=SpecError) from None
    try:
        num = int(parts[2])
    except ValueError:
        raise invalid(param, text, _ALPHA_HELP, f"NUM '{parts[2]}' is not an integer",
                      cls=SpecError) from None
    if num < 1:
        raise invalid(param, text, _ALPHA_HELP, "NUM must be at least 1", cls=SpecError)
    if num == 1:
        return [start]
    step = (stop - start) / (num - 1)
    return [round(start + i * step, 10) for i in range(num)]


_STRENGTH_HELP = "HIGH or LOW:HIGH with 0 < LOW ≤ HIGH, e.g. '3' (meaning 1.5:3) or '1:3'"


def parse_strength_range(text: str | float | tuple[float, float], *, param: str = "strength") -> tuple[float, float]:
    """``"3"`` → ``(1.5, 3.0)`` (a single number means [HIGH/2, HIGH]); ``"1:3"`` → ``(1.0, 3.0)``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        parts: list[Any] = [float(text) / 2, float(text)]
    elif isinstance(text, (tuple, list)) and len(text) == 2:
        parts = list(text)
    elif isinstance(text, str):
        pieces = text.split(":")
        if len(pieces) > 2:
            raise invalid(param, text, _STRENGTH_HELP, "It has more than two parts", cls=SpecError)
        try:
            numbers = [float(piece) for piece in pieces]
        except ValueError:
            raise invalid(param, text, _STRENGTH_HELP, cls=SpecError) from None
        parts = [numbers[0] / 2, numbers[0]] if len(numbers) == 1 else numbers
    else:
        raise invalid(param, text, _STRENGTH_HELP, cls=SpecError)
    low, high = (float(x) for x in parts)
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
        raise invalid(param, text, _STRENGTH_HELP, "Both ends must be finite, positive and in order", cls=SpecError)
    return low, high


def split_generator_spec(spec: str) -> tuple[str, str | None]:
    """Split ``"biggan:biggan-deep-256"`` into ``("biggan", "biggan-deep-256")``; ``"synthetic"`` → ``("synthetic", None)``."""
    if not isinstance(spec, str) or not spec.strip():
        raise invalid("generator", spec, "a name like 'dcgan-faces' or 'FAMILY:ARGUMENT'", cls=SpecError)
    family, sep, argument = spec.strip().partition(":")
    if sep and not argument:
        raise invalid("generator", spec, "'FAMILY:ARGUMENT' with a non-empty argument", cls=SpecError)
    return family, (argument if sep else None)


def parse_option(text: str, *, param: str = "--opt") -> tuple[str, Any]:
    """Parse ``KEY=VALUE``; the value is read as JSON when it parses (numbers, booleans, lists), else kept as text."""
    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key.isidentifier():
        raise invalid(param, text, "KEY=VALUE with an identifier key, e.g. 'steps=500'", cls=SpecError)
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value
