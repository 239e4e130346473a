"""Calibrated discovery: transforms, measurement, inversion, monotone regression, --amounts, measure."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import latentdirs
from latentdirs.calibration import calibrated_steps
from latentdirs.directions import Directions
from latentdirs.errors import InvalidValueError, UnknownNameError
from latentdirs.inversion import TrajectoryData, invert_images
from latentdirs.measure import measure_amounts
from latentdirs.transforms import Transform, get_transform, list_transforms, register_transform
from tests.conftest import invoke


@pytest.mark.parametrize("name, amounts, span", [
    ("shift-x", [-0.15, -0.05, 0.0, 0.05, 0.1, 0.2], 0.3), ("shift-y", [0.1, -0.1, 0.0, 0.2, 0.05, -0.2], 0.3),
    ("zoom", [0.1, 0.2, -0.1, 0.0, 0.05, 0.15], 0.3), ("brightness", [0.1, -0.2, 0.0, 0.3, 0.05, -0.05], 0.5),
    ("rotation", [10.0, -5.0, 0.0, 15.0, 20.0, -20.0], 30.0)])
def test_measurement_recovers_known_transforms_of_real_images(faces, name, amounts, span):
    with torch.no_grad():
        images = faces.synthesize(faces.sample(6, seed=0))
    truth = torch.tensor(amounts)
    transformed, _ = get_transform(name).apply(images, truth)
    measured = measure_amounts(images, transformed, name, low=-span, high=span)
    tolerance = 0.05 if name == "rotation" else 1e-3  # degrees, or fractions (1e-3 of 64 px = 0.06 px)
    assert (measured - truth).abs().max() < tolerance, (measured, truth)


def test_measurement_in_chunks_equals_one_image_at_a_time(faces):
    # 40 images of 64 px against 81 candidates: measured in chunks of 16 (bounded memory at any size)
    with torch.no_grad():
        images = faces.synthesize(faces.sample(40, seed=1))
    truth = torch.linspace(-0.2, 0.2, 40)
    shifted, _ = get_transform("shift-x").apply(images, truth)
    together = measure_amounts(images, shifted, "shift-x", low=-0.3, high=0.3)
    alone = torch.cat([measure_amounts(images[i:i + 1], shifted[i:i + 1], "shift-x", low=-0.3, high=0.3)
                       for i in range(40)])
    assert torch.equal(together, alone) and (together - truth).abs().max() < 1e-3


def test_masks_mark_undefined_pixels():
    images = torch.zeros(1, 3, 8, 8)
    moved, mask = get_transform("shift-x").apply(images, torch.tensor([0.25]))
    assert mask[0, 0, :, :2].sum() == 0 and mask[0, 0, :, 3:].min() == 1  # 2 px shifted in from the left
    _, mask = get_transform("brightness").apply(images, torch.tensor([0.3]))
    assert mask.min() == 1


def test_transform_registry_is_extensible():
    def invert(images, amounts):
        return images * (1 - 2 * amounts.view(-1, 1, 1, 1)), torch.ones_like(images[:, :1])

    register_transform(Transform("invert", invert, "fraction", (0.1, 0.2), "negative"))
    assert "invert" in list_transforms() and get_transform("invert").units == "fraction"
    with pytest.raises(UnknownNameError, match="transform: got 'swirl'; allowed: shift-x"):
        get_transform("swirl")


def test_inversion_recovers_a_known_latent(synthetic):
    truth = synthetic.sample(4, seed=3)
    with torch.no_grad():
        targets = synthetic.synthesize(truth)
    start = truth + 0.5 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    found, error = invert_images(synthetic, targets, torch.ones_like(targets[:, :1]), start, iterations=200, lr=0.05)
    # only the five factor coordinates are identifiable (the other eleven are inert by construction)
    recovered = synthetic.network.factor_values(found) - synthetic.network.factor_values(truth)
    assert recovered.abs().max() < 0.05 and error.max() < 1e-4


def test_shift_direction_aligns_and_edits_are_calibrated(calibrated):
    synthetic, directions, _, _ = calibrated
    assert (directions.vectors[0] @ synthetic.true_directions["x"]).abs() >= 0.95  # measured 0.997
    assert directions.meta["calibration"]["transform"] == "shift-x"
    latents = synthetic.sample(20, seed=99)
    errors = []
    for amount in (-0.2, -0.1, 0.0, 0.1, 0.2):
        with warnings.catch_warnings():  # seeds near the edge are clamped to their range, on purpose
            warnings.simplefilter("ignore")
            alphas = calibrated_steps(latents, directions.vectors[0], directions.calibration["knots_x"],
                                      directions.calibration["knots_y"], torch.full((20,), amount), clamp=True)
        moved = synthetic.factor_properties(latents + alphas.unsqueeze(1) * directions.vectors[0])["x"]
        achieved_px = (moved - synthetic.factor_properties(latents)["x"]) * 64
        errors.append((achieved_px - amount * 64).abs().mean())
    assert torch.stack(errors).mean() < 1.0, errors  # measured 0.61 px mean over ±20 % of the width


def test_calibrated_steps_invert_a_known_map():
    vector = torch.tensor([1.0, 0.0])
    knots_x, knots_y = torch.tensor([-2.0, 0.0, 2.0]), torch.tensor([-1.0, 0.0, 3.0])  # slopes 0.5 and 1.5
    latents = torch.tensor([[-1.0, 5.0], [1.0, -5.0]])
    # g(-1) = -0.5: +1.5 → g = 1 → s* = 2/3 (across the kink); g(1) = 1.5: -2 → g = -0.5 → s* = -1
    steps = calibrated_steps(latents, vector, knots_x, knots_y, torch.tensor([1.5, -2.0]))
    torch.testing.assert_close(steps, torch.tensor([1.0 + 2 / 3, -2.0]))
    with pytest.raises(InvalidValueError, match="calibrated range \\[-1, 3\\]"):
        calibrated_steps(latents, vector, knots_x, knots_y, torch.tensor([4.0, 0.0]))
    with pytest.warns(UserWarning, match="clamped"):
        clamped = calibrated_steps(latents, vector, knots_x, knots_y, torch.tensor([4.0, 0.0]), clamp=True)
    assert clamped[0] == pytest.approx(3.0)


def test_fit_promises_nothing_outside_the_measured_coordinates():
    from latentdirs.calibration import fit_monotone, interpolate

    # δ = 0.1·(s_T − s_0) along the first axis, measured only for coordinates s in [-1, 1]
    draws = torch.Generator().manual_seed(0)
    z0 = torch.rand(400, 3, generator=draws) * 1.6 - 0.8
    zt = z0.clone()
    zt[:, 0] = (z0[:, 0] + torch.rand(400, generator=draws) * 0.4 - 0.2).clamp(-1, 1)
    fit = fit_monotone(z0, zt, 0.1 * (zt[:, 0] - z0[:, 0]), dim=3, init=torch.tensor([2.5, 0.0, 0.0]), slope=0.04,
                       learn_vector=False, epochs=60)
    g = lambda s: interpolate(torch.tensor([s]), fit["knots_x"], fit["knots_y"]).item()  # noqa: E731
    assert torch.equal(fit["vector"], torch.tensor([1.0, 0.0, 0.0]))  # v kept
    assert g(0.5) - g(-0.5) == pytest.approx(0.1, abs=0.01)  # the measured slope
    assert g(1.7) == g(1.0) and g(-1.7) == g(-1.0)  # saturated beyond the data: no unmeasured promises
    assert fit["knots_y"][-1] - fit["knots_y"][0] == pytest.approx(0.2, abs=0.02)


def test_dataset_reuse(calibrated, tmp_path):
    synthetic, directions, _, dataset = calibrated
    again = latentdirs.discover(synthetic, "regression", transform="shift-x", dataset=dataset)
    torch.testing.assert_close(again.vectors, directions.vectors)
    assert TrajectoryData.load(dataset).transform == "shift-x"
    with pytest.raises(InvalidValueError, match="trajectories of 'zoom'"):
        latentdirs.discover(synthetic, "regression", transform="zoom", dataset=dataset)


def test_cli_amounts_measure_and_refusals(calibrated, tmp_path, cli_runner, synthetic_sefa):
    _, _, path, _ = calibrated
    result = invoke(cli_runner, "edit", path, "--amounts", "-0.1,0,0.1", "--seeds", "0-1", "--device", "cpu",
                    "-o", tmp_path / "e")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert manifest["amounts"] == [-0.1, 0.0, 0.1] and manifest["calibration"]["transform"] == "shift-x"
    assert invoke(cli_runner, "edit", path, "--alphas", "-1,1", "--seeds", "0", "-o", tmp_path / "a").exit_code == 0
    both = invoke(cli_runner, "edit", path, "--alphas", "1", "--amounts", "0.1", "-o", tmp_path / "b")
    assert both.exit_code == 2 and "exclude each other" in both.output
    far = invoke(cli_runner, "edit", path, "--amounts", "0.9", "--seeds", "0", "-o", tmp_path / "c")
    assert far.exit_code == 1 and "calibrated range" in far.output and "--clamp-amounts" in far.output
    plain = tmp_path / "sefa.safetensors"
    synthetic_sefa.save(plain)
    refused = invoke(cli_runner, "edit", plain, "--amounts", "0.1", "-o", tmp_path / "d")
    assert refused.exit_code == 1 and "not calibrated" in refused.output
    measured = invoke(cli_runner, "measure", path, "--seeds", "0-7", "--amounts", "-0.1,0.1", "--json",
                      "--plot", tmp_path / "m.png")
    assert measured.exit_code == 0, measured.output
    rows = json.loads(measured.output)
    assert [r["requested"] for r in rows] == pytest.approx([-0.1, 0.1])
    assert all(abs(r["mean"] - r["requested"]) < 0.01 for r in rows)  # within 0.64 px at 64 px
    assert (tmp_path / "m.png").stat().st_size > 1000


def test_cli_transform_option_and_transform_list(tmp_path, cli_runner):
    listed = invoke(cli_runner, "list", "transforms")
    assert listed.exit_code == 0 and all(name in listed.output for name in list_transforms())
    out = tmp_path / "zoom.safetensors"
    made = invoke(cli_runner, "discover", "synthetic", "-m", "regression", "--transform", "zoom", "--opt", "samples=4",
                  "--opt", "iterations=5", "--opt", "epochs=5", "--opt", "amounts=[0.1]", "--opt", "recalibrate=4", "--device", "cpu", "-o", out)
    assert made.exit_code == 0, made.output
    header = Directions.load(out).meta
    assert header["calibration"]["transform"] == "zoom" and header["method"]["options"]["recalibrated"] is True
    negative = invoke(cli_runner, "discover", "synthetic", "-m", "regression", "--opt", "recalibrate=-1", "-o", out)
    assert negative.exit_code == 1 and "recalibrate: got -1" in negative.output
    wrong = invoke(cli_runner, "discover", "synthetic", "-m", "sefa", "--transform", "zoom", "-o", tmp_path / "s.safetensors")
    assert wrong.exit_code == 1 and "'transform'" in wrong.output and "allowed: num_directions" in wrong.output
