"""Regenerate the testbed's ground-truth tables: direction × factor matrices and calibrated-shift tables.

    nice -n 19 .venv/bin/python -m training.testbed_tables --generator shapes-dcgan --out out/testbed

For the generator (one that reads its factors: ``shapes-dcgan``, later ``shapes-stylegan2``) it
discovers direction files afresh — SeFa, a short OroJaR run, Plumerault's calibrated regression for
shift-x, shift-y and zoom, and a random orthonormal basis as the floor — so new weights give new
tables; ``--reuse`` keeps files already in ``OUT/dirs`` that were made on the same weights
(fingerprint). Then, for each file's first ``--top`` directions, the effect matrix of
:mod:`latentdirs.evaluation.factors` (``--samples`` latents, steps ±``--step``), and for each calibrated
file the achieved against the requested amount over ±25 % (``--amounts``) on ``--seeds``, measured both
by registration and by the factor reader. The known answer on ``synthetic`` (its true directions, SeFa
and a random basis) comes first. Every table is written as markdown into ``OUT`` (``tables.md`` holds
them all, with the date and the weights' fingerprint) and printed.
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentdirs.api import discover
from latentdirs.atomic import write_text_atomic
from latentdirs.directions import Directions
from latentdirs.evaluation.factors import effect_matrix
from latentdirs.evaluation.report import factor_matrix_markdown
from latentdirs.evaluation.vp import random_basis
from latentdirs.generators.base import GeneratorAdapter
from latentdirs.measure import measure_calibration_by, probe_amounts
from latentdirs.registry import load_generator

TRANSFORMS = ("shift-x", "shift-y", "zoom")


#: the factors InterFaceGAN fits a boundary for (the position, size, colour and background ones)
INTERFACEGAN_FACTORS = ("x", "y", "scale", "background")  # hue is circular: no linear boundary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generator", default="shapes-dcgan")
    parser.add_argument("--out", type=Path, default=Path("out/testbed"))
    parser.add_argument("--top", type=int, default=8, help="directions per file in the matrices")
    parser.add_argument("--samples", type=int, default=32, help="latents per direction in the matrices")
    parser.add_argument("--step", type=float, default=1.0, help="latent step ±h of the matrices")
    parser.add_argument("--seeds", type=int, default=16, help="seeds 0 … N−1 of the calibrated-shift tables")
    parser.add_argument("--amounts", default="-0.25,-0.125,0,0.125,0.25", help="requested amounts")
    parser.add_argument("--orojar-steps", type=int, default=60)
    parser.add_argument("--ganspace-samples", type=int, default=2000)
    parser.add_argument("--interfacegan-samples", type=int, default=1000)
    parser.add_argument("--regression-samples", type=int, default=16)
    parser.add_argument("--regression-iterations", type=int, default=30)
    parser.add_argument("--regression-recalibrate", type=int, default=16)
    parser.add_argument("--reuse", action="store_true", help="keep direction files made on the same weights")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grids", type=Path, default=None,
                        help="also write each regression direction's edit grid (8 seeds, latent steps) here")
    return parser.parse_args(argv)


def direction_files(generator: GeneratorAdapter, args: argparse.Namespace) -> dict[str, Path]:
    """Discover (or, with ``--reuse``, keep) every method's file; ``{name: path}`` in table order."""
    folder = args.out / "dirs"
    folder.mkdir(parents=True, exist_ok=True)
    runs: dict[str, tuple[str, dict[str, Any]]] = {
        "sefa": ("sefa", {"num_directions": args.top}),
        "orojar": ("orojar", {"num_directions": args.top, "steps": args.orojar_steps, "batch_size": 8, "seed": 0}),
        "ganspace": ("ganspace", {"num_directions": args.top, "samples": args.ganspace_samples, "seed": 0}),
        # one supervised boundary per factor the reader measures continuously, labels from the reader itself
        **{f"interfacegan-{f}": ("interfacegan", {"attribute": f"factor:{f}", "samples": args.interfacegan_samples,
                                                  "seed": 0}) for f in INTERFACEGAN_FACTORS},
        **{f"regression-{t}": ("regression", {"transform": t, "samples": args.regression_samples,
                                              "iterations": args.regression_iterations,
                                              "recalibrate": args.regression_recalibrate, "seed": 0})
           for t in TRANSFORMS},
    }
    paths = {}
    for name, (method, options) in runs.items():
        path = folder / f"{generator.spec}-{name}.safetensors"
        if not (args.reuse and path.is_file() and _same_weights(path, generator)):
            started = time.perf_counter()
            discover(generator, method, **options).save(path)
            print(f"[{name}: discovered in {time.perf_counter() - started:.0f} s]", flush=True)
        paths[name] = path
    random = folder / f"{generator.spec}-random.safetensors"
    Directions.from_method(random_basis(args.top, generator.z_dim, seed=1), None, generator=generator,
                           method="random", options={"seed": 1}, space="z", seed=1).save(random)
    paths["random"] = random
    return paths


