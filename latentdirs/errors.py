"""Errors raised by latentdirs.

Every error derives from :class:`LatentDirsError` *and* from the builtin exception it refines, so
callers can catch either ``LatentDirsError`` or e.g. ``ValueError``. Messages follow one pattern,
built by :func:`invalid` (and :func:`unknown` for names): name the parameter, echo what was received
(compactly and bounded, :func:`show`), say what is allowed, suggest the fix.

The numeric checks every option goes through live here too (:func:`check_count`,
:func:`check_positive`, :func:`check_seed`), so each refusal reads the same wherever it is made.
"""

from __future__ import annotations

import math
import numbers
import struct
from typing import Any, Iterable


class LatentDirsError(Exception):
    """Base class of every error this library raises on purpose."""


class InvalidValueError(LatentDirsError, ValueError):
    """A parameter has a value outside what is allowed."""


class SpecError(InvalidValueError):
    """A textual spec (range, strengths, generator spec, KEY=VALUE option) could not be parsed."""


class OutOfRangeError(LatentDirsError, IndexError):
    """An index (direction, layer, class) lies outside the valid range."""


class UnknownNameError(LatentDirsError, LookupError):
    """A name (generator, method, class, option) is not known; the message lists the known ones."""

    def __str__(self) -> str:  # LookupError would otherwise quote the message like a KeyError
        return str(self.args[0]) if self.args else ""


class DirectionFileError(LatentDirsError, ValueError):
    """A direction file is unreadable, corrupt, or of a schema this version cannot read."""


class FingerprintMismatchError(LatentDirsError, ValueError):
    """A direction file was made on a generator with other weights than the one it is used with."""


class NotSupportedError(LatentDirsError, NotImplementedError):
    """The generator or method cannot do what was asked (e.g. SeFa on a module without a first layer)."""


class MissingWeightsError(LatentDirsError, FileNotFoundError):
    """Weights for a generator are not on this machine; the message says how to get them."""


class WeightsMismatchError(LatentDirsError, ValueError):
    """A weight file exists but does not hold what the adapter expects (checksum, keys, shapes)."""


class OutputError(LatentDirsError, OSError):
    """An output file or directory cannot be written."""


class StagingError(LatentDirsError, RuntimeError):
    """A resumable run's staging folder lost or garbled files it had journalled (the rerun cannot merge them)."""


class PluginError(LatentDirsError, TypeError):
    """A plugin (generator loader or discovery method) broke its contract, e.g. returned the wrong type."""


def describe_allowed(allowed: Iterable[Any], limit: int = 20) -> str:
    """Render a list of allowed values for an error message, shortened past ``limit`` items."""
    items = [str(a) for a in allowed]
    shown = ", ".join(items[:limit])
    return shown + (f", … ({len(items)} in all)" if len(items) > limit else "")


def invalid(param: str, received: Any, allowed: str, fix: str | None = None,
            cls: type[LatentDirsError] = InvalidValueError) -> LatentDirsError:
    """Build an error in the project's one message pattern: ``PARAM: got VALUE; allowed: ALLOWED. FIX``.

    ``received`` is echoed by :func:`show` (compact floats, bounded length).

    >>> str(invalid("--seeds", "7-0", "ascending ranges like 0-7"))
    "--seeds: got '7-0'; allowed: ascending ranges like 0-7"
    >>> str(invalid("--amounts", [0.20000000298023224], "amounts inside the calibrated range"))
    '--amounts: got [0.2]; allowed: amounts inside the calibrated range'
    """
    message = f"{param}: got {show(received)}; allowed: {allowed}"
    if fix:
        message += f". {fix}"
    return cls(message)


def unknown(param: str, received: Any, known: Iterable[Any], fix: str | None = None) -> LatentDirsError:
    """:func:`invalid` for a name that is not one of ``known`` (listed, shortened): an :class:`UnknownNameError`.

    >>> str(unknown("transform", "swirl", ["shift-x", "zoom"]))
    "transform: got 'swirl'; allowed: shift-x, zoom"
    """
    return invalid(param, received, describe_allowed(known) or "none", fix, cls=UnknownNameError)


#: the largest seed a user may give: torch seeds its generators with 64 bits, and methods derive
#: further seeds from the user's (seed + offset, seed · factor + step) that must stay representable
MAX_SEED = 2**63 - 1


def as_whole(value: Any) -> int | None:
    """``value`` as an ``int`` if it is a whole number — an int (not a bool), or a finite float with no
    fraction such as ``3.0`` or ``1e3`` (JSON and users write counts that way) — else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    return None


def as_finite(value: Any) -> float | None:
    """``value`` as a ``float`` if it is a finite real number (not a bool, not NaN or ±inf), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return None
    return float(value)


