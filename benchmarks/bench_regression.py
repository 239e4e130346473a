"""Calibrated discovery benchmarks (issue 6) on dcgan-faces, 2 CPU threads.

Run: ``.venv/bin/python -m benchmarks.bench_regression`` (about 5 minutes).

1. Latents inverted per second (50 Adam iterations, blurred masked MSE, a shift-x target): a
   per-sample loop against batches of 8, 16, 32 and 64, the same 64 targets, with the final errors
   compared (equal iterations must give equal error).
2. A full ``latentdirs discover dcgan-faces -m regression --transform shift-x`` (default options) in a
   fresh process: wall time and peak memory; then its accuracy table from ``latentdirs measure``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

import latentdirs
from benchmarks.common import peak_rss_mib, report
from latentdirs.inversion import invert_images
from latentdirs.transforms import gaussian_blur, get_transform


def bench_batching(count: int = 64) -> None:
    faces = latentdirs.load_generator("dcgan-faces", device="cpu")
    z0 = faces.sample(count, seed=0)
    with torch.no_grad():
        targets, masks = get_transform("shift-x").apply(faces.synthesize(z0), torch.full((count,), 0.1))
    sigma = 3.0 * faces.resolution / 128
    blurred = gaussian_blur(targets, sigma)

    def run(batch: int) -> tuple[float, torch.Tensor]:
        started = time.perf_counter()
        errors = [invert_images(faces, blurred[i:i + batch], masks[i:i + batch], z0[i:i + batch], iterations=50,
                                lr=0.01, sigma=sigma, blurred_target=True)[1] for i in range(0, count, batch)]
        return count / (time.perf_counter() - started), torch.cat(errors)

    loop_rate, loop_errors = run(1)
    rows = [("per-sample loop", f"{loop_rate:.2f} latents/s, median final error {loop_errors.median():.5f}")]
    for batch in (8, 16, 32, 64):
        rate, errors = run(batch)
        rows.append((f"batch {batch}", f"{rate:.2f} latents/s ({rate / loop_rate:.2f}x), median final error "
                                       f"{errors.median():.5f}, max |diff| to the loop {(errors - loop_errors).abs().max():.1e}"))
    report(f"inversion speed, dcgan-faces, {count} latents, 50 iterations, 2 threads", rows)


def bench_discovery(workdir: Path) -> None:
    out = workdir / "shift.safetensors"
    cli = [sys.executable, "-m", "latentdirs.cli.main"]
    started = time.perf_counter()
    peak, stdout = peak_rss_mib(cli + ["discover", "dcgan-faces", "-m", "regression", "--device", "cpu", "-o", str(out)])
    elapsed = time.perf_counter() - started
    options = latentdirs.Directions.load(out).meta["method"]["options"]
    _, table = peak_rss_mib(cli + ["measure", str(out), "--seeds", "0-31", "--amounts", "-0.2:0.2:5",
                                   "--clamp-amounts", "--device", "cpu"])
    report("discover dcgan-faces -m regression --transform shift-x (defaults), fresh process", [
        ("wall time", f"{elapsed:.0f} s"), ("peak RSS", f"{peak:.0f} MiB"),
        ("triplets kept", str(options["triplets"])),
        ("validation MSE of the regression", f"{options['validation_mse']:.2e}"),
        ("median inversion error", f"{options['inversion_error_median']:.4f}")])
    print("\nmeasured achieved vs requested (32 seeds, amounts clamped to each seed's calibrated range):")
    print(table)


def main() -> None:
    torch.set_num_threads(2)
    bench_batching()
    with tempfile.TemporaryDirectory() as workdir:
        bench_discovery(Path(workdir))


if __name__ == "__main__":
    main()
