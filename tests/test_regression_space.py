"""Plumerault's regression in StyleGAN2's w (the shipped shapes-stylegan2 weights), and the closed loop's
measurement offsets. A few samples and iterations: these tests check what the file *is* and that it
edits in w, not how well it is calibrated (docs/testbed.md measures that)."""

from __future__ import annotations

import warnings

import pytest
import torch

import latentdirs
from latentdirs.calibration import calibrated_steps, interpolate
from latentdirs.errors import InvalidValueError
from latentdirs.inversion import TrajectoryData
from latentdirs.measure import measure_amounts, render_batches
from latentdirs.methods.regression import _Frame, consistent, recalibration_offsets
from latentdirs.plan import EditPlan
from tests.conftest import invoke

SMALL = {"samples": 4, "iterations": 10, "recalibrate": 6, "epochs": 20}


@pytest.fixture(scope="module")
def sg2():
    return latentdirs.load_generator("shapes-stylegan2", device="cpu")


@pytest.fixture(scope="module")
def in_w(sg2, tmp_path_factory):
    """A shift-x direction of shapes-stylegan2 found by inversion in w, its file and its trajectories."""
    folder = tmp_path_factory.mktemp("regression-w")
    directions = latentdirs.discover(sg2, "regression", transform="shift-x", space="w",
                                     save_dataset=folder / "w.trajectories", **SMALL)
    return directions, directions.save(folder / "w.safetensors"), folder / "w.trajectories"


def test_the_file_and_its_trajectories_are_in_w(sg2, in_w):
    directions, path, dataset = in_w
    loaded = latentdirs.Directions.load(path, generator=sg2)
    assert loaded.space == "w" and loaded.meta["method"]["options"]["space"] == "w"
    assert loaded.meta["method"]["options"]["recalibrated"] is True
    data = TrajectoryData.load(dataset)
    assert data.space == "w" and data.z0.shape[1] == sg2.space("w").dim
    # the starts are the w of sampled z (the generator's own mapping), not z: near w_avg, not 0
    w_avg = sg2.network.mapping.w_avg.float().cpu()
    assert (data.z0 - w_avg).norm(dim=1).mean() < data.z0.norm(dim=1).mean()
    knots_y = loaded.calibration["knots_y"]
    assert bool((knots_y[1:] >= knots_y[:-1]).all()) and float(knots_y[-1] - knots_y[0]) > 0.02  # monotone, not flat


def test_calibrated_edits_are_applied_in_w_and_move_the_object(sg2, in_w):
    directions, _, _ = in_w
    low, high = directions.meta["calibration"]["range"]
    amount = 0.5 * min(-low, high)  # inside every seed's range for most seeds; clamped otherwise
    seeds = [0, 1, 2, 3]
    # the same edit by hand in w: w = mapping(z), w' = w + α·v with α from the stored calibration
    w = sg2.sample_seeds(seeds, space="w").repeat_interleave(2, dim=0)
    requests = torch.tensor([-amount, amount]).repeat(len(seeds))
    plan = EditPlan.build(sg2, directions, seeds=seeds, indices=[0], amounts=[-amount, amount], clamp_amounts=True)
    with warnings.catch_warnings():  # a seed whose range is narrower is clamped, with a warning: allowed here
        warnings.simplefilter("ignore")
        images = torch.cat([b.images for b in render_batches(sg2, directions, plan, 8)])
        alphas = calibrated_steps(w, directions.vectors[0], directions.calibration["knots_x"],
                                  directions.calibration["knots_y"], requests, clamp=True)
    with torch.no_grad():
        by_hand = sg2.synthesize(w + alphas.unsqueeze(1) * directions.vectors[0], space="w")
        sources = sg2.synthesize(w, space="w")
    torch.testing.assert_close(images, by_hand, atol=1e-4, rtol=0)
    assert (images - sources).abs().mean() > 1e-3  # the edit changes the image
    achieved = measure_amounts(sources, images, "shift-x", low=-0.4, high=0.4, steps=41)
    assert float(achieved[1::2].mean()) > float(achieved[0::2].mean())  # +amount moves right of −amount


