"""``latentdirs evaluate``: VP, ground truth, effect profiles and calibration for direction files."""

from __future__ import annotations

import json
from pathlib import Path

import click

from latentdirs.cli.params import CONTEXT, DEVICE, STRENGTH_RANGE


@click.command("evaluate", context_settings=CONTEXT)
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-g", "--generator", "generator_spec", default=None, help="Generator (default: each file's own).")
@click.option("--seed", type=int, default=0, help="Makes the numbers repeatable.")
@click.option("--top", type=click.IntRange(min=2), default=8, help="Directions evaluated per file.")
@click.option("--pairs", type=click.IntRange(min=50), default=2000, help="VP image pairs per run.")
@click.option("--epochs", type=click.IntRange(min=1), default=4, help="VP training epochs.")
@click.option("--vp-seeds", type=click.IntRange(min=1), default=2, help="VP runs averaged.")
@click.option("--strength", type=STRENGTH_RANGE, default="3",
              help="Strengths of the VP pairs, LOW:HIGH (HIGH alone means HIGH/2:HIGH); profiles use ±HIGH, ±HIGH/2.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--report", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write a self-contained HTML report into this directory.")
@click.option("--device", type=DEVICE, default="auto")
def evaluate_command(files: tuple[Path, ...], generator_spec: str | None, seed: int, top: int, pairs: int, epochs: int,
                    vp_seeds: int, strength: tuple[float, float], as_json: bool, report: Path | None, device: str) -> None:
    """Evaluate direction files on their generators; files of different generators are reported apart.

    \b
    Example:
      latentdirs evaluate faces-sefa.safetensors faces-orojar.safetensors --report out/eval
    """
    from latentdirs.evaluation import evaluate
    from latentdirs.evaluation.report import markdown, write_report

    results = evaluate(list(files), generator_spec=generator_spec, device=device, seed=seed, top=top, pairs=pairs,
                       epochs=epochs, vp_seeds=vp_seeds, strength=strength)
    click.echo(json.dumps(results, indent=1) if as_json else markdown(results))
    if report is not None:
        click.echo(f"report: {write_report(results, report)}", err=True)
