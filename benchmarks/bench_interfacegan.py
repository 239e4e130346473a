"""InterFaceGAN benchmarks (issue 17): 10⁴ labelled samples, time to fit and accuracy on a held-out fifth.

Run: ``nice .venv/bin/python -m benchmarks.bench_interfacegan`` (a few minutes; one torch thread).

1. ``synthetic``, labels of the true factor x (a labels file of 10⁴ seeds, continuous → top and bottom
   quarter): whole discovery time, the classifier's fit time, held-out accuracy, |cos| with the true
   direction, the calibration's held-out R².
2. ``synthetic``, two classes (x > 0.5) on all 10⁴ samples: fit time and held-out accuracy of the
   linear SVM and of logistic regression.
3. ``dcgan-faces``, the built-in ``brightness`` attribute on ``--faces`` rendered faces (default 2000: at
   about 30 ms per face on a loaded CPU, rendering dominates): discovery time, fit time, held-out
   accuracy, calibration R².
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import latentdirs
from benchmarks.common import report
from latentdirs.methods.interfacegan import fit_boundary


def _timed(function):
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def bench_synthetic(count: int, workdir: Path) -> list[tuple[str, str]]:
    synthetic = latentdirs.load_generator("synthetic", device="cpu")
    seeds = list(range(count))
    z = synthetic.sample_seeds(seeds)
    x = synthetic.factor_properties(z)["x"].cpu()
    path = workdir / "x.csv"
    path.write_text("seed,x\n" + "".join(f"{s},{v:.6f}\n" for s, v in zip(seeds, x.tolist())))
    directions, seconds = _timed(lambda: latentdirs.discover(synthetic, "interfacegan", labels=str(path)))
    options = directions.meta["method"]["options"]
    cosine = float(directions.vectors[0] @ synthetic.true_directions["x"])
    order = torch.argsort(x)
    side = int(0.25 * count)
    chosen = torch.cat([order[:side], order[-side:]])
    targets = torch.cat([torch.zeros(side), torch.ones(side)])
    _, fit_seconds = _timed(lambda: fit_boundary(z[chosen], targets))
    rows = [(f"x labels, {count} seeds: discover (read, sample, fit, calibrate)", f"{seconds:.2f} s"),
            (f"  linear SVM fit on {2 * side} chosen samples", f"{fit_seconds:.3f} s"),
            ("  held-out accuracy / |cos| with the true x / calibration held-out R²",
             f"{options['heldout_accuracy']:.4f} / {abs(cosine):.4f} / {options['calibration_heldout_r2']:.4f}")]
    classes = (x > 0.5).float()
    for classifier in ("svm", "logistic"):
        fit, fit_seconds = _timed(lambda: fit_boundary(z, classes, classifier=classifier))
        cosine = float(fit["normal"].float() @ synthetic.true_directions["x"])
        rows.append((f"two classes (x > 0.5), all {count} samples, {classifier}",
                     f"fit {fit_seconds:.3f} s on {fit['trained_on']}, held-out accuracy {fit['accuracy']:.4f} "
                     f"on {fit['heldout']}, |cos| {abs(cosine):.4f}"))
    return rows


def bench_faces(count: int) -> list[tuple[str, str]]:
    faces = latentdirs.load_generator("dcgan-faces", device="cpu")
    directions, seconds = _timed(lambda: latentdirs.discover(faces, "interfacegan", attribute="brightness",
                                                             samples=count, batch_size=250))
    options = directions.meta["method"]["options"]
    z = faces.sample(count, seed=0)
    with torch.no_grad():
        brightness = torch.cat([faces.synthesize(part).mean(dim=(1, 2, 3)) for part in z.split(250)])
    order = torch.argsort(brightness)
    side = int(0.25 * count)
    chosen = torch.cat([order[:side], order[-side:]])
    _, fit_seconds = _timed(lambda: fit_boundary(z[chosen], torch.cat([torch.zeros(side), torch.ones(side)])))
    low, high = directions.meta["calibration"]["range"]
    return [(f"dcgan-faces brightness, {count} samples: discover", f"{seconds:.2f} s"),
            (f"  linear SVM fit on {2 * side} chosen samples", f"{fit_seconds:.3f} s"),
            ("  held-out accuracy / calibration held-out R² / calibrated range",
             f"{options['heldout_accuracy']:.4f} / {options['calibration_heldout_r2']:.4f} / [{low:.3f}, {high:.3f}]")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--faces", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as workdir:
        rows = bench_synthetic(args.samples, Path(workdir))
    rows += bench_faces(args.faces)
    report(f"InterFaceGAN, {args.samples} labelled samples, 1 torch thread", rows)


if __name__ == "__main__":
    main()
