"""BigGAN-deep benchmarks (issue 3): full-size released architectures with random weights.

Run: ``.venv/bin/python -m benchmarks.bench_biggan [--resolutions 128 256]`` (about 10 minutes on
2 CPU cores; speed does not depend on the weights' values).

For each resolution, in this run: images/s at batch 1 and 8 of the bare package forward
(``BigGAN.forward`` under inference mode) and of ``latentdirs`` editing (``render_edits``: sampling,
shift, synthesis through the adapter, grids, strips and manifest written) — interleaved in one process,
best of 3 each — their ratio (goal ≥ 0.9), peak resident memory of each in a fresh process, and SeFa's
time on the full-size ``gen_z``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import bare_vs_edit_main, bare_vs_edit_rows, best_time, report


def _runners(directory: Path, batch: int, images: int) -> dict:
    """Two callables rendering ``images`` images at ``batch``: the bare package forward, and latentdirs editing."""
    import latentdirs
    from latentdirs.plan import EditPlan
    from latentdirs.render import render_edits

    generator = latentdirs.load_generator(f"biggan:{directory}", device="cpu")
    directions = latentdirs.discover(generator, "sefa", num_directions=1)
    z = generator.sample(images, seed=0, truncation=0.5)
    one_hot = torch.nn.functional.one_hot(torch.full((images,), 207), generator.num_classes).float()

    def bare() -> None:
        with torch.inference_mode():
            for start in range(0, images, batch):
                generator.network(z[start:start + batch], one_hot[start:start + batch], 0.5)

    def edit() -> None:
        with tempfile.TemporaryDirectory() as out:
            plan = EditPlan.build(generator, directions, seeds=list(range(images // 4)), indices=[0],
                                  alphas=[-2.0, -1.0, 1.0, 2.0], classes=[207], truncation=0.5)
            render_edits(generator, directions, plan, out, batch_size=batch)

    return {"bare": bare, "edit": edit}


def bench(resolution: int, workdir: Path, images: int) -> None:
    from tests.biggan_tiny import released_config, write_biggan_dir

    started = time.perf_counter()
    directory = write_biggan_dir(workdir / f"biggan-deep-{resolution}", released_config(resolution))
    build = time.perf_counter() - started
    rows = [("random full-size directory written in", f"{build:.1f} s")]
    rows += bare_vs_edit_rows("benchmarks.bench_biggan", str(directory), (1, 8), images,
                              bare_name="bare package forward")
    import latentdirs
    from latentdirs.methods.sefa import sefa_factorize

    generator = latentdirs.load_generator(f"biggan:{directory}", device="cpu")
    weights = generator.projection_weights()
    seconds = best_time(lambda: sefa_factorize(weights), repeat=3)
    rows.append((f"SeFa on gen_z z-columns {tuple(weights[0].shape)}", f"{seconds * 1e3:.1f} ms"))
    all_layers = generator.projection_weights(list(range(len(generator.projection_layers))))
    seconds = best_time(lambda: sefa_factorize(all_layers), repeat=3)
    rows.append((f"SeFa on gen_z + all {len(generator.blocks)} blocks' batch norms", f"{seconds * 1e3:.1f} ms"))
    report(f"biggan-deep-{resolution} (random weights, {images} images per measurement, 2 threads)", rows)


def main() -> None:
    bare_vs_edit_main(__doc__.splitlines()[0], runners=_runners, bench=bench, resolutions=[128, 256], images=16)


if __name__ == "__main__":
    main()
