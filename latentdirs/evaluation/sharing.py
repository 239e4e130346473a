"""Evaluation's rendering under ``torchrun``: whole units of work dealt to the ranks, results in order.

A *unit* is one batch of rendering exactly as one process renders it (a batch of VP pairs, one
direction's profile or factor-matrix row, one batch of the calibration's edits or one chunk of their
registration), so every image is computed with the same batch neighbours as in one process; only the
unit's results travel (CPU tensors or floats, through the default gloo group's object collectives), and
they are put back in unit order. Work that is not shared — the VP classifier's training, the
content/style figures — runs on rank 0 and its result is broadcast, so every rank ends with the
one-process result (docs/scale.md, "Evaluate").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, TypeVar

from latentdirs.distributed import assign

if TYPE_CHECKING:
    from latentdirs.distributed import Ranks

T = TypeVar("T")


def mine(count: int, ranks: Ranks | None) -> range:
    """The units of ``count`` this rank works on: all of them in one process, else every
    ``world_size``-th starting at its rank (a rank may get none when a phase has fewer units than ranks)."""
    if ranks is None:
        return range(count)
    return range(ranks.rank, count, ranks.world_size)


def _in_order(count: int, parts: list[dict[int, T]]) -> list[T]:
    merged: dict[int, T] = {}
    for part in parts:
        merged.update(part)
    return [merged[unit] for unit in range(count)]


def share(count: int, work: Callable[[int], T], ranks: Ranks | None) -> list[T]:
    """``[work(0), …, work(count − 1)]`` on every rank, each unit computed by one rank (small results:
    they are exchanged with every rank)."""
    done = {unit: work(unit) for unit in mine(count, ranks)}
    if ranks is None:
        return [done[unit] for unit in range(count)]
    return _in_order(count, ranks.all_gather(done))


def share_to_main(count: int, work: Callable[[int], T], ranks: Ranks | None) -> list[T] | None:
    """``[work(0), …, work(count − 1)]`` on rank 0 (or in one process), None on the other ranks: for large
    results (rendered images) that only rank 0 uses."""
    done = {unit: work(unit) for unit in mine(count, ranks)}
    if ranks is None:
        return [done[unit] for unit in range(count)]
    parts = ranks.gather(done)
    return None if parts is None else _in_order(count, parts)


def on_main(function: Callable[[], T], ranks: Ranks | None) -> T:
    """``function()`` computed on rank 0 (or in one process) and returned on every rank; if it raises,
    every rank raises (:meth:`~latentdirs.distributed.Ranks.on_main`)."""
    return function() if ranks is None else ranks.on_main(function)


def check_units(count: int, ranks: Ranks | None, *, what: str, fix: str) -> None:
    """Refuse, before anything is rendered, a launch of more ranks than ``count`` units of its main phase."""
    if ranks is not None:
        assign(count, ranks, what=what, fix=fix)


__all__ = ["check_units", "mine", "on_main", "share", "share_to_main"]
