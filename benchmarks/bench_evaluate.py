"""Evaluate benchmark (issue 7): a default ``evaluate`` of one file on dcgan-faces, broken down.

Run: ``.venv/bin/python -m benchmarks.bench_evaluate`` (about two minutes on 2 CPU threads).
Prints the wall time split into VP pair rendering, VP training, and the rest (effect profiles,
loading), for the curated SeFa file (top 8 directions, 2000 pairs, 4 epochs, 2 VP runs + 2 floor runs).
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import report
from latentdirs.catalogue import curated_file
from latentdirs.evaluation import evaluate


def main() -> None:
    torch.set_num_threads(2)
    started = time.perf_counter()
    results = evaluate([curated_file("dcgan-faces-sefa.safetensors")], device="cpu")
    total = time.perf_counter() - started
    item = results["generators"]["dcgan-faces"][0]
    render, train = item["seconds"]["render"], item["seconds"]["train"]
    report("default evaluate, dcgan-faces, curated SeFa file", [
        ("total", f"{total:.1f} s"), ("VP pair rendering", f"{render:.1f} s ({render / total:.0%})"),
        ("VP training", f"{train:.1f} s ({train / total:.0%})"),
        ("rest (loading, effect profiles)", f"{total - render - train:.1f} s"),
        ("VP / random floor / chance", f"{item['vp']:.3f} / {item['vp_random_floor']:.3f} / {item['vp_chance']:.3f}")])


if __name__ == "__main__":
    main()
