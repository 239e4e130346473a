"""Train the factor reader (:mod:`latentdirs.factor_reader`) on fresh renderer scenes and ship it.

    nice -n 19 .venv/bin/python -m training.train_factor_reader --steps 4000 --out out/train-reader \
        --export checkpoints/shapes-factor-reader.safetensors

Every step renders a new batch (infinite data, seeded by step), so there is no over-fitting to a
finite set; the held-out set is rendered with a seed no training batch uses. Loss: mean squared error
on the normalised continuous targets (rotation heads only for the true shape's head, none for the
disc) plus cross-entropy on the shape. Adam, cosine-decayed learning rate. Resumable: the state file
in ``--out`` is rewritten atomically every ``--checkpoint-every`` steps and picked up on restart.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from latentdirs import factor_reader as fr
from latentdirs import scenes
from latentdirs.atomic import write_text_atomic
from training.common import export_safetensors, load_state, save_state

HELD_OUT_SEED = 10**9 + 7  # training batches use seeds 0 … steps-1


def targets(factors: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Regression targets ``[N, 12]`` (rows of :data:`~latentdirs.factor_reader.OUTPUTS`) and their mask."""
    n = factors["x"].shape[0]
    target = torch.zeros(n, fr.REGRESSION)
    mask = torch.ones(n, fr.REGRESSION)
    for name in ("x", "y", "scale", "background"):
        target[:, fr.OUTPUTS.index(name)] = fr.normalise(name, factors[name])
    turn = 2 * math.pi * factors["hue"]
    target[:, fr.OUTPUTS.index("hue_cos")], target[:, fr.OUTPUTS.index("hue_sin")] = turn.cos(), turn.sin()
    for index, (cos_row, sin_row) in fr.ROTATION_HEADS.items():
        angle = scenes.SYMMETRY[index] * factors["rotation"]
        own = (factors["shape"] == index).float()
        target[:, cos_row], target[:, sin_row] = angle.cos() * own, angle.sin() * own
        mask[:, cos_row], mask[:, sin_row] = own, own
    return target, mask


def loss_of(reader: fr.FactorReader, images: torch.Tensor, factors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Masked MSE on the regression rows plus cross-entropy on the shape logits."""
    outputs = reader(images)
    target, mask = targets(factors)
    squared = (outputs[:, :fr.REGRESSION] - target) ** 2 * mask
    return squared.sum() / mask.sum() + nn.functional.cross_entropy(outputs[:, fr.REGRESSION:], factors["shape"])


def angle_error(read: torch.Tensor, true: torch.Tensor, period: float) -> torch.Tensor:
    """Smallest absolute difference of two angles modulo ``period``."""
    difference = (read - true).remainder(period)
    return torch.minimum(difference, period - difference)


@torch.no_grad()
def evaluate(reader: fr.FactorReader, n: int = 4000, seed: int = HELD_OUT_SEED) -> dict[str, float]:
    """Held-out accuracy: MAE per factor in its units (and x, y, scale in pixels), shape accuracy."""
    images, factors = scenes.render_scenes(n, seed=seed)
    read = reader.read(images)
    result: dict[str, float] = {"n": n, "shape_accuracy": float((read["shape"] == factors["shape"]).float().mean())}
    for name in ("x", "y", "scale", "background"):
        result[f"{name}_mae"] = float((read[name] - factors[name]).abs().mean())
    for name in ("x", "y", "scale"):
        result[f"{name}_mae_px"] = result[f"{name}_mae"] * scenes.RESOLUTION
    result["hue_mae_degrees"] = float(angle_error(read["hue"], factors["hue"], 1.0).mean()) * 360
    for index, name in enumerate(scenes.SHAPES):
        k = scenes.SYMMETRY[index]
        members = (factors["shape"] == index) & (read["shape"] == index)
        if k and bool(members.any()):
            error = angle_error(read["rotation"][members], factors["rotation"][members], 2 * math.pi / k)
            result[f"rotation_mae_degrees_{name}"] = float(error.mean()) * 180 / math.pi
        result[f"shape_accuracy_{name}"] = float((read["shape"][factors["shape"] == index] == index).float().mean())
    return result


def train(args: argparse.Namespace) -> fr.FactorReader:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    reader = fr.FactorReader()
    optimiser = torch.optim.Adam(reader.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, args.steps) / args.steps)))
    start = 0
    state = load_state(out / "state.pt")
    if state is not None:
        reader.load_state_dict(state["reader"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        start = int(state["step"])
    began = time.time()
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="factor reader", mininterval=10)
    for step in bar:
        images, factors = scenes.render_scenes(args.batch, seed=args.seed * 1_000_003 + step)
        loss = loss_of(reader, images, factors)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % args.checkpoint_every == 0 or step + 1 == args.steps:
            save_state(out / "state.pt", {"reader": reader.state_dict(), "optimiser": optimiser.state_dict(),
                                          "schedule": schedule.state_dict(), "step": step + 1})
    reader.eval()
    seconds = time.time() - began
    metrics = evaluate(reader)
    metrics["train_seconds_this_run"] = seconds
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))
    if args.export:
        export_safetensors(Path(args.export), reader.state_dict(), {
            "what": "latentdirs factor reader for latentdirs.scenes (FactorReader, width 32)",
            "recipe": f"training/train_factor_reader.py --steps {args.steps} --batch {args.batch} "
                      f"--lr {args.lr} --seed {args.seed}",
            "metrics": json.dumps(metrics)})
    return reader


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--out", default="out/train-reader")
    parser.add_argument("--export", default=None, help="write the float16 safetensors here when done")
    train(parser.parse_args(argv))


if __name__ == "__main__":
    main()
