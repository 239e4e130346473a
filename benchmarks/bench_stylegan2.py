"""StyleGAN2 benchmarks (issue 4): random weights in the FFHQ-256 and FFHQ-1024 architectures.

Run: ``.venv/bin/python -m benchmarks.bench_stylegan2 [--resolutions 256 1024]`` (about 15 minutes).

Per resolution and batch size (1, 4), in this run: seconds per image of the bare forward
(mapping + synthesis under inference mode) and of ``latentdirs`` editing (``render_edits`` on a SeFa
direction over W+ slots 0-3: sampling, mapping, shift, synthesis, grids, strips, manifest),
interleaved in one process, best of 3; their ratio (goal ≥ 0.9); peak resident memory of each in a
fresh process. The network is written as an NVlabs-layout pickle and loaded through the adapter.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import bare_vs_edit_main, bare_vs_edit_rows, report

ARCHITECTURES = {  # the stylegan2-ada "paper256" and FFHQ-1024 configurations
    256: dict(channel_base=16384, channel_max=512, mapping_layers=8),
    1024: dict(channel_base=32768, channel_max=512, mapping_layers=8),
}


def write_network(resolution: int, folder: Path) -> Path:
    from tests.stylegan2_fixtures import random_network, tiny_config, write_nvlabs_pickle

    spec = ARCHITECTURES[resolution]
    channels = {r: min(spec["channel_base"] // r, spec["channel_max"]) for r in (2 ** i for i in range(2, 11))
                if r <= resolution}
    config = tiny_config(z_dim=512, w_dim=512, img_resolution=resolution, channels=channels,
                         mapping_layers=spec["mapping_layers"])
    return write_nvlabs_pickle(random_network(config), folder / f"random-{resolution}.pkl")


def _runners(path: Path, batch: int, images: int) -> dict:
    import latentdirs
    from latentdirs.plan import EditPlan
    from latentdirs.render import render_edits

    generator = latentdirs.load_generator(f"stylegan2:{path}", device="cpu")
    directions = latentdirs.discover(generator, "sefa", layers="0-3", num_directions=1)
    z = generator.sample(images, seed=0)

    def bare() -> None:
        with torch.inference_mode():
            for start in range(0, images, batch):
                ws = generator.network.mapping(z[start:start + batch], None, 0.7)
                generator.network.synthesis(ws, noise_mode="const")

    def edit() -> None:
        with tempfile.TemporaryDirectory() as out:
            plan = EditPlan.build(generator, directions, seeds=list(range(images // 2)), indices=[0],
                                  alphas=[-2.0, 2.0], truncation=0.7)
            render_edits(generator, directions, plan, out, batch_size=batch)

    return {"bare": bare, "edit": edit}


def bench(resolution: int, folder: Path, images: int) -> None:
    started = time.perf_counter()
    path = write_network(resolution, folder)
    rows = [("random network pickle written in", f"{time.perf_counter() - started:.1f} s")]
    rows += bare_vs_edit_rows("benchmarks.bench_stylegan2", str(path), (1, 4), images)
    report(f"StyleGAN2 {resolution} px (random weights, {images} images per measurement, 2 threads)", rows)


def main() -> None:
    bare_vs_edit_main(__doc__.splitlines()[0], runners=_runners, bench=bench, resolutions=[256, 1024], images=4)


if __name__ == "__main__":
    main()
