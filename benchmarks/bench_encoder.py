"""The amortised encoder (issue 13, "Encoder start") on dcgan-faces, CPU.

Run: ``.venv/bin/python -m benchmarks.bench_encoder [--encoder FILE] [--images 16] [--steps 500]``
(about 3 minutes on 2 threads).

1. Quality on 64 unseen seeds (0-63; training latents come from hashed seeds): latent MSE and PSNR of
   ``G(E(G(z)))`` against ``G(z)``.
2. Speed: encoder-only inversion (one forward pass) against plain Adam on z for ``--steps`` steps
   (MSE, lr 0.05, ‖z‖ ≤ √100, all images in one batch), in images per second, same images, same run.
3. Encoder start: the same Adam from the encoder's prediction instead of a random prior sample;
   the iteration at which it first reaches the from-scratch run's final error (of the mean MSE over
   the images, and per image: median), as a fraction of ``--steps``. Goal: at most a third.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import latentdirs
from benchmarks.common import best_time, report
from latentdirs.encoder import Encoder, heldout_metrics
from latentdirs.latents import clamp_to_ball_

ROOT = Path(__file__).resolve().parents[1]


def adam_on_z(generator, targets: torch.Tensor, start: torch.Tensor, steps: int, lr: float = 0.05) -> torch.Tensor:
    """Plain inversion: Adam on z, pixel MSE, z kept in the ball of radius √D. Returns the per-image MSE
    after every step, ``[steps + 1, N]`` (row 0: at the start)."""
    z = start.detach().clone().clamp_(-1e6, 1e6)
    with torch.no_grad():
        clamp_to_ball_(z)
    z.requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=lr)
    curve = []
    for _ in range(steps):
        errors = ((generator.synthesize(z) - targets) ** 2).flatten(1).mean(1)
        curve.append(errors.detach())
        optimiser.zero_grad()
        errors.sum().backward()  # a sum: each image's latent gets its own gradient, as if alone
        optimiser.step()
        with torch.no_grad():
            clamp_to_ball_(z)
    with torch.no_grad():
        curve.append(((generator.synthesize(z) - targets) ** 2).flatten(1).mean(1))
    return torch.stack(curve)


def psnr(mse: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-12))


def first_reaching(curve: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Per column, the first row index whose value is ≤ ``level`` (``len(curve)`` where none is)."""
    reached = curve <= level
    index = torch.where(reached.any(0), reached.float().argmax(0), torch.full_like(level, len(curve), dtype=torch.long))
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", type=Path, default=ROOT / "checkpoints" / "dcgan-faces-encoder.safetensors")
    parser.add_argument("--images", type=int, default=16, help="images for the speed and start runs")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    faces = latentdirs.load_generator("dcgan-faces", device="cpu")
    encoder = Encoder.load(args.encoder, generator=faces)

    quality = heldout_metrics(encoder, seeds=list(range(64)))
    report("held-out quality, seeds 0-63", [
        ("latent MSE (prior variance 1)", f"{quality['latent_mse']:.4f}"),
        ("PSNR G(E(G(z))) vs G(z)", f"{quality['psnr_db']:.2f} dB"),
    ])

    seeds = list(range(1000, 1000 + args.images))  # unseen too; disjoint from the quality seeds
    with torch.no_grad():
        targets = faces.synthesize(faces.sample_seeds(seeds))
    encode_seconds = best_time(lambda: encoder(targets), repeat=5)
    random_start = faces.sample(args.images, seed=424242)
    started = time.perf_counter()
    scratch = adam_on_z(faces, targets, random_start, args.steps)
    adam_seconds = time.perf_counter() - started
    with torch.no_grad():
        predicted = encoder(targets)
    warm = adam_on_z(faces, targets, predicted, args.steps)
    encoder_only = psnr(warm[0])
    speedup = adam_seconds / encode_seconds
    report(f"speed, {args.images} images, {args.threads} threads", [
        ("encoder only", f"{args.images / encode_seconds:.1f} images/s ({psnr(warm[0]).mean():.2f} dB mean)"),
        (f"Adam on z, {args.steps} steps", f"{args.images / adam_seconds:.3f} images/s "
                                            f"({psnr(scratch[-1]).mean():.2f} dB mean)"),
        ("ratio (goal ≥ 50×)", f"{speedup:.0f}×"),
    ])

    mean_scratch, mean_warm = scratch.mean(1), warm.mean(1)
    at_mean = int(first_reaching(mean_warm[:, None], mean_scratch[-1:])[0])
    per_image = first_reaching(warm, scratch[-1]).float()
    report(f"encoder start vs random start, Adam lr 0.05, {args.steps} steps", [
        ("from scratch: final mean MSE / PSNR", f"{mean_scratch[-1]:.5f} / {psnr(scratch[-1]).mean():.2f} dB"),
        ("encoder start: at step 0", f"{mean_warm[0]:.5f} / {encoder_only.mean():.2f} dB"),
        ("encoder start: final", f"{mean_warm[-1]:.5f} / {psnr(warm[-1]).mean():.2f} dB"),
        ("steps to scratch's final mean MSE", f"{at_mean} ({at_mean / args.steps:.2f} of {args.steps}; goal ≤ 0.33)"),
        ("per image: median steps to its scratch final", f"{per_image.median():.0f} "
                                                        f"({per_image.median() / args.steps:.2f}); reached by "
                                                        f"{int((per_image <= args.steps).sum())}/{args.images}"),
    ], as_json={"latent_mse": quality["latent_mse"], "psnr_db": quality["psnr_db"], "speedup": speedup,
                "encoder_images_per_s": args.images / encode_seconds,
                "adam_images_per_s": args.images / adam_seconds, "steps_to_scratch_final": at_mean,
                "fraction": at_mean / args.steps, "per_image_median": float(per_image.median())})


if __name__ == "__main__":
    main()
