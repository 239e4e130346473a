"""Small measuring helpers shared by the benchmark scripts (not part of the test run).

Benchmarks print ratios of two things measured in the same run on the same machine, so the figures
compare code, not machines.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any, Callable


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


def bare_vs_edit_child(runners: dict[str, Callable[[], Any]], mode: str, images: int) -> None:
    """Body of a benchmark's ``--child MODE`` process: ``bare``/``edit`` run once (for peak memory);
    ``rates`` prints seconds per image of both, interleaved, best of 3."""
    if mode in runners:
        runners[mode]()
        return
    best = interleaved_best(runners)
    print(f"{best['bare'] / images:.6f} {best['edit'] / images:.6f}")


def bare_vs_edit(module: str, target: str, batch: int, images: int) -> tuple[float, float, dict[str, float]]:
    """Seconds per image of ``bare`` and ``edit`` and their peak RSS (MiB), each in fresh processes of
    ``python -m module --child MODE target batch images``."""
    command = [sys.executable, "-m", module, "--child"]
    _, out = peak_rss_mib(command + ["rates", target, str(batch), str(images)])
    bare, edit = map(float, out.split()[-2:])
    peaks = {mode: peak_rss_mib(command + [mode, target, str(batch), str(images)])[0] for mode in ("bare", "edit")}
    return bare, edit, peaks


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


def python_command(*args: str) -> list[str]:
    """A command running this interpreter (the project's venv) with ``args``."""
    return [sys.executable, *args]


def report(title: str, rows: list[tuple[str, str]], *, as_json: dict[str, Any] | None = None) -> None:
    """Print a small aligned table (and optionally a JSON line for machines)."""
    print(f"\n## {title}")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if as_json is not None:
        print("JSON " + json.dumps(as_json, sort_keys=True))


__all__ = ["best_time", "peak_rss_mib", "python_command", "report"]
