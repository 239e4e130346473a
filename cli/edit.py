"""``latentdirs edit``: render edit grids, strips, animations and a manifest from a direction file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from latentdirs.cli.params import ALPHA_SPEC, CONTEXT, CORRECT_BY, DEVICE, INDEX_SPEC, OPTION


class _InputTransformType(click.ParamType):
    """``--translate TX,TY`` / ``--rotate DEGREES``: numbers that the StyleGAN3 adapter's own checks accept
    (the same rules as ``with_input_transform``), so a bad value is a usage error (exit 2) before anything loads."""

    def __init__(self, name: str, count: int, allowed: str, example: str) -> None:
        self.name, self.count, self.allowed, self.example = name, count, allowed, example

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        from latentdirs.errors import LatentDirsError, invalid
        from latentdirs.generators.stylegan3 import check_rotate, check_translate

        items = [_number_or_text(item) for item in value.split(",")]
        try:  # the adapter decides what is valid; the message names the option and echoes the text as typed
            return list(check_translate(items)) if self.count == 2 else check_rotate(items[0] if len(items) == 1
                                                                                         else value)
        except LatentDirsError:
            flag = max(param.opts, key=len) if param is not None and param.opts else self.name
            self.fail(str(invalid(flag, value, self.allowed, f"e.g. {flag} {self.example}")), param, ctx)


def _number_or_text(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


TRANSLATE = _InputTransformType("TX,TY", 2, "two numbers TX,TY within ±1, in image widths (+TX moves the picture "
                                "right, +TY down)", "0.1,0 moves it a tenth of its width to the right")
ROTATE = _InputTransformType("DEGREES", 1, "a finite number of degrees (positive turns the picture "
                             "counter-clockwise)", "15")


def _input_transform_options(translate: list[float] | None, rotate: float | None, header: dict[str, Any],
                             spec: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """The loader options ``translate`` / ``rotate`` for ``--translate`` / ``--rotate`` (empty without them).

    They go to the generator's loader like ``--gen-opt translate=… rotate=…`` — one path: the StyleGAN3
    loader renders through ``with_input_transform``, and the load options (so the manifest's command and
    the files' headers) record the transform. Any other generator is refused before it is loaded."""
    from latentdirs.errors import NotSupportedError, invalid
    from latentdirs.registry import generator_request
    from latentdirs.specs import split_generator_spec

    given = {key: value for key, value in (("translate", translate), ("rotate", rotate)) if value is not None}
    if not given:
        return {}
    both = sorted(set(given) & set(options))
    if both:
        raise click.UsageError(f"--{both[0]} and --gen-opt {both[0]}=… set the same thing; give one")
    chosen_spec, _ = generator_request(header.get("generator"), spec=spec, options=options)
    if split_generator_spec(chosen_spec)[0] != "stylegan3":
        key = next(iter(given))
        raise invalid(f"--{key}", given[key], f"StyleGAN3 generators (their input transform moves and turns the "
                      f"picture); this edit's generator is {chosen_spec}",
                      f"Drop --{key}, or edit directions made on a StyleGAN3 network (-g stylegan3:PATH)",
                      cls=NotSupportedError)
    return given


@click.command("edit", context_settings=CONTEXT)
@click.argument("directions_path", metavar="DIRECTIONS", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-g", "--generator", "generator_spec", default=None,
              help="Generator spec (default: the one recorded in the direction file, with its load options).")
@click.option("--seeds", type=INDEX_SPEC, default=None, help="Seeds, one row each, e.g. '0-7,42'  [default: 0-7]")
@click.option("--latents", "latents_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A latents file (from latentdirs invert): its photos are the rows, instead of --seeds.")
@click.option("--indices", type=INDEX_SPEC, default=None,
              help="Directions to render, e.g. '0-3'  [default: the first five]")
@click.option("--alphas", type=ALPHA_SPEC, default=None, help="Strengths: START:STOP:NUM or A,B,C  [default: -3:3:7]")
@click.option("--amounts", type=ALPHA_SPEC, default=None,
              help="Calibrated files: amounts of the factor instead of strengths, e.g. -0.2:0.2:5.")
@click.option("--clamp-amounts", is_flag=True, help="Clamp amounts beyond the calibrated range (default: refuse).")
@click.option("--correct-amounts", type=CORRECT_BY, default=None, is_flag=False,
              flag_value="registration", help="Calibrated files: correct each image's step by measuring its edit, "
              "by registration (--correct-amounts) or the saliency barycentre (one object on a plain background); "
              "about 6x the renders.")
@click.option("--class", "classes", multiple=True, metavar="NAME|ID",
              help="Class for conditional generators; repeat for several (one row per class and seed).")
@click.option("--truncation", type=float, default=None, help="Truncation ψ in (0, 1].")
@click.option("--layers", type=INDEX_SPEC, default=None,
              help="Layered spaces (w+, BigGAN blocks): the layers the directions move  [default: the file's]")
@click.option("--animate", type=click.Choice(["gif", "webp"]), default=None, is_flag=False, flag_value="gif",
              help="Also write an animation sweeping the strength (--animate = gif).")
@click.option("--no-strips", is_flag=True, help="Skip the per-row strips.")
@click.option("--paste-back", is_flag=True,
              help="With --latents: also write each full-size photo with its edited crop blended back in (paste/).")
@click.option("--translate", type=TRANSLATE, default=None,
              help="StyleGAN3: render every image moved by TX,TY image widths, exactly (the input transform).")
@click.option("--rotate", type=ROTATE, default=None,
              help="StyleGAN3: render every image turned by DEGREES counter-clockwise about its centre, exactly.")
@click.option("--batch-size", type=click.IntRange(min=1, max=4096), default=32, help="Images rendered per forward pass.")
@click.option("--gen-opt", "generator_options", type=OPTION, multiple=True, metavar="KEY=VALUE",
              help="Generator option (e.g. first_layer=fc for module:, noise_mode=random for stylegan2:), "
                   "over those the file recorded; repeatable.")
@click.option("--device", type=DEVICE, default="auto", help="Where to render.")
@click.option("--allow-other-generator", is_flag=True,
              help="Use the directions even if the generator's weights differ from the file's.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output directory.")
def edit_command(directions_path: Path, out: Path, generator_spec: str | None,
                 generator_options: tuple[tuple[str, Any], ...], device: str, no_strips: bool, animate: str | None,
                 batch_size: int, latents_path: Path | None, paste_back: bool, translate: list[float] | None,
                 rotate: float | None, **plan_options: Any) -> None:
    """Render what the directions in DIRECTIONS do: one grid per direction (rows = seeds, or the photos
    of a latents file; columns = strengths), per-row strips, optional animations, and manifest.json;
    with --paste-back, the edited photos at full size.

    The run is all or nothing: files appear, with manifest.json, only when every image is written.
    Under torchrun (torchrun --nproc-per-node N -m latentdirs.cli edit …) the ranks share the rows and
    write the same files; an interrupted run resumes where it stopped (docs/scale.md).

    \b
    Examples:
      latentdirs edit faces.safetensors --indices 0-3 --seeds 0-5 --alphas -3:3:7 -o out/faces
      latentdirs edit eyes.safetensors --class blue --class 6 --animate -o out/eyes
      latentdirs edit shift.safetensors --amounts -0.2:0.2:5 -o out/shift
      latentdirs edit faces.safetensors --latents me.safetensors --indices 0-3 --paste-back -o out/me
      latentdirs edit sg3.safetensors --translate 0.1,0 --rotate 15 -o out/moved
      torchrun --nproc-per-node 4 -m latentdirs.cli edit faces.safetensors --seeds 0-99999 -o out/big
    """
    from tqdm import tqdm

    from latentdirs import distributed
    from latentdirs.atomic import check_writable_directory
    from latentdirs.directions import Directions, read_header
    from latentdirs.latent_file import Latents
    from latentdirs.plan import EditPlan, LatentRows
    from latentdirs.registry import generator_from_record
    from latentdirs.render import Output, render_edits, render_edits_sharded

    if plan_options["alphas"] is not None and plan_options["amounts"] is not None:
        raise click.UsageError("--alphas and --amounts exclude each other; give one")
    if latents_path is not None and plan_options["seeds"] is not None:
        raise click.UsageError("--seeds and --latents exclude each other; give one")
    if paste_back and latents_path is None:
        raise click.UsageError("--paste-back needs --latents (seed rows have no photo to paste into)")
    plan_options["classes"] = list(plan_options["classes"]) or None
    if latents_path is not None:
        plan_options["seeds"] = None
        plan_options["rows"] = LatentRows(Latents.load(latents_path))  # checked against the generator in build
    elif plan_options["seeds"] is None:
        plan_options["seeds"] = list(range(8))
    header = read_header(directions_path)
    ranks = distributed.setup(device)  # None unless launched by torchrun; then each rank's own device
    if ranks is None or ranks.is_main:  # one probe: ranks writing the same probe file would race
        check_writable_directory(out, param="--out")
    options = dict(generator_options)
    options.update(_input_transform_options(translate, rotate, header, generator_spec, options))
    generator = generator_from_record(header.get("generator"), spec=generator_spec, options=options,
                                      device=device if ranks is None else ranks.device)
    directions = Directions.load(directions_path)
    plan = EditPlan.build(generator, directions, **plan_options)  # validates everything before rendering
    output = Output(strips=not no_strips, animate=animate, paste_back=paste_back)
    if ranks is not None:  # rank 0 shows its own images; rank 0 alone reports the run
        with tqdm(unit="img", desc=f"edit, rank 0 of {ranks.world_size}", disable=None if ranks.is_main else True,
                  file=sys.stderr) as bar:
            manifest = render_edits_sharded(generator, directions, plan, out, ranks, output=output,
                                            batch_size=batch_size, directions_path=directions_path,
                                            progress=bar.update)
        distributed.teardown()
        if manifest is None:
            return
    else:
        with tqdm(total=plan.total, unit="img", desc="edit", disable=None, file=sys.stderr) as bar:
            manifest = render_edits(generator, directions, plan, out, output=output, batch_size=batch_size,
                                    directions_path=directions_path, progress=bar.update)
    grids = sum(1 for r in manifest["images"] if r["kind"] == "grid")
    click.echo(f"wrote {plan.total} images into {len(manifest['images'])} files ({grids} grids) and manifest.json "
               f"in {out}")
