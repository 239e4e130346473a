"""training/measure_quality.py: a training export judged as the shipped generator is, at its own size."""

from __future__ import annotations

from pathlib import Path

from latentdirs import scenes

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


def test_a_stylegan2_export_is_measured_at_32_px_and_a_dcgan_export_at_64():
    from latentdirs.factor_reader import load_factor_reader
    from latentdirs.generators.shapes_stylegan2 import ShapesStyleGAN2Adapter
    from training.measure_quality import REAL_SEEDS, load, measure

    stylegan2 = load(str(CHECKPOINTS / "shapes-stylegan2.safetensors"))
    assert isinstance(stylegan2, ShapesStyleGAN2Adapter) and stylegan2.resolution == 32
    assert load(str(CHECKPOINTS / "shapes-dcgan.safetensors")).resolution == 64
    reader = load_factor_reader()
    result, generated, real = measure(stylegan2, reader, 300)
    # both sets are read at 64 px, the real scenes after being brought down to the generator's 32 px: the
    # reader then tells their shapes apart less well than on the 64 px renders (docs/testbed.md: 84 %)
    raw, truth = scenes.render_scenes(300, seed=REAL_SEEDS[0])
    assert generated.shape == real.shape == raw.shape
    at_64 = float((reader.read(raw)["shape"] == truth["shape"]).float().mean())
    at_32 = float((reader.read(real)["shape"] == truth["shape"]).float().mean())
    assert at_64 > 0.98 and 0.6 < at_32 < at_64 - 0.05
    assert result["frechet_real_vs_real"] < 0.1 * result["frechet_generated_vs_real"]
