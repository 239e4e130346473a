"""Helpers shared by the training scripts: resumable state files, shipping weights, sample grids."""

from __future__ import annotations

import math
from pathlib import Path
import argparse
from typing import Any, Callable, Mapping

import torch

from latentdirs.atomic import atomic_path
from latentdirs.images import grid_image, save_image, to_uint8


def save_state(path: Path, state: Mapping[str, Any]) -> None:
    """Write a training state (state dicts, step, RNG states) atomically; a kill mid-write keeps the old one.

    Plain tensors, numbers and dicts only, so :func:`load_state` reads it with ``weights_only=True``.
    """
    with atomic_path(path) as temporary:
        torch.save(dict(state), temporary)


def load_state(path: Path) -> dict[str, Any] | None:
    """The state :func:`save_state` wrote, or ``None`` if there is none yet."""
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def export_safetensors(path: Path, state: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Ship ``state`` as float16 safetensors (integers, e.g. BatchNorm's counter, kept), atomically."""
    from safetensors.torch import save_file

    tensors = {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()).contiguous()
               for k, v in state.items()}
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=dict(metadata))


def save_sample_grid(images: torch.Tensor, path: Path, *, title: str = "") -> None:
    """Save ``[N, 3, H, W]`` in [-1, 1] as a square-ish PNG grid, atomically."""
    n = images.shape[0]
    columns = math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    tiles = to_uint8(images)
    if rows * columns > n:
        tiles = torch.cat([torch.from_numpy(tiles), torch.full((rows * columns - n, *tiles.shape[1:]), 255,
                                                               dtype=torch.uint8)]).numpy()
    save_image(grid_image(tiles.reshape(rows, columns, *tiles.shape[1:]), title=title), path)


def add_run_arguments(parser: "argparse.ArgumentParser", *, out: str) -> None:
    """The options every training script shares: seed, threads, grids, checkpoints, output and export."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grid-every", type=int, default=250, help="steps between sample grids (0: none)")
    parser.add_argument("--checkpoint-seconds", type=float, default=180)
    parser.add_argument("--out", default=out)
    parser.add_argument("--export", default=None, help="write the float16 safetensors here")
    parser.add_argument("--export-only", action="store_true", help="do not train; export the saved state")


def run(args: "argparse.Namespace", train: Callable[[Any], Any], export: Callable[[Any], None]) -> None:
    """Train (unless ``--export-only``) into ``--out``, then export when ``--export`` names a file."""
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if not args.export_only:
        train(args)
    if args.export:
        export(args)
