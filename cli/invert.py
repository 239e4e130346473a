"""``latentdirs invert``: photos in, a latents file (and a side-by-side grid) out."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from latentdirs.cli.params import CONTEXT, DEVICE, OPTION, terminal_safe


@click.command("invert", context_settings=CONTEXT)
@click.argument("images", nargs=-1, required=True, metavar="IMAGES...")
@click.option("-g", "--generator", "generator_spec", default="dcgan-faces", help="Generator to invert into.")
@click.option("--space", default=None, help="Latent space: z (every family), w or w+ (StyleGAN2)  [default: the generator's]")
@click.option("--steps", type=click.IntRange(min=0), default=None,
              help="Adam steps per image; 0 with --encoder: encoder-only  [default: 500]")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Peak learning rate  [default: 0.1]")
@click.option("--loss", default=None, help="Loss: mse, multiscale, ms-ssim, lpips joined by '+', e.g. "
              "'multiscale+0.5*ms-ssim'  [default: the measured best without download]")
@click.option("--encoder", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Encoder file (latentdirs train-encoder): start from its prediction.")
@click.option("--class", "classes", multiple=True, metavar="NAME|ID",
              help="Conditional generators: a class to search (repeatable; one = fixed)  [default: all]")
@click.option("--class-search", type=click.Choice(["race", "soft"]), default=None,
              help="Conditional generators: how the class is found — the two best after the search race on, "
                   "or soft class weights optimised with z (dcgan-eyes)  [default: race]")
@click.option("--latent-noise", type=click.FloatRange(min=0), default=None,
              help="Initial latent noise std (prior units, annealed to 0)  [default: 0 in z, 0.05·√D in w]")
@click.option("--penalty", type=click.FloatRange(min=0), default=None,
              help="Weight of the L2 activation penalty on the latent  [default: 0]")
@click.option("--no-noise-maps", is_flag=True, help="StyleGAN2 w/w+: do not optimise the per-layer noise maps.")
@click.option("--feature-offset/--no-feature-offset", "feature_offset", default=None,
              help="z of DCGANs: also optimise an offset after the first layer (z edits act on it exactly; "
                   "the latents file holds it)  [default: on where the generator has one]")
@click.option("--offset-penalty", type=click.FloatRange(min=0), default=None,
              help="Weight of the feature offset's L2 penalty  [default: 0.1]")
@click.option("--batch-size", type=click.IntRange(min=1, max=4096), default=None,
              help="Images optimised together  [default: 32]")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, help="Seed of the latent noise and noise maps.")
@click.option("--crop", default=None, metavar="X,Y,W,H",
              help="Region of every image to use (pixels of the upright image); its centred square is inverted.")
@click.option("--allow-upscale", is_flag=True, help="Accept regions smaller than a quarter of the resolution.")
@click.option("--directions", "directions_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Direction file for the editability measure  [default: SeFa's first 5, computed]")
@click.option("--no-editability", is_flag=True, help="Skip the editability measure.")
@click.option("--grid", "grid_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Side-by-side grid (input | reconstruction)  [default: OUT's name + -grid.png]")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("--gen-opt", "generator_options", type=OPTION, multiple=True, metavar="KEY=VALUE",
              help="Generator option (e.g. noise_mode=const for stylegan2:); repeatable.")
@click.option("--device", type=DEVICE, default="auto", help="Where to run.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Latents file to write (.safetensors).")
def invert_command(images: tuple[str, ...], generator_spec: str, space: str | None, steps: int | None,
                   lr: float | None, loss: str | None, encoder: Path | None, classes: tuple[str, ...],
                   class_search: str | None,
                   latent_noise: float | None, penalty: float | None, no_noise_maps: bool,
                   feature_offset: bool | None, offset_penalty: float | None, batch_size: int | None,
                   seed: int, crop: str | None, allow_upscale: bool, directions_path: Path | None,
                   no_editability: bool, grid_path: Path | None, as_json: bool,
                   generator_options: tuple[tuple[str, Any], ...], device: str, out: Path) -> None:
    """Invert IMAGES (files, directories, globs) into GENERATOR's latent space; write a latents file.

    Each image is prepared by the documented rule (EXIF orientation, RGB, centred square, resized to
    the generator's resolution), then all are optimised together in batches. Also written: a grid
    beside OUT (input | reconstruction per image). An image that cannot be used is reported and
    skipped; the others are inverted and written, and the exit status is then 1.

    \b
    Examples:
      latentdirs invert photo.jpg -o me.safetensors
      latentdirs invert photo.jpg --crop 72,10,84,84 -g dcgan-faces -o me.safetensors --json
      latentdirs invert photos/ -g dcgan-eyes --class hazel --class blue -o eyes.safetensors
      latentdirs invert 'shots/*.png' -g stylegan2:ffhq.pkl --space w+ -o ffhq.safetensors
      latentdirs invert photo.jpg --encoder faces-encoder.safetensors --steps 0 -o fast.safetensors
    """
    from tqdm import tqdm

    from latentdirs import distributed
    from latentdirs.atomic import check_not_an_input, check_writable_directory
    from latentdirs.invert import editability, inversion_options, latents_of
    from latentdirs.invert_resume import invert_resumable
    from latentdirs.photos import collect_images, prepare_images
    from latentdirs.registry import generator_from_record
    from latentdirs.specs import split_generator_spec

    grid_path = grid_path or out.with_name(f"{out.stem}-grid.png")
    inputs = [*images, *collect_images(list(images))[0], encoder, directions_path,
              split_generator_spec(generator_spec)[1], *(v for _, v in generator_options)]
    named = [v for v in inputs if isinstance(v, (str, Path)) and str(v)]
    check_not_an_input(out, named)  # never overwrite a photo, the encoder or the weights
    check_not_an_input(grid_path, named + [out], param="--grid")
    ranks = distributed.setup(device)  # None unless launched by torchrun; then each rank's own device
    if ranks is None or ranks.is_main:  # one probe: ranks writing the same probe file would race
        check_writable_directory(out.parent, param="--out")  # fail now, not after the optimisation
        check_writable_directory(grid_path.parent, param="--grid")
    generator = generator_from_record(None, spec=generator_spec, options=dict(generator_options),
                                      device=device if ranks is None else ranks.device)
    chosen = {key: value for key, value in (("space", space), ("steps", steps), ("lr", lr), ("loss", loss),
                                            ("latent_noise", latent_noise), ("penalty", penalty),
                                            ("feature_offset", feature_offset), ("offset_penalty", offset_penalty),
                                            ("batch_size", batch_size), ("class_search", class_search))
              if value is not None}
    if no_noise_maps:
        chosen["noise_maps"] = False
    options, _ = inversion_options(generator, seed=seed, **chosen)  # every option checked before work
    if options.steps == 0 and encoder is None:
        raise click.UsageError("--steps 0 needs --encoder FILE (encoder-only inversion)")
    photos = prepare_images(list(images), generator.resolution, crop=crop, allow_upscale=allow_upscale)
    quiet = ranks is not None and not ranks.is_main  # rank 0 alone shows progress and reports
    for failure in [] if quiet else photos.failures:
        click.secho(f"skipped: {terminal_safe(failure.message)}", err=True, fg="yellow")
    chosen_options = {k: v for k, v in options.as_json().items()
                      if k in ("space", "steps", "lr", "loss", "latent_noise", "penalty", "noise_maps",
                               "feature_offset", "offset_penalty", "batch_size", "class_search")}
    with tqdm(desc="invert", unit="step", disable=True if quiet else None, file=sys.stderr) as bar:
        common = dict(classes=list(classes) or None, encoder=encoder, seed=seed,
                      progress=lambda done, total: _advance(bar, done, total), **chosen_options)
        # one batch per journalled unit, beside OUT: a rerun of a killed run optimises only the batches it
        # lacks; under torchrun the ranks share the batches and rank 0 merges them (docs/scale.md)
        resumed = invert_resumable(generator, photos.images, out, ranks, **common)
        if ranks is not None:
            distributed.teardown()
        if resumed is None:  # not rank 0: its batches went to rank 0, which writes everything
            return
        result = resumed.result
    measured = None if no_editability else editability(
        generator, result.latents, space=options.space, classes=result.classes, directions=directions_path,
        offsets=result.offsets)
    latents = latents_of(generator, result, photos=photos, editability_report=measured)
    latents.save(out)
    _save_grid(result, photos.labels, grid_path, title=f"{generator.spec} {options.space}, {options.steps} steps")
    resumed.finish()  # the latents file and grid are written: the journalled batches are no longer needed
    report = {"out": str(out), "grid": str(grid_path), "generator": generator.spec, "space": options.space,
              "options": latents.meta["inversion"], "images": [
                  {"label": label, "path": record.path, **({"class": generator.class_names[result.classes[k]]}
                                                           if result.classes is not None else {}),
                   **latents.meta["rows"][k]["metrics"],
                   **({"editability": latents.meta["rows"][k]["editability"]} if measured else {})}
                  for k, (label, record) in enumerate(zip(photos.labels, photos.records))],
              "failed": [{"path": f.path, "error": f.message} for f in photos.failures]}
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        _print_summary(report, result, measured)
    if photos.failures:
        click.secho(f"Error: {len(photos.failures)} of {len(photos.failures) + len(photos)} inputs failed and were "
                    f"skipped: {terminal_safe(', '.join(f.path for f in photos.failures))}", err=True, fg="red")
        sys.exit(1)


def _advance(bar, done: int, total: int) -> None:
    bar.total = total
    bar.n = done
    bar.refresh()


def _save_grid(result, labels: list[str], path: Path, *, title: str) -> None:
    import numpy as np

    from latentdirs.images import grid_image, save_image, to_uint8

    photos, reconstructions = to_uint8(result.targets), to_uint8(result.reconstructions)
    tiles = np.stack([photos, reconstructions], axis=1)  # [N, 2, H, W, 3]
    rows = [f"{label[:24]} {float(p):.1f} dB" for label, p in zip(labels, result.psnr)]
    save_image(grid_image(tiles, row_labels=rows, column_labels=["input", "reconstruction"], title=title), path)


def _print_summary(report: dict[str, Any], result, measured: dict[str, Any] | None) -> None:
    summary = report["options"]["summary"]
    click.echo(terminal_safe(
        f"wrote {report['out']} and {report['grid']}: {summary['images']} images in {report['space']!r} of "
        f"{report['generator']} in {result.seconds:.1f} s; PSNR median {summary['psnr']['median']:.2f} dB "
        f"(min {summary['psnr']['min']:.2f}), MS-SSIM median {summary['ms_ssim']['median']:.3f}"))
    for image in report["images"]:
        extra = f", class {image['class']}" if "class" in image else ""
        if "psnr_without_offset" in image:
            extra += f", {image['psnr_without_offset']:.2f} dB without the feature offset"
        click.echo(terminal_safe(f"  {image['label']}: PSNR {image['psnr']:.2f} dB, MS-SSIM {image['ms_ssim']:.3f}, "
                                 f"prior distance {image['prior_distance']:.2f}{extra}"))
    if measured:
        inverted, sampled = measured["inverted"], measured["sampled"]
        click.echo(f"  editability ({measured['directions']}): edit correlation {inverted['correlation']:.2f} "
                   f"(sampled latents {sampled['correlation']:.2f}), magnitude {inverted['magnitude']:.2f} (1.00)")
