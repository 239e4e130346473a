"""Figures of the renderer for docs/testbed.md: one row per factor, swept over its range.

    .venv/bin/python -m training.testbed_figures --out docs/img
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from latentdirs import scenes
from latentdirs.images import grid_image, save_image, to_uint8

COLUMNS = 8
BASE = {"x": 0.0, "y": 0.0, "scale": 0.13, "rotation": 0.3, "hue": 0.6, "background": 0.25, "shape": 3}


def sweep() -> tuple[torch.Tensor, list[str]]:
    """``[7·8, 3, 64, 64]`` images: row r varies factor r over its range, the others stay at BASE."""
    rows, labels = [], []
    for name in scenes.FACTORS:
        if name == "shape":
            values = torch.arange(COLUMNS) % len(scenes.SHAPES)
        else:
            low, high = scenes.FACTOR_RANGES[name]
            values = torch.linspace(low, high - (high - low) / COLUMNS if name in ("rotation", "hue") else high, COLUMNS)
        factors = {k: torch.full((COLUMNS,), float(v)) for k, v in BASE.items()}
        factors[name] = values.float()
        rows.append(scenes.render_factors(factors))
        labels.append(name)
    return torch.cat(rows), labels


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/img")
    args = parser.parse_args(argv)
    images, labels = sweep()
    tiles = to_uint8(images).reshape(len(labels), COLUMNS, 64, 64, 3)
    save_image(grid_image(tiles, row_labels=labels), Path(args.out) / "testbed-renderer-factors.png")


if __name__ == "__main__":
    main()
