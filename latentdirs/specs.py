"""Parsing of the small textual specs users type: index ranges, strengths, generator specs, options.

One parser per kind, each naming the bad token in its error (a :class:`~latentdirs.errors.SpecError`),
so the CLI and the API reject the same inputs with the same words. Every parser either returns its
documented result or raises :class:`~latentdirs.errors.SpecError` — whatever the input's type — and
ranges are counted against a limit *before* they are expanded, so ``0-99999999999`` costs nothing.
"""

from __future__ import annotations

import json
import math
from typing import Any

from latentdirs.errors import MAX_SEED, SpecError, as_finite, as_whole, invalid

#: default most items an index spec may expand to (``--seeds``, ``--layers``, ``--indices``)
MAX_INDEX_ITEMS = 100_000
#: default most strengths an alpha spec may expand to (``--alphas``, ``--amounts``)
MAX_STRENGTHS = 10_000

_RANGE_HELP = "comma-separated non-negative integers and ascending ranges, e.g. '0-7,12'"
_ALPHA_HELP = "START:STOP:NUM (NUM ≥ 1, e.g. '-3:3:7') or a comma list of numbers (e.g. '-2,0,2')"


def _too_many(param: str, text: Any, count: int, limit: int, what: str) -> SpecError:
    return invalid(param, text, f"at most {limit} {what}",  # type: ignore[return-value]
                   f"This asks for {count}; narrow it, or split the work into several runs", cls=SpecError)


def parse_index_spec(text: str | int | list[int] | tuple[int, ...] | range, *, param: str = "indices",
                     upper: int | None = None, limit: int = MAX_INDEX_ITEMS) -> list[int]:
    """Parse ``"0-7,12"`` into ``[0, 1, …, 7, 12]`` (order kept, duplicates removed).

    ``upper`` is the exclusive bound when known (e.g. the number of directions); indices at or above
    it are refused. Descending ranges (``7-0``), empty items (``1,,2``), negatives and values beyond
    64 bits are errors, never an empty or surprising list. ``limit`` caps the number of items as
    written (duplicates count); it is checked on the ranges' bounds before anything is expanded.
    """
    if isinstance(text, str):
        spans = _parse_spans(text, param)
    elif isinstance(text, (list, tuple, range)):
        if len(text) > limit:
            raise _too_many(param, text, len(text), limit, "indices")
        values = [as_whole(v) for v in text]
        if any(v is None for v in values):
            raise invalid(param, text, _RANGE_HELP, "Every item must be a whole number", cls=SpecError)
        spans = [(v, v) for v in values]  # type: ignore[misc]
    elif as_whole(text) is not None:
        spans = [(as_whole(text), as_whole(text))]  # type: ignore[list-item]
    else:
        raise invalid(param, text, _RANGE_HELP, cls=SpecError)
    for start, stop in spans:
        if start < 0:
            raise invalid(param, text, _RANGE_HELP, f"{start} is negative", cls=SpecError)
        if stop > MAX_SEED:
            raise invalid(param, text, _RANGE_HELP, f"{stop} is beyond 64 bits (at most {MAX_SEED})", cls=SpecError)
        if upper is not None and stop >= upper:
            raise invalid(param, text, f"indices 0-{upper - 1}" if upper else "none (nothing to index)",
                          f"{stop} is out of range", cls=SpecError)
    count = sum(stop - start + 1 for start, stop in spans)
    if count > limit:
        raise _too_many(param, text, count, limit, "indices")
    return list(dict.fromkeys(value for start, stop in spans for value in range(start, stop + 1)))


def _parse_spans(text: str, param: str) -> list[tuple[int, int]]:
    """``"0-7,12"`` → ``[(0, 7), (12, 12)]``: each item's first and last value, nothing expanded."""
    stripped = text.strip()
    if not stripped:
        raise invalid(param, text, _RANGE_HELP, cls=SpecError)
    return [_parse_range_token(token.strip(), text, param) for token in stripped.split(",")]


def _parse_range_token(token: str, text: Any, param: str) -> tuple[int, int]:
    if not token:
        raise invalid(param, text, _RANGE_HELP, "It has an empty item", cls=SpecError)
    start_text, sep, stop_text = token.partition("-")
    if sep and not start_text.strip():  # "-1": a negative number, not a range
        raise invalid(param, text, _RANGE_HELP, f"'{token}' is negative", cls=SpecError)
    try:
        if not sep:
            return int(token), int(token)
        start, stop = int(start_text), int(stop_text)
    except ValueError:  # not digits — or more than 4300 of them, which Python refuses to convert
        raise invalid(param, text, _RANGE_HELP, f"'{token}' is not an integer or range",
                      cls=SpecError) from None
    if stop < start:
        raise invalid(param, text, _RANGE_HELP,
                      f"'{token}' descends; write '{stop}-{start}'", cls=SpecError)
    return start, stop


