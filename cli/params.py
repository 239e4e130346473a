"""click parameter types wrapping :mod:`latentdirs.specs`, so a bad range is a usage error (exit 2)."""

from __future__ import annotations

import re
from typing import Any, Callable

import click

from latentdirs.measure import IMAGE_MEASURES
from latentdirs.devices import DEVICE_CHOICES
from latentdirs.errors import SpecError
from latentdirs.specs import parse_alphas, parse_index_spec, parse_option, parse_strength_range


class _SpecType(click.ParamType):
    def __init__(self, name: str, parse: Callable[..., Any]) -> None:
        self.name = name
        self._parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            flag = max(param.opts, key=len) if param is not None and param.opts else None
            return self._parse(value, param=flag or self.name)
        except SpecError as error:
            self.fail(str(error), param, ctx)


INDEX_SPEC = _SpecType("SPEC", parse_index_spec)
ALPHA_SPEC = _SpecType("START:STOP:NUM", parse_alphas)
OPTION = _SpecType("KEY=VALUE", parse_option)
STRENGTH_RANGE = _SpecType("[LOW:]HIGH", parse_strength_range)
#: one choice list for every command, from the library (case-insensitive, as resolve_device is)
DEVICE = click.Choice(list(DEVICE_CHOICES), case_sensitive=False)
#: the measurements ``--correct-amounts [BY]`` steers by (edit and measure)
CORRECT_BY = click.Choice(list(IMAGE_MEASURES))
#: click settings every command shares
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100, "show_default": True}


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: object) -> str:
    """``text`` with control characters (escape sequences, carriage returns, …) shown as ``\\xNN``, so
    a string read from a file can neither clear the screen nor recolour or overwrite what is printed;
    newlines and tabs are kept."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", str(text))
