"""Foundation benchmarks (issue 2): SeFa time, edit throughput against bare forwards, memory flatness.

Run: ``.venv/bin/python -m benchmarks.bench_foundation`` (about two minutes on 2 CPU cores).

Prints, each measured in this run:
* SeFa on dcgan-faces and on random StyleGAN2-1024-shaped weights (seventeen 512×512 modulation
  affines), against a straightforward NumPy version of the reference (``np.linalg.eig``, float64);
* ``latentdirs edit`` images/s (PNG grids and strips written, manifest included) against a bare loop of
  generator forward passes at the same batch size, on dcgan-faces;
* peak resident memory of ``latentdirs edit`` for 10 000 images against 100 images (fresh processes).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import latentdirs
from benchmarks.common import EDIT_RATIO_GOAL, best_time, interleaved_best, peak_rss_mib, report
from latentdirs.methods.sefa import sefa_factorize
from latentdirs.plan import EditPlan
from latentdirs.render import Output, render_edits


def reference_sefa(weights: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The reference's recipe, written plainly: normalise columns, np.linalg.eig, no sort."""
    matrix = np.concatenate(weights, axis=1)
    matrix = matrix / np.linalg.norm(matrix, axis=0, keepdims=True)
    values, vectors = np.linalg.eig(matrix @ matrix.T)
    return values.real, vectors.real.T


def bench_sefa() -> dict[str, float]:
    faces = latentdirs.load_generator("dcgan-faces", device="cpu")
    face_weights = faces.projection_weights()
    generator = torch.Generator().manual_seed(0)
    style_weights = [torch.randn(512, 512, generator=generator) for _ in range(17)]
    results = {}
    for name, weights in (("dcgan-faces [100 x 8192]", face_weights), ("stylegan2-1024 affines [512 x 17*512]", style_weights)):
        ours = best_time(lambda: sefa_factorize(weights), repeat=5)
        numpy_weights = [w.double().numpy() for w in weights]
        plain = best_time(lambda: reference_sefa(numpy_weights), repeat=3)
        results[name] = ours
        report(f"SeFa, {name}", [("latentdirs (eigh, sorted, signs)", f"{ours * 1e3:.1f} ms"),
                                 ("reference recipe (np.linalg.eig)", f"{plain * 1e3:.1f} ms"),
                                 ("speed-up", f"{plain / ours:.2f}x"),
                                 ("under 0.1 s", str(ours < 0.1))])
    return results


def bench_edit_throughput(batch_size: int, seeds: int, indices: int, alphas: int) -> dict[str, float]:
    faces = latentdirs.load_generator("dcgan-faces", device="cpu")
    directions = latentdirs.discover(faces, "sefa", num_directions=indices)
    total = seeds * indices * alphas
    latents = torch.randn(total, faces.z_dim)

    def bare() -> None:
        with torch.inference_mode():
            for start in range(0, total, batch_size):
                faces.network.main(latents[start:start + batch_size, :, None, None])

    def edit(strips: bool) -> None:
        with tempfile.TemporaryDirectory() as out:
            plan = EditPlan.build(faces, directions, seeds=list(range(seeds)), indices=list(range(indices)),
                                  alphas=list(np.linspace(-3, 3, alphas)))
            render_edits(faces, directions, plan, out, output=Output(strips=strips), batch_size=batch_size)

    best = interleaved_best({"bare": bare, "grids+strips": lambda: edit(True), "grids only": lambda: edit(False)},
                            repeat=5)
    ratios = {name: best["bare"] / best[name] for name in ("grids+strips", "grids only")}
    report(f"edit throughput, dcgan-faces, {total} images, batch {batch_size} (best of 5, interleaved)", [
        ("bare generator loop", f"{total / best['bare']:.0f} img/s"),
        ("edit: grids + per-seed strips + manifest", f"{total / best['grids+strips']:.0f} img/s"),
        ("edit: grids + manifest (--no-strips)", f"{total / best['grids only']:.0f} img/s"),
        (f"ratio with strips (goal >= {EDIT_RATIO_GOAL})", f"{ratios['grids+strips']:.2f}"),
        ("ratio without strips", f"{ratios['grids only']:.2f}"),
    ])
    return ratios


def bench_memory(workdir: Path) -> float:
    directions = workdir / "faces.safetensors"
    cli = [sys.executable, "-m", "latentdirs.cli.main"]
    peak, _ = peak_rss_mib(cli + ["discover", "dcgan-faces", "--device", "cpu", "-o", str(directions)])
    rows = []
    peaks = {}
    for images, indices in ((100, "0"), (10_000, "0-99")):
        started = time.perf_counter()
        peak, _ = peak_rss_mib(cli + ["edit", str(directions), "--indices", indices, "--seeds", "0-9",
                                      "--alphas", "-3:3:10", "--device", "cpu", "-o", str(workdir / f"edit{images}")])
        peaks[images] = peak
        rows.append((f"{images} images", f"peak RSS {peak:.0f} MiB, {time.perf_counter() - started:.1f} s"))
    ratio = peaks[10_000] / peaks[100]
    rows.append(("ratio 10 000 / 100 (goal <= 1.5)", f"{ratio:.3f}"))
    report("edit memory, dcgan-faces, fresh processes", rows)
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_sefa()
    bench_edit_throughput(batch_size=32, seeds=16, indices=4, alphas=8)
    if not args.skip_memory:
        with tempfile.TemporaryDirectory() as workdir:
            bench_memory(Path(workdir))


if __name__ == "__main__":
    main()
