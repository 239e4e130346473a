"""Errors raised by latentdirs.

Every error derives from :class:`LatentDirsError` *and* from the builtin exception it refines, so
callers can catch either ``LatentDirsError`` or e.g. ``ValueError``. Messages follow one pattern:
name the parameter, echo what was received, say what is allowed, suggest the fix.
"""

from __future__ import annotations

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


def describe_allowed(allowed: Iterable[Any], limit: int = 20) -> str:
    """Render a list of allowed values for an error message, shortened past ``limit`` items."""
    items = [str(a) for a in allowed]
    shown = ", ".join(items[:limit])
    return shown + (f", … ({len(items)} in all)" if len(items) > limit else "")


def invalid(param: str, received: Any, allowed: str, fix: str | None = None,
            cls: type[LatentDirsError] = InvalidValueError) -> LatentDirsError:
    """Build an error in the project's one message pattern.

    >>> str(invalid("--seeds", "7-0", "ascending ranges like 0-7"))
    "--seeds: got '7-0'; allowed: ascending ranges like 0-7"
    """
    message = f"{param}: got {received!r}; allowed: {allowed}"
    if fix:
        message += f". {fix}"
    return cls(message)
