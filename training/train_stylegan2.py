"""Train the ``shapes-stylegan2`` generator on fresh renderer scenes (:mod:`latentdirs.scenes`) and ship it.

    nohup nice -n 19 .venv/bin/python -m training.train_stylegan2 --steps 6000 --out out/train-stylegan2 \
        > out/train-stylegan2/log.txt 2>&1 &
    .venv/bin/python -m training.train_stylegan2 --out out/train-stylegan2 --export-only \
        --export checkpoints/shapes-stylegan2.safetensors

Generator: the project's own StyleGAN2 network (:class:`latentdirs.generators.stylegan2.network.StyleGAN2Generator`,
NVlabs parameter names, skip architecture, noise inputs), small: z = w in R^64, 2 mapping layers (lr
multiplier 0.01), channels 128 at 4 and 8 px halving per resolution after that. It is shipped as a
safetensors state dict that ``stylegan2:FILE`` reads (docs/stylegan2.md), so ``shapes-stylegan2`` loads
through exactly the same code path.

Discriminator: a small residual network of equalised-learning-rate convolutions written here
(:class:`Discriminator`; from-RGB 1×1, one residual block per resolution down to 4 px with average-pool
down-sampling, minibatch standard deviation, 3×3 conv, two dense layers).

Recipe (the StyleGAN2 one, shrunk): non-saturating logistic loss; lazy R1 on reals every
:data:`R1_INTERVAL` steps with γ = 0.0002·R²/batch (StyleGAN2-ADA's "auto" heuristic) scaled by the
interval; style mixing with probability 0.9 (a random W+ cut-off); ``w_avg`` tracked with decay 0.995;
Adam(lr 0.0025, betas (0, 0.99)) for both nets, with the lazy-regularisation correction of lr and betas
for D; no path-length regulariser (it costs a second backward pass, which one CPU core cannot spare).
The shipped weights are an exponential moving average of G (half-life 10 k images, ramped over the
first 5 %) — what every sample grid shows. At 32 px the 64 px renderer's scenes are down-sampled with
area interpolation (2×2 box average).

Data: a freshly rendered batch every step (infinite data; scene seed = ``seed·1000003 + step``).
Everything random in a step (latents, mixing cut-offs, noise maps) comes from a generator seeded by
``(seed, step)``, so a run resumed from ``--out/state.pt`` (rewritten atomically every
``--checkpoint-seconds`` and at the end) continues the very same run.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from latentdirs import scenes
from latentdirs.generators.stylegan2.network import StyleGAN2Config, StyleGAN2Generator
from training.common import add_run_arguments, run, export_safetensors, load_state, save_sample_grid, save_state

Z_DIM = 64
MAPPING_LAYERS = 2
MAX_CHANNELS = 128
MIN_CHANNELS = 16
RESOLUTION = 32
R1_INTERVAL = 16
MIXING_PROBABILITY = 0.9
W_AVG_BETA = 0.995
EMA_HALF_LIFE_IMAGES = 10_000
EMA_RAMPUP = 0.05
LEARNING_RATE = 0.0025
GRID_SEED = 12345  # the fixed latents every sample grid shows
NAME = "shapes-stylegan2"


# ---------------------------------------------------------------------- networks
def generator_config(resolution: int = RESOLUTION, *, z_dim: int = Z_DIM, max_channels: int = MAX_CHANNELS,
                     min_channels: int = MIN_CHANNELS, mapping_layers: int = MAPPING_LAYERS) -> StyleGAN2Config:
    """Channels ``max_channels`` at 4 and 8 px, halved at every finer resolution (at least ``min_channels``)."""
    resolutions = [2 ** i for i in range(2, int(math.log2(resolution)) + 1)]
    channels = {r: max(min_channels, max_channels // max(1, r // 8)) for r in resolutions}
    return StyleGAN2Config(z_dim=z_dim, w_dim=z_dim, c_dim=0, img_resolution=resolution, img_channels=3,
                           channels=channels, mapping_layers=mapping_layers, architecture="skip",
                           conv_clamp=None, mapping_lr=0.01)


class EqualConv(nn.Module):
    """Conv with equalised learning rate: weights N(0, 1) scaled by 1/√fan-in at run time."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, *, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.gain = 1 / math.sqrt(in_channels * kernel * kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.gain, self.bias, padding=self.weight.shape[-1] // 2)


class EqualLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.gain = 1 / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.gain, self.bias)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * math.sqrt(2)  # × √2 keeps unit variance, as in StyleGAN2


class ResidualBlock(nn.Module):
    """conv 3×3 → lrelu → conv 3×3 → lrelu → ½ (average pool), plus a pooled 1×1 shortcut; sum × √½."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = EqualConv(in_channels, in_channels, 3)
        self.conv1 = EqualConv(in_channels, out_channels, 3)
        self.skip = EqualConv(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.skip(F.avg_pool2d(x, 2))
        x = F.avg_pool2d(_lrelu(self.conv1(_lrelu(self.conv0(x)))), 2)
        return (x + shortcut) * math.sqrt(0.5)


class Discriminator(nn.Module):
    """``[N, 3, R, R]`` in [-1, 1] → one logit ``[N]``; channels mirror the generator's."""

    def __init__(self, config: StyleGAN2Config, mbstd_group: int = 4) -> None:
        super().__init__()
        resolutions = list(reversed(config.resolutions))        # R, R/2, …, 4
        self.from_rgb = EqualConv(3, config.channels[resolutions[0]], 1)
        self.blocks = nn.Sequential(*[ResidualBlock(config.channels[r], config.channels[r // 2])
                                      for r in resolutions[:-1]])
        channels = config.channels[4]
        self.mbstd_group = mbstd_group
        self.conv = EqualConv(channels + 1, channels, 3)
        self.fc = EqualLinear(channels * 16, channels)
        self.out = EqualLinear(channels, 1)

    def minibatch_std(self, x: torch.Tensor) -> torch.Tensor:
        """Append the std-dev over groups of samples (one feature map): lets D see a lack of variety."""
        n, c, h, w = x.shape
        group = min(self.mbstd_group, n)
        while n % group:
            group -= 1
        y = x.reshape(group, n // group, c, h, w)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=[1, 2, 3])  # [n // group]
        y = y.reshape(1, -1, 1, 1, 1).expand(group, -1, 1, h, w).reshape(n, 1, h, w)
        return torch.cat([x, y], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.blocks(_lrelu(self.from_rgb(images)))
        x = _lrelu(self.conv(self.minibatch_std(x)))
        return self.out(_lrelu(self.fc(x.flatten(1)))).squeeze(1)


# ---------------------------------------------------------------------- one step
def real_batch(batch: int, seed: int, resolution: int) -> torch.Tensor:
    """Fresh scenes ``[batch, 3, R, R]`` in [-1, 1]; area-downsampled from the renderer's 64 px when R < 64."""
    images, _ = scenes.render_scenes(batch, seed=seed)
    if resolution != images.shape[-1]:
        images = F.interpolate(images, size=(resolution, resolution), mode="area")
    return images


def generate(generator: StyleGAN2Generator, z: torch.Tensor, source: torch.Generator, *,
             mixing: float = MIXING_PROBABILITY, noise: str = "random") -> torch.Tensor:
    """Images ``[N, 3, R, R]`` from ``z [N, Z]``; with probability ``mixing`` per sample, the W+ rows from
    a random cut-off on come from a second latent (style mixing). Randomness from ``source`` only."""
    ws = generator.mapping(z, None)
    if mixing > 0:
        n, num_ws = ws.shape[:2]
        second = generator.mapping(torch.randn(z.shape, generator=source), None)
        cutoff = torch.randint(1, num_ws, (n,), generator=source)
        cutoff = torch.where(torch.rand(n, generator=source) < mixing, cutoff, torch.full_like(cutoff, num_ws))
        take_second = torch.arange(num_ws)[None, :] >= cutoff[:, None]          # [N, num_ws]
        ws = torch.where(take_second[:, :, None], second, ws)
    if noise == "random":
        maps = [torch.randn(z.shape[0], 1, layer.resolution, layer.resolution, generator=source)
                for layer in generator.synthesis.conv_layers()]
        return generator.synthesis(ws, noise=maps)
    return generator.synthesis(ws, noise_mode=noise)


@torch.no_grad()
def track_w_avg(generator: StyleGAN2Generator, z: torch.Tensor) -> None:
    """``w_avg`` ← running mean of w (the truncation centre; NVlabs updates it the same way)."""
    w = generator.mapping(z, None)[:, 0]
    generator.mapping.w_avg.lerp_(w.mean(dim=0), 1 - W_AVG_BETA)


def train_step(parts: dict, real: torch.Tensor, step: int, source: torch.Generator, *, gamma: float) -> dict:
    """One D step (plus lazy R1 when ``step % R1_INTERVAL == 0``) and one G step; returns the losses."""
    generator, discriminator = parts["generator"], parts["discriminator"]
    batch = real.shape[0]
    z_d, z_g = (torch.randn(batch, generator.config.z_dim, generator=source) for _ in range(2))
    with torch.no_grad():
        fake = generate(generator, z_d, source)
    logits_real, logits_fake = discriminator(real), discriminator(fake)
    loss_d = F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()
    losses = {"loss_d": loss_d.item(), "d_real": logits_real.mean().item(), "d_fake": logits_fake.mean().item()}
    if step % R1_INTERVAL == 0:
        reals = real.detach().requires_grad_(True)
        gradient, = torch.autograd.grad(discriminator(reals).sum(), reals, create_graph=True)
        penalty = gradient.square().sum(dim=[1, 2, 3]).mean()
        loss_d = loss_d + penalty * (gamma / 2) * R1_INTERVAL
        losses["r1"] = penalty.item()
    parts["optimiser_d"].zero_grad(set_to_none=True)
    loss_d.backward()
    parts["optimiser_d"].step()

    for p in discriminator.parameters():
        p.requires_grad_(False)  # G's step needs no gradients of D's weights
    loss_g = F.softplus(-discriminator(generate(generator, z_g, source))).mean()
    parts["optimiser_g"].zero_grad(set_to_none=True)
    loss_g.backward()
    parts["optimiser_g"].step()
    for p in discriminator.parameters():
        p.requires_grad_(True)
    track_w_avg(generator, z_g)
    losses["loss_g"] = loss_g.item()
    return losses


@torch.no_grad()
def update_average(average: nn.Module, current: nn.Module, step: int, batch: int) -> None:
    """EMA of G's weights (and copies of its buffers): half-life :data:`EMA_HALF_LIFE_IMAGES` images,
    shortened to :data:`EMA_RAMPUP` × the images seen so far early on (NVlabs' ramp-up)."""
    images = (step + 1) * batch
    half_life = min(EMA_HALF_LIFE_IMAGES, images * EMA_RAMPUP)
    beta = 0.5 ** (batch / max(half_life, 1e-8))
    for a, c in zip(average.parameters(), current.parameters()):
        a.lerp_(c, 1 - beta)
    for a, c in zip(average.buffers(), current.buffers()):
        a.copy_(c)


# ---------------------------------------------------------------------- run
def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 7_919 + step)


def grid_latents(n: int = 64, z_dim: int = Z_DIM) -> torch.Tensor:
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(GRID_SEED))


@torch.no_grad()
def sample_grid(average: StyleGAN2Generator, path: Path, step: int) -> None:
    """64 images of the averaged G at the fixed grid latents, constant noise (as the adapter renders)."""
    images = average.synthesis(average.mapping(grid_latents(z_dim=average.config.z_dim), None), noise_mode="const")
    save_sample_grid(images.clamp(-1, 1), path, title=f"{NAME} step {step}")


def make_optimisers(generator: nn.Module, discriminator: nn.Module) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    ratio = R1_INTERVAL / (R1_INTERVAL + 1)  # lazy regularisation: D's lr and betas as NVlabs adjust them
    optimiser_g = torch.optim.Adam(generator.parameters(), lr=LEARNING_RATE, betas=(0.0, 0.99), eps=1e-8)
    optimiser_d = torch.optim.Adam(discriminator.parameters(), lr=LEARNING_RATE * ratio,
                                   betas=(0.0, 0.99 ** ratio), eps=1e-8)
    return optimiser_g, optimiser_d


def build(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    config = generator_config(args.resolution, z_dim=args.z_dim, max_channels=args.channels,
                              min_channels=args.min_channels, mapping_layers=args.mapping_layers)
    generator, discriminator = StyleGAN2Generator(config), Discriminator(config)
    optimiser_g, optimiser_d = make_optimisers(generator, discriminator)
    parts = {"generator": generator, "discriminator": discriminator, "average": copy.deepcopy(generator),
             "optimiser_g": optimiser_g, "optimiser_d": optimiser_d, "step": 0}
    state = load_state(Path(args.out) / "state.pt")
    if state is not None:
        for name in ("generator", "discriminator", "average", "optimiser_g", "optimiser_d"):
            parts[name].load_state_dict(state[name])
        parts["step"] = int(state["step"])
    for net in (parts["generator"], parts["discriminator"], parts["average"]):
        net.train()
    parts["average"].requires_grad_(False)
    return parts


def save(parts: dict, out: Path) -> None:
    save_state(out / "state.pt", {name: (value.state_dict() if hasattr(value, "state_dict") else value)
                                  for name, value in parts.items()})


def r1_gamma(args: argparse.Namespace) -> float:
    return args.gamma if args.gamma is not None else 0.0002 * args.resolution ** 2 / args.batch


def train(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    parts = build(args)
    gamma = r1_gamma(args)
    last_save = time.time()
    log = (out / "losses.jsonl").open("a")
    bar = tqdm(range(parts["step"], args.steps), initial=parts["step"], total=args.steps, desc=NAME,
               mininterval=30)
    for step in bar:
        real = real_batch(args.batch, args.seed * 1_000_003 + step, args.resolution)
        losses = train_step(parts, real, step, step_generator(args.seed, step), gamma=gamma)
        update_average(parts["average"], parts["generator"], step, args.batch)
        parts["step"] = step + 1
        if step % 25 == 0:
            bar.set_postfix(d=f"{losses['loss_d']:.3f}", g=f"{losses['loss_g']:.3f}")
            log.write(json.dumps({"step": step, **losses, "time": time.time()}) + "\n")
            log.flush()
        if args.grid_every and (step + 1) % args.grid_every == 0:
            sample_grid(parts["average"], out / f"grid-{step + 1:06d}.png", step + 1)
        if time.time() - last_save > args.checkpoint_seconds:
            save(parts, out)
            last_save = time.time()
    save(parts, out)
    if args.grid_every:
        sample_grid(parts["average"], out / f"grid-{parts['step']:06d}.png", parts["step"])
    return parts


def export(args: argparse.Namespace) -> None:
    """Ship the averaged G as a float16 safetensors state dict with NVlabs names (``stylegan2:FILE`` reads it)."""
    parts = build(args)
    config = parts["average"].config
    export_safetensors(Path(args.export), parts["average"].state_dict(), {
        "format": "latentdirs-stylegan2", "architecture": config.architecture, "mapping_lr": str(config.mapping_lr),
        "conv_clamp": "none" if config.conv_clamp is None else str(config.conv_clamp),
        "what": f"{NAME}: StyleGAN2 generator (G_ema) trained on latentdirs.scenes, NVlabs parameter names",
        "recipe": f"training/train_stylegan2.py --resolution {args.resolution} --z-dim {args.z_dim} "
                  f"--channels {args.channels} --min-channels {args.min_channels} "
                  f"--mapping-layers {args.mapping_layers} --batch {args.batch} "
                  f"--gamma {r1_gamma(args):g} --seed {args.seed}; exported at step {parts['step']} (EMA)",
        "step": str(parts["step"])})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=RESOLUTION, choices=(8, 16, 32, 64))
    parser.add_argument("--z-dim", type=int, default=Z_DIM)
    parser.add_argument("--channels", type=int, default=MAX_CHANNELS, help="channels at 4 and 8 px")
    parser.add_argument("--min-channels", type=int, default=MIN_CHANNELS,
                        help="channels at the finest resolutions (the halving stops there)")
    parser.add_argument("--mapping-layers", type=int, default=MAPPING_LAYERS)
    parser.add_argument("--gamma", type=float, default=None, help="R1 weight (default 0.0002·R²/batch)")
    add_run_arguments(parser, out="out/train-stylegan2")
    run(parser.parse_args(argv), train, export)


if __name__ == "__main__":
    main()
