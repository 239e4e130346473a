"""Labels a user wrote for generated images: a file of seed → value or class, read as hostile input.

Formats (UTF-8 text):

* CSV / TSV / whitespace-separated lines ``SEED,VALUE`` (``#`` starts a comment; blank lines are skipped;
  a first line whose first field is not a number is a header, e.g. ``seed,smiling``);
* JSON: an object ``{"SEED": VALUE, …}`` or a list of ``[SEED, VALUE]`` pairs (suffix ``.json``, or a
  first character ``{`` / ``[``).

A VALUE is a finite number (continuous attribute) or a class name (text). Numbers with exactly two
distinct values (``0``/``1``) are two classes. Seeds are the ones ``latentdirs edit --seeds`` renders:
integers 0 … 2**63 - 1, each at most once.

Everything is checked before any value is used, and every refusal is one line naming the file, the line
(or JSON entry) and what is allowed: the size (before reading), the encoding, each malformed entry, an
unknown seed, NaN / infinite values, a mix of numbers and names, a single class or value, and too few
samples.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latentdirs.errors import MAX_SEED, InvalidValueError, invalid

#: the largest labels file read (bytes), checked before reading: a million labelled seeds fit in 32 MiB
MAX_BYTES = 32 * 1024 * 1024
#: the fewest labelled samples, and the fewest per class, a boundary is fitted from
MIN_SAMPLES = 10
MIN_PER_CLASS = 3
#: the longest class name
MAX_NAME = 100
_SEPARATOR = re.compile(r"\s*[,\t;]\s*|\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FORMAT = ("lines SEED,VALUE (CSV/TSV) or JSON {\"SEED\": VALUE}; SEED an integer 0-2**63-1, VALUE a number or "
           "a class name")


class LabelsError(InvalidValueError):
    """A labels file (or labels computed by a scorer) cannot be used; the message names the entry."""


@dataclass(frozen=True)
class Labels:
    """Checked labels: ``seeds`` (ints), ``values`` (floats) — for classes the index into ``classes``.

    ``classes`` is ``()`` for a continuous attribute, else the class names (sorted: numbers numerically,
    names alphabetically), and ``values[i]`` is ``float(classes.index(label_i))``.
    """

    seeds: tuple[int, ...]
    values: tuple[float, ...]
    classes: tuple[str, ...]
    source: str

    @property
    def continuous(self) -> bool:
        return not self.classes


def read_labels(path: str | Path) -> Labels:
    """Read and check a labels file (formats in the module docstring); raises :class:`LabelsError`."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise invalid("labels", str(path), "an existing labels file (" + _FORMAT + ")", cls=LabelsError)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise invalid("labels", f"{name} ({size} bytes)", f"a file of at most {MAX_BYTES} bytes",
                      "Split it, or pass fewer seeds", cls=LabelsError)
    raw = path.read_bytes()[:MAX_BYTES + 1]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise invalid("labels", f"{name}: byte {error.start}", "UTF-8 text (" + _FORMAT + ")",
                      cls=LabelsError) from None
    stripped = text.lstrip()
    entries = _json_entries(text, name) if path.suffix.lower() == ".json" or stripped[:1] in ("{", "[") \
        else _text_entries(text, name)
    return check_entries(entries, source=name)


def check_entries(entries: list[tuple[str, Any, Any]], *, source: str) -> Labels:
    """Check ``(where, seed, value)`` entries (``where`` names the line or entry in messages)."""
    seen: dict[int, str] = {}
    seeds: list[int] = []
    raw_values: list[float | str] = []
    kind: str | None = None
    for where, seed, value in entries:
        number = _seed(seed, where, source)
        if number in seen:
            raise invalid(f"labels ({source}, {where})", seed,
                          f"each seed once (seed {number} is also on {seen[number]})", cls=LabelsError)
        seen[number] = where
        parsed = _value(value, where, source)
        this = "number" if isinstance(parsed, float) else "name"
        if kind is None:
            kind = this
        elif this != kind:
            raise invalid(f"labels ({source}, {where})", value, f"a {kind} like the entries before it "
                          "(all numbers, or all class names)", cls=LabelsError)
        seeds.append(number)
        raw_values.append(parsed)
    return _finish(seeds, raw_values, source)


def labels_from_values(values: list[float], *, source: str) -> Labels:
    """Labels computed by a scorer or a built-in attribute, one per sample (its index is its "seed"),
    checked like a file's (NaN, a single value, too few samples)."""
    return check_entries([(f"sample {i}", i, value) for i, value in enumerate(values)], source=source)


