"""The real CLI through click's runner: happy paths and every bad input of the foundation issue."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import latentdirs
from latentdirs.directions import Directions
from latentdirs.images import to_uint8
from tests.conftest import invoke


@pytest.fixture(scope="module")
def faces_file(tmp_path_factory):
    from click.testing import CliRunner

    path = tmp_path_factory.mktemp("files") / "faces.safetensors"
    result = invoke(CliRunner(), "discover", "dcgan-faces", "-m", "sefa", "-k", "6", "--device", "cpu", "-o", path)
    assert result.exit_code == 0, result.output
    return path


def _contains_tile(picture: np.ndarray, tile: np.ndarray) -> bool:
    """True when ``tile`` [h, w, 3] appears pixel-exactly somewhere in ``picture`` [H, W, 3]."""
    h, w, _ = tile.shape
    for y in range(picture.shape[0] - h + 1):
        for x in np.flatnonzero((picture[y, : picture.shape[1] - w + 1] == tile[0, 0]).all(axis=1)):
            if np.array_equal(picture[y:y + h, x:x + w], tile):
                return True
    return False


def test_discover_writes_a_complete_file(faces_file, faces):
    directions = Directions.load(faces_file, generator=faces)
    assert len(directions) == 6 and directions.meta["method"]["options"]["num_directions"] == 6


def test_edit_writes_grids_strips_animation_manifest(cli_runner, faces_file, faces, tmp_path):
    out = tmp_path / "edit"
    result = invoke(cli_runner, "edit", faces_file, "--indices", "0,2", "--seeds", "4-6", "--alphas", "-4:4:3",
                    "--animate", "--batch-size", "4", "--device", "cpu", "-o", out)
    assert result.exit_code == 0, result.output
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == ["anim_d000.gif", "anim_d002.gif", "grid_d000.png", "grid_d002.png", "manifest.json",
                     *[f"strips/d{d:03d}_seed{s}.png" for d in (0, 2) for s in (4, 5, 6)]]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generator"]["fingerprint"] == faces.fingerprint()
    assert manifest["seeds"] == [4, 5, 6] and manifest["alphas"] == [-4.0, 0.0, 4.0]
    grid = next(r for r in manifest["images"] if r["file"] == "grid_d002.png")
    assert [row["seed"] for row in grid["rows"]] == [4, 5, 6]
    # reproduce one tile from the manifest alone and find it, pixel for pixel, in the PNG
    directions = Directions.load(faces_file)
    z = faces.sample_seeds([grid["rows"][1]["seed"]], truncation=manifest["truncation"])
    with torch.no_grad():
        tile = to_uint8(faces.synthesize(latentdirs.shift(z, directions, index=2, alpha=grid["alphas"][2])))[0]
    picture = np.asarray(Image.open(out / "grid_d002.png").convert("RGB"))
    assert picture.shape[0] > 3 * 64 and picture.shape[1] > 3 * 64
    assert _contains_tile(picture, tile)
    animation = Image.open(out / "anim_d000.gif")
    assert animation.n_frames == 4  # 3 strengths, there and back


def test_conditional_edit_one_row_per_class(cli_runner, tmp_path):
    path = tmp_path / "eyes.safetensors"
    assert invoke(cli_runner, "discover", "dcgan-eyes", "-k", "2", "--device", "cpu", "-o", path).exit_code == 0
    result = invoke(cli_runner, "edit", path, "--indices", "0", "--seeds", "0-1", "--alphas", "0,3",
                    "--class", "blue", "--class", "6", "--no-strips", "--device", "cpu", "-o", tmp_path / "e")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert [(r["class"], r["seed"]) for r in manifest["images"][0]["rows"]] == [(1, 0), (1, 1), (6, 0), (6, 1)]


def test_inspect_label_list(cli_runner, faces_file):
    assert invoke(cli_runner, "label", faces_file, "1", "yaw").exit_code == 0
    shown = invoke(cli_runner, "inspect", faces_file)
    assert shown.exit_code == 0 and "d1: yaw" in shown.output and "dcgan-faces" in shown.output
    header = json.loads(invoke(cli_runner, "inspect", faces_file, "--json").output)
    assert header["labels"] == {"1": "yaw"}
    listed = invoke(cli_runner, "list", "generators").output
    assert "dcgan-faces" in listed and "synthetic" in listed and "module" in listed
    assert "sefa" in invoke(cli_runner, "list", "methods").output


def test_help_texts_carry_examples(cli_runner):
    for command in ("discover", "edit", "inspect", "list", "label", "import"):
        result = invoke(cli_runner, command, "--help")
        assert result.exit_code == 0 and "Example" in result.output, command


# ---------------------------------------------------------------------------- bad input
def _fails(result, code: int, *fragments: str) -> None:
    text = result.output
    assert result.exit_code == code, text
    assert "Traceback" not in text
    for fragment in fragments:
        assert fragment in text, (fragment, text)


def test_unknown_generator_and_method(cli_runner, tmp_path):
    out = tmp_path / "x.safetensors"
    _fails(invoke(cli_runner, "discover", "stylegan9", "-o", out), 1, "generator: got 'stylegan9'", "dcgan-faces")
    _fails(invoke(cli_runner, "discover", "synthetic", "-m", "pca", "-o", out), 1, "method: got 'pca'", "sefa")
    _fails(invoke(cli_runner, "discover", "synthetic", "--opt", "steps=3", "-o", out), 1,
           "sefa option: got 'steps'; allowed: num_directions, layers, space")
    _fails(invoke(cli_runner, "discover", "synthetic", "--layers", "5", "-o", out), 1, "layers: got [5]")
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option, value, fragment", [
    ("--seeds", "7-0", "'7-0' descends"),
    ("--seeds", "1,,2", "empty item"),
    ("--seeds", "-1", "'-1' is negative"),
    ("--alphas", "3:-3:x", "NUM 'x' is not an integer"),
    ("--indices", "a", "'a' is not an integer"),
])
def test_bad_ranges_are_usage_errors(cli_runner, faces_file, tmp_path, option, value, fragment):
    _fails(invoke(cli_runner, "edit", faces_file, option, value, "-o", tmp_path / "o"), 2,
           f"Invalid value for '{option}'", fragment)
    assert not (tmp_path / "o").exists()


def test_index_out_of_range(cli_runner, faces_file, tmp_path):
    _fails(invoke(cli_runner, "edit", faces_file, "--indices", "0,9", "--device", "cpu", "-o", tmp_path / "o"), 1,
           "--indices: got 9; allowed: 0-5")
    assert not list((tmp_path / "o").glob("*.png"))


def test_other_generator_refused_then_allowed(cli_runner, faces_file, tmp_path):
    args = ["edit", faces_file, "-g", "dcgan-eyes", "--indices", "0", "--seeds", "0", "--alphas", "1",
            "--device", "cpu", "-o", tmp_path / "o"]
    _fails(invoke(cli_runner, *args), 1, "made on 'dcgan-faces'", "--allow-other-generator")
    assert invoke(cli_runner, *args, "--allow-other-generator").exit_code == 0


def test_broken_files(cli_runner, faces_file, tmp_path):
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(faces_file.read_bytes()[:-50])
    _fails(invoke(cli_runner, "edit", truncated, "-o", tmp_path / "o"), 1, "not a readable safetensors")
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    _fails(invoke(cli_runner, "inspect", text), 1, "not a readable safetensors")
    header = Directions.load(faces_file).meta
    future = tmp_path / "future.safetensors"
    save_file({"directions": Directions.load(faces_file).vectors}, future,
              metadata={"latentdirs": json.dumps(dict(header, schema_version=9))})
    _fails(invoke(cli_runner, "inspect", future), 1, "schema v9", "upgrade")
    _fails(invoke(cli_runner, "edit", tmp_path / "absent.safetensors", "-o", tmp_path / "o"), 1, "no file at")


def test_unknown_class(cli_runner, tmp_path):
    path = tmp_path / "eyes.safetensors"
    invoke(cli_runner, "discover", "dcgan-eyes", "-k", "1", "--device", "cpu", "-o", path)
    _fails(invoke(cli_runner, "edit", path, "--class", "purple", "--device", "cpu", "-o", tmp_path / "o"), 1,
           "class: got 'purple'; allowed: amber, blue, brown, gray, grayscale, green, hazel, red")
    assert not list((tmp_path / "o").rglob("*.png"))


def test_unwritable_output(cli_runner, faces_file, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    _fails(invoke(cli_runner, "edit", faces_file, "-o", blocker / "sub"), 1, "output: cannot write")
    _fails(invoke(cli_runner, "discover", "synthetic", "-o", blocker / "d.safetensors"), 1,
           "--out: ", "exists and is not a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_debug_shows_the_traceback(cli_runner, tmp_path):
    from latentdirs.errors import UnknownNameError

    with pytest.raises(UnknownNameError):
        invoke(cli_runner, "--debug", "discover", "nope", "-o", tmp_path / "x.safetensors")


def test_class_on_unconditional_generator(cli_runner, faces_file, tmp_path):
    _fails(invoke(cli_runner, "edit", faces_file, "--class", "blue", "--device", "cpu", "-o", tmp_path / "o"), 1,
           "class: got 'blue'; allowed: none: this generator is unconditional. Drop --class")
