"""Regenerate the testbed's ground-truth tables: direction × factor matrices and calibrated-shift tables.

    nice -n 19 .venv/bin/python -m training.testbed_tables --generator shapes-dcgan --out out/testbed

For the generator (one that reads its factors: ``shapes-dcgan`` or ``shapes-stylegan2``) it
discovers direction files afresh — SeFa, a short OroJaR run, Plumerault's calibrated regression for
shift-x, shift-y and zoom, and a random orthonormal basis as the floor — so new weights give new
tables; ``--reuse`` keeps files already in ``OUT/dirs`` that were made on the same weights
(fingerprint). Then, for each file's first ``--top`` directions, the effect matrix of
:mod:`latentdirs.evaluation.factors` (``--samples`` latents, steps ±``--step``), and for each calibrated
file the achieved against the requested amount over ±25 % (``--amounts``) on ``--seeds``, measured both
by registration and by the factor reader. The known answer on ``synthetic`` (its true directions, SeFa
and a random basis) comes first. Every table is written as markdown into ``OUT`` (``tables.md`` holds
them all, with the date and the weights' fingerprint) and printed.

On a generator with a ``w`` space (``shapes-stylegan2``) the methods that take a space search ``w``, the
space a user edits (OroJaR, InterFaceGAN; GANSpace and SeFa do by default: SeFa writes ``w+`` on every
row, the same edit as ``w``), the floor is a random basis in ``w`` and a second one in ``z`` (for the
regressions, which invert in ``--regression-space``, z by default), and each matrix is taken in its
file's own space and rows.
``--layer-ranges`` (default: one range per synthesis resolution, read off the projection layers' names)
then adds, for each range of ``w+`` rows, the matrices of SeFa's and the random floor's directions
applied to those rows only, and of SeFa factorised on those rows alone.

    nice -n 5 .venv/bin/python -m training.testbed_tables --generator shapes-stylegan2 --out out/testbed-sg2

``--calibration-only`` skips the known answer, the other methods and the matrices: only the regressions
of ``--transforms`` (in ``--regression-space``: ``w`` inverts in StyleGAN2's w) and their calibrated-shift
tables; their grids, under ``--grids``, are named ``testbed-SPEC-regression-T[-w]-grid.png``:

    nice -n 5 .venv/bin/python -m training.testbed_tables --generator shapes-stylegan2 --calibration-only \
        --regression-space w --regression-samples 32 --regression-iterations 50 --regression-recalibrate 32 \
        --out out/testbed-sg2-w --grids out/testbed-sg2-w/grids
"""

from __future__ import annotations

import argparse
import datetime
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentdirs.api import discover
from latentdirs.atomic import write_text_atomic
from latentdirs.directions import Directions, read_header
from latentdirs.evaluation.factors import effect_matrix
from latentdirs.evaluation.report import factor_matrix_markdown
from latentdirs.evaluation.vp import random_basis
from latentdirs.generators.base import GeneratorAdapter
from latentdirs.latents import along_layers
from latentdirs.measure import READER_MEASURES, measure_calibration_by, probe_amounts
from latentdirs.registry import load_generator
from latentdirs.specs import parse_index_spec

TRANSFORMS = ("shift-x", "shift-y", "zoom")
#: the image side the shift errors are reported at (the issue's goal: < 1.5 px at 64 px)
GOAL_SIDE = 64


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
    parser.add_argument("--regression-space", choices=("z", "w"), default="z",
                        help="the space the regressions invert in (w: generators with a w space)")
    parser.add_argument("--transforms", default=",".join(TRANSFORMS),
                        help="the regressions' transforms, comma-separated (default: all three)")
    parser.add_argument("--calibration-only", action="store_true",
                        help="only the regressions and their calibrated-shift tables (no matrices)")
    parser.add_argument("--reuse", action="store_true", help="keep direction files made on the same weights")
    parser.add_argument("--correct-amounts", nargs="?", const="registration", default=None,
                        choices=("registration", "saliency"),
                        help="measure edits whose steps are corrected per image, by registration (the flag alone) "
                             "or saliency (edit --correct-amounts)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grids", type=Path, default=None,
                        help="also write each regression direction's edit grid (8 seeds, latent steps) here")
    parser.add_argument("--layer-ranges", default="auto",
                        help="w+ row ranges of the per-range matrices, e.g. '0-2,3-4,5-7'; 'auto': one per "
                             "synthesis resolution; 'none': skip (generators without w+ always skip)")
    return parser.parse_args(argv)