def parse_alphas(text: str | float | list[float] | tuple[float, ...], *, param: str = "alphas",
                 limit: int = MAX_STRENGTHS) -> list[float]:
    """Parse strengths: ``"-3:3:7"`` (inclusive linspace) or ``"-2,0,2"`` into a list of finite floats.

    ``limit`` caps the number of strengths; ``NUM`` and the length of a list are checked against it
    before any value is built.
    """
    if isinstance(text, str):
        stripped = text.strip()
        if ":" in stripped:
            values = _parse_linspace(stripped, text, param, limit)
        else:
            if stripped.count(",") + 1 > limit:
                raise _too_many(param, text, stripped.count(",") + 1, limit, "strengths")
            tokens = [t.strip() for t in stripped.split(",")]
            try:
                if not all(tokens):
                    raise ValueError
                values = [float(t) for t in tokens]
            except ValueError:
                raise invalid(param, text, _ALPHA_HELP, cls=SpecError) from None
    elif isinstance(text, (list, tuple)):
        if len(text) > limit:
            raise _too_many(param, text, len(text), limit, "strengths")
        numbers = [as_finite(v) for v in text]
        if any(v is None for v in numbers):
            raise invalid(param, text, _ALPHA_HELP, "Values must be finite numbers", cls=SpecError)
        values = numbers  # type: ignore[assignment]
    elif as_finite(text) is not None:
        values = [as_finite(text)]  # type: ignore[list-item]
    else:
        raise invalid(param, text, _ALPHA_HELP, "Values must be finite numbers", cls=SpecError)
    if not values or not all(math.isfinite(v) for v in values):
        raise invalid(param, text, _ALPHA_HELP, "Values must be finite", cls=SpecError)
    return values


def _parse_linspace(stripped: str, text: Any, param: str, limit: int) -> list[float]:
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
        raise invalid(param, text, _ALPHA_HELP, f"NUM '{parts[2][:20]}' is not an integer",
                      cls=SpecError) from None
    if num < 1:
        raise invalid(param, text, _ALPHA_HELP, "NUM must be at least 1", cls=SpecError)
    if num > limit:
        raise _too_many(param, text, num, limit, "strengths")
    if num == 1:
        return [start]
    step = (stop - start) / (num - 1)
    return [round(start + i * step, 10) for i in range(num)]


_STRENGTH_HELP = "HIGH or LOW:HIGH with 0 < LOW ≤ HIGH, e.g. '3' (meaning 1.5:3) or '1:3'"


def parse_strength_range(text: str | float | tuple[float, float], *, param: str = "strength") -> tuple[float, float]:
    """``"3"`` → ``(1.5, 3.0)`` (a single number means [HIGH/2, HIGH]); ``"1:3"`` → ``(1.0, 3.0)``."""
    if isinstance(text, str):
        pieces = text.split(":")
        if len(pieces) > 2:
            raise invalid(param, text, _STRENGTH_HELP, "It has more than two parts", cls=SpecError)
        try:
            numbers = [float(piece) for piece in pieces]
        except ValueError:
            raise invalid(param, text, _STRENGTH_HELP, cls=SpecError) from None
        parts: list[float | None] = [numbers[0] / 2, numbers[0]] if len(numbers) == 1 else list(numbers)
    elif isinstance(text, (tuple, list)) and len(text) == 2:
        parts = [as_finite(v) for v in text]
    elif as_finite(text) is not None:
        parts = [as_finite(text) / 2, as_finite(text)]  # type: ignore[operator]
    else:
        raise invalid(param, text, _STRENGTH_HELP, cls=SpecError)
    low, high = parts
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
        raise invalid(param, text, _STRENGTH_HELP, "Both ends must be finite, positive and in order", cls=SpecError)
    return float(low), float(high)


def split_generator_spec(spec: str) -> tuple[str, str | None]:
    """Split ``"biggan:biggan-deep-256"`` into ``("biggan", "biggan-deep-256")``; ``"synthetic"`` → ``("synthetic", None)``."""
    if not isinstance(spec, str) or not spec.strip():
        raise invalid("generator", spec, "a name like 'dcgan-faces' or 'FAMILY:ARGUMENT'", cls=SpecError)
    family, sep, argument = spec.strip().partition(":")
    if sep and not argument:
        raise invalid("generator", spec, "'FAMILY:ARGUMENT' with a non-empty argument", cls=SpecError)
    return family, (argument if sep else None)


def parse_option(text: str, *, param: str = "--opt") -> tuple[str, Any]:
    """Parse ``KEY=VALUE``; the value is read as JSON when it parses (numbers, booleans, lists), else kept as text.

    JSON nested too deeply to parse, or a number too long to convert, is refused rather than kept as text.
    """
    if not isinstance(text, str):
        raise invalid(param, text, "KEY=VALUE text, e.g. 'steps=500'", cls=SpecError)
    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key.isidentifier():
        raise invalid(param, text, "KEY=VALUE with an identifier key, e.g. 'steps=500'", cls=SpecError)
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    except (ValueError, RecursionError) as error:  # a 5000-digit number, or [[[[…]]]] thousands deep
        raise invalid(param, text, "KEY=VALUE with a value of ordinary size and nesting",
                      f"The value cannot be read ({type(error).__name__})", cls=SpecError) from None
    return key, value
