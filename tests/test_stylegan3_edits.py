"""StyleGAN3 on the command line: exact geometric edits (``edit --translate/--rotate``) and SeFa, OroJaR,
regression and evaluate end to end on the t32 reference network (tests/stylegan3_fixtures; random weights).

Sizes are the smallest each command takes: a t32 render costs about 0.1-0.5 s per image on this CPU.
"""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import latentdirs
from latentdirs.images import MARGIN, to_uint8
from tests.conftest import invoke
from tests.stylegan3_fixtures import REFERENCE_DIR, load_reference, write_stylegan3_pickle

pytestmark = pytest.mark.skipif(not (REFERENCE_DIR / "t32.safetensors").is_file(),
                                reason="the t32 reference case is not written")


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> str:
    """``stylegan3:PATH`` of the t32 reference network, pickled in NVIDIA's layout."""
    path = write_stylegan3_pickle(load_reference("t32"), tmp_path_factory.mktemp("sg3") / "t32.pkl")
    return f"stylegan3:{path}"


@pytest.fixture(scope="module")
def sefa_file(spec, tmp_path_factory):
    """A SeFa direction file on t32, made by the CLI (w+ directions, every slot)."""
    path = tmp_path_factory.mktemp("sg3-sefa") / "sefa.safetensors"
    result = invoke(CliRunner(), "discover", spec, "-m", "sefa", "-k", "3", "--device", "cpu", "-o", path)
    assert result.exit_code == 0, result.output
    return path


def _edit(runner, directions, out, *extra: str):
    return invoke(runner, "edit", directions, "--indices", "0", "--seeds", "0", "--alphas", "0", "--no-strips",
                  "--device", "cpu", "-o", out, *extra)


def _only_tile(grid_path, size: int) -> np.ndarray:
    """The single tile ``[size, size, 3]`` of a one-row, one-column grid (it sits MARGIN px from the
    bottom-right corner whatever the labels' widths)."""
    pixels = np.asarray(Image.open(grid_path).convert("RGB"))
    height, width = pixels.shape[:2]
    return pixels[height - MARGIN - size:height - MARGIN, width - MARGIN - size:width - MARGIN]


# ---------------------------------------------------------------------- edit --translate / --rotate
def test_translate_and_rotate_render_through_the_input_transform(cli_runner, spec, sefa_file, tmp_path):
    result = _edit(cli_runner, sefa_file, tmp_path / "moved", "--translate", "0.25,-0.1", "--rotate", "20")
    assert result.exit_code == 0, result.output
    generator = latentdirs.load_generator(spec, device="cpu")
    view = generator.with_input_transform(translate=(0.25, -0.1), rotate=20)
    with torch.no_grad():
        expected = to_uint8(view.synthesize(view.sample_seeds([0])))[0]
        plain = to_uint8(generator.synthesize(generator.sample_seeds([0])))[0]
    tile = _only_tile(tmp_path / "moved" / "grid_d000.png", generator.resolution)
    # the edit renders in w+ and the reference from z: the same maths, float rounding apart
    assert np.abs(tile.astype(int) - expected.astype(int)).max() <= 1
    assert np.abs(tile.astype(int) - plain.astype(int)).mean() > 3, "the transform must move the picture"
    manifest = json.loads((tmp_path / "moved" / "manifest.json").read_text())
    assert manifest["generator"]["input_transform"] == {"translate": [0.25, -0.1], "rotate": 20.0}
    assert manifest["generator"]["options"] == {"translate": [0.25, -0.1], "rotate": 20.0}


def test_the_manifest_command_reproduces_the_transformed_edit(cli_runner, sefa_file, tmp_path):
    assert _edit(cli_runner, sefa_file, tmp_path / "a", "--translate", "0.1,0").exit_code == 0
    command = json.loads((tmp_path / "a" / "manifest.json").read_text())["command"]
    words = shlex.split(command)
    assert words[:2] == ["latentdirs", "edit"] and "translate=[0.1, 0.0]" in words
    words[words.index("-o") + 1] = str(tmp_path / "b")
    result = invoke(cli_runner, *words[1:], "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a" / "grid_d000.png").read_bytes() == (tmp_path / "b" / "grid_d000.png").read_bytes()


def test_gen_opt_and_the_options_are_one_path(cli_runner, sefa_file, tmp_path):
    assert _edit(cli_runner, sefa_file, tmp_path / "flag", "--rotate", "-30").exit_code == 0
    assert _edit(cli_runner, sefa_file, tmp_path / "opt", "--gen-opt", "rotate=-30").exit_code == 0
    assert (tmp_path / "flag" / "grid_d000.png").read_bytes() == (tmp_path / "opt" / "grid_d000.png").read_bytes()
    result = _edit(cli_runner, sefa_file, tmp_path / "both", "--rotate", "5", "--gen-opt", "rotate=5")
    assert result.exit_code == 2 and "give one" in result.output


