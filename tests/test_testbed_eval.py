"""Ground truth on the testbed: the direction × factor matrix, its scores, read_factors, and calibrated
shifts measured by the factor reader."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from latentdirs import scenes
from latentdirs.directions import Directions
from latentdirs.errors import InvalidValueError, LatentDirsError, NotSupportedError
from latentdirs.evaluation import evaluate
from latentdirs.evaluation.factors import disentanglement, effect_matrix, factor_changes
from latentdirs.evaluation.vp import random_basis
from latentdirs.factor_reader import scene_factor_reader
from latentdirs.generators.base import GeneratorAdapter, LatentSpace
from latentdirs.generators.shapes import load_shapes_dcgan
from latentdirs.generators.synthetic import SyntheticAdapter
from latentdirs.measure import measure_calibration_by, read_amounts

#: the continuous factors the scene adapter below puts on its z axes, one axis each
AXES = ("x", "y", "scale", "hue", "background")


class SceneAdapter(GeneratorAdapter):
    """A generator whose z axes *are* the renderer's factors: axis i moves factor AXES[i] only (a known
    answer that goes through real images and the real factor reader). Squares at rotation 0.3 rad."""

    family = "test-scenes"

    def __init__(self) -> None:
        super().__init__(spec="test-scenes", network=nn.Identity(), spaces=[LatentSpace("z", len(AXES))],
                         resolution=64, device="cpu")
        self._scene_factors = scene_factor_reader("cpu")

    def _synthesize(self, latents, space, classes, truncation):
        factors = {"rotation": 0.3, "shape": 0}
        for axis, name in enumerate(AXES):  # tanh keeps every latent inside the data's range
            low, high = scenes.FACTOR_RANGES[name]
            factors[name] = (low + high) / 2 + 0.4 * (high - low) * torch.tanh(latents[:, axis] / 2)
        return scenes.render_factors(factors)

    def read_factors(self, images):
        return self._scene_factors(images)


@pytest.fixture(scope="module")
def shapes():
    return load_shapes_dcgan(device="cpu")


def test_synthetic_true_directions_give_the_identity_matrix():
    synthetic = SyntheticAdapter(device="cpu")
    truth = torch.stack(list(synthetic.true_directions.values()))
    result = effect_matrix(synthetic, truth)
    assert result["source"] == "true_directions" and result["factors"] == list(synthetic.true_directions)
    assert torch.allclose(torch.tensor(result["matrix"]), torch.eye(len(truth)), atol=1e-5)
    assert result["modularity"] > 0.999 and result["mig"] > 0.999 and result["completeness_mean"] > 0.999
    assert result["best"] == list(range(len(truth)))


def test_read_matrix_of_known_scene_axes_is_diagonal_and_a_random_basis_scores_low():
    scene = SceneAdapter()
    truth = effect_matrix(scene, torch.eye(len(AXES)), samples=24, step=0.25)
    matrix = torch.tensor(truth["matrix"])
    columns = [truth["factors"].index(name) for name in AXES]
    diagonal = matrix[:, columns].diagonal()
    # each axis moves its own factor most, by far: the reader sees what the renderer drew
    assert all(int(matrix[:, c].argmax()) == i for i, c in enumerate(columns))
    assert float(diagonal.min()) > 3 * float(matrix[:, columns].fill_diagonal_(0).max())
    assert truth["modularity"] > 0.3  # reader noise on the five other factors: entropy is strict
    rotated = effect_matrix(scene, random_basis(len(AXES), len(AXES), seed=3), samples=24, step=0.25)
    assert rotated["modularity"] < truth["modularity"] - 0.1 and rotated["mig"] < truth["mig"]


def test_random_basis_on_synthetic_scores_low():
    synthetic = SyntheticAdapter(device="cpu")
    result = effect_matrix(synthetic, random_basis(5, synthetic.z_dim, seed=1))
    assert result["modularity"] < 0.4 and result["mig"] < 0.5


def test_scores_of_hand_made_matrices():
    pure = disentanglement(torch.tensor([[2.0, 0, 0], [0, 1.0, 0]]))
    assert pure["purity"] == [pytest.approx(1.0), pytest.approx(1.0)] and pure["modularity"] == pytest.approx(1.0)
    assert pure["gap"] == [pytest.approx(1.0), pytest.approx(1.0), 0.0]  # factor 3 moved by nobody: gap 0
    flat = disentanglement(torch.ones(2, 3))
    assert flat["modularity"] == pytest.approx(0.0, abs=1e-9) and flat["mig"] == pytest.approx(0.0)
    inert = disentanglement(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    assert inert["purity"][0] is None and inert["modularity"] == pytest.approx(0.0, abs=1e-9)
    single = disentanglement(torch.tensor([[1.0, 0.0]]))
    assert single["mig"] is None and single["modularity"] == pytest.approx(1.0)


def test_factor_changes_wrap_circular_factors():
    before = {"hue": torch.tensor([0.95]), "rotation": torch.tensor([0.1]), "shape": torch.tensor([0]),
              "shape_probability": torch.tensor([[1.0, 0, 0, 0]])}
    after = {"hue": torch.tensor([0.05]), "rotation": torch.tensor([math.pi / 2 - 0.1]), "shape": torch.tensor([0]),
             "shape_probability": torch.tensor([[0.5, 0.5, 0, 0]])}
    changes = factor_changes(before, after)
    assert changes["hue"].item() == pytest.approx(0.1, abs=1e-6)
    # a square repeats every 90°: from 0.1 rad to 90° − 0.1 rad is −0.2 rad, −0.2/(π/2) of its period
    assert changes["rotation"].item() == pytest.approx(-0.2 / (math.pi / 2), abs=1e-5)
    assert changes["shape"].item() == pytest.approx(0.5)


def test_read_factors_hook_shapes_and_default(shapes):
    images = shapes.synthesize(shapes.sample(6, seed=2))
    read = shapes.read_factors(images)
    assert all(read[name].shape == (6,) for name in ("x", "y", "scale", "rotation", "hue", "background", "shape"))
    assert read["shape_probability"].shape == (6, 4)
    assert SyntheticAdapter(device="cpu").read_factors(images) is None  # the base hook's default
    small = scene_factor_reader()(torch.nn.functional.interpolate(images, size=32, mode="area"))
    assert float((small["x"] - read["x"]).abs().max()) < 0.05  # a 32 px image reads in the same units
    with pytest.raises(InvalidValueError, match=r"images: got \(6, 3, 64, 32\)"):
        shapes.read_factors(images[..., :32])


def test_read_amounts_measures_known_shifts_and_zooms_of_rendered_scenes(shapes):
    factors = scenes.sample_factors(16, seed=5)
    factors["x"] = factors["x"].clamp(-0.25, 0.15)
    factors["scale"] = factors["scale"].clamp(0.09, 0.13)
    images = scenes.render_factors(factors)
    shifted = scenes.render_factors({**factors, "x": factors["x"] + 0.1})
    zoomed = scenes.render_factors({**factors, "scale": factors["scale"] * 1.2})
    assert float((read_amounts(shapes, images, shifted, "shift-x") - 0.1).abs().mean()) < 0.01  # 0.6 px
    assert float((read_amounts(shapes, images, zoomed, "zoom") - 0.2).abs().mean()) < 0.04
    with pytest.raises(InvalidValueError, match="transform: got 'rotation'"):
        read_amounts(shapes, images, shifted, "rotation")


def _calibrated(generator, vector: torch.Tensor) -> Directions:
    knots_x = torch.linspace(-5, 5, 11)
    return Directions.from_method(vector.unsqueeze(0), None, generator=generator, method="regression",
                                  options={}, space="z", calibration={"knots_x": knots_x, "knots_y": 0.05 * knots_x},
                                  calibration_meta={"kind": "monotone-piecewise-linear", "transform": "shift-x",
                                                    "factor": "horizontal position", "units": "fraction of width",
                                                    "range": [-0.25, 0.25]})


def test_measure_by_factor_reader_on_shapes_dcgan(shapes):
    vector = torch.nn.functional.normalize(torch.randn(shapes.z_dim, generator=torch.Generator().manual_seed(0)), dim=0)
    directions = _calibrated(shapes, vector)
    tables = measure_calibration_by(shapes, directions, seeds=[0, 1, 2], amounts=[-0.1, 0.0, 0.1], clamp=True)
    assert set(tables) == {"registration", "factors", "saliency"}
    for rows in tables.values():
        assert [r.requested for r in rows] == pytest.approx([-0.1, 0.0, 0.1])
        assert all(r.count == 3 and len(r.values) == 3 and r.seeds == [0, 1, 2] for r in rows)
        assert all(math.isfinite(r.abs_error) for r in rows)


def test_a_generator_without_factors_gets_one_clear_line(tmp_path):
    from latentdirs.registry import load_generator

    faces = load_generator("dcgan-faces", device="cpu")
    with pytest.raises(NotSupportedError) as raised:
        effect_matrix(faces, random_basis(2, faces.z_dim, seed=0))
    assert "\n" not in str(raised.value) and "read_factors" in str(raised.value)
    path = tmp_path / "faces.safetensors"
    Directions.from_method(random_basis(2, faces.z_dim, seed=0), None, generator=faces, method="random",
                           options={}, space="z").save(path)
    results = evaluate([path], factors="yes", pairs=50, epochs=1, vp_seeds=1, top=2)
    assert not results["generators"] and len(results["errors"]) == 1
    assert "read_factors" in results["errors"][0]["error"] and "\n" not in results["errors"][0]["error"]
    directions = _calibrated(faces, random_basis(1, faces.z_dim, seed=0)[0])
    with pytest.raises(LatentDirsError, match="generator: got 'dcgan-faces'"):
        measure_calibration_by(faces, directions, seeds=[0], amounts=[0.1], ways=("factors",))


def test_evaluate_reports_the_matrix_on_shapes_dcgan(tmp_path, shapes):
    path = tmp_path / "shapes-random.safetensors"
    Directions.from_method(random_basis(2, shapes.z_dim, seed=0), None, generator=shapes, method="random",
                           options={}, space="z").save(path)
    results = evaluate([path], pairs=50, epochs=1, vp_seeds=1, top=2, factor_samples=8)
    item = results["generators"]["shapes-dcgan"][0]
    matrix = item["factor_matrix"]
    assert matrix["source"] == "read_factors" and len(matrix["matrix"]) == 2 and len(matrix["factors"]) == 7
    from latentdirs.evaluation.report import markdown

    assert "modularity (DCI-style)" in markdown(results)


def test_cli_measure_by_both_with_seeds_and_evaluate_refuses_factors_where_none(tmp_path, cli_runner, shapes):
    from tests.conftest import invoke

    path = tmp_path / "shift.safetensors"
    vector = torch.nn.functional.normalize(torch.randn(shapes.z_dim, generator=torch.Generator().manual_seed(1)), dim=0)
    _calibrated(shapes, vector).save(path)
    shown = invoke(cli_runner, "measure", path, "--seeds", "0-1", "--amounts", "-0.05,0.05", "--by", "both",
                   "--per-seed", "--clamp-amounts", "--device", "cpu")
    assert shown.exit_code == 0, shown.output
    assert "by registration:" in shown.output and "by factors:" in shown.output
    assert "error (px at 64 px)" in shown.output and "| seed 0 | seed 1 |" in shown.output
    as_json = invoke(cli_runner, "measure", path, "--seeds", "0", "--amounts", "0.05", "--by", "both", "--json",
                     "--clamp-amounts", "--device", "cpu")
    assert set(json.loads(as_json.output)) == {"registration", "factors"}
    every = invoke(cli_runner, "measure", path, "--seeds", "0-1", "--amounts", "0.05", "--by", "all", "--json",
                   "--clamp-amounts", "--device", "cpu")
    readings = json.loads(every.output)
    assert set(readings) == {"registration", "factors", "saliency"}
    # three instruments, one edit: the reader and the barycentre read the same object's move
    assert readings["saliency"][0]["mean"] == pytest.approx(readings["factors"][0]["mean"], abs=0.03)
    faces = tmp_path / "faces.safetensors"
    from latentdirs.registry import load_generator

    generator = load_generator("dcgan-faces", device="cpu")
    Directions.from_method(random_basis(2, generator.z_dim, seed=0), None, generator=generator, method="random",
                           options={}, space="z").save(faces)
    refused = invoke(cli_runner, "evaluate", faces, "--factors", "yes", "--pairs", "50", "--vp-seeds", "1",
                     "--device", "cpu")
    assert refused.exit_code == 1 and "read_factors" in refused.output


def test_reachable_amounts_stop_at_the_edge_of_the_scenes_range(shapes):
    """testbed_tables' fair target: a request is kept where it leaves the object inside the renderer's range
    (x within ±0.35), cut to that edge where it does not; zoom keeps the scale within 0.08 … 0.16."""
    from training.testbed_tables import reachable_amounts

    vector = torch.nn.functional.normalize(torch.randn(shapes.z_dim, generator=torch.Generator().manual_seed(2)), dim=0)
    directions = _calibrated(shapes, vector)
    seeds = [0, 1, 2, 3]
    requested = torch.tensor([-1.0, 0.0, 0.01, 1.0])
    reach = reachable_amounts(shapes, directions, seeds, requested, "shift-x")
    assert reach.shape == (4, 4) and torch.equal(reach[1], torch.zeros(4))
    assert torch.equal(reach[2], torch.full((4,), 0.01))
    start = -0.35 - reach[0]  # the furthest move left ends at the edge, so the start is recovered
    torch.testing.assert_close(start + reach[3], torch.full((4,), 0.35))
    assert bool((start.abs() < 0.35).all())
    zoom = reachable_amounts(shapes, directions, seeds, torch.tensor([-0.9, 5.0]), "zoom")
    assert bool((zoom[0] > -0.9).all() and (zoom[1] < 5.0).all())


def test_saliency_refuses_a_transform_it_does_not_measure_before_rendering(shapes):
    vector = torch.nn.functional.normalize(torch.randn(shapes.z_dim, generator=torch.Generator().manual_seed(3)), dim=0)
    knots_x = torch.linspace(-5, 5, 11)
    brighter = Directions.from_method(vector.unsqueeze(0), None, generator=shapes, method="regression", options={},
                                      space="z", calibration={"knots_x": knots_x, "knots_y": 0.05 * knots_x},
                                      calibration_meta={"kind": "monotone-piecewise-linear", "transform": "brightness",
                                                        "factor": "brightness", "units": "intensity on [-1, 1]",
                                                        "range": [-0.25, 0.25]})
    with pytest.raises(InvalidValueError, match=r"^transform: got 'brightness'; allowed: shift-x, shift-y, zoom \(the "
                                                r"transforms the saliency barycentre measures\)\. Measure it by "
                                                r"registration$"):
        measure_calibration_by(shapes, brighter, seeds=[0], amounts=[0.1], ways=("saliency",))
