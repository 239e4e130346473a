"""InterFaceGAN (-m interfacegan): the known answer on ``synthetic`` from labels of the true factor,
calibrated amounts, scorers, built-in attributes, conditions on any number of directions, and every bad
input as one line with nothing written."""

from __future__ import annotations

import json

import pytest
import torch

import latentdirs
from latentdirs.directions import Directions
from latentdirs.edit import traverse
from latentdirs.errors import FingerprintMismatchError, LatentDirsError, PluginError, UnknownNameError
from latentdirs.labels import LabelsError, read_labels
from latentdirs.methods.interfacegan import project_out
from tests.conftest import invoke

SEEDS = list(range(400))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread (two wait on each other on this shared 2-core machine); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ scorers named by tests (module:tests.…)
def disc_value(images: torch.Tensor) -> torch.Tensor:
    """HSV value (max over channels) of the brightest 2 % of the pixels: the disc's value on synthetic.
    [N, 3, H, W] → [N]."""
    flat = images.amax(dim=1).flatten(1)
    return flat.topk(flat.shape[1] // 50, dim=1).values.mean(dim=1)


def wrong_shape(images: torch.Tensor) -> torch.Tensor:
    return torch.zeros(images.shape[0], 2)


def not_a_number(images: torch.Tensor) -> torch.Tensor:
    return torch.full((images.shape[0],), float("nan"))


def _factor(synthetic, name: str, seeds=SEEDS) -> torch.Tensor:
    return synthetic.factor_properties(synthetic.sample_seeds(seeds))[name].cpu()


def _write(path, rows) -> str:
    path.write_text("seed,label\n" + "".join(f"{seed},{value}\n" for seed, value in rows))
    return str(path)


@pytest.fixture(scope="module")
def x_labels(synthetic, tmp_path_factory):
    values = _factor(synthetic, "x")
    return _write(tmp_path_factory.mktemp("labels") / "x.csv", zip(SEEDS, values.tolist()))


def test_recovers_the_true_direction_from_labels_of_the_true_factor(synthetic, x_labels):
    directions = latentdirs.discover(synthetic, "interfacegan", labels=x_labels)
    cosine = float(directions.vectors[0] @ synthetic.true_directions["x"])
    assert cosine > 0.95, cosine  # positive: towards larger x
    assert directions.scores[0] > 0.95 and directions.meta["score_kind"] == "heldout_accuracy"
    assert directions.meta["calibration"]["units"] == "label value"
    assert directions.meta["method"]["options"]["calibration_heldout_r2"] > 0.95


@pytest.mark.filterwarnings("ignore:.*calibrated range")  # clamp_amounts=True: seeds at the edge are clamped
def test_calibrated_amounts_move_the_factor_by_that_much(synthetic, x_labels):
    """--amounts 0.05 of x (a fraction of the width) moves the disc by about 0.05 of the width."""
    directions = latentdirs.discover(synthetic, "interfacegan", labels=x_labels)
    seeds = list(range(1000, 1012))
    batches = list(traverse(synthetic, directions, seeds=seeds, indices=[0], amounts=[-0.05, 0.05], clamp_amounts=True))
    items = [item for batch in batches for item in batch.items]
    base = _factor(synthetic, "x", seeds)
    moved = synthetic.factor_properties(
        synthetic.sample_seeds([item.seed for item in items]) + torch.tensor([[item.alpha] for item in items])
        * directions.vectors[0])["x"]
    achieved = moved - base[[seeds.index(item.seed) for item in items]]
    requested = torch.tensor([item.value for item in items])
    assert (achieved - requested).abs().median() < 0.01, (achieved, requested)


def test_class_labels_give_an_uncalibrated_boundary_towards_the_positive_class(synthetic, tmp_path):
    values = _factor(synthetic, "x")
    path = _write(tmp_path / "side.csv", ((s, "right" if v > 0.5 else "left") for s, v in zip(SEEDS, values.tolist())))
    directions = latentdirs.discover(synthetic, "interfacegan", labels=path, classifier="logistic")
    assert float(directions.vectors[0] @ synthetic.true_directions["x"]) > 0.95
    assert directions.meta["calibration"] is None and directions.labels == {0: "right"}
    towards_left = latentdirs.discover(synthetic, "interfacegan", labels=path, positive="left")
    assert float(towards_left.vectors[0] @ synthetic.true_directions["x"]) < -0.95


def test_scorer_named_on_the_command_line(cli_runner, tmp_path, synthetic):
    out = tmp_path / "value.safetensors"
    result = invoke(cli_runner, "discover", "synthetic", "-m", "interfacegan", "--opt",
                    "scorer=module:tests.test_interfacegan:disc_value", "--opt", "samples=300", "--device", "cpu",
                    "-o", out)
    assert result.exit_code == 0, result.output
    directions = Directions.load(out, generator=synthetic)
    assert float(directions.vectors[0] @ synthetic.true_directions["value"]) > 0.9
    assert directions.meta["method"]["options"]["scorer"] == "module:tests.test_interfacegan:disc_value"


@pytest.mark.filterwarnings("ignore:.*calibrated range")
def test_brightness_attribute_is_calibrated_in_intensity(synthetic):
    directions = latentdirs.discover(synthetic, "interfacegan", attribute="brightness", samples=300)
    calibration = directions.meta["calibration"]
    assert calibration["transform"] == "brightness" and calibration["units"] == "intensity on [-1, 1]"
    low, high = calibration["range"]
    assert low < 0 < high
    seeds = list(range(2000, 2030))
    request = 0.25 * min(-low, high)
    before = torch.cat([b.images for b in traverse(synthetic, directions, seeds=seeds, indices=[0], alphas=[0.0])])
    after = torch.cat([b.images for b in traverse(synthetic, directions, seeds=seeds, indices=[0], amounts=[request],
                                                  clamp_amounts=True)])
    change = (after.mean(dim=(1, 2, 3)) - before.mean(dim=(1, 2, 3))).mean()
    assert change == pytest.approx(request, rel=0.3)


def test_conditions_project_out_any_number_of_directions(synthetic, x_labels, tmp_path):
    truth = synthetic.true_directions
    first = Directions.from_method(torch.stack([truth["y"], truth["size"]]), None, generator=synthetic,
                                   method="test", options={}, space="z")
    second = Directions.from_method(torch.stack([truth["hue"], truth["value"], truth["y"]]), None,
                                    generator=synthetic, method="test", options={}, space="z")
    paths = [str(first.save(tmp_path / "a.safetensors")), str(second.save(tmp_path / "b.safetensors")) + "#0-1"]
    # x's labels, conditioned on a boundary close to x: the result must be orthogonal to every condition
    tilted = (truth["x"] + 0.5 * truth["y"]) / (truth["x"] + 0.5 * truth["y"]).norm()
    third = Directions.from_method(tilted.unsqueeze(0), None, generator=synthetic, method="test", options={}, space="z")
    paths.append(str(third.save(tmp_path / "c.safetensors")))
    directions = latentdirs.discover(synthetic, "interfacegan", labels=x_labels, conditions=paths)
    vector = directions.vectors[0].double()
    for name in ("y", "size", "hue", "value"):
        assert abs(float(vector @ truth[name].double())) < 1e-5, name
    assert abs(float(vector @ tilted.double())) < 1e-5
    assert len(directions.meta["method"]["options"]["conditions"]) == 3


def test_project_out_handles_dependent_conditions_and_refuses_a_covered_boundary():
    basis = torch.eye(6, dtype=torch.float64)
    conditions = torch.stack([basis[0], basis[1], basis[0] + basis[1], basis[2]])  # dependent rows
    normal = torch.ones(6, dtype=torch.float64) / 6 ** 0.5
    projected = project_out(normal, conditions)
    torch.testing.assert_close(projected, torch.tensor([0, 0, 0, 1, 1, 1], dtype=torch.float64) / 3 ** 0.5)
    with pytest.raises(LatentDirsError, match="conditions"):
        project_out(basis[0] + basis[1], conditions)


def test_condition_from_another_generator_is_refused(synthetic, faces, x_labels, tmp_path):
    other = latentdirs.discover(faces, "sefa", num_directions=2).save(tmp_path / "faces.safetensors")
    with pytest.raises(FingerprintMismatchError):
        latentdirs.discover(synthetic, "interfacegan", labels=x_labels, conditions=[str(other)])


# ------------------------------------------------------------------ the labels reader, hostile input
@pytest.mark.parametrize("text, fragment", [
    ("seed,label\n1,a\n-3,b\n", "line 3): got '-3'"),
    ("0,a\nseven,b\n", "line 2): got 'seven'; allowed: a known seed"),
    ("0,1\n99999999999999999999,2\n", "line 2): got '99999999999999999999'"),
    ("0,1\n1,2\n2\n", "line 3): got '2'"),
    ("0,1\n0,2\n", "each seed once (seed 0 is also on line 1)"),
    ("0,1.5\n1,nan\n", "line 2): got 'nan'; allowed: a finite number"),
    ("0,1.5\n1,smiling\n", "line 2): got 'smiling'; allowed: a number like the entries before it"),
    ("".join(f"{i},cat\n" for i in range(20)), "every sample is 'cat'"),
    ("".join(f"{i},{i}\n" for i in range(5)), "5 labelled samples"),
    ("".join(f"{i},{'cat' if i else 'dog'}\n" for i in range(20)), "at least 3 samples of each class"),
    ('{"0": 1, "1": "x"}', "entry '1'): got 'x'"),
    ('[[0, 1], [1]]', "entry 1): got [1]; allowed: a pair [SEED, VALUE]"),
    ('{"0": 1,', "malformed JSON"),
])
def test_bad_labels_files_are_refused_in_one_line(tmp_path, text, fragment):
    path = tmp_path / ("labels.json" if text.lstrip()[:1] in "{[" else "labels.csv")
    path.write_text(text)
    with pytest.raises(LabelsError) as caught:
        read_labels(path)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_labels_file_size_is_checked_before_reading(tmp_path, monkeypatch):
    import latentdirs.labels as labels_module

    path = tmp_path / "big.csv"
    path.write_text("0,1\n" * 100)
    monkeypatch.setattr(labels_module, "MAX_BYTES", 50)
    monkeypatch.setattr(type(path), "read_bytes", lambda self: pytest.fail("read before the size check"))
    with pytest.raises(LabelsError, match="big.csv \\(400 bytes\\)"):
        read_labels(path)


def test_good_labels_formats(tmp_path):
    csv = tmp_path / "a.tsv"
    csv.write_text("# my labels\nseed\tsmile\n" + "".join(f"{i}\t{i % 2}  # ok\n" for i in range(12)))
    parsed = read_labels(csv)
    assert parsed.classes == ("0", "1") and parsed.seeds[:3] == (0, 1, 2) and parsed.values[:3] == (0.0, 1.0, 0.0)
    js = tmp_path / "b.json"
    js.write_text(json.dumps({str(i): i * 0.5 for i in range(12)}))
    assert read_labels(js).continuous


# ------------------------------------------------------------------ the CLI: one line, exit 1, nothing written
@pytest.mark.parametrize("make, fragment", [
    (lambda p: _write(p / "u.csv", [(-1, 0.5)] + [(i, i) for i in range(12)]), "got '-1'; allowed: a known seed"),
    (lambda p: _write(p / "s.csv", [(i, "cat") for i in range(12)]), "every sample is 'cat'"),
    (lambda p: _write(p / "f.csv", [(i, i) for i in range(4)]), "4 labelled samples"),
    (lambda p: _write(p / "n.csv", [(0, "nan")] + [(i, i) for i in range(1, 12)]), "allowed: a finite number"),
])
def test_cli_bad_labels(cli_runner, tmp_path, make, fragment):
    out = tmp_path / "bad.safetensors"
    result = invoke(cli_runner, "discover", "dcgan-faces", "-m", "interfacegan", "--opt", f"labels={make(tmp_path)}",
                    "--device", "cpu", "-o", out)
    _one_line(result, out, fragment)


@pytest.mark.parametrize("spec, fragment", [
    ("module:no_such_package_here.mod:score", "cannot import 'no_such_package_here.mod'"),
    ("module:tests.test_interfacegan:nope", "has no callable 'nope'"),
    ("tests.test_interfacegan:disc_value", "module:PACKAGE.MODULE:FUNCTION"),
    ("module:tests.test_interfacegan:wrong_shape", "shape (10, 2)"),
    ("module:tests.test_interfacegan:not_a_number", "allowed: a finite number"),
])
def test_cli_bad_scorer(cli_runner, tmp_path, spec, fragment):
    out = tmp_path / "bad.safetensors"
    result = invoke(cli_runner, "discover", "synthetic", "-m", "interfacegan", "--opt", f"scorer={spec}",
                    "--opt", "samples=10", "--opt", "batch_size=10", "--device", "cpu", "-o", out)
    _one_line(result, out, fragment)


@pytest.mark.parametrize("args, fragment", [
    ([], "exactly one source of labels"),
    (["--opt", "attribute=smile"], "attribute: got 'smile'; allowed: brightness"),
    (["--opt", "attribute=factor:x"], "has no factor reader"),
    (["--opt", "attribute=brightness", "--opt", "ratio=0.7"], "ratio: got 0.7"),
    (["--opt", "attribute=brightness", "--opt", "classifier=tree"], "classifier: got 'tree'"),
])
def test_cli_bad_options(cli_runner, tmp_path, args, fragment):
    out = tmp_path / "bad.safetensors"
    result = invoke(cli_runner, "discover", "synthetic", "-m", "interfacegan", *args, "--device", "cpu", "-o", out)
    _one_line(result, out, fragment)


def _one_line(result, out, fragment: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and not out.exists()
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and fragment in errors[0], result.output


TRAP_CALLS: list[int] = []


def trap(images: torch.Tensor) -> torch.Tensor:
    TRAP_CALLS.append(images.shape[0])
    return images.mean(dim=(1, 2, 3))


def test_a_labels_file_never_names_code(synthetic, tmp_path):
    """A class name that looks like a scorer spec is only a class name: nothing is imported or called."""
    values = _factor(synthetic, "x")
    spec = "module:tests.test_interfacegan:trap"
    path = _write(tmp_path / "trap.csv", ((s, spec if v > 0.5 else "other") for s, v in zip(SEEDS, values.tolist())))
    directions = latentdirs.discover(synthetic, "interfacegan", labels=path, positive=spec)
    assert TRAP_CALLS == [] and directions.labels == {0: spec}


def test_cli_condition_from_another_generator(cli_runner, tmp_path, faces, x_labels):
    other = latentdirs.discover(faces, "sefa", num_directions=2).save(tmp_path / "faces.safetensors")
    out = tmp_path / "bad.safetensors"
    result = invoke(cli_runner, "discover", "synthetic", "-m", "interfacegan", "--opt", f"labels={x_labels}",
                    "--opt", f"conditions={other}", "--device", "cpu", "-o", out)
    _one_line(result, out, "fingerprint")


def test_python_callable_scorer_and_shapes_factor_reader(synthetic):
    def bright(images):
        return images.mean(dim=(1, 2, 3))

    directions = latentdirs.discover(synthetic, "interfacegan", scorer=bright, samples=200)
    assert directions.meta["method"]["options"]["scorer"] == "bright"
    with pytest.raises(UnknownNameError, match="factor:nope"):
        shapes = latentdirs.load_generator("shapes-dcgan", device="cpu")
        latentdirs.discover(shapes, "interfacegan", attribute="factor:nope", samples=20)


def test_wrong_scorer_output_type_is_a_plugin_error(synthetic):
    with pytest.raises(PluginError, match="scorer"):
        latentdirs.discover(synthetic, "interfacegan", scorer=lambda images: "many", samples=10)