@pytest.mark.parametrize("option, value", [("--translate", "1.5,0"), ("--translate", "0.1"),
                                           ("--translate", "0.1,0,0"), ("--translate", "left,0"),
                                           ("--translate", "nan,0"), ("--rotate", "fifteen"),
                                           ("--rotate", "inf"), ("--rotate", "1,2")])
def test_bad_transforms_are_usage_errors_of_one_line(cli_runner, sefa_file, tmp_path, option, value):
    result = invoke(cli_runner, "edit", sefa_file, option, value, "--device", "cpu", "-o", tmp_path / "x")
    assert result.exit_code == 2
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"Error: Invalid value for '{option}': {option}: got {value!r}; allowed:"), line
    assert not (tmp_path / "x").exists()


def test_other_generators_refuse_the_transform_by_name(cli_runner, tmp_path):
    faces = tmp_path / "faces.safetensors"
    assert invoke(cli_runner, "discover", "dcgan-faces", "-k", "2", "--device", "cpu", "-o", faces).exit_code == 0
    for option, value in (("--translate", "0.1,0"), ("--rotate", "15")):
        result = invoke(cli_runner, "edit", faces, option, value, "--device", "cpu", "-o", tmp_path / "x")
        assert result.exit_code == 1
        message = result.output.strip().splitlines()[-1]
        assert message.startswith(f"Error: {option}: got ") and "allowed: StyleGAN3 generators" in message
        assert "dcgan-faces" in message and f"Drop {option}" in message


# ---------------------------------------------------------------------- methods through the adapter contract
def test_sefa_layerwise_then_edit(cli_runner, spec, tmp_path):
    path = tmp_path / "layers.safetensors"
    result = invoke(cli_runner, "discover", spec, "-m", "sefa", "-k", "2", "--layers", "1-4", "--device", "cpu",
                    "-o", path)
    assert result.exit_code == 0, result.output
    directions = latentdirs.Directions.load(path)
    assert directions.space == "w+" and directions.layers == [1, 2, 3, 4]
    result = invoke(cli_runner, "edit", path, "--indices", "0-1", "--seeds", "0-1", "--alphas", "-3,3",
                    "--no-strips", "--device", "cpu", "-o", tmp_path / "e")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert [r["file"] for r in manifest["images"]] == ["grid_d000.png", "grid_d001.png"]
    assert manifest["directions"]["layers"] == [1, 2, 3, 4]


@pytest.mark.slow
def test_orojar_learns_a_basis(cli_runner, spec, tmp_path):
    path = tmp_path / "orojar.safetensors"
    result = invoke(cli_runner, "discover", spec, "-m", "orojar", "--opt", "steps=2", "--opt", "batch_size=2",
                    "--opt", "subspace=0-3", "--device", "cpu", "-o", path)
    assert result.exit_code == 0, result.output
    directions = latentdirs.Directions.load(path)
    assert tuple(directions.vectors.shape) == (4, 16) and directions.space == "z"
    gram = directions.vectors @ directions.vectors.T
    assert torch.allclose(gram, torch.eye(4), atol=1e-5)
    assert directions.vectors[:, 4:].abs().max() == 0  # the searched subspace only
    assert (directions.scores > 0).all()


@pytest.mark.slow
def test_regression_calibrates_shift_x_and_measure_reads_it(cli_runner, spec, tmp_path):
    path = tmp_path / "shift.safetensors"
    result = invoke(cli_runner, "discover", spec, "-m", "regression", "--transform", "shift-x",
                    "--opt", "samples=2", "--opt", "amounts=[0.1]", "--opt", "iterations=2", "--opt", "epochs=2",
                    "--opt", "recalibrate=0", "--opt", "batch_size=4", "--device", "cpu", "-o", path)
    assert result.exit_code == 0, result.output
    header = latentdirs.Directions.load(path).meta
    assert header["calibration"]["transform"] == "shift-x" and header["generator"]["family"] == "stylegan3"
    result = invoke(cli_runner, "measure", path, "--seeds", "0-1", "--amounts", "-0.02,0.02", "--clamp-amounts",
                    "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["requested"] for row in rows] == pytest.approx([-0.02, 0.02])
    assert all(row["count"] == 2 and np.isfinite(row["mean"]) for row in rows)


@pytest.mark.slow
def test_evaluate_reports_vp_and_profiles(cli_runner, spec, sefa_file):
    result = invoke(cli_runner, "evaluate", sefa_file, "--top", "2", "--pairs", "50", "--epochs", "1",
                    "--vp-seeds", "1", "--factors", "no", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["errors"] == []
    (entry,) = report["generators"][spec]
    assert entry["method"] == "sefa" and entry["directions"] == 2
    assert 0 <= entry["vp"] <= 1 and 0 <= entry["vp_random_floor"] <= 1
    assert len(entry["profile"]) == 2 and all(row["change"] > 0 for row in entry["profile"])
