"""``discover``: run a registered method on a generator with checked options."""

from __future__ import annotations

import collections.abc
import inspect
import os
import types
import typing
from typing import TYPE_CHECKING, Any, Callable

from latentdirs.directions import Directions, creation_time
from latentdirs.errors import PluginError, as_finite, as_whole, check_seed, invalid
from latentdirs.registry import check_options, get_method

if TYPE_CHECKING:
    from latentdirs.generators.base import GeneratorAdapter


def discover(generator: GeneratorAdapter, method: str, **options: Any) -> Directions:
    """Run discovery method ``method`` (e.g. ``"sefa"``) on ``generator``; returns :class:`Directions`.

    Options are the method's keyword arguments. Before any work, an unknown one is refused with the
    list of known ones, and every value is checked against the method's annotations
    (:func:`check_option_types`) and a ``seed`` against ``0 … 2**63 - 1``; each method then checks its
    own ranges (``steps ≥ 1``, ``lr > 0``, …) before it renders anything.
    """
    function = get_method(method)
    check_options(function, options, param=f"{method} option", skip=("generator",))
    options = check_option_types(function, options, param=f"{method} option")
    if "seed" in options:
        options["seed"] = check_seed(f"{method} option seed", options["seed"])
    creation_time()  # a malformed SOURCE_DATE_EPOCH fails now, not after a long run
    directions = function(generator, **options)
    if not isinstance(directions, Directions):  # a plugin broke the contract
        raise invalid(f"method {method!r}", type(directions).__name__, "a Directions object (the method contract)",
                      "The method's plugin is broken; report it to its authors", cls=PluginError)
    return directions


def check_option_types(function: Callable[..., Any], options: dict[str, Any], *, param: str) -> dict[str, Any]:
    """``options`` checked against the annotations of ``function``'s parameters; returns them converted.

    An ``int`` must be a whole number: an int (not a bool), or a float without a fraction such as
    ``3.0`` or ``1e3``, which is passed on as the int it denotes; ``2.5``, ``NaN`` and ``"abc"`` are
    refused. A ``float`` must be a finite number, int or float (NaN and ±inf are refused). ``bool``,
    ``str``, ``None``, sequences (``Sequence[int]``: a list or tuple of ints, not a string),
    ``Callable`` and classes are checked as they read; unions take the first branch that fits.
    Parameters without an annotation, and functions whose annotations cannot be resolved, are not
    checked. A value that fits no branch raises an :class:`~latentdirs.errors.InvalidValueError`
    naming ``param`` and the option.
    """
    hints = _annotations(function)
    names = inspect.signature(function).parameters
    checked = {}
    for name, value in options.items():
        hint = hints.get(name) if name in names else None
        if hint is None:
            checked[name] = value
            continue
        fits, converted = _conform(value, hint)
        if not fits:
            raise invalid(f"{param} {name}", value, _describe(hint))
        checked[name] = converted
    return checked


_NO = (False, None)


def _annotations(function: Callable[..., Any]) -> dict[str, Any]:
    """Resolved parameter annotations; one that cannot be resolved (a plugin may annotate with a name
    it imports only for type checkers) is left out rather than taking the others with it."""
    try:
        return typing.get_type_hints(function)
    except Exception:
        pass
    namespace = getattr(function, "__globals__", {})
    hints = {}
    for name, parameter in inspect.signature(function).parameters.items():
        annotation = parameter.annotation
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)  # what get_type_hints does, one name at a time
            except Exception:
                continue
        if annotation is not parameter.empty:
            hints[name] = annotation
    return hints


def _conform(value: Any, hint: Any) -> tuple[bool, Any]:
    """(whether ``value`` fits the annotation ``hint``, ``value`` converted to it)."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True, value
    if hint is None or hint is type(None):
        return (True, None) if value is None else _NO
    if origin is typing.Union or origin is types.UnionType:
        for branch in sorted(arguments, key=_strictness):
            fits, converted = _conform(value, branch)
            if fits:
                return True, converted
        return _NO
    if origin is typing.Literal:
        return (True, value) if value in arguments else _NO
    if hint is bool:
        return (True, value) if isinstance(value, bool) else _NO
    if hint is int:
        whole = as_whole(value)
        return (True, whole) if whole is not None else _NO
    if hint is float:  # an int is a float's value too (and is echoed as given by the method's range check)
        return (True, value) if as_finite(value) is not None else _NO
    if hint is str:
        return (True, value) if isinstance(value, str) else _NO
    if origin is collections.abc.Callable or hint is collections.abc.Callable:
        return (True, value) if callable(value) else _NO
    if origin in (collections.abc.Sequence, list, tuple):
        return _conform_sequence(value, origin, arguments)
    if isinstance(hint, type) and issubclass(hint, os.PathLike):
        return (True, value) if isinstance(value, (str, os.PathLike)) else _NO
    if isinstance(hint, type):
        return (True, value) if isinstance(value, hint) else _NO
    return True, value  # an annotation this check does not understand: the method checks it


def _conform_sequence(value: Any, origin: Any, arguments: tuple[Any, ...]) -> tuple[bool, Any]:
    """A list or tuple (never a string) whose items fit ``arguments`` (``tuple[a, b]``, ``Sequence[a]``)."""
    if not isinstance(value, (list, tuple)):
        return _NO
    if origin is tuple and arguments and arguments[-1] is not Ellipsis:
        if len(value) != len(arguments):
            return _NO
        items = arguments
    else:
        items = (arguments[0] if arguments else Any,) * len(value)
    return (True, value) if all(_conform(v, h)[0] for v, h in zip(value, items)) else _NO


def _strictness(hint: Any) -> int:
    """Order of union branches: exact kinds first, so ``int | str`` keeps ``"3"`` a string and
    ``bool | int`` keeps ``True`` a bool; ``float`` after ``int`` keeps whole numbers ints."""
    return {type(None): 0, bool: 1, str: 2, int: 3, float: 4}.get(hint, 5)


def _describe(hint: Any) -> str:
    """What an annotation allows, in words: ``int | None`` → ``"an integer or None"``."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(dict.fromkeys(_describe(a) for a in arguments))
    if origin in (collections.abc.Sequence, list, tuple):
        if origin is tuple and arguments and arguments[-1] is not Ellipsis:
            return f"a list of {len(arguments)} items ({', '.join(_describe(a) for a in arguments)})"
        return f"a list (each item {_describe(arguments[0])})" if arguments else "a list"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, arguments))
    if origin is collections.abc.Callable or hint is collections.abc.Callable:
        return "a function"
    words = {type(None): "None", bool: "true or false", int: "an integer", float: "a finite number",
             str: "a string"}
    if hint in words:
        return words[hint]
    if isinstance(hint, type) and issubclass(hint, os.PathLike):
        return "a path"
    return getattr(hint, "__name__", str(hint))