def edit_space(generator: GeneratorAdapter) -> str:
    """The space a user edits and the searched methods are run in: ``w`` where there is one, else the default."""
    return "w" if "w" in generator.spaces else generator.default_space


def layer_ranges(generator: GeneratorAdapter, text: str) -> list[list[int]]:
    """Ranges of ``w+`` rows from ``--layer-ranges`` (``[]`` for a generator without ``w+``, or ``none``).

    ``auto`` groups the rows by the resolution of the layer each feeds, read off the projection layers'
    names (``b16.conv0`` → 16 px; StyleGAN2 slot ``i`` is read by projection layer ``i``)."""
    if "w+" not in generator.spaces or text == "none":
        return []
    rows = generator.space("w+").num_layers
    if text != "auto":
        return [parse_index_spec(item, param="--layer-ranges", upper=rows) for item in text.split(",")]
    groups: dict[int, list[int]] = {}
    for index, name in enumerate(generator.projection_layers[:rows]):
        found = re.match(r"b(\d+)\.", name)
        if found is None:  # not NVlabs block naming: one range per row rather than a guess
            return [[i] for i in range(rows)]
        groups.setdefault(int(found.group(1)), []).append(index)
    return list(groups.values())


def range_name(rows: list[int]) -> str:
    return f"{rows[0]}-{rows[-1]}" if len(rows) > 1 else str(rows[0])


def direction_files(generator: GeneratorAdapter, args: argparse.Namespace) -> dict[str, Path]:
    """Discover (or, with ``--reuse``, keep) every method's file; ``{name: path}`` in table order."""
    folder = args.out / "dirs"
    folder.mkdir(parents=True, exist_ok=True)
    space = edit_space(generator)
    # z-only generators keep the options they always ran with (same files, same tables)
    searched = {} if space == generator.default_space else {"space": space}
    runs: dict[str, tuple[str, dict[str, Any]]] = {
        "sefa": ("sefa", {"num_directions": args.top}),
        "orojar": ("orojar", {"num_directions": args.top, "steps": args.orojar_steps, "batch_size": 8, "seed": 0,
                              **searched}),
        "ganspace": ("ganspace", {"num_directions": args.top, "samples": args.ganspace_samples, "seed": 0}),
        # one supervised boundary per factor the reader measures continuously, labels from the reader itself
        **{f"interfacegan-{f}": ("interfacegan", {"attribute": f"factor:{f}", "samples": args.interfacegan_samples,
                                                  "seed": 0, **searched}) for f in INTERFACEGAN_FACTORS},
        **{f"regression-{t}": ("regression", {"transform": t, "samples": args.regression_samples,
                                              "iterations": args.regression_iterations,
                                              "recalibrate": args.regression_recalibrate, "seed": 0,
                                              "space": args.regression_space})
           for t in args.transforms.split(",")},
    }
    if args.calibration_only:
        runs = {name: run for name, run in runs.items() if name.startswith("regression-")}
    paths = {}
    for name, (method, options) in runs.items():
        path = folder / f"{generator.spec}-{name}.safetensors"
        if not (args.reuse and path.is_file() and _same_weights(path, generator)
                and read_header(path).get("space") == options.get("space", read_header(path).get("space"))):
            started = time.perf_counter()
            discover(generator, method, **options).save(path)
            print(f"[{name}: discovered in {time.perf_counter() - started:.0f} s]", flush=True)
        paths[name] = path
    if args.calibration_only:
        return paths
    # the floor in the space the searched methods use; where that is not z, a second one in z for the regressions
    floors = {"random": space, **({"random-z": "z"} if space != "z" else {})}
    for name, floor_space in floors.items():
        random = folder / f"{generator.spec}-{name}.safetensors"
        Directions.from_method(random_basis(args.top, generator.space(floor_space).dim, seed=1), None,
                               generator=generator, method="random", options={"seed": 1}, space=floor_space,
                               seed=1).save(random)
        paths[name] = random
    return paths


def _same_weights(path: Path, generator: GeneratorAdapter) -> bool:
    return read_header(path).get("generator", {}).get("fingerprint") == generator.fingerprint()


