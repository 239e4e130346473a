"""Evaluate benchmark (issue 7): a default ``evaluate`` of one file on dcgan-faces, broken down.

Run: ``.venv/bin/python -m benchmarks.bench_evaluate`` (about a minute and a half on 2 CPU threads).

1. The wall time of a default evaluation of the curated SeFa file (top 8 directions, 2000 pairs,
   4 epochs, 2 VP runs each with its random-floor run), split into VP pair rendering, VP training and
   the rest (loading, effect profiles).
2. Pair rendering as latentdirs does it — the file's directions and the random floor on the same
   latents, the unedited images rendered once — against the straightforward form that renders each set's
   pairs separately (best of 2, interleaved, 1000 pairs).
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import interleaved_best, report
from latentdirs.catalogue import curated_file
from latentdirs.directions import Directions
from latentdirs.evaluation import evaluate
from latentdirs.evaluation.vp import _pair_differences, random_basis
from latentdirs.registry import load_generator


def main() -> None:
    torch.set_num_threads(2)
    path = curated_file("dcgan-faces-sefa.safetensors")
    started = time.perf_counter()
    results = evaluate([path], device="cpu")
    total = time.perf_counter() - started
    item = results["generators"]["dcgan-faces"][0]
    render, train = item["seconds"]["render"], item["seconds"]["train"]
    report("default evaluate, dcgan-faces, curated SeFa file", [
        ("total", f"{total:.1f} s"), ("VP pair rendering", f"{render:.1f} s ({render / total:.0%})"),
        ("VP training", f"{train:.1f} s ({train / total:.0%})"),
        ("rest (loading, effect profiles)", f"{total - render - train:.1f} s"),
        ("VP / random floor / chance", f"{item['vp']:.3f} / {item['vp_random_floor']:.3f} / {item['vp_chance']:.3f}")])

    generator = load_generator("dcgan-faces", device="cpu")
    vectors = Directions.load(path, generator=generator).vectors[:8]
    floor = random_basis(8, vectors.shape[1], 1000)
    options = dict(count=1000, strength=(1.5, 3.0), seed=0, space="z", layers=None, class_id=None)
    shared = _pair_differences(generator, [vectors, floor], **options)[0]
    separate = [_pair_differences(generator, [v], **options)[0][0] for v in (vectors, floor)]
    same = max(float((a - b).abs().max()) for a, b in zip(shared, separate))
    best = interleaved_best({
        "shared": lambda: _pair_differences(generator, [vectors, floor], **options),
        "separate": lambda: [_pair_differences(generator, [v], **options) for v in (vectors, floor)]}, repeat=2)
    report("VP pair rendering, file + floor, 1000 pairs each", [
        ("separate renders (straightforward)", f"{best['separate']:.2f} s"),
        ("unedited images shared (latentdirs)", f"{best['shared']:.2f} s"),
        ("speed-up", f"{best['separate'] / best['shared']:.2f}x"),
        ("max difference of the inputs", f"{same:.1e}")])


if __name__ == "__main__":
    main()
