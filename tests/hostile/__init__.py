"""Helpers of the hostile-input catalogue (tests/test_hostile.py): real files, crafted variants, checks.

Every attempt is checked the same way, through the real CLI (click's runner, exceptions caught so a
traceback is *seen*, not raised) and through the Python API:

* no marker file: nothing the file asked for ran;
* no traceback: the API raises a :class:`~latentdirs.LatentDirsError`, the CLI exits 1 or 2 with one
  ``Error:`` line that names the parameter or the file;
* none of the libraries' advice to load a file unsafely reaches the message;
* no output left behind (the ``-o`` path does not exist afterwards, nor any temporary file).

Each check records its outcome in :data:`CATALOGUE` (class → counts), which the test module writes to
``$LATENTDIRS_CATALOGUE`` when that is set, for docs/security.md.
"""

from __future__ import annotations

import collections
import json
import os
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable

from latentdirs.errors import LatentDirsError

#: phrases of torch's and numpy's advice that must never appear in our messages
UNSAFE_ADVICE = ("weights_only", "Weights only", "unsafe", "allow_pickle", "trusted source", "arbitrary code",
                 "safe_globals", "Traceback")

#: class → {"attempts", "code_executions", "tracebacks", "partial_outputs", "unnamed"}
CATALOGUE: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


def record(kind: str, **outcome: bool) -> None:
    """Count one attempt of ``kind`` and which failures it showed (before the test asserts on them)."""
    counts = CATALOGUE[kind]
    counts["attempts"] += 1
    for name, happened in outcome.items():
        counts[name] += int(bool(happened))


def write_catalogue(path: str | os.PathLike[str]) -> None:
    """Merge :data:`CATALOGUE` into the JSON file ``path`` (several test modules may add to it)."""
    target = Path(path)
    merged: dict[str, dict[str, int]] = json.loads(target.read_text()) if target.is_file() else {}
    for kind, counts in CATALOGUE.items():
        merged[kind] = dict(counts)
    target.write_text(json.dumps(merged, indent=2, sort_keys=True))


def leftovers(outputs: Iterable[Path]) -> list[str]:
    """Outputs that exist after a refused run: the path itself, or temporary files beside it."""
    found = []
    for output in outputs:
        output = Path(output)
        if output.exists() and (output.is_file() or any(output.iterdir())):
            found.append(str(output))
        found += [str(p) for p in output.parent.glob(f".{output.name}*")]
    return found


def check_api(kind: str, call: Callable[[], Any], *, names: Iterable[str], marker: Path | None = None,
              outputs: Iterable[Path] = ()) -> str:
    """``call()`` must raise a LatentDirsError whose one-line message names one of ``names``."""
    outputs = list(outputs)
    message, trace = None, None
    try:
        call()
    except LatentDirsError as error:
        message = str(error)
    except BaseException as error:  # the thing this catalogue exists to find
        trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))[-3000:]
    executed = marker is not None and marker.exists()
    left = leftovers(outputs)
    record(kind, code_executions=executed, tracebacks=trace is not None or message is None,
           partial_outputs=bool(left), unnamed=message is not None and not _names_one(message, names))
    assert not executed, "the file's code ran (marker written)"
    assert trace is None, f"not a LatentDirsError:\n{trace}"
    assert message is not None, "accepted instead of refused"
    _check_message(message, names)
    assert not left, f"left behind: {left}"
    return message


def check_cli(kind: str, args: Iterable[Any], *, names: Iterable[str], marker: Path | None = None,
              outputs: Iterable[Path] = (), exit_codes: tuple[int, ...] = (1, 2)) -> str:
    """The real CLI on ``args`` must exit 1 or 2 with one ``Error:`` line naming one of ``names``."""
    from click.testing import CliRunner

    from latentdirs.cli.main import cli

    outputs = list(outputs)
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)
    trace = None
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        error = result.exception
        trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))[-3000:]
    text = result.stderr if result.stderr else result.output
    errors = [line for line in text.splitlines() if line.startswith("Error:")]
    executed = marker is not None and marker.exists()
    left = leftovers(outputs)
    record(kind, code_executions=executed, tracebacks=trace is not None or "Traceback" in result.output,
           partial_outputs=bool(left), unnamed=len(errors) != 1 or not _names_one(errors[0], names))
    assert not executed, "the file's code ran (marker written)"
    assert trace is None, f"traceback from the CLI:\n{trace}"
    assert result.exit_code in exit_codes, (result.exit_code, result.output)
    assert len(errors) == 1, f"expected one Error: line, got {result.output!r}"
    _check_message(errors[0], names)
    assert not left, f"left behind: {left}"
    return errors[0]


def _names_one(message: str, names: Iterable[str]) -> bool:
    return any(name in message for name in names)


def _check_message(message: str, names: Iterable[str]) -> None:
    names = list(names)
    assert "\n" not in message.strip(), f"more than one line: {message!r}"
    assert _names_one(message, names), f"names none of {names}: {message}"
    bad = [phrase for phrase in UNSAFE_ADVICE if phrase in message]
    assert not bad, f"library advice {bad} in: {message}"
