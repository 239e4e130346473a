"""``latentdirs train-encoder``: train an amortised inversion encoder for a generator and write it."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from latentdirs.cli.params import CONTEXT, DEVICE, OPTION


@click.command("train-encoder", context_settings=CONTEXT)
@click.argument("generator_spec", metavar="GENERATOR", default="dcgan-faces")
@click.option("--space", type=click.Choice(["z", "w", "w+"]), default="z",
              help="Latent space the encoder predicts (w or w+ for StyleGAN2).")
@click.option("--steps", type=click.IntRange(min=1), default=3000, help="Training steps (fresh pairs each step).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, help="(G(z), z) pairs per step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3,
              help="Peak Adam learning rate (cosine decay to 2 %).")
@click.option("--recon-weight", type=click.FloatRange(min=0), default=10.0,
              help="Weight of the image term MSE(G(encoder(x)), x); 0 = latent loss only.")
@click.option("--no-augment", is_flag=True, help="Train on G's images as they are (no shift/colour/noise).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, help="Random seed (weights, batches).")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Checkpoint file, rewritten atomically every --checkpoint-every steps.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=200, help="Steps between checkpoints.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from --checkpoint (same options).")
@click.option("--gen-opt", "generator_options", type=OPTION, multiple=True, metavar="KEY=VALUE",
              help="Generator option (e.g. noise_mode=const for stylegan2:); repeatable.")
@click.option("--device", type=DEVICE, default="auto", help="Where to run.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Encoder file to write (.safetensors).")
def train_encoder_command(generator_spec: str, space: str, steps: int, batch_size: int, lr: float,
                          recon_weight: float, no_augment: bool, seed: int, checkpoint: Path | None,
                          checkpoint_every: int, resume: bool, generator_options: tuple[tuple[str, Any], ...],
                          device: str, out: Path) -> None:
    """Train an encoder that predicts GENERATOR's latent from its image (LORD's amortised inversion).

    Trains on freshly sampled (G(z), z) pairs, lightly augmented; the file records the generator's
    fingerprint and is refused on other weights. Use it with 'latentdirs invert --encoder FILE'.

    \b
    Examples:
      latentdirs train-encoder dcgan-faces --steps 3500 -o faces-encoder.safetensors
      latentdirs train-encoder dcgan-faces --checkpoint run.ckpt -o enc.safetensors
      latentdirs train-encoder dcgan-faces --checkpoint run.ckpt --resume -o enc.safetensors
      latentdirs train-encoder stylegan2:ffhq.pkl --space w -o ffhq-w-encoder.safetensors
    """
    from tqdm import tqdm

    from latentdirs import distributed
    from latentdirs.atomic import check_not_an_input, check_writable_directory
    from latentdirs.encoder import train_encoder
    from latentdirs.registry import generator_from_record
    from latentdirs.specs import split_generator_spec

    named = [split_generator_spec(generator_spec)[1], *(v for _, v in generator_options), checkpoint]
    check_not_an_input(out, [v for v in named if isinstance(v, (str, Path)) and str(v)])  # never overwrite inputs
    ranks = distributed.setup(device)  # None unless launched by torchrun: then data-parallel (docs/scale.md)
    if ranks is None or ranks.is_main:
        check_writable_directory(out.parent, param="--out")  # fail now, not after the training
    generator = generator_from_record(None, spec=generator_spec, options=dict(generator_options),
                                      device=device if ranks is None else ranks.device)
    started = time.perf_counter()
    quiet = ranks is not None and not ranks.is_main  # rank 0 alone shows progress, writes and reports
    with tqdm(desc="train-encoder", unit="step", total=steps, disable=True if quiet else None,
              file=sys.stderr) as bar:
        encoder = train_encoder(generator, space=space, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
                                augment=not no_augment, recon_weight=recon_weight, ranks=ranks,
                                progress=lambda step, total, loss: _advance(bar, step, total, loss))
    distributed.teardown()
    if quiet:
        return
    elapsed = time.perf_counter() - started
    encoder.save(out)
    metrics = encoder.meta["metrics"]
    click.echo(f"wrote {out}: encoder for {encoder.space.name!r} of {generator.spec}, {steps} steps in "
               f"{elapsed:.1f} s; held-out (seeds {metrics['heldout_seeds']}) latent MSE "
               f"{metrics['latent_mse']:.4g}, PSNR {metrics['psnr_db']:.2f} dB"
               + (f", class accuracy {metrics['class_accuracy']:.0%}" if "class_accuracy" in metrics else ""))


def _advance(bar, step: int, total: int, loss: float) -> None:
    bar.total = total
    bar.n = step
    bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
    bar.refresh()