def matrix_section(title: str, generator: GeneratorAdapter, vectors: torch.Tensor, labels: list[str],
                   args: argparse.Namespace, *, space: str = "z",
                   layers: list[int] | None = None) -> tuple[str, dict[str, Any]]:
    """The effect matrix of ``vectors [K, D]`` in ``space`` (moved on w+ ``layers`` only, all when None)."""
    result = effect_matrix(generator, vectors, samples=args.samples, step=args.step, seed=0, space=space,
                           layers=layers)
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


def range_sections(generator: GeneratorAdapter, paths: dict[str, Path], ranges: list[list[int]],
                   args: argparse.Namespace) -> list[str]:
    """Per range of w+ rows: SeFa's (all-row) directions and the random floor moved on those rows only, and
    SeFa factorised on those rows alone; a table of each factor's largest entry, then the full matrices."""
    sefa = Directions.load(paths["sefa"], generator=generator)
    random = Directions.load(paths["random"], generator=generator)
    count = min(args.top, len(sefa))
    rows: list[tuple[str, str, dict[str, Any]]] = []
    matrices = []
    for chosen in ranges:
        span = range_name(chosen)
        local = discover(generator, "sefa", num_directions=min(args.top, generator.space("w+").dim), layers=chosen)
        if args.grids is not None:  # what the range's first SeFa direction does, on these rows only
            vector_grid(generator, local.vectors[0], args.grids / f"testbed-{generator.spec}-sefa-rows-{span}-grid.png",
                        title=f"{generator.spec}: SeFa d0 of w+ rows {span}, moved on those rows", space="w+",
                        layers=chosen, seeds=6, steps=(-4.0, -2.0, 0.0, 2.0, 4.0))
        entries = [("sefa (all rows' directions)", sefa.vectors[:count]),
                   ("sefa on these rows", local.vectors),
                   ("random", random.vectors[:count])]
        for title, vectors in entries:
            text, result = matrix_section(f"w+ rows {span}: {title}", generator, vectors,
                                          [f"d{i}" for i in range(len(vectors))], args, space="w+", layers=chosen)
            matrices.append(text)
            rows.append((span, title, result))
    names = rows[0][2]["factors"]
    lines = ["| w+ rows | file | " + " | ".join(names) + " | mass | modularity | MIG-style gap |",
             "|---" * (len(names) + 5) + "|"]
    for span, title, result in rows:
        matrix = torch.tensor(result["matrix"])
        largest = matrix.max(dim=0).values.tolist()
        lines.append(f"| {span} | {title} | " + " | ".join(f"{v:.3f}" for v in largest)
                     + f" | {sum(result['mass']):.2f} | {result['modularity']:.3f} | {result['mig']:.3f} |")
    header = [f"## {generator.spec}: per range of w+ rows\n",
              f"Each direction moved on the listed w+ rows only (unit step ±{args.step:g} on each of them), "
              f"{args.samples} latents of w+. Rows of the projection layers: "
              + ", ".join(f"{i} {name}" for i, name in enumerate(generator.projection_layers)) + ". "
              "Entries of the first table: each factor's *largest* entry over the file's directions (how far the "
              "best direction of these rows moves it, in data spreads per unit step); mass = total over the "
              "matrix.\n", "\n".join(lines) + "\n"]
    return header + matrices


