"""Probe (not a speed benchmark): can any single z direction shift dcgan-faces horizontally?

Run: ``.venv/bin/python -m benchmarks.probe_steerability`` (about 2.5 minutes on 2 CPU threads).

The regression method's direction reproduces only part of the shifts its inversions reach. This probe
asks the generator directly, in the manner of Jahanian et al., "On the steerability of generative
adversarial networks" (ICLR 2020): learn one vector ``w`` so that ``G(z + t·w)`` matches the shifted
image ``shift-x(G(z), t)`` (blurred, masked MSE) over fresh z and t ∈ ±[0.05, 0.25] at every step,
then measure by registration the shift that ``z + t·w`` achieves on held-out seeds. If even this direct
fit falls short, no global direction does the job on this generator and the limit is the generator's.
"""

from __future__ import annotations

import time

import torch

from latentdirs.measure import measure_amounts
from latentdirs.registry import load_generator
from latentdirs.transforms import gaussian_blur, get_transform


def main(steps: int = 1200, batch: int = 32, lr: float = 0.1) -> None:
    torch.set_num_threads(2)
    generator = load_generator("dcgan-faces", device="cpu")
    shift = get_transform("shift-x")
    sigma = 1.5  # px, the inversion's blur at 64 px
    w = torch.zeros(generator.z_dim, requires_grad=True)
    optimiser = torch.optim.Adam([w], lr=lr)
    draws = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for step in range(steps):
        z = generator.sample(batch, seed=10_000 + step)
        t = (0.05 + 0.2 * torch.rand(batch, generator=draws)) * (torch.randint(0, 2, (batch,), generator=draws) * 2 - 1)
        with torch.no_grad():
            target, mask = shift.apply(generator.synthesize(z), t)
            target = gaussian_blur(target, sigma)
        mask = (mask > 0).float().expand_as(target)
        produced = gaussian_blur(generator.synthesize(z + t[:, None] * w), sigma)
        loss = ((produced - target).square() * mask).sum() / mask.sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 200 == 0 or step == steps - 1:
            print(f"step {step:5d}  masked MSE {loss.item():.4f}  |w| {w.norm().item():6.2f}  {time.perf_counter() - started:5.0f} s")
    print("\nrequested  achieved mean ± std (32 held-out seeds)")
    with torch.no_grad():
        z = generator.sample(32, seed=7)
        sources = generator.synthesize(z)
        for t in (-0.2, -0.1, -0.05, 0.05, 0.1, 0.2):
            achieved = measure_amounts(sources, generator.synthesize(z + t * w), "shift-x", low=-0.3, high=0.3)
            print(f"{t:+9.2f}  {achieved.mean().item():+.4f} ± {achieved.std().item():.4f}")


if __name__ == "__main__":
    main()
