"""Entry point: the ``latentdirs`` group, error handling, and the small commands (list, inspect, label, import)."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from latentdirs.cli.params import CONTEXT, DEVICE, OPTION, terminal_safe
from latentdirs.errors import LatentDirsError


class _Group(click.Group):
    """Turns library errors into one line and exit code 1 (the traceback only with --debug)."""

    def invoke(self, ctx: click.Context):  # noqa: D401
        try:
            return super().invoke(ctx)
        except LatentDirsError as error:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.secho(f"Error: {terminal_safe(_as_option(str(error), ctx))}", err=True, fg="red")
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted; finished files are kept, none is half-written.", err=True)
            sys.exit(130)


def _as_option(message: str, ctx: click.Context) -> str:
    """Name the command-line option in a library message that names its API parameter
    ("indices: got 9" → "--indices: got 9"), so the API and the CLI share one set of checks."""
    name, sep, rest = message.partition(": ")
    command = ctx.command.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
    for param in getattr(command, "params", ()):
        if sep and param.name == name and isinstance(param, click.Option):
            return f"{max(param.opts, key=len)}: {rest}"
    return message


@click.group(cls=_Group, context_settings=CONTEXT)
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name="latentdirs")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Discover interpretable directions in GAN latent spaces and edit images with them.

    \b
    Quick start:
      latentdirs discover dcgan-faces -m sefa -k 10 -o faces.safetensors
      latentdirs edit faces.safetensors --indices 0-3 --seeds 0-5 -o out/
    """
    ctx.ensure_object(dict)["debug"] = debug
    if not debug:  # one line per warning, without the source line of the library that raised it
        warnings.formatwarning = lambda message, category, *_: f"warning: {message}\n"
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(message)s")


@cli.command("list", context_settings=CONTEXT)
@click.argument("what", type=click.Choice(["generators", "methods", "transforms"]))
def list_command(what: str) -> None:
    """List known generators, discovery methods, or the transforms the regression method calibrates.

    \b
    Example:
      latentdirs list generators
    """
    from latentdirs.registry import list_generators, list_methods
    from latentdirs.transforms import get_transform, list_transforms

    if what == "transforms":
        entries = {name: f"{get_transform(name).factor}, in {get_transform(name).units}" for name in list_transforms()}
    else:
        entries = list_generators() if what == "generators" else list_methods()
    width = max(len(name) for name in entries)
    for name, description in entries.items():
        click.echo(f"{name:<{width}}  {description}")


@cli.command("inspect", context_settings=CONTEXT)
@click.argument("directions", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the whole header as JSON.")
def inspect_command(directions: Path, as_json: bool) -> None:
    """Show a direction file's header (reads the header only, not the tensors); also a content/style split file.

    \b
    Example:
      latentdirs inspect faces.safetensors --json
    """
    from latentdirs.content_style import is_split_file, read_header as read_split_header, summary_lines
    from latentdirs.directions import read_header

    if is_split_file(directions):  # schema latentdirs.content-style: its own, fully checked reader
        split_meta = read_split_header(directions)
        for line in [json.dumps(split_meta, indent=2, sort_keys=True)] if as_json else summary_lines(split_meta):
            _echo_safe(line)
        return
    meta = read_header(directions)
    echo = _echo_safe  # the header's strings come from the file
    if as_json:
        click.echo(json.dumps(meta, indent=2, sort_keys=True))
        return
    generator = meta.get("generator") if isinstance(meta.get("generator"), dict) else {}
    method = meta.get("method") if isinstance(meta.get("method"), dict) else {}
    echo(f"file:        {directions}")
    echo(f"schema:      {meta['schema']} v{meta['schema_version']} (latentdirs {meta.get('library_version')})")
    echo(f"generator:   {generator.get('spec')}  {str(generator.get('fingerprint'))[:23]}…")
    if generator.get("options"):  # what edit, measure and evaluate reload it with (unless -g/--gen-opt differ)
        echo(f"  options:   {json.dumps(generator['options'], sort_keys=True)}")
    echo(f"space:       {meta.get('space')} ({meta.get('latent_dim')}-d), layers: {meta.get('layers') or 'all'}")
    echo(f"method:      {method.get('name')} {json.dumps(method.get('options', {}))} seed={method.get('seed')}")
    echo(f"directions:  {meta.get('num_directions')} (scores: {meta.get('score_kind') or 'none'})")
    if meta.get("calibration"):
        echo(f"calibration: {json.dumps(meta['calibration'])}")
    labels = meta.get("labels") or {}
    for index in sorted(labels, key=int):
        echo(f"  d{index}: {labels[index]}")


def _echo_safe(text: str) -> None:
    click.echo(terminal_safe(text))


@cli.command("label", context_settings=CONTEXT)
@click.argument("directions", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("index", type=int)
@click.argument("name")
def label_command(directions: Path, index: int, name: str) -> None:
    """Name direction INDEX of a file (rewrites the file atomically). An empty NAME removes the label.

    \b
    Example:
      latentdirs label faces.safetensors 0 yaw
    """
    from latentdirs.directions import relabel

    relabel(directions, index, name)
    click.echo(terminal_safe(f"{directions}: d{index} = {name!r}" if name else f"{directions}: d{index} unlabelled"))


@cli.command("import", context_settings=CONTEXT)
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-g", "--generator", "generator_spec", required=True, help="Generator the directions belong to.")
@click.option("--gen-opt", "generator_options", type=OPTION, multiple=True, metavar="KEY=VALUE",
              help="Generator option (e.g. first_layer=fc for module:, noise_mode=random for stylegan2:); repeatable.")
@click.option("--space", default=None, help="Latent space of the directions (default: the generator's first).")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Direction file to write.")
@click.option("--device", type=DEVICE, default="auto", help="Where to load the generator.")
def import_command(source: Path, generator_spec: str, generator_options: tuple[tuple[str, Any], ...],
                   space: str | None, out: Path, device: str) -> None:
    """Convert SeFa/InterFaceGAN .npy or GANSpace .npz directions into a direction file.

    \b
    Example:
      latentdirs import boundary.npy -g dcgan-faces -o boundary.safetensors
    """
    from latentdirs.atomic import check_not_an_input
    from latentdirs.importers import import_directions
    from latentdirs.registry import generator_from_record

    check_not_an_input(out, [source], param="--out")
    # no record: the generator is the user's -g, with their --gen-opt (names checked before loading)
    generator = generator_from_record(None, spec=generator_spec, options=dict(generator_options), device=device)
    directions = import_directions(source, generator, space=space)
    directions.save(out)
    click.echo(f"wrote {out} ({len(directions)} directions, {directions.latent_dim}-d)")


def _register_commands() -> None:
    from latentdirs.cli.discover import discover_command
    from latentdirs.cli.edit import edit_command
    from latentdirs.cli.evaluate import evaluate_command
    from latentdirs.cli.explore import explore_command
    from latentdirs.cli.invert import invert_command
    from latentdirs.cli.measure import measure_command
    from latentdirs.cli.train_encoder import train_encoder_command
    from latentdirs.cli.vary import vary_command

    cli.add_command(discover_command)
    cli.add_command(edit_command)
    cli.add_command(measure_command)
    cli.add_command(evaluate_command)
    cli.add_command(invert_command)
    cli.add_command(train_encoder_command)
    cli.add_command(explore_command)
    cli.add_command(vary_command)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="latentdirs")


if __name__ == "__main__":
    main()
