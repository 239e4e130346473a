"""``latentdirs measure``: what a calibrated direction file achieves, per requested amount."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from latentdirs.cli.params import CONTEXT, ALPHA_SPEC, DEVICE, INDEX_SPEC, OPTION


@click.command("measure", context_settings=CONTEXT)
@click.argument("directions_path", metavar="DIRECTIONS", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-g", "--generator", "generator_spec", default=None, help="Generator (default: the file's).")
@click.option("--gen-opt", "generator_options", type=OPTION, multiple=True, metavar="KEY=VALUE",
              help="Generator option (e.g. first_layer=fc for module:, noise_mode=random for stylegan2:); repeatable.")
@click.option("--seeds", type=INDEX_SPEC, default="0-31", help="Seeds to measure on.")
@click.option("--amounts", type=ALPHA_SPEC, default="-0.2:0.2:5", help="Requested amounts.")
@click.option("--clamp-amounts", is_flag=True, help="Clamp amounts beyond a seed's calibrated range.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write a PNG plot here.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--device", type=DEVICE, default="auto")
def measure_command(directions_path: Path, generator_spec: str | None, generator_options: tuple[tuple[str, Any], ...],
                    seeds: list[int], amounts: list[float], clamp_amounts: bool, plot: Path | None, as_json: bool,
                    device: str) -> None:
    """Request each amount on each seed, measure the achieved transform by registration, and report
    mean and spread per requested amount.

    \b
    Example:
      latentdirs measure shift.safetensors --seeds 0-31 --amounts -0.2:0.2:5 --plot shift.png
    """
    from latentdirs.directions import Directions, read_header
    from latentdirs.measure import measure_calibration, plot_accuracy
    from latentdirs.registry import generator_from_record

    header = read_header(directions_path)
    generator = generator_from_record(header.get("generator"), spec=generator_spec,
                                      options=dict(generator_options), device=device)
    directions = Directions.load(directions_path, generator=generator)
    rows = measure_calibration(generator, directions, seeds=seeds, amounts=amounts, clamp=clamp_amounts)
    calibration = directions.meta["calibration"]
    if as_json:
        click.echo(json.dumps([row.__dict__ for row in rows], indent=1))
    else:
        click.echo(f"| requested ({calibration['units']}) | achieved mean | achieved std | seeds |")
        click.echo("|---|---|---|---|")
        for row in rows:
            click.echo(f"| {row.requested:+.3f} | {row.mean:+.4f} | {row.std:.4f} | {row.count} |")
    if plot is not None:
        plot_accuracy(rows, plot, title=f"{calibration['transform']} on {generator.spec}", units=calibration["units"])
