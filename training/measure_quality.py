"""Measure a trained testbed generator against the renderer, through the factor reader.

    nice -n 19 .venv/bin/python -m training.measure_quality --generator shapes-dcgan --n 2000 \
        --out out/quality --grids docs/img

For ``n`` generated images (seeds 0 … n−1 of the generator's prior) and two independent sets of ``n``
renderer images, it reads every factor with the factor reader and reports, per factor, mean and
standard deviation of generated and real values, the two-sample Kolmogorov–Smirnov statistic and the
overlap of 20-bin histograms (1 = the same distribution); for the shape, the class frequencies. It also
gives the Fréchet distance between generated and real images in the reader's 256-d penultimate
features, beside the same distance between the two real sets (the floor that sampling noise sets).
Rotation is compared as the fraction of the shape's symmetry period, ``θ·k / 2π`` in [0, 1), over the
images read as non-round shapes. Writes ``quality.json`` and ``quality.md`` into ``--out`` and, with
``--grids``, sample grids of generated and real images.

A generator drawing fewer than 64 px (shapes-stylegan2: 32) is compared with real scenes area-downsampled
to its size, and every image is resized back to 64 px for the reader, as its ``read_factors`` does.
``--generator`` also takes a training export (``FILE.safetensors``: a StyleGAN2 one from
``training/train_stylegan2.py``, else a DCGAN), so a run can be judged before it is shipped.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from latentdirs import scenes
from latentdirs.atomic import write_text_atomic
from latentdirs.factor_reader import FactorReader, load_factor_reader
from training.common import save_sample_grid

REAL_SEEDS = (424242, 737373)  # the two independent real sets
CONTINUOUS = ("x", "y", "scale", "rotation", "hue", "background")


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov–Smirnov statistic: the largest gap between the two empirical CDFs."""
    a, b = a.double().sort().values, b.double().sort().values
    points = torch.cat([a, b])
    cdf_a = torch.searchsorted(a, points, right=True).double() / a.numel()
    cdf_b = torch.searchsorted(b, points, right=True).double() / b.numel()
    return float((cdf_a - cdf_b).abs().max())


def histogram_overlap(a: torch.Tensor, b: torch.Tensor, low: float, high: float, bins: int = 20) -> float:
    """Σ min(p, q) over ``bins`` equal bins of [low, high] (values outside are clipped into the end bins)."""
    p = torch.histc(a.double().clamp(low, high), bins, low, high) / a.numel()
    q = torch.histc(b.double().clamp(low, high), bins, low, high) / b.numel()
    return float(torch.minimum(p, q).sum())


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance of Gaussians fitted to features ``a`` ``[N, D]`` and ``b`` ``[M, D]``:
    ``|μa − μb|² + tr(Σa + Σb − 2 (Σa^½ Σb Σa^½)^½)`` (the symmetric form, computed with eigh)."""
    a, b = a.double(), b.double()
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    middle = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return float((mean_a - mean_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * middle)


def comparable(read: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The read factors as compared: rotation as a fraction of its symmetry period, non-round shapes only."""
    values = {name: read[name] for name in CONTINUOUS if name != "rotation"}
    k = torch.tensor(scenes.SYMMETRY, dtype=torch.float32)[read["shape"]]
    rotating = k > 0
    values["rotation"] = (read["rotation"][rotating] * k[rotating] / (2 * math.pi)).remainder(1.0)
    return values


