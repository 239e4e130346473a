"""``--class`` on every command that renders a conditional generator (issue 16 item 4), on dcgan-eyes."""

from __future__ import annotations

import json

import pytest

import latentdirs
from latentdirs.directions import read_header
from latentdirs.measure import calibrated_class, measure_calibration
from tests.conftest import invoke

HAZEL = 6  # dcgan-eyes' class id of "hazel"


@pytest.fixture(scope="module")
def eyes_shift(eyes, tmp_path_factory):
    """A (roughly) calibrated shift-x direction of dcgan-eyes fitted on class hazel: the smallest run."""
    directions = latentdirs.discover(eyes, "regression", transform="shift-x", samples=4, amounts=[0.05, 0.1],
                                     iterations=5, epochs=5, recalibrate=4, class_id="hazel")
    return directions.save(tmp_path_factory.mktemp("class") / "eyes-shift.safetensors")


def test_discover_class_is_recorded_by_a_method_that_renders(cli_runner, tmp_path):
    out = tmp_path / "eyes-orojar.safetensors"
    result = invoke(cli_runner, "discover", "dcgan-eyes", "-m", "orojar", "--class", "hazel", "-k", "2",
                    "--opt", "steps=2", "--opt", "batch_size=2", "--opt", "subspace=0-3", "-o", out)
    assert result.exit_code == 0, result.output
    assert read_header(out)["method"]["options"]["class_id"] == HAZEL


def test_discover_class_refused_by_a_method_that_reads_weights_only(cli_runner, tmp_path):
    out = tmp_path / "eyes-sefa.safetensors"
    result = invoke(cli_runner, "discover", "dcgan-eyes", "-m", "sefa", "--class", "hazel", "-o", out)
    assert result.exit_code == 2
    assert "--class" in result.output and "drop --class" in result.output and not out.exists()


def test_discover_unknown_class_is_one_line(cli_runner, tmp_path):
    result = invoke(cli_runner, "discover", "dcgan-eyes", "-m", "orojar", "--class", "purple",
                    "--opt", "steps=2", "-o", tmp_path / "x.safetensors")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "purple" in result.output and "hazel" in result.output


def test_measure_renders_the_class_the_file_was_calibrated_on(eyes, eyes_shift):
    directions = latentdirs.Directions.load(eyes_shift, generator=eyes)
    assert calibrated_class(eyes, directions, None) == HAZEL
    assert calibrated_class(eyes, directions, "blue") == eyes.resolve_class("blue")
    options = dict(seeds=[0, 1, 2], amounts=[0.001])  # inside every seed's calibrated range
    recorded = measure_calibration(eyes, directions, **options)
    hazel = measure_calibration(eyes, directions, class_id=HAZEL, **options)
    other = measure_calibration(eyes, directions, class_id=0, **options)
    assert recorded[0].values == hazel[0].values  # the default is the calibrated class ...
    assert recorded[0].values != other[0].values  # ... and another class really renders other images


def test_measure_cli_class_option(cli_runner, eyes_shift):
    result = invoke(cli_runner, "measure", eyes_shift, "--seeds", "0-1", "--amounts", "0.003", "--class", "0",
                    "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)[0]["values"]) == 2
    bad = invoke(cli_runner, "measure", eyes_shift, "--seeds", "0-1", "--class", "99")
    assert bad.exit_code != 0 and "Traceback" not in bad.output and "99" in bad.output


def test_evaluate_class_option(cli_runner, eyes, tmp_path):
    path = latentdirs.discover(eyes, "sefa", num_directions=2).save(tmp_path / "eyes.safetensors")
    common = ("--top", "2", "--pairs", "50", "--epochs", "1", "--vp-seeds", "1", "--factors", "no", "--json")
    hazel = json.loads(invoke(cli_runner, "evaluate", path, "--class", "hazel", *common).output)
    blue = json.loads(invoke(cli_runner, "evaluate", path, "--class", "blue", *common).output)
    assert hazel["options"]["class_id"] == "hazel"
    profile = [row for rows in hazel["generators"].values() for row in rows][0]["profile"]
    other = [row for rows in blue["generators"].values() for row in rows][0]["profile"]
    assert profile != other  # the effect profile is measured on the chosen class's images
    bad = invoke(cli_runner, "evaluate", path, "--class", "purple", *common)
    assert bad.exit_code != 0 and "purple" in bad.output and "Traceback" not in bad.output

