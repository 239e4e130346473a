"""Small measuring helpers shared by the benchmark scripts (not part of the test run).

Benchmarks print ratios of two things measured in the same run on the same machine, so the figures
compare code, not machines.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

#: the goal for ``latentdirs edit``: at least this fraction of the bare generator's images per second
EDIT_RATIO_GOAL = 0.9


def best_time(function: Callable[[], Any], *, repeat: int = 5, warmup: int = 1) -> float:
    """Best wall time in seconds over ``repeat`` calls after ``warmup`` calls (the least-disturbed run)."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def interleaved_best(runners: dict[str, Callable[[], Any]], *, repeat: int = 3) -> dict[str, float]:
    """Best wall time of each runner; calls are interleaved (after one warm-up each) so that load from
    other processes hits all of them alike."""
    for function in runners.values():
        function()
    best = {name: float("inf") for name in runners}
    for _ in range(repeat):
        for name, function in runners.items():
            started = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def bare_vs_edit_main(description: str, *, runners: Callable[[Path, int, int], dict[str, Callable[[], Any]]],
                      bench: Callable[[int, Path, int], None], resolutions: list[int], images: int) -> None:
    """Command line of a generator benchmark: ``bench(resolution, workdir, images)`` per resolution, or —
    as its own ``--child MODE TARGET BATCH IMAGES`` process — run ``runners(target, batch, images)``:
    ``bare``/``edit`` once (for peak memory), ``rates`` both interleaved (prints seconds per image)."""
    import argparse
    import tempfile

    import torch

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--resolutions", type=int, nargs="+", default=resolutions)
    parser.add_argument("--images", type=int, default=images)
    parser.add_argument("--child", nargs=4, metavar=("MODE", "TARGET", "BATCH", "IMAGES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, target, batch, count = args.child
        torch.set_num_threads(2)
        functions = runners(Path(target), int(batch), int(count))
        if mode in functions:
            functions[mode]()
        else:
            best = interleaved_best(functions)
            print(f"{best['bare'] / int(count):.6f} {best['edit'] / int(count):.6f}")
        return
    print(f"torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as workdir:
        for resolution in args.resolutions:
            bench(resolution, Path(workdir), args.images)


def bare_vs_edit(module: str, target: str, batch: int, images: int) -> tuple[float, float, dict[str, float]]:
    """Seconds per image of ``bare`` and ``edit`` and their peak RSS (MiB), each in fresh processes of
    ``python -m module --child MODE target batch images``."""
    command = [sys.executable, "-m", module, "--child"]
    _, out = peak_rss_mib(command + ["rates", target, str(batch), str(images)])
    bare, edit = map(float, out.split()[-2:])
    peaks = {mode: peak_rss_mib(command + [mode, target, str(batch), str(images)])[0] for mode in ("bare", "edit")}
    return bare, edit, peaks


def bare_vs_edit_rows(module: str, target: str, batches: Sequence[int], images: int,
                      bare_name: str = "bare forward") -> list[tuple[str, str]]:
    """:func:`bare_vs_edit` for each batch size, as report rows: speed and peak memory of each side, and
    the edit/bare ratio of images per second (goal ≥ :data:`EDIT_RATIO_GOAL`)."""
    rows = []
    for batch in batches:
        bare, edit, peaks = bare_vs_edit(module, target, batch, images)
        rows += [(f"batch {batch}: {bare_name}", f"{bare:.3f} s/img ({1 / bare:.2f} img/s), peak {peaks['bare']:.0f} MiB"),
                 (f"batch {batch}: latentdirs edit", f"{edit:.3f} s/img ({1 / edit:.2f} img/s), peak {peaks['edit']:.0f} MiB"),
                 (f"batch {batch}: ratio of images/s (goal >= {EDIT_RATIO_GOAL})", f"{bare / edit:.2f}")]
    return rows


def peak_rss_mib(command: list[str]) -> tuple[float, str]:
    """Run ``command`` in a fresh process; return its peak resident memory in MiB and its stdout.

    Measured with ``wait4``'s rusage of that one child, so earlier children do not leak into it.
    """
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = _wait4(process.pid)
    stdout = process.stdout.read() if process.stdout else ""
    stderr = process.stderr.read() if process.stderr else ""
    if status != 0:
        raise RuntimeError(f"{command} failed ({status}): {stderr[-2000:]}")
    return usage.ru_maxrss / 1024, stdout


def _wait4(pid: int):
    import os

    _, status, usage = os.wait4(pid, 0)
    return pid, os.waitstatus_to_exitcode(status), usage


def report(title: str, rows: list[tuple[str, str]], *, as_json: dict[str, Any] | None = None) -> None:
    """Print a small aligned table (and optionally a JSON line for machines)."""
    print(f"\n## {title}")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if as_json is not None:
        print("JSON " + json.dumps(as_json, sort_keys=True))


__all__ = ["EDIT_RATIO_GOAL", "bare_vs_edit", "bare_vs_edit_main", "bare_vs_edit_rows", "best_time",
           "interleaved_best", "peak_rss_mib", "report"]