def _same_weights(path: Path, generator: GeneratorAdapter) -> bool:
    from latentdirs.directions import read_header

    return read_header(path).get("generator", {}).get("fingerprint") == generator.fingerprint()


def matrix_section(title: str, generator: GeneratorAdapter, vectors: torch.Tensor, labels: list[str],
                   args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    result = effect_matrix(generator, vectors, samples=args.samples, step=args.step, seed=0)
    result["labels"] = labels
    return "\n".join([f"### {title}", "", *factor_matrix_markdown(result), ""]), result


def summary_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    def show(value):
        return "n/a" if value is None else f"{value:.3f}"

    lines = ["| file | directions | modularity | completeness | MIG-style gap | top direction per factor |",
             "|---|---|---|---|---|---|"]
    for name, result in rows:
        best = ", ".join(f"{f} d{b}" for f, b in zip(result["factors"], result["best"])) if result["best"] else "—"
        lines.append(f"| {name} | {len(result['matrix'])} | {show(result['modularity'])} | "
                     f"{show(result['completeness_mean'])} | {show(result['mig'])} | {best} |")
    return "\n".join(lines) + "\n"


def calibration_section(name: str, generator: GeneratorAdapter, path: Path, args: argparse.Namespace,
                        amounts: list[float] | None = None) -> str:
    """Requested against achieved for one calibrated file, by registration and by the factor reader, on
    ``--amounts`` (default) or ``amounts``."""
    directions = Directions.load(path, generator=generator)
    calibration = directions.meta["calibration"]
    amounts = [float(a) for a in args.amounts.split(",")] if amounts is None else amounts
    seeds = list(range(args.seeds))
    tables = measure_calibration_by(generator, directions, seeds=seeds, amounts=amounts, clamp=True)
    side = generator.resolution
    shift = calibration["transform"].startswith("shift")
    unit = f"px at {side} px" if shift else "% of the scale"
    factor = side if shift else 100.0
    low, high = calibration["range"]
    lines = [f"### {name}: requested against achieved ({calibration['units']})", "",
             f"Calibrated range [{low:+.3f}, {high:+.3f}]; {len(seeds)} seeds; requests beyond a seed's range "
             "are clamped to it (counted) and their error counted against the request.", "",
             "| requested | clamped | registration mean ± std | error (" + unit + ") | factor reader mean ± std "
             "| error (" + unit + ") |", "|---|---|---|---|---|---|"]
    for reg, read in zip(tables["registration"], tables["factors"]):
        lines.append(f"| {reg.requested:+.3f} | {reg.clamped}/{reg.count} | {reg.mean:+.4f} ± {reg.std:.4f} | "
                     f"{reg.abs_error * factor:.2f} | {read.mean:+.4f} ± {read.std:.4f} | {read.abs_error * factor:.2f} |")
    for way, rows in tables.items():
        errors = torch.tensor([abs(v - r.requested) for r in rows for v in r.values]) * factor
        lines.append(f"\n**{way}**: mean error (over every seed and request, 0 included) "
                     f"{float(errors.mean()):.2f} {unit}, per-seed spread (std) "
                     f"{float(errors.std()):.2f}, worst {float(errors.max()):.2f}")
    lines += ["", f"Seed by seed (factor reader, {calibration['units']}):", "",
              "| requested | " + " | ".join(str(s) for s in seeds) + " |", "|---" * (len(seeds) + 1) + "|"]
    lines += [f"| {r.requested:+.3f} | " + " | ".join(f"{v:+.3f}" for v in r.values) + " |" for r in tables["factors"]]
    return "\n".join(lines) + "\n"


def edit_grid(generator: GeneratorAdapter, path: Path, out: Path, *, seeds: int = 8,
              steps: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0)) -> Path:
    """Seeds 0 … ``seeds``−1 (rows) moved by latent steps along the file's unit direction (columns):
    what the direction does, whatever its calibrated range."""
    from latentdirs.images import compose_grid, save_image, to_uint8

    vector = Directions.load(path, generator=generator).vectors[0]
    latents = generator.sample_seeds(list(range(seeds)))
    with torch.no_grad():
        tiles = [to_uint8(generator.synthesize(latents + a * vector.to(latents))) for a in steps]
    grid = compose_grid(np.stack(tiles, axis=1), row_labels=[f"seed {s}" for s in range(seeds)],
                        column_labels=[f"{a:+g}" for a in steps], title=path.stem)
    return save_image(grid.image(), out)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    sections: list[str] = []

    synthetic = load_generator("synthetic", device="cpu")
    truth = torch.stack(list(synthetic.true_directions.values()))
    sefa = discover(synthetic, "sefa", num_directions=5)
    known = [("synthetic true directions", truth, list(synthetic.true_directions)),
             ("synthetic sefa", sefa.vectors, [sefa.label_of(i) for i in range(len(sefa))]),
             ("synthetic random basis", random_basis(5, synthetic.z_dim, seed=1), [f"d{i}" for i in range(5)])]
    synthetic_rows = []
    sections.append("## synthetic: the known answer (exact, from the true directions)\n")
    for title, vectors, labels in known:
        text, result = matrix_section(title, synthetic, vectors, labels, args)
        sections.append(text)
        synthetic_rows.append((title, result))
    sections.insert(1, summary_table(synthetic_rows))

    generator = load_generator(args.generator, device="cpu")
    paths = direction_files(generator, args)
    rows = []
    matrices = [f"## {generator.spec}: direction x factor matrices\n",
                f"Entries: mean |change| of each factor per unit step along the direction, in the factor's data "
                f"spreads (σ over the renderer's scenes), read by the factor reader from {args.samples} latents "
                f"moved by ±{args.step:g}; first {args.top} directions of each file.\n"]
    for name, path in paths.items():
        directions = Directions.load(path, generator=generator)
        count = min(args.top, len(directions))
        text, result = matrix_section(name, generator, directions.vectors[:count],
                                      [directions.label_of(i) for i in range(count)], args)
        matrices.append(text)
        rows.append((name, result))
    sections += [f"## {generator.spec}: summary\n", summary_table(rows), *matrices,
                 f"## {generator.spec}: calibrated shifts (Plumerault regression)\n"]
    for transform in TRANSFORMS:
        name = f"regression-{transform}"
        text = calibration_section(name, generator, paths[name], args)
        calibration = Directions.load(paths[name], generator=generator).meta["calibration"]
        inside = probe_amounts(calibration)  # ±a/2, ±a, a = half the calibrated range: what evaluate asks
        if inside is not None:
            text += "\nWithin the calibrated range (requests ±a/2, ±a, a = half the range, as `evaluate` asks):\n\n"
            text += calibration_section(name, generator, paths[name], args, amounts=inside)
        write_text_atomic(args.out / f"{name}-calibration.md", text)
        if args.grids is not None:
            edit_grid(generator, paths[name], args.grids / f"testbed-{generator.spec}-{name}-grid.png")
        sections.append(text)
    stamp = (f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by "
             f"`training/testbed_tables.py` on {generator.spec} ({generator.fingerprint()[:19]}…), "
             f"{time.perf_counter() - started:.0f} s.\n")
    document = "\n".join([stamp, *sections])
    write_text_atomic(args.out / "tables.md", document)
    write_text_atomic(args.out / "summary.md", summary_table(rows))
    print(document)


if __name__ == "__main__":
    main()
