"""Registry, ``module:`` specs, plugins, load options and reloading from records, and the
embedded-weights error paths. (The adapter contract runs over every family in tests/test_adapters.py.)"""

from __future__ import annotations

import re

import json
import sys
from importlib.metadata import EntryPoint

import pytest
import torch

import latentdirs
from latentdirs import registry
from latentdirs.errors import (DirectionFileError, InvalidValueError, MissingWeightsError, NotSupportedError,
                               UnknownNameError, WeightsMismatchError)
from tests.conftest import invoke

LINEAR = "module:tests.linear_generator:make"


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
    with pytest.raises(UnknownNameError, match="first_layer: got 'fc9'; allowed: fc \\(the module's submodules\\)"):
        latentdirs.load_generator("module:tests.linear_generator:make", first_layer="fc9")
    with pytest.raises(InvalidValueError, match="module:package.module:factory"):
        latentdirs.load_generator("module:justaname")
    with pytest.raises(UnknownNameError, match="generator option: got 'color'"):
        latentdirs.load_generator("module:tests.linear_generator:make", color=1)
    with pytest.raises(InvalidValueError, match="'synthetic' without"):
        latentdirs.load_generator("synthetic:extra")


def test_unknown_names_list_the_known_ones():
    with pytest.raises(UnknownNameError, match="generator: got 'gan'; allowed: dcgan-faces, dcgan-eyes, synthetic"):
        latentdirs.load_generator("gan")
    with pytest.raises(UnknownNameError, match="method: got 'pca'; allowed: sefa"):
        latentdirs.discover(latentdirs.load_generator("synthetic", device="cpu"), "pca")


def plugin_method(generator, *, num_directions=2):
    """A plugin discovery method (registered below through a real entry point)."""
    return latentdirs.discover(generator, "sefa", num_directions=num_directions)


def plugin_generator(argument, *, device="auto", first_layer=None):
    """A plugin generator family: the linear test generator under another name."""
    from latentdirs.generators.module import ModuleAdapter
    from tests.linear_generator import make

    return ModuleAdapter(make(), spec=f"lineargan:{argument}", first_layer=first_layer, device=device)


def _entry_points(monkeypatch, **groups):
    """Real :class:`importlib.metadata.EntryPoint` objects, as installed packages declare them."""
    points = {f"latentdirs.{group}": [EntryPoint(name, value, f"latentdirs.{group}") for name, value in items.items()]
              for group, items in groups.items()}
    monkeypatch.setattr(registry, "entry_points", lambda group: points.get(group, []))


def test_plugins_load_and_broken_ones_are_reported(monkeypatch):
    _entry_points(monkeypatch, methods={"mine": "tests.test_registry:plugin_method",
                                        "broken": "tests.nowhere_at_all:discover"},
                  generators={"lineargan": "tests.test_registry:plugin_generator",
                              "brokengan": "tests.nowhere_at_all:load"})
    methods, families = latentdirs.list_methods(), latentdirs.list_generators()
    assert methods["mine"] == "plugin" and families["lineargan"] == "plugin"
    why = "plugin (broken: ModuleNotFoundError: No module named 'tests.nowhere_at_all')"
    assert methods["broken"] == why and families["brokengan"] == why
    generator = latentdirs.load_generator("synthetic", device="cpu")
    assert len(latentdirs.discover(generator, "mine")) == 2
    with pytest.raises(NotSupportedError, match=r"method: got 'broken'; .*'broken' is broken \(ModuleNotFoundError: "
                                                r"No module named 'tests.nowhere_at_all'\)"):
        latentdirs.discover(generator, "broken")
    with pytest.raises(NotSupportedError, match=r"'brokengan' is broken \(ModuleNotFoundError"):
        latentdirs.load_generator("brokengan:x")
    plugin = latentdirs.load_generator("lineargan:any", device="cpu", first_layer="fc")
    assert plugin.load_options == {"first_layer": "fc"} and plugin.describe()["spec"] == "lineargan:any"


def test_cli_list_shows_a_broken_plugin(monkeypatch, cli_runner):
    _entry_points(monkeypatch, generators={"brokengan": "tests.nowhere_at_all:load"})
    result = invoke(cli_runner, "list", "generators")
    assert result.exit_code == 0
    assert re.search(r"^brokengan +plugin \(broken: ModuleNotFoundError: No module named 'tests.nowhere_at_all'\)$",
                     result.output, re.MULTILINE)


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
    out = tmp_path / "mine.safetensors"
    refused = invoke(cli_runner, "discover", LINEAR, "-o", out)
    assert refused.exit_code == 1 and "--gen-opt first_layer=NAME" in refused.output
    result = invoke(cli_runner, "discover", LINEAR, "--gen-opt", "first_layer=fc", "-k", "3", "-o", out)
    assert result.exit_code == 0, result.output
    refused = invoke(cli_runner, "edit", out, "--seeds", "0", "--alphas", "1", "-o", tmp_path / "refused")
    assert refused.exit_code == 1 and "would import and run code" in refused.output
    result = invoke(cli_runner, "edit", out, "-g", LINEAR, "--gen-opt", "first_layer=fc", "--seeds", "0",
                    "--alphas", "1", "-o", tmp_path / "e")
    assert result.exit_code == 0, result.output
    assert "--gen-opt first_layer=fc" in (tmp_path / "e" / "manifest.json").read_text()


