"""Regenerate the edit goldens (tests/test_goldens.py compares the current code against them).

Run from the repository root: ``.venv/bin/python -m tests.goldens.make_goldens``. The goldens were
first written by the code *before* the edit-plan restructuring (issue 11), so the test proves the same
command still writes the same images. Regenerate only on a deliberate change of the output.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

HERE = Path(__file__).resolve().parent
DEMO_ARGS = ["--indices", "0-1", "--seeds", "0-2", "--alphas", "-6:6:3", "--device", "cpu"]
CALIBRATED_ARGS = ["--amounts", "-0.1,0,0.5", "--clamp-amounts", "--seeds", "0-1", "--device", "cpu"]


def calibrated_file(path: Path) -> Path:
    """A small shift-x calibrated direction on synthetic (kept as an input beside the goldens)."""
    import latentdirs

    synthetic = latentdirs.load_generator("synthetic", device="cpu")
    directions = latentdirs.discover(synthetic, "regression", transform="shift-x", samples=8, iterations=20,
                                     epochs=20, recalibrate=8, lr=0.05)
    directions.meta["created"] = "2026-12-01T00:00:00+00:00"
    return directions.save(path)


def render(out: Path, directions: Path, extra: list[str]) -> None:
    from latentdirs.cli.main import cli

    result = CliRunner().invoke(cli, ["edit", str(directions), *extra, "-o", str(out)], catch_exceptions=False)
    if result.exit_code != 0:
        raise SystemExit(result.output)


def main() -> None:
    from importlib import resources

    calibrated = HERE / "synthetic-shift-x.safetensors"
    if not calibrated.exists():
        calibrated_file(calibrated)
    faces = Path(str(resources.files("latentdirs.checkpoints") / "dcgan-faces-sefa.safetensors"))
    for name, directions, extra in (("demo", faces, DEMO_ARGS), ("calibrated", calibrated, CALIBRATED_ARGS)):
        target = HERE / name
        shutil.rmtree(target, ignore_errors=True)
        render(target, directions, extra)


if __name__ == "__main__":
    main()
