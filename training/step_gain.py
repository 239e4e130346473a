"""How much the effect of one step along a calibrated shift direction varies from seed to seed.

    nice -n 5 .venv/bin/python -m training.step_gain out/testbed-sg2-w/dirs/shapes-stylegan2-regression-shift-x.safetensors

A calibration (Plumerault's g) maps a requested amount to one step along one direction for every
latent, so it can be no more accurate than the direction's *gain* — the factor change per unit step —
is the same across latents. For ``--latents`` latents (seed 0) whose object starts away from the
image's edges (``|factor| < --inside``, so the move is not stopped by the data's range), this reads the
factor before and after steps of ±``--steps`` along the file's unit direction (factor reader), and
prints per step the mean gain and its coefficient of variation (std / |mean|) across the latents.
On a StyleGAN2 file in w it repeats this with the direction applied to chosen w+ rows only
(``--rows``, e.g. ``all;0-2;1-2``), to see whether the spread comes from the rows that do not
carry position.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from latentdirs.directions import Directions
from latentdirs.latents import along_layers
from latentdirs.measure import READER_MEASURES
from latentdirs.registry import generator_from_record
from latentdirs.specs import parse_index_spec


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directions", type=Path)
    parser.add_argument("--latents", type=int, default=32)
    parser.add_argument("--steps", default="1.5,3", help="step sizes along the unit direction")
    parser.add_argument("--inside", type=float, default=0.2, help="keep objects starting within ±this")
    parser.add_argument("--rows", default="all", help="';'-separated w+ row ranges (StyleGAN2 w files)")
    return parser.parse_args(argv)


def step_gains(generator, directions: Directions, *, latents: int, steps: list[float], inside: float,
               rows: list[int] | None) -> dict[str, list[float] | int]:
    """Mean gain and coefficient of variation per signed step, over the latents that start inside."""
    name, ratio = READER_MEASURES[directions.meta["calibration"]["transform"]]
    space = directions.space
    vector = directions.vectors[0].float()
    z = generator.sample(latents, seed=0)
    with torch.no_grad():
        start = generator.to_space(z, "z", "w+" if rows is not None else space)
        before = generator.read_factors(generator.synthesize(start, space="w+" if rows is not None else space))[name]
        kept = before.abs() < inside if not ratio else torch.ones_like(before, dtype=torch.bool)
        signed = sorted([-s for s in steps] + steps)
        means, variation = [], []
        for step in signed:
            moved = start + step * along_layers(vector, start, rows)
            after = generator.read_factors(generator.synthesize(moved, space="w+" if rows is not None else space))[name]
            change = after / before - 1 if ratio else after - before
            gain = change[kept] / step
            means.append(round(float(gain.mean()), 4))
            variation.append(round(float(gain.std() / gain.mean().abs()), 3))
    return {"steps": signed, "mean_gain": means, "cv": variation, "latents": int(kept.sum())}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    directions = Directions.load(args.directions)
    generator = generator_from_record(directions.meta.get("generator"), device="cpu")
    directions = Directions.load(args.directions, generator=generator)
    torch.set_num_threads(1)
    steps = [float(s) for s in args.steps.split(",")]
    for text in args.rows.split(";"):
        rows = None if text == "all" else parse_index_spec(text, param="--rows", upper=generator.space("w+").num_layers)
        found = step_gains(generator, directions, latents=args.latents, steps=steps, inside=args.inside, rows=rows)
        print(json.dumps({"file": str(args.directions), "rows": text, **found}), flush=True)


if __name__ == "__main__":
    main()
