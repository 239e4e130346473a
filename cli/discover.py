"""``latentdirs discover``: run a discovery method and write a direction file."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from latentdirs.cli.params import CONTEXT, DEVICE, INDEX_SPEC, OPTION


@click.command("discover", context_settings=CONTEXT)
@click.argument("generator_spec", metavar="GENERATOR", default="dcgan-faces")
@click.option("-m", "--method", default="sefa", help="Discovery method (see 'latentdirs list methods').")
@click.option("-k", "--num-directions", type=click.IntRange(min=1), default=None,
              help="How many directions to keep (default: all the method finds).")
@click.option("--layers", type=INDEX_SPEC, default=None,
              help="Projection layers to factorise, e.g. '0-3' (layered generators only).")
@click.option("--space", default=None, help="Latent space, e.g. z, w or w+ (default: the method's choice).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None, help="Random seed (learned methods).")
@click.option("--class", "class_name", default=None, metavar="NAME|ID",
              help="The class rendered by a conditional generator (methods that render images; default class 0).")
@click.option("--transform", default=None,
              help="Transform to calibrate (regression method), e.g. shift-x; see 'latentdirs list transforms'.")
@click.option("--opt", "options", type=OPTION, multiple=True, metavar="KEY=VALUE",
              help="Further method option; repeatable. Values are read as JSON when they parse.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted learned run from its checkpoint (--opt checkpoint=FILE).")
@click.option("--gen-opt", "generator_options", type=OPTION, multiple=True, metavar="KEY=VALUE",
              help="Generator option (e.g. first_layer=fc for module:, noise_mode=random for stylegan2:); repeatable.")
@click.option("--device", type=DEVICE, default="auto", help="Where to run.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Direction file to write (.safetensors).")
def discover_command(generator_spec: str, method: str, num_directions: int | None, layers: list[int] | None,
                     space: str | None, seed: int | None, class_name: str | None, transform: str | None,
                     options: tuple[tuple[str, Any], ...], resume: bool,
                     generator_options: tuple[tuple[str, Any], ...], device: str, out: Path) -> None:
    """Discover directions in GENERATOR's latent space and write them to a direction file.

    \b
    Examples:
      latentdirs discover dcgan-faces -m sefa -k 10 -o faces.safetensors
      latentdirs discover dcgan-eyes -m sefa -o eyes.safetensors
      latentdirs discover dcgan-faces -m regression --transform shift-x -o shift.safetensors
      latentdirs discover dcgan-eyes -m orojar --class hazel -o eyes-hazel.safetensors
      latentdirs discover module:mypkg.nets:make_g --gen-opt first_layer=fc -o mine.safetensors
      latentdirs discover dcgan-faces -m orojar --opt steps=600 --opt checkpoint=run.ckpt -o oj.safetensors
      latentdirs discover dcgan-faces -m orojar --opt steps=600 --opt checkpoint=run.ckpt --resume -o oj.safetensors
    """
    from tqdm import tqdm

    from latentdirs import distributed
    from latentdirs.api import discover
    from latentdirs.atomic import check_not_an_input, check_writable_directory
    from latentdirs.registry import accepted_options, generator_from_record, get_method
    from latentdirs.specs import split_generator_spec

    named = [split_generator_spec(generator_spec)[1], *(v for _, v in (*options, *generator_options))]
    check_not_an_input(out, [v for v in named if isinstance(v, str) and v])  # never overwrite the weights
    ranks = distributed.setup(device)  # None unless launched by torchrun (then data-parallel: docs/scale.md)
    if ranks is not None and "ranks" not in accepted_options(get_method(method)):
        distributed.teardown()
        raise click.UsageError(f"-m {method} does not train, so it has nothing to share between processes; "
                               "run it without torchrun (methods that train data-parallel: orojar)")
    if ranks is None or ranks.is_main:
        check_writable_directory(out.parent, param="--out")  # fail now, not after a long discovery
    if class_name is not None and "class_id" not in accepted_options(get_method(method)):
        distributed.teardown()
        raise click.UsageError(f"--class: -m {method} reads the weights only, so its directions do not depend on "
                               "a class; drop --class (methods that render a class: orojar, regression, "
                               "ganspace, interfacegan)")
    chosen: dict[str, Any] = dict(options)
    for key, value in (("num_directions", num_directions), ("layers", layers), ("space", space), ("seed", seed),
                       ("class_id", class_name), ("transform", transform), ("resume", resume or None)):
        if value is not None:
            chosen[key] = value
    generator = generator_from_record(None, spec=generator_spec, options=dict(generator_options),
                                      device=device if ranks is None else ranks.device)
    quiet = ranks is not None and not ranks.is_main  # rank 0 alone shows progress, writes and reports
    takes_progress = "progress" in accepted_options(get_method(method)) and not quiet
    started = time.perf_counter()
    with tqdm(desc=method, unit="step", disable=None if takes_progress else True, file=sys.stderr) as bar:
        if takes_progress:
            chosen["progress"] = lambda step, total, penalty: _advance(bar, step, total, penalty)
        if ranks is not None:
            chosen["ranks"] = ranks
        directions = discover(generator, method, **chosen)
    distributed.teardown()
    if quiet:
        return
    elapsed = time.perf_counter() - started
    directions.save(out)
    scores = directions.scores
    top = ", ".join(f"{s:.3g}" for s in scores[:5].tolist()) if scores is not None else "n/a"
    noun = "direction" if len(directions) == 1 else "directions"
    click.echo(f"wrote {out}: {len(directions)} {noun} in {directions.space!r} of {generator.spec} "
               f"by {method} in {elapsed:.3f} s; top {directions.meta.get('score_kind') or 'scores'}: {top}")


def _advance(bar, step: int, total: int, penalty: float) -> None:
    bar.total = total
    bar.n = step
    bar.set_postfix(penalty=f"{penalty:.4g}", refresh=False)
    bar.refresh()
