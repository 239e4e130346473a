"""Train the shipped amortised encoder (:mod:`latentdirs.encoder`) for a DCGAN and export it in float16.

    SOURCE_DATE_EPOCH=1767225600 nice -n 19 .venv/bin/python -m training.train_faces_encoder \
        --generator dcgan-faces --steps 3500 --batch-size 32 --recon-weight 10 \
        --work out/train-faces-encoder --export checkpoints/dcgan-faces-encoder.safetensors

Resumable: the checkpoint in ``--work`` is rewritten atomically every ``--checkpoint-every`` steps; run
the same command again with ``--resume`` after a kill and it continues to the same weights. The loss
log (``loss.tsv``: step, loss, seconds) is written beside it. One thread (the machine is shared).
The export is the float16 file and its held-out metrics are re-measured on the rounded weights.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import latentdirs
from latentdirs.atomic import write_text_atomic
from latentdirs.encoder import heldout_metrics, train_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="dcgan-faces")
    parser.add_argument("--space", default="z")
    parser.add_argument("--steps", type=int, default=3500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--recon-weight", type=float, default=10.0)
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("out/train-faces-encoder"))
    parser.add_argument("--export", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    generator = latentdirs.load_generator(args.generator, device="cpu")
    log_path = args.work / "loss.tsv"
    start = time.time()
    lines: list[str] = log_path.read_text().splitlines() if args.resume and log_path.exists() else []

    def progress(step: int, total: int, loss: float) -> None:
        lines.append(f"{step}\t{loss:.6f}\t{time.time() - start:.1f}")
        if step % 25 == 0 or step == total:
            write_text_atomic(log_path, "\n".join(lines) + "\n")

    encoder = train_encoder(generator, space=args.space, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                            seed=args.seed, recon_weight=args.recon_weight, augment=not args.no_augment,
                            checkpoint=args.work / "checkpoint.safetensors",
                            checkpoint_every=args.checkpoint_every, resume=args.resume, progress=progress)
    full_precision = dict(encoder.meta["metrics"])
    shipped = encoder.rounded("float16")
    shipped.meta["metrics"] = heldout_metrics(shipped)
    shipped.save(args.export, dtype="float16")
    summary = {"float32": full_precision, "float16": shipped.meta["metrics"], "seconds": time.time() - start}
    write_text_atomic(args.work / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
