"""CLI safety of issue 12 that is not a file reader: concurrent writers, terminal escapes, outputs over inputs."""

from __future__ import annotations

import subprocess
import sys

import pytest

import latentdirs
from latentdirs.directions import Directions
from tests.conftest import invoke


@pytest.fixture
def small_file(tmp_path, synthetic_sefa):
    return synthetic_sefa.save(tmp_path / "small.safetensors")


def test_concurrent_labels_are_all_kept(small_file):
    command = [sys.executable, "-m", "latentdirs.cli.main", "label", str(small_file)]
    workers = [subprocess.Popen(command + [str(index), f"name-{index}"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE) for index in range(4)]
    assert [worker.wait(timeout=120) for worker in workers] == [0] * 4
    labels = Directions.load(small_file).labels
    assert labels == {index: f"name-{index}" for index in range(4)}, "a concurrent label was lost"


def test_labels_cannot_drive_the_terminal(cli_runner, small_file):
    hostile = "\x1b[2J\x1b[31mred\rover"
    result = invoke(cli_runner, "label", small_file, "0", hostile)
    assert result.exit_code == 0 and "\x1b" not in result.output and "\\x1b[2J" in result.output
    shown = invoke(cli_runner, "inspect", small_file)
    assert "\x1b" not in shown.output and "\r" not in shown.output and "\\x1b[31mred\\x0dover" in shown.output
    assert Directions.load(small_file).labels[0] == hostile, "the label itself is stored as given"


def test_discover_refuses_to_overwrite_its_input(cli_runner, tmp_path, small_file):
    before = small_file.read_bytes()
    result = invoke(cli_runner, "discover", "synthetic", "-m", "regression", "--opt", f"dataset={small_file}",
                    "-o", small_file)
    assert result.exit_code == 1 and "--out" in result.output and "input of this run" in result.output
    assert small_file.read_bytes() == before
    other_spelling = tmp_path / "sub" / ".." / small_file.name
    result = invoke(cli_runner, "discover", "synthetic", "-m", "regression", "--opt", f"dataset={small_file}",
                    "-o", other_spelling)
    assert result.exit_code == 1 and small_file.read_bytes() == before


def test_discover_refuses_a_directory_as_output(cli_runner, tmp_path):
    result = invoke(cli_runner, "discover", "synthetic", "-o", tmp_path)
    assert result.exit_code == 2 and "--out" in result.output and "is a directory" in result.output
    empty = invoke(cli_runner, "discover", "synthetic", "-o", "")  # click turns '' into '.'
    assert empty.exit_code in (1, 2) and "--out" in empty.output and "directory" in empty.output
    assert list(tmp_path.iterdir()) == []


def test_failed_edit_writes_nothing(cli_runner, tmp_path):
    calibrated = latentdirs.discover(latentdirs.load_generator("synthetic", device="cpu"), "sefa", num_directions=2)
    path = calibrated.save(tmp_path / "plain.safetensors")
    out = tmp_path / "out"
    result = invoke(cli_runner, "edit", path, "--amounts", "0.1", "--device", "cpu", "-o", out)
    assert result.exit_code == 1 and "not calibrated" in result.output
    assert not out.exists() or list(out.iterdir()) == []


def test_relative_weights_found_from_elsewhere_and_moved_ones_with_g(cli_runner, tmp_path, monkeypatch):
    from tests.stylegan2_fixtures import random_network, tiny_config, write_nvlabs_pickle

    made = tmp_path / "made"
    made.mkdir()
    write_nvlabs_pickle(random_network(tiny_config()), made / "toy.pkl")
    monkeypatch.chdir(made)
    result = invoke(cli_runner, "discover", "stylegan2:toy.pkl", "-k", "2", "--device", "cpu", "-o", "toy.safetensors")
    assert result.exit_code == 0, result.output
    recorded = Directions.load(made / "toy.safetensors").meta["generator"]["source"]
    assert recorded["path"] == "toy.pkl" and recorded["absolute"] == str(made / "toy.pkl")
    assert len(recorded["sha256"]) == 64
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    edit = ["edit", made / "toy.safetensors", "--seeds", "0", "--alphas", "1", "--device", "cpu"]
    result = invoke(cli_runner, *edit, "-o", "out")
    assert result.exit_code == 0, result.output
    (made / "toy.pkl").rename(tmp_path / "moved.pkl")
    result = invoke(cli_runner, *edit, "-o", "out2")
    assert result.exit_code == 1 and "toy.pkl" in result.output and "-g stylegan2:NEWPATH" in result.output
    result = invoke(cli_runner, *edit, "-g", f"stylegan2:{tmp_path / 'moved.pkl'}", "-o", "out3")
    assert result.exit_code == 0, result.output


def test_import_refuses_to_overwrite_its_source(cli_runner, tmp_path):
    import numpy as np

    source = tmp_path / "same.npy"
    np.save(source, np.random.default_rng(0).standard_normal((2, 16)))
    before = source.read_bytes()
    result = invoke(cli_runner, "import", source, "-g", "synthetic", "--device", "cpu", "-o", source)
    assert result.exit_code == 1 and "--out" in result.output and source.read_bytes() == before


def test_evaluate_of_only_broken_files_writes_no_report(cli_runner, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a direction file")
    result = invoke(cli_runner, "evaluate", broken, "--device", "cpu", "--report", tmp_path / "report")
    assert result.exit_code == 1 and "could not be evaluated" in result.output
    assert not (tmp_path / "report").exists()
