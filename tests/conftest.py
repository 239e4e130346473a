"""Shared fixtures. Loaded generators are session-scoped: their weights never change in tests
(the fingerprint test restores what it perturbs)."""

from __future__ import annotations

import pytest
import torch

import latentdirs

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def faces():
    return latentdirs.load_generator("dcgan-faces", device="cpu")


@pytest.fixture(scope="session")
def eyes():
    return latentdirs.load_generator("dcgan-eyes", device="cpu")


@pytest.fixture(scope="session")
def synthetic():
    return latentdirs.load_generator("synthetic", device="cpu")


@pytest.fixture(scope="session")
def synthetic_sefa(synthetic):
    return latentdirs.discover(synthetic, "sefa")


@pytest.fixture(scope="session")
def calibrated(tmp_path_factory, synthetic):
    """A shift-x calibrated direction on synthetic, its saved file and its trajectory data."""
    folder = tmp_path_factory.mktemp("regression")
    directions = latentdirs.discover(synthetic, "regression", transform="shift-x", samples=32, lr=0.05,
                                     save_dataset=folder / "shift.trajectories")
    path = directions.save(folder / "shift.safetensors")
    return synthetic, directions, path, folder / "shift.trajectories"


@pytest.fixture
def cli_runner():
    from click.testing import CliRunner

    return CliRunner()


def invoke(runner, *args: str):
    """Run the real CLI through click's runner; returns the Result (stderr kept apart)."""
    from latentdirs.cli.main import cli

    return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)