def calibration_section(name: str, generator: GeneratorAdapter, path: Path, args: argparse.Namespace,
                        amounts: list[float] | None = None) -> str:
    """Requested against achieved for one calibrated file, by registration, by the factor reader and by the
    saliency barycentre, on ``--amounts`` (default) or ``amounts``."""
    directions = Directions.load(path, generator=generator)
    calibration = directions.meta["calibration"]
    transform = calibration["transform"]
    amounts = [float(a) for a in args.amounts.split(",")] if amounts is None else amounts
    seeds = list(range(args.seeds))
    tables = measure_calibration_by(generator, directions, seeds=seeds, amounts=amounts, clamp=True,
                                    correct=args.correct_amounts or False)
    # shifts in pixels of a 64 px image whatever the output size (px at 64 px = fraction × 64): the issue's
    # 1.5 px goal is stated at 64 px, and shapes-stylegan2 draws 32 px
    side = GOAL_SIDE
    shift = transform.startswith("shift")
    unit = f"px at {side} px" if shift else "% of the scale"
    factor = side if shift else 100.0
    low, high = calibration["range"]
    lines = [f"### {name}: requested against achieved ({calibration['units']})", "",
             f"Calibrated range [{low:+.3f}, {high:+.3f}]; {len(seeds)} seeds; requests beyond a seed's range "
             "are clamped to it (counted) and their error counted against the request."
             + (f" Images are {generator.resolution} px; pixels are given at {side} px (fraction × {side})."
                if shift and generator.resolution != side else "")
             + (f" Steps corrected per image by {args.correct_amounts}." if args.correct_amounts else ""), "",
             "| requested | clamped | " + " | ".join(f"{way} mean ± std | error ({unit})" for way in tables) + " |",
             "|---|---|" + "---|---|" * len(tables)]
    for rows in zip(*tables.values()):
        lines.append(f"| {rows[0].requested:+.3f} | {rows[0].clamped}/{rows[0].count} | "
                     + " | ".join(f"{r.mean:+.4f} ± {r.std:.4f} | {r.abs_error * factor:.2f}" for r in rows) + " |")
    requested = torch.tensor([r.requested for r in tables["factors"]])
    reachable = reachable_amounts(generator, directions, seeds, requested, transform)
    inside = reachable == requested[:, None]
    for way, rows in tables.items():
        achieved = torch.tensor([r.values for r in rows])
        errors = (achieved - requested[:, None]).abs() * factor
        kept = errors[inside]
        lines.append(f"\n**{way}**: mean error (over every seed and request, 0 included) "
                     f"{float(errors.mean()):.2f} {unit}, per-seed spread (std) "
                     f"{float(errors.std()):.2f}, worst {float(errors.max()):.2f}; over the {kept.numel()} of "
                     f"{errors.numel()} requests whose target lies inside the data's range: "
                     f"{float(kept.mean()):.2f} {unit}, spread {float(kept.std()):.2f}, worst {float(kept.max()):.2f}; "
                     f"against the reachable target of every request: "
                     f"{float(((achieved - reachable).abs() * factor).mean()):.2f} {unit}")
    floor = (reachable - requested[:, None]).abs() * factor
    lines.append(f"\n*Floor*: an edit that meets every reachable target exactly still misses the requests by "
                 f"{float(floor.mean()):.2f} {unit} on average (the requests beyond the data's range).")
    lines += ["", f"Seed by seed (factor reader, {calibration['units']}):", "",
              "| requested | " + " | ".join(str(s) for s in seeds) + " |", "|---" * (len(seeds) + 1) + "|"]
    lines += [f"| {r.requested:+.3f} | " + " | ".join(f"{v:+.3f}" for v in r.values) + " |" for r in tables["factors"]]
    return "\n".join(lines) + "\n"


def reachable_amounts(generator: GeneratorAdapter, directions: Directions, seeds: list[int], requested: torch.Tensor,
                      transform: str) -> torch.Tensor:
    """``[len(requested), len(seeds)]``: the part of each request that keeps the seed's object (its factors read
    from the unedited image) inside the renderer's range (:data:`~latentdirs.scenes.FACTOR_RANGES`: x and y
    within ±0.35, scale within 0.08 … 0.16) — the request itself where its target lies inside. A generator
    trained on those scenes never drew an object outside it, so a request beyond it (an object at x = +0.3
    asked to move +0.25) has no right answer in its images beyond the range's edge; the errors over the
    requests inside, and against these reachable amounts, say how well the calibration does where it can."""
    from latentdirs.measure import render_batches
    from latentdirs.plan import EditPlan
    from latentdirs.scenes import FACTOR_RANGES

    name, ratio = READER_MEASURES[transform]
    plan = EditPlan.build(generator, directions, seeds=seeds, indices=[0], alphas=[0.0])
    with torch.no_grad():
        sources = torch.cat([batch.images for batch in render_batches(generator, directions, plan, 32)])
        start = generator.read_factors(sources)[name][None]
    request = requested[:, None]
    target = start * (1 + request) if ratio else start + request
    low, high = FACTOR_RANGES[name]
    edge = target.clamp(low, high)
    return torch.where(edge == target, request, edge / start - 1 if ratio else edge - start)


def edit_grid(generator: GeneratorAdapter, path: Path, out: Path, *, seeds: int = 8,
              steps: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0)) -> Path:
    """Seeds 0 … ``seeds``−1 (rows) moved by latent steps along the file's unit direction (columns):
    what the direction does, whatever its calibrated range."""
    directions = Directions.load(path, generator=generator)
    return vector_grid(generator, directions.vectors[0], out, title=path.stem, space=directions.space,
                       layers=directions.layers, seeds=seeds, steps=steps)


