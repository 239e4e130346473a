"""Train the ``shapes-dcgan`` generator on fresh renderer scenes (:mod:`latentdirs.scenes`) and ship it.

    nohup nice -n 19 .venv/bin/python -m training.train_dcgan --steps 6000 --out out/train-dcgan \
        > out/train-dcgan/log.txt 2>&1 &
    .venv/bin/python -m training.train_dcgan --out out/train-dcgan --export-only \
        --export checkpoints/shapes-dcgan.safetensors

Recipe: the PyTorch DCGAN-tutorial networks (the generator is the ``main`` Sequential that
:func:`latentdirs.generators.dcgan.build_dcgan` rebuilds, so it loads like ``dcgan-faces``), z in R^64,
``ngf = ndf = 32``; the discriminator has spectral normalisation instead of BatchNorm (see
:func:`make_discriminator`); non-saturating loss, Adam(lr 0.0002, betas (0.5, 0.999)) for both nets,
batch 64, a freshly rendered batch every step (infinite data; scene seed = ``seed·1000003 + step``),
N(0, 0.02) generator init. An exponential moving average of the generator's weights (decay 0.999,
ramped up over the first steps) is what the sample grids
show and what ships, with its BatchNorm statistics re-estimated over 32 batches before export (the
adapter runs BatchNorm in eval mode, folded into the convolutions).

Resumable: ``--out/state.pt`` (both nets, the average, both optimisers, the step) is rewritten
atomically every ``--checkpoint-seconds`` and at the end; a restart with the same ``--out`` continues
from it, and because batches and latents are seeded by step, it continues the same run.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from latentdirs import scenes
from latentdirs.generators.dcgan import DCGANNetwork
from training.common import add_run_arguments, run, export_safetensors, load_state, save_sample_grid, save_state

Z_DIM = 64
WIDTH = 32
EMA_DECAY = 0.999
GRID_SEED = 12345  # the fixed latents every sample grid shows


def make_generator(z_dim: int = Z_DIM, width: int = WIDTH) -> DCGANNetwork:
    """The DCGAN-tutorial generator, 4 → 64 px: ConvT → BN → ReLU ×4, ConvT → Tanh; no conv biases."""
    channels = (z_dim, 8 * width, 4 * width, 2 * width, width)
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
        stride, padding = (1, 0) if i == 0 else (2, 1)
        layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride, padding, bias=False), nn.BatchNorm2d(c_out),
                   nn.ReLU(inplace=True)]
    layers += [nn.ConvTranspose2d(width, 3, 4, 2, 1, bias=False), nn.Tanh()]
    return DCGANNetwork(nn.Sequential(*layers))


def make_discriminator(width: int = WIDTH) -> nn.Sequential:
    """The DCGAN-tutorial discriminator's layout, 64 px → one logit: strided Conv → LeakyReLU ×4, Conv 4×4,
    with spectral normalisation on every conv in place of its BatchNorm.

    Why: with the tutorial's BatchNorm (real and fake in separate batches) the discriminator won outright
    on these scenes — loss 0.004 after 250 steps, and the generator still drew uniform grey noise;
    with spectral normalisation the same generator drew backgrounds and coloured blobs after 300 steps.
    PyTorch's default conv init (the N(0, 0.02) init is for the generator).
    """
    spectral = nn.utils.parametrizations.spectral_norm
    channels = (3, width, 2 * width, 4 * width, 8 * width)
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        layers += [spectral(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.2)]
    layers += [spectral(nn.Conv2d(8 * width, 1, 4, 1, 0)), nn.Flatten()]
    return nn.Sequential(*layers)


def initialise(module: nn.Module) -> None:
    """DCGAN init: conv weights N(0, 0.02), BatchNorm scale N(1, 0.02) and shift 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def make_optimiser(module: nn.Module) -> torch.optim.Adam:
    return torch.optim.Adam(module.parameters(), lr=0.0002, betas=(0.5, 0.999))


def train_step(generator: DCGANNetwork, discriminator: nn.Module, optimiser_g: torch.optim.Optimizer,
               optimiser_d: torch.optim.Optimizer, real: torch.Tensor, z: torch.Tensor) -> dict[str, float]:
    """One GAN step with the non-saturating loss; ``real`` ``[B, 3, 64, 64]`` in [-1, 1], ``z`` ``[B, Z]``.

    D: softplus(−D(real)) + softplus(D(fake)); G: softplus(−D(fake)) (= −log σ(D(G(z)))).
    Returns the two losses and D's mean logits on real and fake.
    """
    fake = generator.main(z[:, :, None, None])
    logits_real = discriminator(real)
    logits_fake = discriminator(fake.detach())
    loss_d = nn.functional.softplus(-logits_real).mean() + nn.functional.softplus(logits_fake).mean()
    optimiser_d.zero_grad(set_to_none=True)
    loss_d.backward()
    optimiser_d.step()
    loss_g = nn.functional.softplus(-discriminator(fake)).mean()
    optimiser_g.zero_grad(set_to_none=True)
    loss_g.backward()
    optimiser_g.step()
    return {"loss_d": loss_d.item(), "loss_g": loss_g.item(),
            "d_real": logits_real.mean().item(), "d_fake": logits_fake.mean().item()}


