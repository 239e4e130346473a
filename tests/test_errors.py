"""The one message pattern (``invalid``), compact and bounded echoes (``show``), the numeric checks, and
method options checked by type and range before any work — from the API and from the CLI."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
import torch

import latentdirs
from latentdirs import registry
from latentdirs.calibration import calibrated_steps
from latentdirs.errors import (MAX_SEED, InvalidValueError, LatentDirsError, OutOfRangeError, PluginError,
                               UnknownNameError, as_whole, check_count, check_positive, check_seed, invalid, show,
                               unknown)
from latentdirs.latents import along_layers, clamp_to_ball, clamp_to_ball_, layer_mask
from latentdirs.methods.orojar import orojar
from latentdirs.methods.regression import regression
from tests.conftest import invoke


# ---------------------------------------------------------------- the message pattern and its echoes
def test_invalid_builds_the_one_pattern_and_keeps_the_class():
    error = invalid("--layers", [7], "0-4", "Pick fewer layers", cls=OutOfRangeError)
    assert str(error) == "--layers: got [7]; allowed: 0-4. Pick fewer layers"
    assert isinstance(error, OutOfRangeError) and isinstance(error, IndexError)
    assert str(invalid("--seeds", "7-0", "ascending ranges")) == "--seeds: got '7-0'; allowed: ascending ranges"
    name = unknown("transform", "swirl", ["shift-x", "zoom"], "Run 'latentdirs list transforms'")
    assert isinstance(name, UnknownNameError)
    assert str(name) == "transform: got 'swirl'; allowed: shift-x, zoom. Run 'latentdirs list transforms'"


def test_float32_values_are_echoed_as_the_user_wrote_them():
    from_tensor = torch.tensor([0.2, 0.1, 1e-7, 3.0]).tolist()  # [0.20000000298023224, …]
    assert show(from_tensor) == "[0.2, 0.1, 1e-07, 3.0]"
    assert show(torch.tensor([0.2, 0.7])) == "[0.2, 0.7]"
    assert show(torch.tensor(0.3)) == "0.3" and show(np.float32(0.1)) == "0.1"
    assert show(np.array([[1.5, 0.2]], dtype=np.float32)) == "[[1.5, 0.2]]"
    # a float64 that is not a float32 value keeps its own shortest form
    assert show(1 / 3) == "0.3333333333333333" and show(0.2) == "0.2" and show(1e300) == "1e+300"
    assert show(float("nan")) == "nan" and show(-0.0) == "-0.0"
    assert show({"lr": [0.30000001192092896], "ok": True, "none": None}) == "{'lr': [0.3], 'ok': True, 'none': None}"
    assert show((1,)) == "(1,)" and show(set()) == "set()" and show({3, 1}) == "{1, 3}"


def test_long_values_are_cut_with_their_size():
    layers = show(list(range(3_000_000)))
    assert len(layers) <= 200 and layers.startswith("[0, 1, 2, ") and layers.endswith("… (3000000 items)]")
    nested = show(torch.zeros(1000, 1000))
    assert len(nested) <= 200 and nested.endswith("… (1000 items)], … (1000 items)]")
    text = show("x" * 10_000)
    assert len(text) <= 200 and text.endswith("… (10000 characters)")
    assert show(10**400) == "an integer of about 401 digits"  # repr would refuse past 4300 digits
    assert show(99999999999999999999999) == "99999999999999999999999"  # a seed beyond 64 bits is shown whole
    message = str(invalid("--layers", list(range(3_000_000)), "0-13"))
    assert len(message) < 240


def test_an_amount_out_of_the_calibrated_range_is_echoed_as_requested():
    knots_x, knots_y = torch.linspace(-1, 1, 5), torch.linspace(-0.1, 0.1, 5)
    with pytest.raises(InvalidValueError, match=r"^amounts: got \[0\.2\]; allowed: amounts that keep"):
        calibrated_steps(torch.zeros(1, 2), torch.tensor([1.0, 0.0]), knots_x, knots_y, torch.tensor([0.2]))


# ---------------------------------------------------------------- numeric checks
@pytest.mark.parametrize("value, expected", [(3, 3), (3.0, 3), (1e3, 1000), (True, None), (2.5, None),
                                             (float("nan"), None), (float("inf"), None), ("3", None),
                                             (np.int64(4), 4), (None, None)])
def test_whole_numbers(value, expected):
    assert as_whole(value) == expected


def test_count_positive_and_seed_checks():
    assert check_count("steps", 5) == 5 and check_count("steps", 5.0) == 5
    with pytest.raises(InvalidValueError, match=r"^steps: got 0; allowed: an integer ≥ 1$"):
        check_count("steps", 0)
    with pytest.raises(InvalidValueError, match=r"^k: got 2\.5; allowed: an integer ≥ 2$"):
        check_count("k", 2.5, 2)
    assert check_positive("lr", 1) == 1.0 and check_positive("sigma", 0, zero=True) == 0.0
    for bad in (0, -1, float("nan"), float("inf"), "0.1", True):
        with pytest.raises(InvalidValueError, match="^lr: got .*; allowed: a finite number > 0$"):
            check_positive("lr", bad)
    assert check_seed("seed", MAX_SEED) == 2**63 - 1
    for bad in (-1, 2**63, 2**64 + 5, 1.5, "7"):
        with pytest.raises(InvalidValueError, match=r"^seed: got .*; allowed: an integer from 0 to 9223372036854775807 "):
            check_seed("seed", bad)


# ---------------------------------------------------------------- latents helpers
def test_layer_mask_and_moves_along_layers():
    latents = torch.zeros(2, 5, 3)
    mask = layer_mask(5, [1, 3], like=latents)
    assert mask.shape == (5, 1) and mask.flatten().tolist() == [0, 1, 0, 1, 0]
    assert layer_mask(5, None, like=latents).flatten().tolist() == [1] * 5
    for bad in ([5], [-1]):
        with pytest.raises(OutOfRangeError, match=r"^layers: got \[-?\d\]; allowed: 0-4$"):
            layer_mask(5, bad, like=latents)
    step = torch.ones(2, 3)
    moved = along_layers(step, latents, [0])
    assert moved.shape == (2, 5, 3) and moved[:, 0].eq(1).all() and moved[:, 1:].eq(0).all()
    assert along_layers(torch.ones(3), latents, None).shape == (5, 3)  # one step for all latents broadcasts
    assert along_layers(step, torch.zeros(2, 3), None) is step  # flat latents move as they are


def test_clamp_to_ball():
    z = torch.tensor([[3.0, 4.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])  # √D = 2
    clamped = clamp_to_ball(z)
    torch.testing.assert_close(clamped.norm(dim=1), torch.tensor([2.0, 0.5, 0.0]))
    torch.testing.assert_close(clamped[0], torch.tensor([1.2, 1.6, 0.0, 0.0]))
    assert clamp_to_ball_(z) is z and torch.equal(z, clamped)


# ---------------------------------------------------------------- method options, before any work
@pytest.fixture
def unrendered(monkeypatch):
    """A real synthetic generator that fails the test if anything is rendered or sampled."""
    generator = latentdirs.load_generator("synthetic", device="cpu")

    def refuse(*args, **kwargs):
        raise AssertionError("work started before the options were checked")

    monkeypatch.setattr(generator, "synthesize", refuse)
    monkeypatch.setattr(generator, "sample", refuse)
    return generator


BAD_OPTIONS = [
    ("orojar", {"steps": "abc"}, "orojar option steps: got 'abc'; allowed: an integer"),
    ("orojar", {"steps": 2.5}, "orojar option steps: got 2.5; allowed: an integer"),
    ("orojar", {"steps": float("nan")}, "orojar option steps: got nan; allowed: an integer"),
    ("orojar", {"steps": True}, "orojar option steps: got True; allowed: an integer"),
    ("orojar", {"steps": 0}, "steps: got 0; allowed: an integer ≥ 1"),
    ("orojar", {"lr": float("nan")}, "orojar option lr: got nan; allowed: a finite number"),
    ("orojar", {"lr": 0}, "lr: got 0; allowed: a finite number > 0"),
    ("orojar", {"epsilon": -1}, "epsilon: got -1; allowed: a finite number > 0"),
    ("orojar", {"batch_size": 0}, "batch_size: got 0; allowed: an integer ≥ 1"),
    ("orojar", {"k": 1}, "k: got 1; allowed: an integer ≥ 2"),
    ("orojar", {"checkpoint_every": 0}, "checkpoint_every: got 0; allowed: an integer ≥ 1"),
    ("orojar", {"num_directions": 0}, "num_directions: got 0; allowed: an integer ≥ 1"),
    ("orojar", {"seed": -1}, "orojar option seed: got -1; allowed: an integer from 0 to 9223372036854775807"),
    ("orojar", {"seed": 2**64}, "orojar option seed: got 18446744073709551616; allowed: an integer from 0"),
    ("orojar", {"mode": "fast"}, "mode: got 'fast'; allowed: finite, exact"),
    ("orojar", {"warm_start": "pca"}, "warm_start: got 'pca'; allowed: auto, sefa, random"),
    ("orojar", {"taps": [1]}, "orojar option taps: got [1]; allowed: a list (each item a string) or a string"),
    ("orojar", {"batched": 1}, "orojar option batched: got 1; allowed: true or false"),
    ("regression", {"target": "nope"}, "target: got 'nope'; allowed: 'measured' or 'requested'"),
    ("regression", {"samples": 1}, "samples: got 1; allowed: an integer ≥ 2"),
    ("regression", {"iterations": 0}, "iterations: got 0; allowed: an integer ≥ 1"),
    ("regression", {"epochs": 2.5}, "regression option epochs: got 2.5; allowed: an integer"),
    ("regression", {"lr": float("inf")}, "regression option lr: got inf; allowed: a finite number"),
    ("regression", {"sigma": -1}, "sigma: got -1; allowed: a finite number ≥ 0"),
    ("regression", {"batch_size": 1}, "batch_size: got 1; allowed: an integer ≥ 2"),
    ("regression", {"recalibrate": -1}, "recalibrate: got -1; allowed: an integer ≥ 0"),
    ("regression", {"amounts": [0.2, 0.1]}, "amounts: got [0.2, 0.1]; allowed: increasing positive amounts"),
    ("regression", {"transform": "swirl"}, "transform: got 'swirl'; allowed: shift-x"),
    ("regression", {"seed": -1}, "regression option seed: got -1; allowed: an integer from 0"),
]


@pytest.mark.parametrize("method, options, message", BAD_OPTIONS, ids=[f"{m}-{o}" for m, o, _ in BAD_OPTIONS])
def test_bad_method_options_are_refused_before_any_work(unrendered, method, options, message):
    with pytest.raises(LatentDirsError) as caught:
        latentdirs.discover(unrendered, method, **options)
    assert str(caught.value).startswith(message), str(caught.value)


@pytest.mark.parametrize("function, options, message", [
    (orojar, {"steps": "abc"}, "steps: got 'abc'; allowed: an integer ≥ 1"),
    (orojar, {"lr": float("nan")}, "lr: got nan; allowed: a finite number > 0"),
    (orojar, {"seed": 2**64}, "seed: got 18446744073709551616; allowed: an integer from 0"),
    (orojar, {"taps": 3}, "taps: got 3; allowed: 'output' and/or names of layers"),
    (regression, {"iterations": "10"}, "iterations: got '10'; allowed: an integer ≥ 1"),
    (regression, {"target": "nope", "samples": 4}, "target: got 'nope'"),
])
def test_direct_calls_check_their_options_too(unrendered, function, options, message):
    with pytest.raises(LatentDirsError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        function(unrendered, **options)


def test_whole_floats_are_passed_on_as_ints(synthetic):
    directions = latentdirs.discover(synthetic, "orojar", steps=2.0, batch_size=2, num_directions=3.0)
    options = directions.meta["method"]["options"]
    assert options["steps"] == 2 and isinstance(options["steps"], int) and len(directions) == 3


def test_the_largest_seed_runs(synthetic):
    directions = latentdirs.discover(synthetic, "orojar", steps=1, batch_size=2, seed=MAX_SEED)
    assert directions.meta["method"]["seed"] == MAX_SEED


def lying_method(generator, *, num_directions: int = 2):
    """A plugin method that breaks the contract: it returns a tensor, not Directions."""
    return torch.zeros(num_directions, generator.z_dim)


def test_a_plugin_that_returns_the_wrong_type_is_reported(monkeypatch, synthetic):
    point = EntryPoint("liar", "tests.test_errors:lying_method", "latentdirs.methods")
    monkeypatch.setattr(registry, "entry_points", lambda group: [point] if group == "latentdirs.methods" else [])
    with pytest.raises(PluginError, match="^method 'liar': got 'Tensor'; allowed: a Directions object"):
        latentdirs.discover(synthetic, "liar")
    with pytest.raises(InvalidValueError, match="^liar option num_directions: got 'two'; allowed: an integer$"):
        latentdirs.discover(synthetic, "liar", num_directions="two")


# ---------------------------------------------------------------- the same from the command line
@pytest.mark.parametrize("arguments, exit_code, message", [
    (["--opt", "steps=abc"], 1, "Error: orojar option steps: got 'abc'; allowed: an integer"),
    (["--opt", "steps=2.5"], 1, "Error: orojar option steps: got 2.5; allowed: an integer"),
    (["--opt", "steps=NaN"], 1, "Error: orojar option steps: got nan; allowed: an integer"),
    (["--opt", "lr=NaN"], 1, "Error: orojar option lr: got nan; allowed: a finite number"),
    (["--opt", "lr=-1"], 1, "Error: lr: got -1; allowed: a finite number > 0"),
    (["--seed", "99999999999999999999999"], 2, "is not in the range 0<=x<=9223372036854775807"),
    (["--seed", "-1"], 2, "is not in the range 0<=x<=9223372036854775807"),
    (["--opt", "seed=-1"], 1, "Error: orojar option seed: got -1; allowed: an integer from 0"),
])
def test_cli_bad_options_give_one_line_and_no_file(cli_runner, tmp_path, arguments, exit_code, message):
    out = tmp_path / "x.safetensors"
    result = invoke(cli_runner, "discover", "synthetic", "-m", "orojar", *arguments, "--device", "cpu", "-o", out)
    assert result.exit_code == exit_code, result.output
    assert message in result.output and "Traceback" not in result.output
    if exit_code == 1:
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not out.exists()


def test_cli_amounts_beyond_the_range_echo_the_request(cli_runner, tmp_path):
    calibrated = Path(__file__).parent / "goldens" / "synthetic-shift-x.safetensors"  # range about ±0.36
    result = invoke(cli_runner, "edit", calibrated, "--amounts", "0,0.7", "--seeds", "0-3", "--device", "cpu",
                    "-o", tmp_path / "edit")
    assert result.exit_code == 1
    assert result.output.startswith("Error: --amounts: got [0.7]; allowed: amounts that keep"), result.output
    assert not (tmp_path / "edit" / "manifest.json").exists()
