"""Rebuild the curated SeFa direction files shipped in checkpoints/.

Run: ``.venv/bin/python -m latentdirs.checkpoints.curate`` (from the clone; seconds).

Labels name what *increases* with a positive strength. They were given by looking at edit grids of
seeds 0-4 at strengths -6…+6 (``latentdirs edit FILE --indices 0-11 --seeds 0-4 --alphas -6:6:5``);
directions whose effect was mixed or inconsistent across seeds stay unnamed.
"""

from __future__ import annotations

from pathlib import Path

import latentdirs

NUM_DIRECTIONS = 20
LABELS: dict[str, dict[int, str]] = {
    "dcgan-faces": {1: "yaw", 2: "hair length", 4: "darker", 5: "green tint", 6: "cool light", 8: "glasses"},
    "dcgan-eyes": {0: "blur", 1: "abstract strokes", 3: "line drawing", 9: "warm background"},
}


def build(generator_name: str, folder: Path) -> Path:
    generator = latentdirs.load_generator(generator_name, device="cpu")
    directions = latentdirs.discover(generator, "sefa", num_directions=NUM_DIRECTIONS)
    directions.meta["created"] = None  # reproducible bytes: the same weights give the same file
    for index, name in LABELS[generator_name].items():
        directions.set_label(index, name)
    return directions.save(folder / f"{generator_name}-sefa.safetensors")


def main() -> None:
    folder = Path(__file__).resolve().parent
    for name in LABELS:
        print(f"wrote {build(name, folder)}")


if __name__ == "__main__":
    main()
