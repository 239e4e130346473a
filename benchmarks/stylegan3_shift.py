"""The calibrated shift on StyleGAN3: the regression method's learned shift-x beside the exact transform.

A StyleGAN3 network draws its picture from Fourier features sampled on a grid that the input
transform moves: ``with_input_transform(translate=(a, 0))`` moves the picture by exactly ``a`` of its
width (and shows what lies beyond the old border, as the network's own infinite canvas does). That
makes the exact transform the ground truth for a learned, calibrated shift:

1. ``latentdirs discover stylegan3:NET -m regression --transform shift-x`` (small sizes: the options
   below), in a fresh process, timed;
2. for each requested amount and each seed, measure by registration (:mod:`latentdirs.measure`, the
   measurement ``latentdirs measure`` makes) what the learned direction achieves (a calibrated edit,
   clamped to its calibrated range) and what the exact transform achieves, rendered from the same
   seeds and measured the same way.

The exact transform's residual error is registration's own error floor on these pictures; the learned
direction's residual error is the calibration's error plus that floor.

Run: ``.venv/bin/python -m benchmarks.stylegan3_shift`` (the t32 reference network; 25 minutes on this
2-core CPU shared with other jobs); ``--case t256`` for the 256-px one, ``--network FILE.pkl`` for your
own StyleGAN3 file; ``--help`` for the sizes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import latentdirs
from latentdirs.measure import AccuracyRow, accuracy_table, measure_amounts, measure_calibration_by
from tests.stylegan3_fixtures import CASES, load_reference, write_stylegan3_pickle


def discover_shift(spec: str, out: Path, *, samples: int, iterations: int, amounts: str, recalibrate: int,
                   seed: int) -> float:
    """Run the regression discovery through the CLI in a fresh process; its wall time in seconds."""
    command = [sys.executable, "-m", "latentdirs.cli.main", "discover", spec, "-m", "regression",
               "--transform", "shift-x", "--opt", f"samples={samples}", "--opt", f"iterations={iterations}",
               "--opt", f"amounts={amounts}", "--opt", f"recalibrate={recalibrate}", "--seed", str(seed),
               "--device", "cpu", "-o", str(out)]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


#: the input transform that requests amount ``a`` of a registration transform
EXACT = {"shift-x": lambda a: {"translate": (a, 0.0)}, "rotation": lambda a: {"rotate": a}}


def exact_rows(generator, seeds: list[int], amounts: list[float], transform: str = "shift-x",
               batch_size: int = 8) -> list[AccuracyRow]:
    """Achieved amounts of the exact input transform (``translate=(a, 0)`` for shift-x, ``rotate=a`` for
    rotation), by the same registration as :func:`measure_calibration_by` (same search span and
    steps), one row per requested amount."""
    span = max(abs(a) for a in amounts) * 1.5 + 1e-3
    latents = generator.sample_seeds(seeds)
    requested, achieved, seed_of = [], [], []
    with torch.no_grad():
        sources = torch.cat([generator.synthesize(latents[i:i + batch_size])
                             for i in range(0, len(seeds), batch_size)])
        for amount in amounts:
            view = generator.with_input_transform(**EXACT[transform](amount))
            moved = torch.cat([view.synthesize(latents[i:i + batch_size]) for i in range(0, len(seeds), batch_size)])
            achieved.append(measure_amounts(sources, moved, transform, low=-span, high=span, steps=121))
            requested += [amount] * len(seeds)
            seed_of += seeds
    return accuracy_table(torch.tensor(requested), torch.cat(achieved).cpu(), torch.tensor(seed_of))


def table(learned: list[AccuracyRow], exact: list[AccuracyRow], resolution: int) -> str:
    """Markdown: requested / learned achieved mean ± std and mean |error| / the exact transform's, in
    fractions of the width and (in brackets) pixels."""
    def cell(row: AccuracyRow) -> str:
        return f"{row.mean:+.4f} ± {row.std:.4f} ({row.mean * resolution:+.2f} ± {row.std * resolution:.2f} px)"

    lines = ["| requested | learned: achieved mean ± std | learned: mean abs error | learned: clamped | "
             "exact: achieved mean ± std | exact: mean abs error |", "|---|---|---|---|---|---|"]
    for mine, truth in zip(learned, exact):
        lines.append(f"| {mine.requested:+.3f} ({mine.requested * resolution:+.1f} px) | {cell(mine)} | "
                     f"{mine.abs_error:.4f} ({mine.abs_error * resolution:.2f} px) | {mine.clamped}/{mine.count} | "
                     f"{cell(truth)} | {truth.abs_error:.4f} ({truth.abs_error * resolution:.2f} px) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="t32", choices=CASES, help="reference network (tests/stylegan3_fixtures)")
    parser.add_argument("--network", type=Path, default=None, help="a StyleGAN3 network pickle instead of --case")
    parser.add_argument("--samples", type=int, default=6, help="regression: latents inverted")
    parser.add_argument("--iterations", type=int, default=20, help="regression: Adam steps per amount")
    parser.add_argument("--train-amounts", default="[0.05, 0.1]", help="regression: amounts inverted")
    parser.add_argument("--recalibrate", type=int, default=8, help="regression: closed-loop latents")
    parser.add_argument("--seeds", type=int, default=16, help="seeds measured (fresh: 1000, 1001, …)")
    parser.add_argument("--amounts", default="-0.1,-0.05,0,0.05,0.1", help="requested shifts (fractions of the width)")
    parser.add_argument("--seed", type=int, default=0, help="the discovery's seed")
    parser.add_argument("--rotations", default="-30,-15,15,30", help="requested rotations (degrees); '' skips them")
    parser.add_argument("--rotation-cases", default="t32,r32", help="networks the exact rotation is measured on")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    amounts = [float(a) for a in args.amounts.split(",")]
    seeds = list(range(1000, 1000 + args.seeds))  # apart from the discovery's own latents
    with tempfile.TemporaryDirectory() as folder:
        network = args.network or write_stylegan3_pickle(load_reference(args.case), Path(folder) / f"{args.case}.pkl")
        spec, out = f"stylegan3:{network}", Path(folder) / "shift.safetensors"
        seconds = discover_shift(spec, out, samples=args.samples, iterations=args.iterations,
                                 amounts=args.train_amounts, recalibrate=args.recalibrate, seed=args.seed)
        generator = latentdirs.load_generator(spec, device="cpu")
        directions = latentdirs.Directions.load(out, generator=generator)
        started = time.perf_counter()
        learned = measure_calibration_by(generator, directions, seeds=seeds, amounts=amounts, clamp=True,
                                         batch_size=8, ways=("registration",))["registration"]
        exact = exact_rows(generator, seeds, amounts)
        measured = time.perf_counter() - started
    calibration = directions.meta["calibration"]
    name = str(args.network) if args.network else f"the {args.case} reference network (random weights)"
    print(f"## shift-x on {name}, {generator.resolution} px\n")
    print(f"discover -m regression --transform shift-x: samples={args.samples}, iterations={args.iterations}, "
          f"amounts={args.train_amounts}, recalibrate={args.recalibrate}, seed={args.seed}: {seconds:.0f} s; "
          f"calibrated range {calibration['range'][0]:+.3f} … {calibration['range'][1]:+.3f}")
    print(f"measured on {len(seeds)} seeds ({seeds[0]}-{seeds[-1]}) by registration in {measured:.0f} s\n")
    print(table(learned, exact, generator.resolution))
    floor = sum(row.abs_error for row in exact) / len(exact)
    mine = sum(row.abs_error for row in learned) / len(learned)
    print(f"\nmean abs error over the requests: exact {floor:.4f} ({floor * generator.resolution:.2f} px, "
          f"registration's floor), learned {mine:.4f} ({mine * generator.resolution:.2f} px)")
    if args.rotations:
        print(rotation_table(args.rotation_cases.split(","), [float(a) for a in args.rotations.split(",")], seeds))


def rotation_table(cases: list[str], angles: list[float], seeds: list[int]) -> str:
    """Markdown: the exact ``rotate=a`` measured by registration (rotation about the centre) per network.
    Config-R's layers are rotation-equivariant by design; config-T's only translation-equivariant."""
    lines = ["\n## rotate=a, measured by registration\n", "| network | requested (°) | achieved mean ± std (°) | "
             "mean abs error (°) |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as folder:
        for case in cases:
            network = write_stylegan3_pickle(load_reference(case), Path(folder) / f"{case}.pkl")
            generator = latentdirs.load_generator(f"stylegan3:{network}", device="cpu")
            for row in exact_rows(generator, seeds, angles, "rotation"):
                lines.append(f"| {case} ({generator.config.variant}) | {row.requested:+.0f} | {row.mean:+.2f} ± "
                             f"{row.std:.2f} | {row.abs_error:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