def compare(generated: dict[str, torch.Tensor], real: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    gen, ref = comparable(generated), comparable(real)
    ranges = {**scenes.FACTOR_RANGES, "rotation": (0.0, 1.0)}
    rows = {}
    for name in CONTINUOUS:
        low, high = ranges[name]
        rows[name] = {"generated_mean": float(gen[name].mean()), "generated_std": float(gen[name].std()),
                      "real_mean": float(ref[name].mean()), "real_std": float(ref[name].std()),
                      "ks": ks_statistic(gen[name], ref[name]),
                      "overlap": histogram_overlap(gen[name], ref[name], low, high)}
    gen_counts = torch.bincount(generated["shape"], minlength=len(scenes.SHAPES)).double() / generated["shape"].numel()
    ref_counts = torch.bincount(real["shape"], minlength=len(scenes.SHAPES)).double() / real["shape"].numel()
    rows["shape"] = {"generated": dict(zip(scenes.SHAPES, gen_counts.tolist())),
                     "real": dict(zip(scenes.SHAPES, ref_counts.tolist())),
                     "overlap": float(torch.minimum(gen_counts, ref_counts).sum())}
    return rows


@torch.no_grad()
def features_and_factors(reader: FactorReader, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    features = torch.cat([reader.features(chunk) for chunk in images.split(250)])
    return features, reader.read(images)


@torch.no_grad()
def measure(generator, reader: FactorReader, n: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    z = generator.sample(n, seed=0)
    generated = torch.cat([generator.synthesize(chunk).float().cpu() for chunk in z.split(250)])
    real_a, _ = scenes.render_scenes(n, seed=REAL_SEEDS[0])
    real_b, _ = scenes.render_scenes(n, seed=REAL_SEEDS[1])
    side = generated.shape[-1]
    if side != scenes.RESOLUTION:  # a 32 px generator: real scenes at its size (area), all read at 64 px
        def as_read(images: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.interpolate(images, size=scenes.RESOLUTION, mode="bilinear",
                                                   align_corners=False, antialias=True)

        real_a, real_b = (torch.nn.functional.adaptive_avg_pool2d(r, side) for r in (real_a, real_b))
        generated, real_a, real_b = as_read(generated.clamp(-1, 1)), as_read(real_a), as_read(real_b)
    feat_g, read_g = features_and_factors(reader, generated)
    feat_a, read_a = features_and_factors(reader, real_a)
    feat_b, _ = features_and_factors(reader, real_b)
    result = {"n": n, "generator": generator.spec, "fingerprint": generator.fingerprint(),
              "frechet_generated_vs_real": frechet_distance(feat_g, feat_a),
              "frechet_real_vs_real": frechet_distance(feat_b, feat_a),
              "factors": compare(read_g, read_a),
              "real_vs_real_factors": compare(features_and_factors(reader, real_b)[1], read_a)}
    return result, generated, real_a


def markdown(result: dict) -> str:
    lines = [f"n = {result['n']} per set; generator {result['generator']} ({result['fingerprint'][:19]}…)", "",
             "| factor | generated mean ± std | real mean ± std | KS | histogram overlap | KS real vs real |",
             "|---|---|---|---|---|---|"]
    for name in CONTINUOUS:
        row, floor = result["factors"][name], result["real_vs_real_factors"][name]
        lines.append(f"| {name} | {row['generated_mean']:.3f} ± {row['generated_std']:.3f} | "
                     f"{row['real_mean']:.3f} ± {row['real_std']:.3f} | {row['ks']:.3f} | {row['overlap']:.3f} | "
                     f"{floor['ks']:.3f} |")
    shape = result["factors"]["shape"]
    shares = lambda d: " / ".join(f"{d[s]:.2f}" for s in scenes.SHAPES)  # noqa: E731
    lines.append(f"| shape ({' / '.join(scenes.SHAPES)}) | {shares(shape['generated'])} | {shares(shape['real'])} "
                 f"| – | {shape['overlap']:.3f} | – |")
    lines += ["", f"Fréchet distance in the reader's features: generated vs real "
                  f"**{result['frechet_generated_vs_real']:.3f}**, real vs real {result['frechet_real_vs_real']:.3f}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="shapes-dcgan", help="a generator spec, or a .safetensors DCGAN file")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--out", default="out/quality")
    parser.add_argument("--grids", default=None, help="folder for the sample grids (e.g. docs/img)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    generator = load(args.generator)
    reader = load_factor_reader()
    result, generated, real = measure(generator, reader, args.n)
    out = Path(args.out)
    write_text_atomic(out / "quality.json", json.dumps(result, indent=2) + "\n")
    write_text_atomic(out / "quality.md", markdown(result))
    print(markdown(result))
    if args.grids:
        name = Path(args.generator).stem if args.generator.endswith(".safetensors") else args.generator
        save_sample_grid(generated[:64], Path(args.grids) / f"testbed-{name}-samples.png")
        save_sample_grid(real[:64], Path(args.grids) / "testbed-renderer-samples.png")


def load(spec: str):
    """A generator spec through the registry, or a training export (``.safetensors``): a StyleGAN2 one (its
    metadata says ``latentdirs-stylegan2``) as shapes-stylegan2 reads it, anything else as a DCGAN."""
    if spec.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(spec, "pt") as handle:
            stylegan2 = (handle.metadata() or {}).get("format") == "latentdirs-stylegan2"
        if stylegan2:
            from latentdirs.generators.shapes_stylegan2 import ShapesStyleGAN2Adapter
            from latentdirs.generators.stylegan2.loaders import read_checkpoint

            config, state, source_format = read_checkpoint(Path(spec))
            return ShapesStyleGAN2Adapter(config, state, spec="shapes-stylegan2", source_format=source_format,
                                          device="cpu")
        from latentdirs.generators.shapes import ShapesDCGANAdapter, _read_state

        return ShapesDCGANAdapter(spec="shapes-dcgan", state=_read_state(Path(spec)), device="cpu")
    if spec == "shapes-dcgan":
        from latentdirs.generators.shapes import load_shapes_dcgan

        return load_shapes_dcgan(device="cpu")  # works before the registry lists the family
    import latentdirs

    return latentdirs.load_generator(spec, device="cpu")


if __name__ == "__main__":
    main()