@torch.no_grad()
def update_average(average: nn.Module, current: nn.Module, step: int, decay: float = EMA_DECAY) -> None:
    """Move the averaged weights towards the current ones; the decay ramps up as (1 + step) / (10 + step)
    so that early grids show the generator of now, not its random initialisation."""
    rate = 1 - min(decay, (1 + step) / (10 + step))
    for a, c in zip(average.parameters(), current.parameters()):
        a.lerp_(c, rate)


@torch.no_grad()
def recalibrate_batchnorm(generator: DCGANNetwork, *, batches: int = 32, batch: int = 64, seed: int = 0) -> None:
    """Re-estimate every BatchNorm's running mean and variance as the plain average over ``batches``."""
    norms = [m for m in generator.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    generator.train()
    source = torch.Generator().manual_seed(seed)
    z_dim = generator.main[0].in_channels
    for _ in range(batches):
        generator.main(torch.randn(batch, z_dim, 1, 1, generator=source))
    for m in norms:
        m.momentum = 0.1
    generator.eval()


def grid_latents(n: int = 64, z_dim: int = Z_DIM) -> torch.Tensor:
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(GRID_SEED))


@torch.no_grad()
def sample_grid(average: DCGANNetwork, path: Path, step: int) -> None:
    shown = copy.deepcopy(average)
    recalibrate_batchnorm(shown)
    save_sample_grid(shown.main(grid_latents(z_dim=shown.main[0].in_channels)[:, :, None, None]), path,
                     title=f"shapes-dcgan step {step}")


def build(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    generator, discriminator = make_generator(args.z_dim, args.width), make_discriminator(args.width)
    initialise(generator)
    parts = {"generator": generator, "discriminator": discriminator, "average": copy.deepcopy(generator),
             "optimiser_g": make_optimiser(generator), "optimiser_d": make_optimiser(discriminator), "step": 0}
    state = load_state(Path(args.out) / "state.pt")
    if state is not None:
        for name in ("generator", "discriminator", "average", "optimiser_g", "optimiser_d"):
            parts[name].load_state_dict(state[name])
        parts["step"] = int(state["step"])
    return parts


def save(parts: dict, out: Path) -> None:
    save_state(out / "state.pt", {name: (value.state_dict() if hasattr(value, "state_dict") else value)
                                  for name, value in parts.items()})


def train(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    parts = build(args)
    generator, discriminator, average = parts["generator"], parts["discriminator"], parts["average"]
    generator.train()
    discriminator.train()
    last_save = time.time()
    log = (out / "losses.jsonl").open("a")
    bar = tqdm(range(parts["step"], args.steps), initial=parts["step"], total=args.steps, desc="shapes-dcgan",
               mininterval=30)
    for step in bar:
        real, _ = scenes.render_scenes(args.batch, seed=args.seed * 1_000_003 + step)
        z = torch.randn(args.batch, args.z_dim, generator=torch.Generator().manual_seed(args.seed * 7_919 + step))
        losses = train_step(generator, discriminator, parts["optimiser_g"], parts["optimiser_d"], real, z)
        update_average(average, generator, step)
        parts["step"] = step + 1
        if step % 25 == 0:
            bar.set_postfix(d=f"{losses['loss_d']:.3f}", g=f"{losses['loss_g']:.3f}")
            log.write(json.dumps({"step": step, **losses, "time": time.time()}) + "\n")
            log.flush()
        if args.grid_every and (step + 1) % args.grid_every == 0:
            sample_grid(average, out / f"grid-{step + 1:06d}.png", step + 1)
        if time.time() - last_save > args.checkpoint_seconds:
            save(parts, out)
            last_save = time.time()
    save(parts, out)
    if args.grid_every:
        sample_grid(average, out / f"grid-{parts['step']:06d}.png", parts["step"])
    return parts


def export(args: argparse.Namespace) -> None:
    """Ship the averaged generator, BatchNorm statistics re-estimated, as float16 safetensors."""
    parts = build(args)
    average = parts["average"]
    recalibrate_batchnorm(average)
    export_safetensors(Path(args.export), average.state_dict(), {
        "what": "shapes-dcgan: DCGAN generator trained on latentdirs.scenes (main Sequential, eval-mode BatchNorm)",
        "recipe": f"training/train_dcgan.py --z-dim {args.z_dim} --width {args.width} --batch {args.batch} "
                  f"--seed {args.seed}; exported at step {parts['step']} (EMA {EMA_DECAY}, BN re-estimated)",
        "step": str(parts["step"])})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--z-dim", type=int, default=Z_DIM)
    parser.add_argument("--width", type=int, default=WIDTH)
    add_run_arguments(parser, out="out/train-dcgan")
    run(parser.parse_args(argv), train, export)


if __name__ == "__main__":
    main()