# ---------------------------------------------------------------------- load options and records
@pytest.fixture(scope="module")
def stylegan_path(tmp_path_factory):
    from tests.stylegan2_fixtures import random_network, tiny_config, write_nvlabs_pickle

    return write_nvlabs_pickle(random_network(tiny_config()), tmp_path_factory.mktemp("records") / "g.pkl")


def test_load_options_are_kept_and_described(synthetic):
    generator = latentdirs.load_generator(LINEAR, device="cpu", first_layer="fc", latent_shape="flat")
    assert generator.load_options == {"first_layer": "fc", "latent_shape": "flat"}
    assert generator.describe()["options"] == {"first_layer": "fc", "latent_shape": "flat"}
    assert synthetic.load_options == {} and synthetic.describe()["options"] == {}
    directions = latentdirs.discover(generator, "sefa", num_directions=2)
    assert directions.meta["generator"]["options"] == {"first_layer": "fc", "latent_shape": "flat"}


@pytest.mark.parametrize("value", [object(), float("nan"), {"a": 1}, [1, float("inf")]])
def test_load_options_must_be_recordable(value):
    with pytest.raises(InvalidValueError, match="generator option: got .*first_layer=.*; allowed: a JSON scalar"):
        latentdirs.load_generator(LINEAR, device="cpu", first_layer=value)


def test_record_options_apply_and_user_options_override(stylegan_path):
    spec = f"stylegan2:{stylegan_path}"
    record = json.loads(json.dumps(latentdirs.load_generator(spec, device="cpu", noise_mode="random",
                                                             truncation_cutoff=3).describe()))
    assert record["options"] == {"noise_mode": "random", "truncation_cutoff": 3}
    reloaded = registry.generator_from_record(record, device="cpu")
    assert (reloaded.noise_mode, reloaded.truncation_cutoff) == ("random", 3)
    assert reloaded.load_options == {"noise_mode": "random", "truncation_cutoff": 3}
    same_spec = registry.generator_from_record(record, spec=spec, options={"noise_mode": "const"}, device="cpu")
    assert (same_spec.noise_mode, same_spec.truncation_cutoff) == ("const", 3)  # overridden key by key
    other = registry.generator_from_record(record, spec="synthetic", device="cpu")
    assert other.spec == "synthetic" and other.load_options == {}  # another spec: none of the recorded options
    assert registry.generator_request(record, spec=LINEAR, options={"first_layer": "fc"}) == (LINEAR, {"first_layer": "fc"})


