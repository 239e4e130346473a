"""``latentdirs evaluate``: VP, ground truth, effect profiles and calibration for direction files."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from latentdirs.cli.params import CONTEXT, DEVICE, OPTION, STRENGTH_RANGE

#: VP renders and keeps every pair: the cap refuses absurd counts (10^12) before anything is allocated,
#: while leaving 100× the default for careful runs
MAX_PAIRS = 200_000


@click.command("evaluate", context_settings=CONTEXT)
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-g", "--generator", "generator_spec", default=None, help="Generator (default: each file's own).")
@click.option("--gen-opt", "generator_options", type=OPTION, multiple=True, metavar="KEY=VALUE",
              help="Generator option (e.g. first_layer=fc for module:, noise_mode=random for stylegan2:); repeatable.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, help="Makes the numbers repeatable.")
@click.option("--class", "class_name", default=None, metavar="NAME|ID",
              help="Class every conditional generator renders (default class 0).")
@click.option("--top", type=click.IntRange(min=2), default=8, help="Directions evaluated per file.")
@click.option("--pairs", type=click.IntRange(min=50, max=MAX_PAIRS), default=2000, help="VP image pairs per run.")
@click.option("--epochs", type=click.IntRange(min=1), default=4, help="VP training epochs.")
@click.option("--vp-seeds", type=click.IntRange(min=1), default=2, help="VP runs averaged.")
@click.option("--strength", type=STRENGTH_RANGE, default="3",
              help="Strengths of the VP pairs, LOW:HIGH (HIGH alone means HIGH/2:HIGH); profiles use ±HIGH, ±HIGH/2.")
@click.option("--factors", type=click.Choice(["auto", "yes", "no"]), default="auto", show_default=True,
              help="Direction x factor matrix: auto = on generators that read their factors (shapes-*) or know "
                   "them (synthetic); yes = required.")
@click.option("--factor-samples", type=click.IntRange(min=2, max=MAX_PAIRS), default=64, show_default=True,
              help="Latents per direction for the factor matrix.")
@click.option("--factor-step", type=click.FloatRange(min=0, min_open=True, max=1e6), default=1.0, show_default=True,
              help="Latent step ±h of the factor matrix's central differences.")
@click.option("--content-style", is_flag=True,
              help="Also measure each generator's content/style split: vary and style-from figures "
                   "(docs/content-style.md).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--report", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write a self-contained HTML report into this directory.")
@click.option("--device", type=DEVICE, default="auto")
def evaluate_command(files: tuple[Path, ...], generator_spec: str | None,
                     generator_options: tuple[tuple[str, Any], ...], seed: int, class_name: str | None, top: int,
                     pairs: int, epochs: int,
                     vp_seeds: int, strength: tuple[float, float], factors: str, factor_samples: int,
                     factor_step: float, content_style: bool, as_json: bool, report: Path | None,
                     device: str) -> None:
    """Evaluate direction files on their generators; files of different generators are reported apart.
    Exits 1 when a file could not be evaluated (after reporting the others).

    \b
    Example:
      latentdirs evaluate faces-sefa.safetensors faces-orojar.safetensors --report out/eval
      torchrun --nproc-per-node 2 -m latentdirs.cli evaluate faces-sefa.safetensors --report out/eval
    """
    from latentdirs import distributed
    from latentdirs.evaluation import evaluate
    from latentdirs.evaluation.report import markdown, write_report

    ranks = distributed.setup(device)  # None unless launched by torchrun: then the ranks share the rendering
    try:
        results = evaluate(list(files), generator_spec=generator_spec, generator_options=dict(generator_options),
                           device=device, seed=seed, top=top, pairs=pairs, epochs=epochs, vp_seeds=vp_seeds,
                           strength=strength, factors=factors, factor_samples=factor_samples,
                           factor_step=factor_step, class_id=class_name, content_style=content_style, ranks=ranks)
    finally:
        distributed.teardown()
    if ranks is not None and not ranks.is_main:  # every rank holds the result; rank 0 alone prints and writes
        return
    click.echo(json.dumps(results, indent=1) if as_json else markdown(results))
    if report is not None and results["generators"]:  # no report of nothing: a failed run writes no files
        click.echo(f"report: {write_report(results, report)}", err=True)
    if results["errors"]:  # the report above lists each failure with its reason
        click.secho(f"Error: {len(results['errors'])} of {len(files)} files could not be evaluated", err=True,
                    fg="red")
        sys.exit(1)
