"""``latentdirs vary``: each source's content with resampled styles (or one reference's), a grid and a manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from latentdirs.cli.params import CONTEXT, DEVICE, INDEX_SPEC, OPTION


@click.command("vary", context_settings=CONTEXT)
@click.argument("sources_text", metavar="SOURCES")
@click.option("-g", "--generator", "generator_spec", default=None,
              help="Generator spec  [default: the latents file's, else the split file's, else dcgan-faces]")
@click.option("--variations", type=int, default=None, help="Styles per source  [default: 8]")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, help="Seed of the style resampling.")
@click.option("--split", "split", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A content/style split file  [default: computed, and written into OUT]")
@click.option("--content-layers", type=INDEX_SPEC, default=None,
              help="Layered spaces: the layers that carry content, e.g. '0-5' (when the split is computed).")
@click.option("--style-dims", type=int, default=None, help="Flat spaces: the style subspace's dimension K "
              "(when the split is computed).")
@click.option("--style-from", "style_from", default=None, metavar="SEED|FILE:INDEX",
              help="Render every source with this reference's style instead of variations.")
@click.option("--truncation", type=float, default=None, help="Truncation ψ in (0, 1] (seed sources and styles).")
@click.option("--class", "class_name", default=None, metavar="NAME|ID", help="Class of seed sources "
              "(conditional generators).")
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as JSON.")
@click.option("--batch-size", type=click.IntRange(min=1, max=4096), default=32, help="Images rendered per forward pass.")
@click.option("--gen-opt", "generator_options", type=OPTION, multiple=True, metavar="KEY=VALUE",
              help="Generator option (e.g. noise_mode=const for stylegan2:); repeatable.")
@click.option("--device", type=DEVICE, default="auto", help="Where to render.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output directory.")
def vary_command(sources_text: str, generator_spec: str | None, variations: int | None, seed: int,
                 split: Path | None, content_layers: list[int] | None, style_dims: int | None,
                 style_from: str | None, truncation: float | None, class_name: str | None, as_json: bool,
                 batch_size: int, generator_options: tuple[tuple[str, Any], ...], device: str, out: Path) -> None:
    """Render each of SOURCES with its content kept and --variations resampled styles (or, with
    --style-from, with one reference's style): a grid (rows = sources; first column the source, then
    the variations), manifest.json (reproduces every image) and the measurements (diversity, content
    preservation, distance to the reference's colours; docs/content-style.md).

    SOURCES: seeds ('0-3', '0,5,9') or a latents file (latentdirs invert; its feature offsets stay with
    the content). The run is all or nothing, and never overwrites an input.

    \b
    Examples:
      latentdirs vary 0-3 -g dcgan-faces --variations 8 -o out/vary
      latentdirs vary 0-3 -g shapes-stylegan2 --content-layers 0-3 -o out/vary-sg2
      latentdirs vary me.safetensors --style-from 7 -o out/me-style
      latentdirs vary 0-3 -g dcgan-faces --split out/vary/split.safetensors --style-from me.safetensors:0 -o out/s

    Under torchrun (torchrun --nproc-per-node N -m latentdirs.cli vary …) the ranks share the grid pages
    and write the same files, byte for byte, as one process (docs/scale.md).
    """
    from latentdirs import distributed
    from latentdirs.atomic import check_writable_directory
    from latentdirs.content_style import ContentStyleSplit, content_style_split
    from latentdirs.registry import generator_from_record
    from latentdirs.vary import parse_reference, parse_sources, write_vary

    split_path, style_from_text = split, style_from  # the option names, so library messages name the options
    if split_path is not None and (content_layers is not None or style_dims is not None):
        raise click.UsageError("--split and --content-layers/--style-dims exclude each other: the file's split is used")
    if style_from_text is not None and variations is not None:
        raise click.UsageError("--style-from renders one style per source; drop --variations")
    ranks = distributed.setup(device)  # None unless launched by torchrun; then each rank's own device
    if ranks is None or ranks.is_main:  # one probe: ranks writing the same probe file would race
        check_writable_directory(out, param="--out")  # a bad output path fails before the generator loads
    sources = parse_sources(sources_text)
    loaded = ContentStyleSplit.load(split_path) if split_path is not None else None  # checked against -g below
    record = _recorded_generator(sources, loaded)
    generator = generator_from_record(record, spec=generator_spec or (None if record else "dcgan-faces"),
                                      options=dict(generator_options), device=device if ranks is None else ranks.device)
    reference = parse_reference(style_from_text) if style_from_text is not None else None

    def computed() -> Any:
        return content_style_split(generator, content_layers=content_layers, style_dims=style_dims)

    # one split for every rank: rank 0 computes it (as one process would) and the others receive it
    chosen = loaded or (computed() if ranks is None else ranks.on_main(computed))
    manifest = write_vary(generator, chosen, sources, out, variations=8 if variations is None else variations,
                          seed=seed, reference=reference, truncation=truncation, class_id=class_name,
                          batch_size=batch_size, split_path=split_path, ranks=ranks)
    if ranks is not None:
        distributed.teardown()
        if not ranks.is_main:  # rank 0 alone reports the run
            return
    if as_json:
        click.echo(json.dumps({key: manifest[key] for key in ("measurements", "per_source", "split")}, indent=1))
        return
    files = [r["file"] for r in manifest["images"]]
    click.echo(f"wrote {', '.join(files)} and manifest.json in {out}")
    click.echo(_summary_line(manifest["measurements"]))


def _recorded_generator(sources: Any, split: Any) -> dict[str, Any] | None:
    """The generator a latents file, else a split file, records (what runs without -g)."""
    from latentdirs.latent_file import Latents

    if isinstance(sources, Latents):
        return sources.meta.get("generator")
    return split.generator if split is not None else None


def _summary_line(measurements: dict[str, Any]) -> str:
    """One line of the main figures (all of them with --json)."""
    def shown(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    words = [f"content preservation {shown(measurements.get('content_preservation'))} "
             f"(unrelated images: {shown(measurements.get('content_floor'))})"]
    if measurements.get("diversity") is not None:
        words.append(f"diversity {shown(measurements['diversity'])}")
    if measurements.get("style_distance") is not None:
        words.append(f"colour distance to the reference {shown(measurements['style_distance'])} "
                     f"(source: {shown(measurements.get('style_distance_before'))})")
    return "; ".join(words)
