"""Registry, ``module:`` specs, plugins, and the embedded-weights error paths."""

from __future__ import annotations

import sys

import pytest
import torch

import latentdirs
from latentdirs import registry
from latentdirs.errors import InvalidValueError, MissingWeightsError, UnknownNameError, WeightsMismatchError
from tests.contract import AdapterContract


class TestModuleContract(AdapterContract):
    @pytest.fixture
    def generator(self):
        return latentdirs.load_generator("module:tests.linear_generator:make", device="cpu", first_layer="fc")


def test_module_spec_runs_sefa():
    generator = latentdirs.load_generator("module:tests.linear_generator:make", device="cpu", first_layer="fc")
    assert generator.resolution == 8 and generator.z_dim == 6
    directions = latentdirs.discover(generator, "sefa")
    assert directions.meta["generator"]["spec"] == "module:tests.linear_generator:make"


def test_module_spec_errors():
    with pytest.raises(UnknownNameError, match="cannot import 'tests.nowhere'"):
        latentdirs.load_generator("module:tests.nowhere:make")
    with pytest.raises(UnknownNameError, match="no callable 'missing'"):
        latentdirs.load_generator("module:tests.linear_generator:missing")
    with pytest.raises(InvalidValueError, match="returned str"):
        latentdirs.load_generator("module:tests.linear_generator:not_a_module")
    with pytest.raises(UnknownNameError, match="first_layer: got 'fc9'; the module has: fc"):
        latentdirs.load_generator("module:tests.linear_generator:make", first_layer="fc9")
    with pytest.raises(InvalidValueError, match="module:package.module:factory"):
        latentdirs.load_generator("module:justaname")
    with pytest.raises(UnknownNameError, match="generator option: got 'color'"):
        latentdirs.load_generator("module:tests.linear_generator:make", color=1)
    with pytest.raises(InvalidValueError, match="'synthetic' without"):
        latentdirs.load_generator("synthetic:extra")


def test_unknown_names_list_the_known_ones():
    with pytest.raises(UnknownNameError, match="generator: got 'gan'; known: dcgan-faces, dcgan-eyes, synthetic"):
        latentdirs.load_generator("gan")
    with pytest.raises(UnknownNameError, match="method: got 'pca'; known: sefa"):
        latentdirs.discover(latentdirs.load_generator("synthetic", device="cpu"), "pca")


class _Point:
    def __init__(self, name, target):
        self.name = name
        self._target = target

    def load(self):
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


def test_plugins_load_and_broken_ones_warn(monkeypatch):
    def plugin_method(generator, *, num_directions=2):
        return latentdirs.discover(generator, "sefa", num_directions=num_directions)

    points = {"latentdirs.methods": [_Point("mine", plugin_method), _Point("broken", ImportError("no deps"))]}
    monkeypatch.setattr(registry, "entry_points", lambda group: points.get(group, []))
    assert {"sefa", "mine", "broken"} <= set(latentdirs.list_methods())
    generator = latentdirs.load_generator("synthetic", device="cpu")
    assert len(latentdirs.discover(generator, "mine")) == 2
    with pytest.warns(UserWarning, match="plugin 'broken' failed to load"):
        with pytest.raises(UnknownNameError):
            latentdirs.discover(generator, "broken")


def test_missing_wheel_prints_the_pip_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gan_face_generate" else real(name, *a))
    with pytest.raises(MissingWeightsError, match="pip install --no-deps gan-face-generate==1.1.1"):
        latentdirs.load_generator("dcgan-faces", device="cpu")


def test_changed_weights_file_is_refused(monkeypatch, tmp_path):
    from latentdirs.generators import dcgan

    fake = tmp_path / "weights.tar"
    torch.save({"netG_state_dict": {}}, fake)
    monkeypatch.setattr(dcgan, "package_file", lambda *a, **k: fake)
    with pytest.raises(WeightsMismatchError, match="sha256 .* expected 0c3b90b1"):
        latentdirs.load_generator("dcgan-faces", device="cpu")


def test_import_is_light():
    code = "import sys, latentdirs; print(sorted(m for m in ('click', 'scipy', 'PIL', 'latentdirs.cli') if m in sys.modules))"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", "the library must not import click, scipy, PIL or the CLI at import time"


def test_cli_passes_generator_options(cli_runner, tmp_path):
    from tests.conftest import invoke

    out = tmp_path / "mine.safetensors"
    spec = "module:tests.linear_generator:make"
    refused = invoke(cli_runner, "discover", spec, "-o", out)
    assert refused.exit_code == 1 and "first_layer" in refused.output
    result = invoke(cli_runner, "discover", spec, "--gen-opt", "first_layer=fc", "-k", "3", "-o", out)
    assert result.exit_code == 0, result.output
    result = invoke(cli_runner, "edit", out, "--gen-opt", "first_layer=fc", "--seeds", "0", "--alphas", "1",
                    "-o", tmp_path / "e")
    assert result.exit_code == 0, result.output
    assert "--gen-opt first_layer=fc" in (tmp_path / "e" / "manifest.json").read_text()