def _finish(seeds: list[int], raw_values: list[float | str], source: str) -> Labels:
    if len(seeds) < MIN_SAMPLES:
        raise invalid("labels", f"{source}: {len(seeds)} labelled samples", f"at least {MIN_SAMPLES}",
                      "Label more seeds", cls=LabelsError)
    distinct = sorted(set(raw_values), key=lambda v: (isinstance(v, str), v))
    if len(distinct) < 2:
        raise invalid("labels", f"{source}: every sample is {distinct[0]!r}" if distinct else source,
                      "at least two classes or values (a boundary separates two groups)",
                      "Label samples of both kinds", cls=LabelsError)
    if isinstance(distinct[0], float) and len(distinct) > 2:
        return Labels(tuple(seeds), tuple(float(v) for v in raw_values), (), source)
    names = tuple(_class_name(v) for v in distinct)
    counts = {name: 0 for name in names}
    for value in raw_values:
        counts[_class_name(value)] += 1
    few = {name: count for name, count in counts.items() if count < MIN_PER_CLASS}
    if few:
        raise invalid("labels", f"{source}: class counts {counts}", f"at least {MIN_PER_CLASS} samples of each class",
                      "Label more samples of the rare classes, or pick --opt positive=CLASS", cls=LabelsError)
    index = {name: float(i) for i, name in enumerate(names)}
    return Labels(tuple(seeds), tuple(index[_class_name(v)] for v in raw_values), names, source)


def _class_name(value: float | str) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return value


def _seed(seed: Any, where: str, source: str) -> int:
    number: int | None = None
    if isinstance(seed, bool):
        number = None
    elif isinstance(seed, int):
        number = seed
    elif isinstance(seed, str) and re.fullmatch(r"\s*\d{1,19}\s*", seed):
        number = int(seed)
    if number is None or not 0 <= number <= MAX_SEED:
        raise invalid(f"labels ({source}, {where})", seed, "a known seed: an integer 0-2**63-1 (the seeds "
                      "'latentdirs edit --seeds' renders)", cls=LabelsError)
    return number


def _value(value: Any, where: str, source: str) -> float | str:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = str(value).strip() if isinstance(value, str) else None
        if not text or _CONTROL.search(text) or len(text) > MAX_NAME:
            raise invalid(f"labels ({source}, {where})", value, f"a number or a class name (1-{MAX_NAME} "
                          "printable characters)", cls=LabelsError)
        try:
            number = float(text)
        except ValueError:
            return text
    if not math.isfinite(number):
        raise invalid(f"labels ({source}, {where})", value, "a finite number (not NaN or infinite)",
                      "Drop the sample or give it a value", cls=LabelsError)
    return number


def _text_entries(text: str, source: str) -> list[tuple[str, Any, Any]]:
    entries = []
    header_allowed = True
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        fields = [f for f in _SEPARATOR.split(content) if f != ""]
        if header_allowed and fields and not re.fullmatch(r"-?\d+", fields[0]):
            header_allowed = False
            continue  # a header such as "seed,label"
        header_allowed = False
        if len(fields) != 2:
            raise invalid(f"labels ({source}, line {number})", line[:120], _FORMAT, cls=LabelsError)
        entries.append((f"line {number}", fields[0], fields[1]))
    return entries


def _json_entries(text: str, source: str) -> list[tuple[str, Any, Any]]:
    try:
        data = json.loads(text, parse_constant=lambda name: float("nan"))
    except (json.JSONDecodeError, RecursionError) as error:
        where = f"line {error.lineno}" if isinstance(error, json.JSONDecodeError) else "nesting"
        raise invalid(f"labels ({source}, {where})", "malformed JSON", _FORMAT, cls=LabelsError) from None
    if isinstance(data, dict):
        return [(f"entry {key!r}", key, value) for key, value in data.items()]
    if isinstance(data, list):
        entries = []
        for i, item in enumerate(data):
            if not isinstance(item, list) or len(item) != 2:
                raise invalid(f"labels ({source}, entry {i})", item, "a pair [SEED, VALUE]", cls=LabelsError)
            entries.append((f"entry {i}", item[0], item[1]))
        return entries
    raise invalid(f"labels ({source})", type(data).__name__, _FORMAT, cls=LabelsError)


__all__ = ["Labels", "LabelsError", "check_entries", "labels_from_values", "read_labels"]