def test_spaces_and_datasets_are_refused_in_one_line(sg2, synthetic, in_w):
    _, _, dataset = in_w
    with pytest.raises(InvalidValueError, match=r"space: got 'w\+'; allowed: 'z' or 'w'"):
        latentdirs.discover(sg2, "regression", space="w+", **SMALL)
    with pytest.raises(InvalidValueError, match=r"space: got 'w'; allowed: a flat space of synthetic \(z\)"):
        latentdirs.discover(synthetic, "regression", space="w", **SMALL)
    with pytest.raises(InvalidValueError, match=r"trajectories in 'z'.*latents of 'w'"):
        latentdirs.discover(sg2, "regression", transform="shift-x", dataset=dataset, **SMALL)


def test_cli_discovers_in_w(tmp_path, cli_runner):
    out = tmp_path / "w.safetensors"
    made = invoke(cli_runner, "discover", "shapes-stylegan2", "-m", "regression", "--transform", "shift-y",
                  "--opt", "space=w", "--opt", "samples=2", "--opt", "iterations=3", "--opt", "epochs=3",
                  "--opt", "amounts=[0.1]", "--opt", "recalibrate=2", "--device", "cpu", "-o", out)
    assert made.exit_code == 0, made.output
    assert latentdirs.Directions.load(out).space == "w"
    measured = invoke(cli_runner, "measure", out, "--seeds", "0-1", "--amounts", "-0.01,0.01", "--clamp-amounts",
                      "--json", "--device", "cpu")
    assert measured.exit_code == 0, measured.output
    refused = invoke(cli_runner, "discover", "shapes-stylegan2", "-m", "regression", "--opt", "space=w+",
                     "--device", "cpu", "-o", out)
    assert refused.exit_code == 1 and "space: got 'w+'" in refused.output


def test_knots_move_to_the_coordinates_of_w():
    # g fitted in prior units u = (w − c)/s must give the same amounts at ⟨v, w⟩ with the stored knots
    frame = _Frame("w", torch.tensor([3.0, -1.0, 0.5]), 0.8)
    vector = torch.nn.functional.normalize(torch.tensor([1.0, 2.0, -0.5]), dim=0)
    knots_u, knots_y = torch.linspace(-5, 5, 11), torch.linspace(-5, 5, 11).tanh()
    w = torch.randn(20, 3, generator=torch.Generator().manual_seed(0)) + frame.centre
    torch.testing.assert_close(interpolate(w @ vector, frame.outward_knots(knots_u, vector), knots_y),
                               interpolate(frame.inward(w) @ vector, knots_u, knots_y))
    torch.testing.assert_close(frame.outward(frame.inward(w)), w)


def test_recalibration_offsets_reach_small_strengths():
    steps = recalibration_offsets(4.0)
    assert steps.numel() == 10 and torch.equal(steps, -steps.flip(0)) and bool((steps[1:] > steps[:-1]).all())
    magnitudes = steps[5:]
    assert magnitudes[0] == pytest.approx(0.25) and magnitudes[-1] == pytest.approx(6.0)  # reach/16 … 1.5·reach
    ratios = magnitudes[1:] / magnitudes[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, float(ratios[0])))  # geometric


def test_inconsistent_registrations_are_dropped():
    steps = torch.tensor([-2.0, -1.0, 1.0, 2.0, 2.0, -1.0, 1.0])
    deltas = torch.tensor([-0.2, -0.1, 0.1, 0.37, -0.15, 0.002, -0.003])  # span 0.375
    kept = consistent(steps, deltas, 0.375)
    # at the search edge (0.37) and clearly of the wrong sign (−0.15 for +2) dropped; noise-sized kept
    assert kept.tolist() == [True, True, True, False, False, True, True]


