"""GANSpace benchmarks (issue 17) on dcgan-faces, CPU, one torch thread per run.

Run: ``nice .venv/bin/python -m benchmarks.bench_ganspace`` (about 10 minutes on a quiet 2-core machine:
the 10⁵-sample run dominates). ``--samples 2000 20000`` for a quick look.

1. ``discover dcgan-faces -m ganspace`` (default layer main.2, 8192 features → incremental PCA, K = 100,
   regression on max(10⁴, N) fresh latents) with N = 10⁴ and N = 10⁵ samples, each in a fresh process:
   wall time and peak resident memory; goal: peak(10⁵) ≤ 1.2 × peak(10⁴).
2. ``--chunks``: the incremental PCA's default chunk (max(3K, 300) = 300) against the reference's
   (max(2000, 3K) = 2000) on the same 10⁴ activations: time, and |cos| of the first 10 components.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def child(samples: int) -> None:
    """One discovery; prints ``{"seconds", "scores"}`` as JSON."""
    import latentdirs

    torch.set_num_threads(1)
    faces = latentdirs.load_generator("dcgan-faces", device="cpu")
    started = time.perf_counter()
    directions = latentdirs.discover(faces, "ganspace", samples=samples, seed=0)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "scores": directions.scores[:5].tolist(),
                      "options": {k: directions.meta["method"]["options"][k] for k in ("layer", "solver", "features",
                                                                                        "regression_samples")}}))


def bench_memory(counts: list[int]) -> None:
    from benchmarks.common import peak_rss_mib, report

    rows, peaks = [], {}
    for count in counts:
        peak, out = peak_rss_mib([sys.executable, "-m", "benchmarks.bench_ganspace", "--child", str(count)])
        result = json.loads(out.strip().splitlines()[-1])
        peaks[count] = peak
        rows.append((f"N = {count}", f"{result['seconds']:.1f} s, peak {peak:.0f} MiB, top variances "
                                     f"{', '.join(f'{s:.1f}' for s in result['scores'][:3])} ({result['options']})"))
    if len(counts) >= 2:
        low, high = min(counts), max(counts)
        rows.append((f"peak memory ratio N={high} / N={low} (goal <= 1.2)", f"{peaks[high] / peaks[low]:.3f}"))
    report("GANSpace on dcgan-faces, 1 torch thread", rows)


def bench_chunks(samples: int = 10_000) -> None:
    import latentdirs
    from benchmarks.common import report
    from latentdirs.methods.ganspace import IncrementalAccumulator, _ActivationReader

    torch.set_num_threads(1)
    faces = latentdirs.load_generator("dcgan-faces", device="cpu")
    reader = _ActivationReader(faces, "main.2", None, "z")
    activations = torch.cat([reader(z) for z in faces.sample(samples, seed=0).split(250)])
    results, rows = {}, []
    for chunk in (300, 2000):
        accumulator = IncrementalAccumulator(activations.shape[1], 100, chunk=chunk)
        started = time.perf_counter()
        for rows_ in activations.split(250):
            accumulator.update(rows_)
        results[chunk] = accumulator.finish(100)
        rows.append((f"chunk {chunk}", f"{time.perf_counter() - started:.1f} s"))
    cosines = (results[300].components[:10] * results[2000].components[:10]).sum(1).abs()
    rows.append(("|cos| of components 1-10, chunk 300 vs 2000", ", ".join(f"{c:.4f}" for c in cosines.tolist())))
    ratio = (results[300].variances[:10] / results[2000].variances[:10]).tolist()
    rows.append(("variance ratio 1-10, chunk 300 / 2000", ", ".join(f"{r:.4f}" for r in ratio)))
    report(f"incremental PCA chunk size, {samples} dcgan-faces activations (8192 features, K = 100)", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--chunks", action="store_true", help="also compare incremental PCA chunk sizes")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    print(f"torch {torch.__version__}")
    bench_memory(args.samples)
    if args.chunks:
        bench_chunks()


if __name__ == "__main__":
    main()
