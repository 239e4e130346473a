"""``discover``: run a registered method on a generator with checked options."""

from __future__ import annotations

from typing import Any

from latentdirs.directions import Directions
from latentdirs.registry import check_options, get_method


def discover(generator, method: str, **options: Any) -> Directions:
    """Run discovery method ``method`` (e.g. ``"sefa"``) on ``generator``; returns :class:`Directions`.

    Options are the method's keyword arguments; an unknown one is refused with the list of known ones.
    """
    function = get_method(method)
    check_options(function, options, param=f"{method} option", skip=("generator",))
    directions = function(generator, **options)
    if not isinstance(directions, Directions):  # a plugin broke the contract
        raise TypeError(f"method {method!r} returned {type(directions).__name__}, not Directions")
    return directions