def vector_grid(generator: GeneratorAdapter, vector: torch.Tensor, out: Path, *, title: str, space: str = "z",
                layers: list[int] | None = None, seeds: int = 8,
                steps: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0)) -> Path:
    """Seeds 0 … ``seeds``−1 (rows) moved by ``steps`` along ``vector [D]`` of ``space`` (on w+ ``layers``
    only, all when None); images below 64 px are enlarged ×2 (nearest) so the grid can be read."""
    from latentdirs.images import compose_grid, save_image, to_uint8

    latents = generator.sample_seeds(list(range(seeds)), space=space)
    zoom = 2 if generator.resolution < 64 else 1
    tiles = []
    with torch.no_grad():
        for a in steps:
            images = generator.synthesize(latents + along_layers(a * vector.to(latents), latents, layers), space=space)
            tiles.append(to_uint8(torch.nn.functional.interpolate(images, scale_factor=zoom, mode="nearest")))
    grid = compose_grid(np.stack(tiles, axis=1), row_labels=[f"seed {s}" for s in range(seeds)],
                        column_labels=[f"{a:+g}" for a in steps], title=title)
    return save_image(grid.image(), out)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    sections: list[str] = []
    if args.calibration_only:  # the regressions' files and tables only: minutes instead of a quarter hour
        generator = load_generator(args.generator, device="cpu")
        paths = direction_files(generator, args)
        rows: list[tuple[str, dict[str, Any]]] = []
    else:
        generator, paths, rows = matrix_sections(args, sections)
    sections += calibration_sections(generator, paths, args)
    stamp = (f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by "
             f"`training/testbed_tables.py` on {generator.spec} ({generator.fingerprint()[:19]}…), "
             f"{time.perf_counter() - started:.0f} s.\n")
    document = "\n".join([stamp, *sections])
    write_text_atomic(args.out / "tables.md", document)
    if rows:
        write_text_atomic(args.out / "summary.md", summary_table(rows))
    print(document)


def matrix_sections(args: argparse.Namespace, sections: list[str]
                    ) -> tuple[GeneratorAdapter, dict[str, Path], list[tuple[str, dict[str, Any]]]]:
    """The known answer on synthetic, then every file's matrix on ``--generator`` (appended to
    ``sections``); returns the generator, its files and the summary rows."""
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
    layered = generator.default_space != edit_space(generator)  # name each file's space where spaces differ
    for name, path in paths.items():
        directions = Directions.load(path, generator=generator)
        count = min(args.top, len(directions))
        shown = f"{name} [{directions.space}]" if layered else name
        text, result = matrix_section(shown, generator, directions.vectors[:count],
                                      [directions.label_of(i) for i in range(count)], args,
                                      space=directions.space, layers=directions.layers)
        matrices.append(text)
        rows.append((shown, result))
    sections += [f"## {generator.spec}: summary\n", summary_table(rows), *matrices]
    ranges = layer_ranges(generator, args.layer_ranges)
    if ranges:
        sections += range_sections(generator, paths, ranges, args)
    return generator, paths, rows


def calibration_sections(generator: GeneratorAdapter, paths: dict[str, Path], args: argparse.Namespace) -> list[str]:
    """The calibrated-shift tables of the regression files (and their grids under ``--grids``)."""
    sections = [f"## {generator.spec}: calibrated shifts (Plumerault regression, in {args.regression_space})\n"]
    suffix = "" if args.regression_space == "z" else f"-{args.regression_space}"  # z keeps its former names
    for transform in args.transforms.split(","):
        name = f"regression-{transform}"
        text = calibration_section(name, generator, paths[name], args)
        calibration = Directions.load(paths[name], generator=generator).meta["calibration"]
        inside = probe_amounts(calibration)  # ±a/2, ±a, a = half the calibrated range: what evaluate asks
        if inside is not None:
            text += "\nWithin the calibrated range (requests ±a/2, ±a, a = half the range, as `evaluate` asks):\n\n"
            text += calibration_section(name, generator, paths[name], args, amounts=inside)
        write_text_atomic(args.out / f"{name}-calibration.md", text)
        if args.grids is not None:
            edit_grid(generator, paths[name], args.grids / f"testbed-{generator.spec}-{name}{suffix}-grid.png")
        sections.append(text)
    return sections


if __name__ == "__main__":
    main()
