"""``latentdirs measure``: what a calibrated direction file achieves, per requested amount."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from latentdirs.cli.params import CONTEXT, ALPHA_SPEC, CORRECT_BY, DEVICE, INDEX_SPEC, OPTION


@click.command("measure", context_settings=CONTEXT)
@click.argument("directions_path", metavar="DIRECTIONS", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-g", "--generator", "generator_spec", default=None, help="Generator (default: the file's).")
@click.option("--gen-opt", "generator_options", type=OPTION, multiple=True, metavar="KEY=VALUE",
              help="Generator option (e.g. first_layer=fc for module:, noise_mode=random for stylegan2:); repeatable.")
@click.option("--seeds", type=INDEX_SPEC, default="0-31", help="Seeds to measure on.")
@click.option("--class", "class_name", default=None, metavar="NAME|ID",
              help="Class of a conditional generator (default: the class the file was calibrated on).")
@click.option("--amounts", type=ALPHA_SPEC, default="-0.2:0.2:5", help="Requested amounts.")
@click.option("--clamp-amounts", is_flag=True, help="Clamp amounts beyond a seed's calibrated range.")
@click.option("--correct-amounts", type=CORRECT_BY, default=None, is_flag=False,
              flag_value="registration", help="Measure edits whose steps are corrected per image, by registration "
              "or the saliency barycentre (edit --correct-amounts).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write a PNG plot here.")
@click.option("--by", type=click.Choice(["registration", "factors", "saliency", "both", "all"]),
              default="registration", show_default=True,
              help="Measure edits by registration, by the generator's factor reader (shapes-*: shift-x, shift-y, "
                   "zoom), by the saliency barycentre (shift-x, shift-y, zoom; one object on a plain background), "
                   "both registration and the reader, or all three.")
@click.option("--per-seed", is_flag=True, help="Also print each seed's achieved amount.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--device", type=DEVICE, default="auto")
def measure_command(directions_path: Path, generator_spec: str | None, generator_options: tuple[tuple[str, Any], ...],
                    seeds: list[int], class_name: str | None, amounts: list[float], clamp_amounts: bool,
                    correct_amounts: str | None, by: str, per_seed: bool,
                    plot: Path | None, as_json: bool, device: str) -> None:
    """Request each amount on each seed, measure the achieved transform (by registration, or as --by
    says), and report mean and spread per requested amount.

    \b
    Example:
      latentdirs measure shift.safetensors --seeds 0-31 --amounts -0.2:0.2:5 --plot shift.png
    """
    from latentdirs.directions import Directions, read_header
    from latentdirs.measure import MEASURES, measure_calibration_by, plot_accuracy
    from latentdirs.registry import generator_from_record

    header = read_header(directions_path)
    generator = generator_from_record(header.get("generator"), spec=generator_spec,
                                      options=dict(generator_options), device=device)
    directions = Directions.load(directions_path, generator=generator)
    ways = {"both": ("registration", "factors"), "all": MEASURES}.get(by, (by,))
    tables = measure_calibration_by(generator, directions, seeds=seeds, amounts=amounts, clamp=clamp_amounts,
                                    ways=ways, class_id=class_name, correct=correct_amounts or False)
    calibration = directions.meta["calibration"]
    if as_json:  # one list of rows per way; a single way keeps the plain list older scripts read
        click.echo(json.dumps({way: [row.__dict__ for row in rows] for way, rows in tables.items()}
                              if len(ways) > 1 else [row.__dict__ for row in tables[by]], indent=1))
    else:
        for way, rows in tables.items():
            click.echo(_table(way, rows, calibration["units"], generator.resolution, per_seed))
    rows = tables[ways[0]]
    if plot is not None:
        plot_accuracy(rows, plot, title=f"{calibration['transform']} on {generator.spec}", units=calibration["units"])


def _table(way: str, rows, units: str, resolution: int, per_seed: bool) -> str:
    """One markdown table of a way of measuring; shifts also show the mean error in pixels."""
    pixels = units.startswith("fraction of")  # shift-x / shift-y: a fraction of the image side
    lines = [f"by {way}:", "", f"| requested ({units}) | achieved mean | achieved std | mean abs error"
             + (f" | error (px at {resolution} px)" if pixels else "") + " | seeds |",
             "|---|---|---|---|" + ("---|" if pixels else "") + "---|"]
    for row in rows:
        lines.append(f"| {row.requested:+.3f} | {row.mean:+.4f} | {row.std:.4f} | {row.abs_error:.4f} | "
                     + (f"{row.abs_error * resolution:.2f} | " if pixels else "") + f"{row.count} |")
    if per_seed:
        lines += ["", "| requested | " + " | ".join(f"seed {s}" for s in rows[0].seeds) + " |",
                  "|---" * (len(rows[0].seeds) + 1) + "|"]
        lines += [f"| {row.requested:+.3f} | " + " | ".join(f"{v:+.4f}" for v in row.values) + " |" for row in rows]
    return "\n".join(lines) + "\n"