def _payload(tmp_path, monkeypatch, name):
    """A module that writes a marker file when imported (and offers a working generator factory)."""
    marker = tmp_path / f"{name}.ran"
    (tmp_path / f"{name}.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
                                         "from tests.linear_generator import make\n"
                                         "def load(argument, *, device='auto'):\n"
                                         "    raise SystemExit('plugin loader ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return marker


def test_record_may_not_name_code(tmp_path, monkeypatch):
    marker = _payload(tmp_path, monkeypatch, "ld_marker_payload")
    record = {"spec": "module:ld_marker_payload:make", "fingerprint": "sha256:0", "options": {}}
    for where in ({}, {"options": {"latent_dim": 6}}):
        with pytest.raises(InvalidValueError, match=r"generator \(read from the file\): got "
                                                    r"'module:ld_marker_payload:make'; allowed: a built-in family "
                                                    r"that imports no code \(dcgan-faces, dcgan-eyes, synthetic, "
                                                    r"shapes-dcgan, shapes-stylegan2, biggan, stylegan2, stylegan3\); this spec would import and run code. "
                                                    r"Pass it yourself with -g/--generator if you trust it"):
            registry.generator_from_record(record, device="cpu", **where)
    assert not marker.exists() and "ld_marker_payload" not in sys.modules
    _entry_points(monkeypatch, generators={"evilgan": "ld_marker_payload:load"})
    with pytest.raises(InvalidValueError, match="got 'evilgan:x'; .*would import and run code"):
        registry.generator_from_record({"spec": "evilgan:x"}, device="cpu")
    assert not marker.exists() and "ld_marker_payload" not in sys.modules
    # the user's own -g is their decision: then the module is imported
    generator = registry.generator_from_record(record, spec=record["spec"], device="cpu")
    assert marker.exists() and generator.spec == "module:ld_marker_payload:make"


def test_record_without_spec_or_malformed():
    for record in (None, {}, {"fingerprint": "sha256:0"}):
        with pytest.raises(InvalidValueError, match="-g/--generator: got None; allowed: a generator spec such as "
                                                    "dcgan-faces. The file names no generator; pass -g/--generator"):
            registry.generator_from_record(record, device="cpu")
    malformed = [("synthetic", "generator: got 'synthetic'; allowed: an object"),
                 (["synthetic"], "generator: got \\['synthetic'\\]; allowed: an object"),
                 ({"spec": 3}, "generator.spec: got 3; allowed: a non-empty string"),
                 ({"spec": ""}, "generator.spec: got ''"),
                 ({"spec": "synthetic", "options": [1]}, "generator.options: got \\[1\\]; allowed: an object"),
                 ({"spec": "synthetic", "options": {"device": "cuda"}}, "generator.options: got 'device'"),
                 ({"spec": "synthetic", "options": {"not a name": 1}}, "generator.options: got 'not a name'")]
    for record, message in malformed:
        with pytest.raises(DirectionFileError, match=message):
            registry.generator_from_record(record, spec="synthetic", device="cpu")
    with pytest.raises(InvalidValueError, match="--gen-opt: got 'device'"):
        registry.generator_from_record(None, spec="synthetic", options={"device": "cpu"})


# ---------------------------------------------------------------------- the commands that reload a generator
def _linear_file(tmp_path):
    generator = latentdirs.load_generator(LINEAR, device="cpu", first_layer="fc")
    return latentdirs.discover(generator, "sefa", num_directions=3).save(tmp_path / "linear.safetensors")


def test_cli_evaluate_reloads_with_the_recorded_options(tmp_path, cli_runner):
    path = _linear_file(tmp_path)
    fast = ("--top", "2", "--pairs", "50", "--epochs", "1", "--vp-seeds", "1", "--json")
    refused = invoke(cli_runner, "evaluate", path, *fast)
    assert refused.exit_code == 1 and "would import and run code" in refused.output
    result = invoke(cli_runner, "evaluate", path, "-g", LINEAR, *fast)
    assert result.exit_code == 0, result.output
    (item,) = json.loads(result.stdout)["generators"][LINEAR]
    assert item["generator_options"] == {"first_layer": "fc"}  # the recorded option, not given again
    result = invoke(cli_runner, "evaluate", path, "-g", LINEAR, "--gen-opt", "latent_dim=6", *fast)
    (item,) = json.loads(result.stdout)["generators"][LINEAR]
    assert item["generator_options"] == {"first_layer": "fc", "latent_dim": 6}
    wrong = invoke(cli_runner, "evaluate", path, "-g", LINEAR, "--gen-opt", "colour=red", *fast)
    assert wrong.exit_code == 1 and "generator option: got 'colour'" in wrong.output


def test_cli_evaluate_exits_1_when_a_file_fails(tmp_path, cli_runner):
    good = _linear_file(tmp_path)
    result = invoke(cli_runner, "evaluate", good, tmp_path / "missing.safetensors", "-g", LINEAR,
                    "--top", "2", "--pairs", "50", "--epochs", "1", "--vp-seeds", "1")
    assert result.exit_code == 1
    assert "| linear.safetensors | sefa | 2 |" in result.stdout  # the file that worked is reported
    assert "not evaluated: " in result.stdout and "missing.safetensors" in result.stdout
    assert "Error: 1 of 2 files could not be evaluated" in result.stderr and "Traceback" not in result.output


def test_cli_evaluate_caps_pairs(tmp_path, cli_runner):
    result = invoke(cli_runner, "evaluate", tmp_path / "any.safetensors", "--pairs", str(10 ** 12))
    assert result.exit_code == 2 and "--pairs" in result.output and "200000" in result.output


def test_cli_measure_takes_gen_opt_and_needs_a_generator(tmp_path, cli_runner):
    from latentdirs.directions import Directions
    from tests.goldens.make_goldens import HERE

    calibrated = HERE / "synthetic-shift-x.safetensors"
    wrong = invoke(cli_runner, "measure", calibrated, "--gen-opt", "noise_mode=random", "--seeds", "0")
    assert wrong.exit_code == 1 and "generator option: got 'noise_mode'" in wrong.output  # --gen-opt reached the loader
    nameless = Directions(torch.eye(2, 16)).save(tmp_path / "nameless.safetensors")
    result = invoke(cli_runner, "measure", nameless, "--seeds", "0")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip() == ("Error: -g/--generator: got None; allowed: a generator spec such as "
                                     "dcgan-faces. The file names no generator; pass -g/--generator")


def test_cli_import_takes_gen_opt_and_inspect_shows_it(tmp_path, cli_runner):
    import numpy as np

    source = tmp_path / "boundary.npy"
    np.save(source, np.eye(6, dtype=np.float32)[:2])
    out = tmp_path / "imported.safetensors"
    result = invoke(cli_runner, "import", source, "-g", LINEAR, "--gen-opt", "first_layer=fc", "-o", out)
    assert result.exit_code == 0, result.output
    shown = invoke(cli_runner, "inspect", out)
    assert shown.exit_code == 0 and '  options:   {"first_layer": "fc"}' in shown.output
    wrong = invoke(cli_runner, "import", source, "-g", LINEAR, "--gen-opt", "device=cpu", "-o", out)
    assert wrong.exit_code == 1 and "--gen-opt: got 'device'" in wrong.output
