"""``latentdirs edit``: render edit grids, strips, animations and a manifest from a direction file."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from latentdirs.cli.params import CONTEXT, ALPHA_SPEC, DEVICE, INDEX_SPEC, OPTION


@click.command("edit", context_settings=CONTEXT)
@click.argument("directions_path", metavar="DIRECTIONS", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-g", "--generator", "generator_spec", default=None,
              help="Generator spec (default: the one recorded in the direction file).")
@click.option("--seeds", type=INDEX_SPEC, default="0-7", help="Seeds, one row each, e.g. '0-7,42'.")
@click.option("--indices", type=INDEX_SPEC, default=None,
              help="Directions to render, e.g. '0-3'  [default: the first five]")
@click.option("--alphas", type=ALPHA_SPEC, default=None, help="Strengths: START:STOP:NUM or A,B,C  [default: -3:3:7]")
@click.option("--amounts", type=ALPHA_SPEC, default=None,
              help="Calibrated files: amounts of the factor instead of strengths, e.g. -0.2:0.2:5.")
@click.option("--clamp-amounts", is_flag=True, help="Clamp amounts beyond the calibrated range (default: refuse).")
@click.option("--class", "classes", multiple=True, metavar="NAME|ID",
              help="Class for conditional generators; repeat for several (one row per class and seed).")
@click.option("--truncation", type=float, default=None, help="Truncation ψ in (0, 1].")
@click.option("--animate", type=click.Choice(["gif", "webp"]), default=None, is_flag=False, flag_value="gif",
              help="Also write an animation sweeping the strength (--animate = gif).")
@click.option("--no-strips", is_flag=True, help="Skip the per-seed strips.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, help="Images rendered per forward pass.")
@click.option("--gen-opt", "generator_options", type=OPTION, multiple=True, metavar="KEY=VALUE",
              help="Generator option (e.g. first_layer=fc for module:, noise_mode=random for stylegan2:); repeatable.")
@click.option("--device", type=DEVICE, default="auto", help="Where to render.")
@click.option("--allow-other-generator", is_flag=True,
              help="Use the directions even if the generator's weights differ from the file's.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output directory.")
def edit_command(directions_path: Path, generator_spec: str | None, seeds: list[int], indices: list[int] | None,
                 alphas: list[float] | None, amounts: list[float] | None, clamp_amounts: bool,
                 classes: tuple[str, ...], truncation: float | None, animate: str | None,
                 no_strips: bool, batch_size: int, generator_options: tuple[tuple[str, Any], ...], device: str,
                 allow_other_generator: bool, out: Path) -> None:
    """Render what the directions in DIRECTIONS do: one grid per direction (rows = seeds,
    columns = strengths), per-seed strips, optional animations, and manifest.json.

    \b
    Examples:
      latentdirs edit faces.safetensors --indices 0-3 --seeds 0-5 --alphas -3:3:7 -o out/faces
      latentdirs edit eyes.safetensors --class blue --class 6 --animate -o out/eyes
      latentdirs edit shift.safetensors --amounts -0.2:0.2:5 -o out/shift
    """
    from tqdm import tqdm

    from latentdirs.directions import Directions, read_header
    from latentdirs.registry import load_generator
    from latentdirs.atomic import check_writable_directory
    from latentdirs.render import render_edits

    if alphas is not None and amounts is not None:
        raise click.UsageError("--alphas and --amounts exclude each other; give one")
    if amounts is None and alphas is None:
        alphas = [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    header = read_header(directions_path)
    check_writable_directory(out, param="--out")
    spec = generator_spec or (header.get("generator") or {}).get("spec")
    if not spec:
        raise click.UsageError("the direction file names no generator; pass -g/--generator")
    generator = load_generator(spec, device=device, **dict(generator_options))
    directions = Directions.load(directions_path, generator=generator, strict=not allow_other_generator)
    if indices is None:
        indices = list(range(min(5, len(directions))))
    for index in indices:
        directions.check_index(index, param="--indices")
    truncation = generator.check_truncation(truncation)
    class_list = list(classes) or None
    total = len(indices) * len(seeds) * len(alphas or amounts) * (len(class_list) if class_list else 1)
    with tqdm(total=total, unit="img", desc="edit", disable=None, file=sys.stderr) as bar:
        manifest = render_edits(generator, directions, out_dir=out, seeds=seeds, indices=indices, alphas=alphas,
                                classes=class_list, truncation=truncation, batch_size=batch_size,
                                strips=not no_strips, animate=animate, directions_path=str(directions_path),
                                command=_command_line(directions_path, spec, seeds, indices, alphas, amounts,
                                                      class_list, truncation, batch_size, out, generator_options),
                                progress=bar.update, amounts=amounts, clamp_amounts=clamp_amounts)
    grids = sum(1 for r in manifest["images"] if r["kind"] == "grid")
    click.echo(f"wrote {total} images into {len(manifest['images'])} files ({grids} grids) and manifest.json in {out}")


def _command_line(path: Path, spec: str, seeds: list[int], indices: list[int], alphas: list[float] | None,
                  amounts: list[float] | None, classes: list[str] | None, truncation: float | None,
                  batch_size: int, out: Path, generator_options: tuple[tuple[str, Any], ...] = ()) -> str:
    """The explicit command that renders the same images (recorded in manifest.json)."""
    option, values = ("--amounts", amounts) if amounts is not None else ("--alphas", alphas or [])
    words = ["latentdirs", "edit", str(path), "-g", spec, "--seeds", ",".join(map(str, seeds)),
             "--indices", ",".join(map(str, indices)), option, ",".join(f"{a:g}" for a in values),
             "--batch-size", str(batch_size), "-o", str(out)]
    for name in classes or ():
        words += ["--class", str(name)]
    if truncation is not None:
        words += ["--truncation", f"{truncation:g}"]
    for key, value in generator_options:
        words += ["--gen-opt", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    return shlex.join(words)