def check_count(param: str, value: Any, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int if it is a whole number in ``minimum … maximum``; else an :class:`InvalidValueError`."""
    whole = as_whole(value)
    if whole is None or whole < minimum or (maximum is not None and whole > maximum):
        bounds = f"≥ {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise invalid(param, value, f"an integer {bounds}")
    return whole


def check_positive(param: str, value: Any, *, zero: bool = False) -> float:
    """``value`` as a float if it is a finite number > 0 (≥ 0 with ``zero``); else an :class:`InvalidValueError`."""
    number = as_finite(value)
    if number is None or number < 0 or (number == 0 and not zero):
        raise invalid(param, value, f"a finite number {'≥' if zero else '>'} 0")
    return number


def check_seed(param: str, value: Any) -> int:
    """``value`` as an int if it is a seed in ``0 … MAX_SEED``; else an :class:`InvalidValueError`."""
    whole = as_whole(value)
    if whole is None or not 0 <= whole <= MAX_SEED:
        raise invalid(param, value, f"an integer from 0 to {MAX_SEED} (2**63 - 1)")
    return whole


#: the longest echo of a received value in a message (characters); longer ones are cut, with their size
SHOWN_CHARACTERS = 200


def show(value: Any, limit: int = SHOWN_CHARACTERS) -> str:
    """``value`` as an error message echoes it: like ``repr``, but compact and bounded.

    * a float that is exactly a float32 value (as every number read back from a float32 tensor is) is
      shown in the shortest form that round-trips through float32: ``0.2``, not ``0.20000000298023224``;
      any other float keeps Python's shortest ``repr``;
    * tensors and arrays (any object with ``shape`` and ``tolist``) are shown as (nested) lists;
    * lists, tuples, sets and dicts are rendered item by item, recursively, and cut once they would pass
      ``limit`` characters, ending ``… (N items)``; a long string ends ``… (N characters)``. A list of
      three million layers is rendered only as far as the limit, never whole.

    >>> show([0.20000000298023224, 0.5, 3])
    '[0.2, 0.5, 3]'
    >>> len(show(list(range(3_000_000)))) <= 200
    True
    """
    return _render(value, max(limit, 24))  # room for at least "[… (N items)]"


def _render(value: Any, limit: int) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        if value.bit_length() > 128:  # repr of a huge int is long (and refused past 4300 digits)
            digits = int(value.bit_length() * math.log10(2)) + 1
            return f"{'a negative' if value < 0 else 'an'} integer of about {digits} digits"
        return repr(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return repr(value[:limit // 2]) + f"… ({len(value)} characters)"
    if hasattr(value, "shape") and hasattr(value, "tolist"):  # torch tensors, numpy arrays and scalars
        if len(value.shape) == 0:
            return _render(value.item(), limit)
        return _items("[", "]", len(value), (value[i] for i in range(len(value))), limit)
    if isinstance(value, dict):
        pairs = (_Pair(k, v) for k, v in value.items())
        return _items("{", "}", len(value), pairs, limit)
    if isinstance(value, (list, tuple, set, frozenset)):
        if isinstance(value, tuple):
            opening, closing = "(", ",)" if len(value) == 1 else ")"
        elif isinstance(value, list):
            opening, closing = "[", "]"
        else:
            opening, closing = "{", "}"
        if not value and opening == "{":
            return "set()"
        ordered = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return _items(opening, closing, len(value), iter(ordered), limit)
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


class _Pair:
    """A dict entry, rendered ``key: value``."""

    def __init__(self, key: Any, value: Any) -> None:
        self.key, self.value = key, value


def _items(opening: str, closing: str, count: int, items: Iterable[Any], limit: int) -> str:
    """``opening item, item, … closing`` with as many items as fit in ``limit`` characters, then the count.

    Items are rendered only until the limit is passed, so a huge container costs what its echo costs."""
    room = limit - len(opening) - len(closing)
    tail = f"… ({count} items)"
    parts: list[str] = []
    used = 0
    for item in items:
        budget = max(24, room - used - len(tail) - 4)  # a nested container is cut to what is left
        if isinstance(item, _Pair):
            parts.append(f"{_render(item.key, budget)}: {_render(item.value, budget)}")
        else:
            parts.append(_render(item, budget))
        used += len(parts[-1]) + (2 if len(parts) > 1 else 0)
        if used > room:
            break
    else:
        return opening + ", ".join(parts) + closing
    while parts and len(", ".join(parts + [tail])) > room:
        parts.pop()
    return opening + ", ".join(parts + [tail]) + closing


def _float(value: float) -> str:
    """Shortest float32 round-trip form when ``value`` is a float32 value, else ``repr``."""
    if not math.isfinite(value) or _as_float32(value) != value:
        return repr(value)
    for digits in range(1, 10):  # 9 significant digits always round-trip a float32
        candidate = float(f"{value:.{digits}g}")
        if _as_float32(candidate) == value:
            return repr(candidate)
    return repr(value)


def _as_float32(value: float) -> float | None:
    """``value`` rounded to float32 (None beyond float32's range)."""
    try:
        return struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        return None
