"""``latentdirs explore``: a local web page to move faces along directions, label them and save views."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import click

from latentdirs.cli.params import CONTEXT, DEVICE, OPTION


def cli_message(message: str) -> str:
    """A library message as ``latentdirs edit`` prints it (``indices: …`` → ``--indices: …``), so the
    page's refusals read like the command line's for the same value."""
    from latentdirs.cli.edit import edit_command

    name, sep, rest = message.partition(": ")
    for param in edit_command.params:
        if sep and param.name == name and isinstance(param, click.Option):
            return f"{max(param.opts, key=len)}: {rest}"
    return message


@click.command("explore", context_settings=CONTEXT)
@click.argument("directions_paths", metavar="[DIRECTION FILES]...", nargs=-1,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("-g", "--generator", "generator_spec", default=None,
              help="Generator spec (default: the one recorded in the first direction file, with its load options).")
@click.option("--gen-opt", "generator_options", type=OPTION, multiple=True, metavar="KEY=VALUE",
              help="Generator option over those the file recorded; repeatable.")
@click.option("--latents", "latents_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A latents file (from latentdirs invert): its photos are offered as sources.")
@click.option("--save-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder the page's Save writes edits into (one sub-folder per save)  [default: Save is off]")
@click.option("--host", default=None,
              help="Listen on this address instead of 127.0.0.1; a random token in the URL is then required.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, help="Port (0: any free port).")
@click.option("--device", type=DEVICE, default="auto", help="Where to render.")
def explore_command(directions_paths: tuple[Path, ...], generator_spec: str | None,
                    generator_options: tuple[tuple[str, Any], ...], latents_path: Path | None,
                    save_dir: Path | None, host: str | None, port: int, device: str) -> None:
    """Serve a page that moves the generator's images along the directions of DIRECTION FILES, labels
    them (rewriting the files as `latentdirs label` does) and saves views as edits that
    `latentdirs edit` reproduces byte for byte. Only the files named here are read or written.

    \b
    Examples:
      latentdirs explore checkpoints/dcgan-faces-sefa.safetensors
      latentdirs explore faces.safetensors --latents me.safetensors --save-dir out/views
      latentdirs explore faces.safetensors --host 0.0.0.0 --port 8800
    """
    from latentdirs.atomic import check_writable_directory
    from latentdirs.directions import read_header
    from latentdirs.explore.server import bind, create_app, serve, url_of
    from latentdirs.explore.session import ExploreSession
    from latentdirs.registry import generator_from_record

    if not directions_paths:
        raise click.UsageError("give one or more direction files, e.g. latentdirs explore faces.safetensors")
    header = read_header(directions_paths[0])
    if save_dir is not None:
        check_writable_directory(save_dir, param="--save-dir")
    listener = bind(host or "127.0.0.1", port)  # a busy port fails now, not after loading the generator
    generator = generator_from_record(header.get("generator"), spec=generator_spec, options=dict(generator_options),
                                      device=device)
    session = ExploreSession(generator, directions_paths, latents_path=latents_path, save_dir=save_dir)
    token = None if host is None else secrets.token_urlsafe(24)  # beyond loopback, the URL is the key
    app = create_app(session, token=token, rename=cli_message)
    click.echo(f"latentdirs explore: open {url_of(listener, host or '127.0.0.1', token)}  (Ctrl-C to stop)")
    if token is not None:
        click.echo("Anyone with this URL can relabel the files and save views; share it only with them.")
    serve(app, listener)