def test_step_gain_reads_the_shift_per_step_and_its_spread(sg2, in_w):
    """training/step_gain.py: the factor change per unit step along the file's direction, per w+ rows.
    The shift-x direction moves x the same way on average (positive gain at every step); applied only to
    the finest rows (6-7: colour, docs/testbed.md) it moves x far less than on every row."""
    from training.step_gain import step_gains

    directions, _, _ = in_w
    every = step_gains(sg2, directions, latents=12, steps=[2.0], inside=0.25, rows=None)
    fine = step_gains(sg2, directions, latents=12, steps=[2.0], inside=0.25, rows=[6, 7])
    assert every["steps"] == [-2.0, 2.0] and every["latents"] == fine["latents"] > 3
    assert all(gain > 0 for gain in every["mean_gain"]) and all(cv >= 0 for cv in every["cv"])
    assert max(abs(g) for g in fine["mean_gain"]) < 0.5 * min(every["mean_gain"])


def test_corrected_amounts_land_nearer_the_request_on_the_learned_generator(sg2, in_w, tmp_path, cli_runner):
    """edit --correct-amounts on shapes-stylegan2 in w: each image's step is rescaled until registration
    reads the request, so the edits' registration error falls below the calibrated steps' (docs/testbed.md
    measures it with the factor reader over 16 seeds); the manifest records the flag and the steps used."""
    import json

    directions, path, _ = in_w
    low, high = directions.meta["calibration"]["range"]
    amount = 0.25 * min(-low, high)  # small enough for most seeds' ranges: clamped requests are not corrected
    seeds, amounts = [0, 1, 2, 3, 4, 5], [-amount, amount]
    errors = {}
    for correct in (False, True):
        plan = EditPlan.build(sg2, directions, seeds=seeds, indices=[0], amounts=amounts, clamp_amounts=True,
                              correct_amounts=correct)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batches = render_batches(sg2, directions, plan, 12)
            sources = render_batches(sg2, directions, EditPlan.build(sg2, directions, seeds=seeds, indices=[0],
                                                                     alphas=[0.0]), 12)[0].images
        images = torch.cat([b.images for b in batches])
        items = [item for b in batches for item in b.items]
        requested = torch.tensor([item.value for item in items])
        free = torch.tensor([not item.clamped for item in items])
        achieved = measure_amounts(sources.repeat_interleave(2, dim=0), images, "shift-x", low=-1.5 * amount,
                                   high=1.5 * amount, steps=121)
        errors[correct] = float((achieved - requested)[free].abs().mean())
    assert int(free.sum()) >= 8 and errors[True] < 0.5 * errors[False]
    out = tmp_path / "edits"
    made = invoke(cli_runner, "edit", path, "--seeds", "0-1", "--amounts", f"{-amount},{amount}", "--clamp-amounts",
                  "--correct-amounts", "--no-strips", "--device", "cpu", "-o", out)
    assert made.exit_code == 0, made.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["correct_amounts"] == "registration" and "--correct-amounts registration" in manifest["command"]
    by_saliency = invoke(cli_runner, "edit", path, "--seeds", "0-1", "--amounts", f"{-amount},{amount}",
                         "--clamp-amounts", "--correct-amounts", "saliency", "--no-strips", "--device", "cpu",
                         "-o", tmp_path / "saliency")
    assert by_saliency.exit_code == 0, by_saliency.output
    assert json.loads((tmp_path / "saliency" / "manifest.json").read_text())["correct_amounts"] == "saliency"
    refused = invoke(cli_runner, "edit", path, "--seeds", "0", "--alphas", "1", "--correct-amounts", "--device",
                     "cpu", "-o", tmp_path / "refused")
    assert refused.exit_code == 1
    assert "--correct-amounts: got 'registration'; allowed: only with amounts" in refused.output
    unknown = invoke(cli_runner, "edit", path, "--seeds", "0", "--amounts", "0.01", "--correct-amounts", "centroid",
                     "--device", "cpu", "-o", tmp_path / "unknown")
    assert unknown.exit_code == 2 and "'centroid' is not one of 'registration', 'saliency'" in unknown.output
