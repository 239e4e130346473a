"""Slider-to-image latency of ``latentdirs explore`` on dcgan-faces (issue 18), over real HTTP.

Run: ``.venv/bin/python -m benchmarks.bench_explore`` (about half a minute).

A real uvicorn server (in a thread of this process, the shipped SeFa file, CPU) answers:

1. **Drag, as the page sends it**: one request in flight at a time (the page's rule), the strength
   stepping through the slider's range on several directions and seeds; latency = request sent → PNG
   received, on a kept-alive connection like a browser's. Goal: p95 under 150 ms for the 64-px generator.
2. **Drag, unthrottled**: a client that fires a request every ``--interval`` ms without waiting
   (what a page without the one-in-flight rule would do); the server's per-client coalescing must keep
   the renders far below the requests, and the last request's image must arrive about one render
   after it is sent, not after a queue of them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import requests
import torch

from benchmarks.common import report

SEFA = Path(__file__).resolve().parents[1] / "checkpoints" / "dcgan-faces-sefa.safetensors"
GOAL_P95_MS = 150.0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def drag_like_the_page(url: str, steps: int, directions: int, seeds: int) -> list[float]:
    """Latencies (ms) of ``directions × seeds`` drags of ``steps`` strengths each, one request at a time."""
    session = requests.Session()
    latencies = []
    for seed in range(seeds):
        for index in range(directions):
            for step in range(steps):
                strength = -3 + 6 * step / (steps - 1)
                started = time.perf_counter()
                response = session.get(url + "api/render", params={"file": 0, "index": index, "seed": seed,
                                                                   "strength": f"{strength:.2f}", "client": "page"},
                                       timeout=30)
                response.raise_for_status()
                latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def drag_unthrottled(url: str, worker, requests_sent: int, interval_ms: float) -> dict[str, float]:
    """Fire ``requests_sent`` requests ``interval_ms`` apart without waiting; count renders and answers."""
    statuses: list[int] = []
    last_latency: list[float] = []
    before = worker.started

    def one(k: int) -> None:
        started = time.perf_counter()
        response = requests.get(url + "api/render", params={"file": 0, "index": 1, "seed": 7, "client": "burst",
                                                            "strength": f"{-3 + 6 * k / (requests_sent - 1):.3f}"},
                                timeout=60)
        statuses.append(response.status_code)
        if k == requests_sent - 1:
            last_latency.append((time.perf_counter() - started) * 1000)

    threads = []
    started = time.perf_counter()
    for k in range(requests_sent):
        thread = threading.Thread(target=one, args=(k,))
        thread.start()
        threads.append(thread)
        time.sleep(interval_ms / 1000)
    for thread in threads:
        thread.join()
    return {"requests": requests_sent, "renders": worker.started - before, "images": statuses.count(200),
            "superseded": statuses.count(204), "last_ms": last_latency[0],
            "total_ms": (time.perf_counter() - started) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=25, help="strengths per drag")
    parser.add_argument("--directions", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--burst", type=int, default=60, help="requests of the unthrottled drag")
    parser.add_argument("--interval", type=float, default=8.0, help="ms between unthrottled requests")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import latentdirs
    from latentdirs.explore.server import create_app, serving_in_thread
    from latentdirs.explore.session import ExploreSession

    generator = latentdirs.load_generator("dcgan-faces", device="cpu")
    with tempfile.TemporaryDirectory() as folder:
        directions = Path(folder) / "faces.safetensors"
        shutil.copyfile(SEFA, directions)
        app = create_app(ExploreSession(generator, [directions]))
        with serving_in_thread(app) as url:
            drag_like_the_page(url, steps=5, directions=1, seeds=1)  # warm-up: first calls allocate
            latencies = drag_like_the_page(url, args.steps, args.directions, args.seeds)
            burst = drag_unthrottled(url, app.worker, args.burst, args.interval)
    p50, p95 = statistics.median(latencies), _percentile(latencies, 0.95)
    load = os.getloadavg()[0]
    report(f"explore: slider-to-image latency, dcgan-faces 64 px, CPU ({torch.get_num_threads()} torch threads, "
           f"load average {load:.1f})", [
               ("requests (one in flight)", f"{len(latencies)}"),
               ("p50", f"{p50:.1f} ms"),
               ("p95", f"{p95:.1f} ms  (goal < {GOAL_P95_MS:.0f} ms: {'met' if p95 < GOAL_P95_MS else 'MISSED'})"),
               ("max", f"{max(latencies):.1f} ms"),
               (f"unthrottled drag: {burst['requests']} requests, {args.interval:g} ms apart",
                f"{burst['renders']} renders, {burst['images']} images, {burst['superseded']} superseded (204)"),
               ("  last request → its image", f"{burst['last_ms']:.1f} ms"),
           ], as_json={"p50_ms": round(p50, 1), "p95_ms": round(p95, 1), "max_ms": round(max(latencies), 1),
                       "n": len(latencies), "load": round(load, 2), "threads": torch.get_num_threads(), **burst})


if __name__ == "__main__":
    main()
