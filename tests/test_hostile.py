"""The hostile-input catalogue of issue 12: files and arguments a hostile or careless user hands latentdirs.

Every attempt goes through the real CLI and the Python API (tests/hostile/__init__.py says what is
checked: no marker file, no traceback, a one-line error naming the parameter or file, no library
advice to load unsafely, no output left behind). Size bombs are read in forked children whose peak
memory is measured (tests/hostile/bombs.py). With ``LATENTDIRS_CATALOGUE=FILE`` the counts per class
are written to FILE (docs/security.md quotes them).
"""

from __future__ import annotations

import collections
import io
import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import latentdirs
from latentdirs.directions import Directions, read_header
from latentdirs.errors import DirectionFileError, InvalidValueError, SpecError
from latentdirs.importers import import_directions
from latentdirs.inversion import TrajectoryData
from latentdirs.specs import (parse_alphas, parse_index_spec, parse_option, parse_strength_range,
                              split_generator_spec)
from tests.biggan_tiny import write_biggan_dir
from tests.hostile import CATALOGUE, check_api, check_cli, write_catalogue
from tests.hostile import bombs as B
from tests.hostile import files as F
from tests.stylegan2_fixtures import (random_network, rosinality_state, tiny_config, write_nvlabs_pickle,
                                      write_tensorflow_pickle)

Z_DIM = 16  # the synthetic generator's z


# ---------------------------------------------------------------------- real files of every kind
@pytest.fixture(scope="module")
def real(tmp_path_factory, synthetic):
    """One genuine file of each kind, the material every variant below is made from."""
    folder = tmp_path_factory.mktemp("real")
    network = random_network(tiny_config())
    directions = latentdirs.discover(synthetic, "sefa")
    generator = torch.Generator().manual_seed(0)
    z0 = torch.randn(12, Z_DIM, generator=generator)
    trajectories = TrajectoryData(z0, z0 + 0.1, torch.linspace(-0.2, 0.2, 12), torch.rand(12), "shift-x")
    checkpoint = folder / "orojar.pt"
    latentdirs.discover(synthetic, "orojar", steps=1, checkpoint=checkpoint)
    rows = torch.linalg.qr(torch.randn(Z_DIM, Z_DIM, generator=generator))[0][:4].numpy()
    np.save(folder / "boundary.npy", rows)
    np.savez(folder / "ganspace.npz", lat_comp=rows[:, None, :], lat_stdev=np.arange(4, 0, -1.0), lat_mean=rows[0])
    return {"network": network, "state": rosinality_state(network),
            "nvlabs": write_nvlabs_pickle(network, folder / "network.pkl"),
            "tensorflow": write_tensorflow_pickle(network, folder / "tf.pkl"),
            "rosinality": F.write(folder / "g.pt", F.torch_bytes({"g_ema": rosinality_state(network),
                                                                  "latent_avg": network.mapping.w_avg.detach()})),
            "biggan": write_biggan_dir(folder / "biggan"),
            "directions": directions.save(folder / "directions.safetensors"),
            "trajectories": trajectories.save(folder / "shift.trajectories"),
            "checkpoint": checkpoint, "npy": folder / "boundary.npy", "npz": folder / "ganspace.npz"}


@pytest.fixture(scope="module", autouse=True)
def catalogue_file():
    yield
    if os.environ.get("LATENTDIRS_CATALOGUE"):
        write_catalogue(os.environ["LATENTDIRS_CATALOGUE"])


def test_the_real_files_load(real, synthetic):
    """The material is genuine: every variant below differs from a file that loads."""
    for kind in ("nvlabs", "tensorflow", "rosinality"):
        assert latentdirs.load_generator(f"stylegan2:{real[kind]}", device="cpu").resolution == 32
    assert latentdirs.load_generator(f"biggan:{real['biggan']}", device="cpu").resolution == 32
    assert len(Directions.load(real["directions"], generator=synthetic)) == Z_DIM
    assert TrajectoryData.load(real["trajectories"]).z0.shape == (12, Z_DIM)
    assert len(import_directions(real["npy"], synthetic)) == 4 and len(import_directions(real["npz"], synthetic)) == 4


# ---------------------------------------------------------------------- how each kind is read
def _read_both(kind: str, label: str, path: Path, tmp_path: Path, synthetic, *, marker: Path | None = None,
               extra_names: tuple[str, ...] = ()) -> None:
    """Hand ``path`` (of file kind ``kind``) to the API and to the CLI; both must refuse it cleanly."""
    out = tmp_path / "out"
    names = (path.name, *extra_names)
    api, cli = _READERS[kind]
    check_api(f"{label}", lambda: api(path, synthetic), names=names, marker=marker, outputs=[out])
    check_cli(f"{label}", cli(path, out), names=names, marker=marker, outputs=[out])


def _orojar(path: Path, synthetic) -> None:
    latentdirs.discover(synthetic, "orojar", steps=2, checkpoint=path, resume=True)


_READERS = {
    "stylegan2": (lambda p, g: latentdirs.load_generator(f"stylegan2:{p}", device="cpu"),
                  lambda p, out: ["discover", f"stylegan2:{p}", "-m", "sefa", "--device", "cpu", "-o", out]),
    "stylegan3": (lambda p, g: latentdirs.load_generator(f"stylegan3:{p}", device="cpu"),
                  lambda p, out: ["discover", f"stylegan3:{p}", "-m", "sefa", "--device", "cpu", "-o", out]),
    "biggan": (lambda p, g: latentdirs.load_generator(f"biggan:{p.parent}", device="cpu"),
               lambda p, out: ["discover", f"biggan:{p.parent}", "-m", "sefa", "--device", "cpu", "-o", out]),
    "directions": (lambda p, g: Directions.load(p, generator=g),
                   lambda p, out: ["edit", p, "-g", "synthetic", "--seeds", "0-1", "--device", "cpu", "-o", out]),
    "header": (lambda p, g: read_header(p), lambda p, out: ["inspect", p]),
    "trajectories": (lambda p, g: latentdirs.discover(g, "regression", dataset=p),
                     lambda p, out: ["discover", "synthetic", "-m", "regression", "--opt", f"dataset={p}", "-o", out]),
    "checkpoint": (_orojar, lambda p, out: ["discover", "synthetic", "-m", "orojar", "--opt", f"checkpoint={p}",
                                            "--opt", "resume=true", "--opt", "steps=2", "-o", out]),
    "import": (lambda p, g: import_directions(p, g), lambda p, out: ["import", p, "-g", "synthetic", "-o", out]),
}


# ====================================================================== 1. code execution
@pytest.fixture
def trap(tmp_path, monkeypatch):
    """(marker, sibling .py that writes it when imported or run — importable: its folder is on sys.path)."""
    marker = tmp_path / "MARKER"
    name = f"hostile_sibling_{tmp_path.name.replace('-', '_')}"
    sibling = F.sibling_module(tmp_path, marker, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker, sibling
    assert name not in sys.modules, "the sibling module was imported"


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("payload", F.PAYLOAD_NAMES)
@pytest.mark.parametrize("family", ["stylegan2", "stylegan3"])
def test_pickle_payload_never_runs(family, payload, protocol, trap, tmp_path, synthetic):
    marker, sibling = trap
    content = {"G_ema": F.payloads(marker, sibling)[payload]}
    path = F.write(tmp_path / "evil.pkl", pickle.dumps(content, protocol=protocol))
    _read_both(family, f"code: {family.replace('stylegan', 'StyleGAN')} pickle", path, tmp_path, synthetic,
               marker=marker)


@pytest.mark.parametrize("where", ["nvlabs-parameter", "nvlabs-module", "tensorflow-state", "embedded-storage",
                                   "tensor-hooks"])
@pytest.mark.parametrize("payload", F.PAYLOAD_NAMES)
def test_nested_pickle_payload_never_runs(payload, where, trap, tmp_path, synthetic):
    marker, sibling = trap
    evil = F.payloads(marker, sibling)[payload]
    if where == "nvlabs-parameter":
        data = F.nvlabs_with({"weight": evil})
    elif where == "nvlabs-module":
        data = F.persistent_pickle({"G_ema": F.Record(F.module_meta(modules={"mapping": evil}))})
    elif where == "tensorflow-state":
        data = pickle.dumps((None, None, {"components": {"mapping": evil}}))
    elif where == "embedded-storage":  # the inner torch.save blob of a storage runs the payload
        data = F.nvlabs_with({"weight": F.Rebuild(F.LoadFromBytes(F.torch_bytes(evil, legacy=True)), 0, (1,), (1,))})
    else:  # a tensor whose backward hooks are the payload
        data = F.nvlabs_with({"weight": _HookedRebuild(F.storage(4), evil)})
    path = F.write(tmp_path / "evil.pkl", data)
    _read_both("stylegan2", "code: StyleGAN2 pickle", path, tmp_path, synthetic, marker=marker)


class _HookedRebuild(F.Rebuild):
    def __init__(self, storage, hook):
        super().__init__(storage, 0, (4,), (1,))
        self.hook = hook

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (self.storage, 0, (4,), (1,), False,
                                                 collections.OrderedDict(hook=self.hook))


@pytest.mark.parametrize("route", ["rosinality", "biggan", "checkpoint"])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("payload", F.PAYLOAD_NAMES)
def test_torch_file_payload_never_runs(payload, legacy, route, trap, tmp_path, real, synthetic):
    marker, sibling = trap
    evil = F.payloads(marker, sibling)[payload]
    data = F.torch_bytes({"g_ema": {"w": evil}, "latent_avg": torch.zeros(4)}, legacy=legacy)
    if route == "biggan":
        folder = F.biggan_dir(tmp_path / "bg", (real["biggan"] / "config.json").read_text(),
                              F.rewrite_zip(data, extra={"archive/pad": bytes(300_000)}) if not legacy
                              else data + bytes(300_000))
        path = folder / "pytorch_model.bin"
    else:
        path = F.write(tmp_path / "evil.pt", data)
    _read_both({"rosinality": "stylegan2", "biggan": "biggan", "checkpoint": "checkpoint"}[route],
               "code: torch file", path, tmp_path, synthetic, marker=marker, extra_names=("generator", "checkpoint"))


@pytest.mark.parametrize("container", ["npy", "npz"])
@pytest.mark.parametrize("payload", F.PAYLOAD_NAMES)
def test_numpy_object_array_never_runs(payload, container, trap, tmp_path, synthetic):
    marker, sibling = trap
    array = np.array([F.payloads(marker, sibling)[payload]], dtype=object)
    path = tmp_path / f"evil.{container}"
    if container == "npy":
        np.save(path, array, allow_pickle=True)
    else:
        np.savez(path, lat_comp=array)
    _read_both("import", "code: numpy array", path, tmp_path, synthetic, marker=marker)


@pytest.mark.parametrize("command", ["edit", "measure", "evaluate"])
@pytest.mark.parametrize("spec", ["module:{sibling}:make", "module:{sibling}:absent", "module:this:x"])
def test_direction_file_cannot_choose_code(spec, command, trap, tmp_path, real):
    """A header names the generator; one that imports code must not be loaded unless the user gives it (-g)."""
    marker, sibling = trap
    header = json.loads(F.safetensors_header(real["directions"].read_bytes())["__metadata__"]["latentdirs"])
    header["generator"] = {**header["generator"], "spec": spec.format(sibling=sibling.stem), "options": {}}
    path = F.write(tmp_path / "chooser.safetensors", F.with_header(real["directions"].read_bytes(), header))
    out = tmp_path / "out"
    args = {"edit": ["edit", path, "-o", out], "measure": ["measure", path], "evaluate": ["evaluate", path]}[command]
    # evaluate reports each file's error as a warning, then fails with the count of files it could not evaluate
    check_cli("code: direction file names a module", args, names=("generator", "-g", "could not be evaluated"),
              marker=marker, outputs=[out])
    assert "this" not in sys.modules, "module 'this' was imported"


@pytest.mark.parametrize("content", ["os.system payload", "stride-0 bomb"])
def test_embedded_weights_are_checked_by_sha256_before_reading(content, trap, tmp_path, monkeypatch):
    """dcgan-faces' weights file comes from a wheel: a replaced file is refused by its checksum, unread."""
    from latentdirs.generators import dcgan

    marker, sibling = trap
    data = (F.torch_bytes({"netG_state_dict": {"w": F.payloads(marker, sibling)["os.system"]}})
            if content == "os.system payload" else F.torch_declaring((10**9,), (0,)))
    fake = F.write(tmp_path / "weights.tar", data)
    monkeypatch.setattr(dcgan, "package_file", lambda *args, **kwargs: fake)
    out = tmp_path / "out.safetensors"
    check_api("code: embedded weights", lambda: latentdirs.load_generator("dcgan-faces", device="cpu"),
              names=("sha256",), marker=marker)
    check_cli("code: embedded weights", ["discover", "dcgan-faces", "--device", "cpu", "-o", out], names=("sha256",),
              marker=marker, outputs=[out])


def test_modules_beside_a_network_pickle_are_never_imported(tmp_path, real):
    """A user runs ``python -m latentdirs.cli.main`` in the download folder, where the pickle's own
    torch_utils and dnnlib packages lie (the original loaders import them): they must not run."""
    marker = tmp_path / "MARKER"
    for package in ("torch_utils", "dnnlib"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (tmp_path / "cut.pkl").write_bytes(real["nvlabs"].read_bytes()[:-10])  # truncated: refused after reading
    (tmp_path / "network.pkl").write_bytes(real["nvlabs"].read_bytes())
    (tmp_path / "tf.pkl").write_bytes(real["tensorflow"].read_bytes())
    code = ("import sys\nfrom latentdirs.cli.main import main\n"
            "sys.argv = ['latentdirs', 'discover', 'stylegan2:cut.pkl', '-m', 'sefa', '-o', 'out.safetensors']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "import latentdirs\nfor name in ('network.pkl', 'tf.pkl'):\n"
            "    latentdirs.load_generator(f'stylegan2:{name}', device='cpu')\n"
            "print('modules', sorted(m for m in sys.modules if m.split('.')[0] in ('torch_utils', 'dnnlib')))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    CATALOGUE["code: modules beside a pickle"]["attempts"] += 3
    CATALOGUE["code: modules beside a pickle"]["code_executions"] += int(marker.exists())
    assert result.returncode == 0, result.stderr[-2000:]
    assert not marker.exists() and "modules []" in result.stdout


# ====================================================================== 2. size bombs
@pytest.fixture(scope="module")
def bomb_results(tmp_path_factory, real):
    folder = tmp_path_factory.mktemp("bombs")
    cases = B.build_bombs(folder, real["directions"], real)
    (folder / "cases.json").write_text(json.dumps(cases))
    subprocess.run([sys.executable, "-m", "tests.hostile.bombs", str(folder / "cases.json"),
                    str(folder / "results.json")], cwd=Path(__file__).parents[1], check=True, timeout=300)
    return json.loads((folder / "results.json").read_text())


@pytest.mark.parametrize("name", B.BOMB_IDS)
def test_size_bomb_refused_before_allocating(name, bomb_results):
    result = bomb_results[name]
    bound = 2 * result["size"] + B.MARGIN
    counts = CATALOGUE["bomb: " + name.split(":")[0]]
    counts["attempts"] += 1
    counts["tracebacks"] += int(not result["refused"])
    counts["over_bound"] += int(result["peak"] > bound)
    counts["peak_max_bytes"] = max(counts["peak_max_bytes"], result["peak"])
    assert result["refused"], result["message"]
    assert "\n" not in result["message"] and "MemoryError" not in result["message"], result["message"]
    assert not any(text in result["message"] for text in ("can't allocate", "Cannot allocate", "Unable to allocate"))
    assert result["peak"] <= bound, f"peak {result['peak'] / 2**20:.1f} MiB for a {result['size']}-byte input"
    assert result["seconds"] < B.SECONDS


# ====================================================================== 3. malformed structures
def _stylegan2(label, data, tmp_path, synthetic, name="bad.pkl"):
    _read_both("stylegan2", label, F.write(tmp_path / name, data), tmp_path, synthetic, extra_names=("generator",))


def _nvlabs_variants():
    float_tensor = torch.zeros(4)
    deep = F.module_meta()
    for _ in range(40):
        deep = F.module_meta(modules={"inner": F.Record(deep)})
    cycle_meta = F.module_meta({"w": float_tensor})
    cycle = F.Record(cycle_meta)
    cycle_meta["state"]["_modules"]["again"] = cycle
    shared = F.Record(F.module_meta({"w": float_tensor}))
    return {
        "meta-is-a-list": {"G_ema": F.Record([1, 2])},
        "meta-is-a-string": {"G_ema": F.Record("meta")},
        "state-is-a-list": {"G_ema": F.Record({"state": [1, 2]})},
        "state-is-a-number": {"G_ema": F.Record({"state": 5})},
        "modules-is-a-list": {"G_ema": F.Record({"state": {"_modules": [1]}})},
        "parameters-is-a-string": {"G_ema": F.Record({"state": {"_parameters": "weights"}})},
        "parameter-is-a-string": {"G_ema": F.Record(F.module_meta({"weight": "zeros"}))},
        "parameter-is-a-record": {"G_ema": F.Record(F.module_meta({"weight": F.Record(F.module_meta())}))},
        "parameter-is-a-dict": {"G_ema": F.Record(F.module_meta({"weight": {"a": 1}}))},
        "module-cycle": {"G_ema": cycle},
        "module-shared": {"G_ema": F.Record(F.module_meta(modules={"a": shared, "b": shared}))},
        "modules-40-deep": {"G_ema": F.Record(deep)},
        "empty-network": {"G_ema": F.Record(F.module_meta())},
        "g-ema-is-a-dict": {"G_ema": {"state": {}}},
        "top-level-list": [1, 2, 3],
        "top-level-tuple-of-3-non-networks": (1, 2, 3),
    }


@pytest.mark.parametrize("variant", list(_nvlabs_variants()))
def test_malformed_nvlabs_pickle(variant, tmp_path, synthetic):
    _stylegan2("malformed: StyleGAN2 NVlabs", F.persistent_pickle(_nvlabs_variants()[variant]), tmp_path, synthetic)


#: a pickle that hands a dict to _reconstruct_persistent_obj and only *then* sets its "state" to 5
_STATE_SET_AFTER_USE = (b"\x80\x02}q\x00X\x05\x00\x00\x00G_emaq\x01ctorch_utils.persistence\n_reconstruct_persistent_obj\n"
                        b"q\x02}q\x03\x85q\x04Rq\x05sh\x03X\x05\x00\x00\x00stateq\x06K\x05s0.")


def test_record_state_replaced_after_use(tmp_path, synthetic):
    _stylegan2("malformed: StyleGAN2 NVlabs", _STATE_SET_AFTER_USE, tmp_path, synthetic)


class _Built:
    """Pickles as ``callable(*args)`` followed by BUILD with ``state`` (pickle's __setstate__ step);
    ``function`` None means the persistent-object constructor (resolved while pickling)."""

    def __init__(self, function, args, state):
        self.function, self.args, self.state = function, args, state

    def __reduce__(self):
        return self.function or F.Record.reconstruct, self.args, self.state


def _junk_state_variants():
    multiarray = getattr(np, "_core", None) or np.core
    return {
        "setstate-on-persistent-record": lambda: F.persistent_pickle(
            {"G_ema": _Built(None, (F.module_meta(),), {"meta": 5})}),
        "setstate-on-set": lambda: pickle.dumps({"G_ema": _Built(set, ([1],), {"x": 1})}),
        "setstate-on-ordered-dict": lambda: pickle.dumps({"G_ema": _Built(collections.OrderedDict, (), 5)}),
        "array-state-object-dtype": lambda: pickle.dumps({"G_ema": F.ArrayState((1, (2,), np.dtype("O"), False, [1, 2]))}),
        "array-state-strings": lambda: pickle.dumps({"G_ema": F.ArrayState((1, (2,), np.dtype("U3"), False, b"x" * 24))}),
        "array-state-short-tuple": lambda: pickle.dumps({"G_ema": F.ArrayState((1, (2,)))}),
        "array-reconstruct-of-a-set": lambda: pickle.dumps({"G_ema": F.Reconstruct(set, (0,))}),
        "latin1-of-a-number": lambda: pickle.dumps({"G_ema": F.Payload(__import__("_codecs").encode, 5, "latin1")}),
        "latin1-other-encoding": lambda: pickle.dumps({"G_ema": F.Payload(__import__("_codecs").encode, "a", "utf-16")}),
        "dtype-junk": lambda: pickle.dumps({"G_ema": F.Payload(np.dtype, "not-a-dtype")}),
        "scalar-junk": lambda: pickle.dumps({"G_ema": F.Payload(multiarray.multiarray.scalar, np.dtype("f4"), b"")}),
        "rebuild-without-storage": lambda: pickle.dumps({"G_ema": F.Payload(torch._utils._rebuild_tensor_v2, 1, 0, (1,), (1,), False, collections.OrderedDict())}),
        "rebuild-with-string-sizes": lambda: F.nvlabs_with({"w": F.Rebuild(F.storage(4), 0, ("4",), (1,))}),
        "rebuild-negative-stride": lambda: F.nvlabs_with({"w": F.Rebuild(F.storage(4), 0, (4,), (-1,))}),
        "rebuild-mismatched-dims": lambda: F.nvlabs_with({"w": F.Rebuild(F.storage(4), 0, (2, 2), (1,))}),
        "storage-of-a-string": lambda: F.nvlabs_with({"w": F.Rebuild(F.LoadFromBytes("text"), 0, (1,), (1,))}),
        "storage-of-junk-bytes": lambda: F.nvlabs_with({"w": F.Rebuild(F.LoadFromBytes(b"\x80\x02junk"), 0, (1,), (1,))}),
        "storage-of-a-tensor-file": lambda: F.nvlabs_with(
            {"w": F.Rebuild(F.LoadFromBytes(F.torch_bytes(torch.zeros(2), legacy=True)), 0, (1,), (1,))}),
        "persistent-id": lambda: _persistent_id_pickle(),
        "tf-network-state-is-a-list": lambda: _tf_pickle([1, 2]),
    }


def _persistent_id_pickle():
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=2)
    pickler.persistent_id = lambda obj: "id" if isinstance(obj, str) and obj == "x" else None
    pickler.dump({"G_ema": "x"})
    return buffer.getvalue()


def _tf_pickle(state):
    """A TensorFlow-style (G, D, Gs) pickle whose networks are given ``state`` by pickle's BUILD."""
    from tests.stylegan2_fixtures import _fake_modules
    import types

    module = types.ModuleType("dnnlib.tflib.network")

    class Network:
        def __reduce__(self):
            return Network, (), state

    Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
    module.Network = Network
    with _fake_modules(dnnlib=types.ModuleType("dnnlib"), **{"dnnlib.tflib": types.ModuleType("dnnlib.tflib"),
                                                            "dnnlib.tflib.network": module}):
        return pickle.dumps((Network(), Network(), Network()), protocol=2)


@pytest.mark.parametrize("variant", ["setstate-on-persistent-record", "setstate-on-set", "setstate-on-ordered-dict",
                                     "array-state-object-dtype", "array-state-strings", "array-state-short-tuple",
                                     "array-reconstruct-of-a-set", "latin1-of-a-number", "latin1-other-encoding",
                                     "dtype-junk", "scalar-junk", "rebuild-without-storage", "rebuild-with-string-sizes",
                                     "rebuild-negative-stride", "rebuild-mismatched-dims", "storage-of-a-string",
                                     "storage-of-junk-bytes", "storage-of-a-tensor-file", "persistent-id",
                                     "tf-network-state-is-a-list"])
def test_junk_pickle_state(variant, tmp_path, synthetic):
    _stylegan2("malformed: StyleGAN2 pickle objects", _junk_state_variants()[variant](), tmp_path, synthetic)


def _tf_state(real):
    """The TensorFlow pickle's networks (inert records), their arrays as plain numpy arrays."""
    from latentdirs.generators.stylegan2.unpickle import restricted_load

    gs = restricted_load(real["tensorflow"].read_bytes())[2]
    for record in (gs, gs.state["components"]["mapping"], gs.state["components"]["synthesis"]):
        record.state["variables"] = [(name, np.array(value)) for name, value in record.state["variables"]]
    return gs


def _tf_with(real, change) -> bytes:
    from tests.stylegan2_fixtures import _fake_modules
    import types

    gs = _tf_state(real)
    states = {"Gs": gs.state, "mapping": gs.state["components"]["mapping"].state,
              "synthesis": gs.state["components"]["synthesis"].state}
    change(states)
    module = types.ModuleType("dnnlib.tflib.network")

    class Network:
        def __init__(self, state):
            self.state = state

        def __reduce__(self):
            return Network, (), self.state

    Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
    module.Network = Network
    mapping, synthesis = Network(states["mapping"]), Network(states["synthesis"])
    if isinstance(states["Gs"].get("components"), dict):
        states["Gs"]["components"] = {k: {"mapping": mapping, "synthesis": synthesis}.get(k, v)
                                      for k, v in states["Gs"]["components"].items()}
    with _fake_modules(dnnlib=types.ModuleType("dnnlib"), **{"dnnlib.tflib": types.ModuleType("dnnlib.tflib"),
                                                            "dnnlib.tflib.network": module}):
        gs_record = Network(states["Gs"])
        return pickle.dumps((gs_record, gs_record, gs_record), protocol=4)


def _tf_synthesis_names():
    network = random_network(tiny_config())
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = write_tensorflow_pickle(network, Path(folder) / "tf.pkl")
        from latentdirs.generators.stylegan2.unpickle import restricted_load

        gs = restricted_load(path.read_bytes())[2]
    return [name for name, _ in gs.state["components"]["synthesis"].state["variables"]]


_TF_SYNTHESIS = _tf_synthesis_names()[::2]


@pytest.mark.parametrize("name", _TF_SYNTHESIS)
def test_tensorflow_pickle_missing_a_variable(name, tmp_path, real, synthetic):
    def drop(states):
        states["synthesis"]["variables"] = [(n, v) for n, v in states["synthesis"]["variables"] if n != name]

    _stylegan2("malformed: StyleGAN2 TensorFlow", _tf_with(real, drop), tmp_path, synthetic)


_TF_DAMAGE = {
    "mapping-Dense0-weight-missing": lambda s: s["mapping"].update(
        variables=[(n, v) for n, v in s["mapping"]["variables"] if n != "Dense0/weight"]),
    "dlatent-avg-missing": lambda s: s["Gs"].update(variables=[]),
    "components-is-a-list": lambda s: s["Gs"].update(components=[1]),
    "mapping-component-missing": lambda s: s["Gs"].update(components={"synthesis": None}),
    "variables-is-a-dict": lambda s: s["synthesis"].update(variables={"a": 1}),
    "variables-are-triples": lambda s: s["synthesis"].update(variables=[("a", 1, 2)]),
    "version-is-text": lambda s: s["Gs"].update(version="four"),
    "static-kwargs-is-a-list": lambda s: s["Gs"].update(static_kwargs=[1, 2]),
    "conv-clamp-is-text": lambda s: s["Gs"].update(static_kwargs={**s["Gs"]["static_kwargs"], "conv_clamp": "abc"}),
    "conv-clamp-is-nan": lambda s: s["Gs"].update(static_kwargs={**s["Gs"]["static_kwargs"], "conv_clamp": float("nan")}),
    "mapping-lrmul-negative": lambda s: s["Gs"].update(static_kwargs={**s["Gs"]["static_kwargs"], "mapping_lrmul": -1}),
    "weight-of-wrong-rank": lambda s: s["synthesis"].update(
        variables=[(n, v.reshape(-1) if n == "8x8/Conv1/weight" else v) for n, v in s["synthesis"]["variables"]]),
    "weight-of-wrong-size": lambda s: s["synthesis"].update(
        variables=[(n, v[:1] if n == "8x8/Conv1/weight" else v) for n, v in s["synthesis"]["variables"]]),
    "variable-is-text": lambda s: s["synthesis"].update(
        variables=[(n, "text" if n == "4x4/Const/const" else v) for n, v in s["synthesis"]["variables"]]),
}


@pytest.mark.parametrize("variant", list(_TF_DAMAGE))
def test_tensorflow_pickle_damaged(variant, tmp_path, real, synthetic):
    _stylegan2("malformed: StyleGAN2 TensorFlow", _tf_with(real, _TF_DAMAGE[variant]), tmp_path, synthetic)


def _rosinality_keys():
    state = rosinality_state(random_network(tiny_config()))
    return [key for key in state if not key.endswith(".kernel")]


@pytest.mark.parametrize("key", _rosinality_keys()[::2])
def test_rosinality_checkpoint_missing_a_key(key, tmp_path, real, synthetic):
    state = {k: v for k, v in real["state"].items() if k != key}
    data = F.torch_bytes({"g_ema": state, "latent_avg": torch.zeros(16)})
    _stylegan2("malformed: StyleGAN2 rosinality", data, tmp_path, synthetic, name="bad.pt")


_ROSINALITY_DAMAGE = {
    "no-g-ema": lambda s: {"g": s},
    "g-ema-is-a-list": lambda s: {"g_ema": list(s.values())},
    "value-is-a-number": lambda s: {"g_ema": {**s, "style.1.weight": 3}},
    "value-is-a-dict": lambda s: {"g_ema": {**s, "conv1.conv.weight": {"w": torch.zeros(1)}}},
    "value-of-wrong-rank": lambda s: {"g_ema": {**s, "conv1.conv.weight": torch.zeros(3)}},
    "latent-avg-wrong-size": lambda s: {"g_ema": s, "latent_avg": torch.zeros(5)},
    "latent-avg-is-text": lambda s: {"g_ema": s, "latent_avg": "average"},
    "noise-index-beyond-layers": lambda s: {"g_ema": {**s, "noises.noise_99": torch.zeros(1, 1, 4, 4)}},
    "top-level-list": lambda s: [s],
    "args-without-g-ema": lambda s: {"args": __import__("argparse").Namespace(size=32)},
    "one-mapping-layer-missing-weight": lambda s: {"g_ema": {k: v for k, v in s.items() if not k.startswith("style")}},
}


@pytest.mark.parametrize("variant", list(_ROSINALITY_DAMAGE))
def test_rosinality_checkpoint_damaged(variant, tmp_path, real, synthetic):
    data = F.torch_bytes(_ROSINALITY_DAMAGE[variant](dict(real["state"])))
    _stylegan2("malformed: StyleGAN2 rosinality", data, tmp_path, synthetic, name="bad.pt")


# ---------------------------------------------------------------------- BigGAN directories
_BIGGAN_FIELDS = ["output_dim", "z_dim", "class_embed_dim", "channel_width", "num_classes", "layers",
                  "attention_layer_position", "eps", "n_stats"]
_BIGGAN_WRONG = {"null": None, "true": True, "string": "abc", "float": 2.5, "negative": -3, "zero": 0,
                 "list": [1, "x"], "object": {"a": 1}, "huge": 10**30}
_BIGGAN_VALID = {("attention_layer_position", "zero")}  # attention before the first block: a real choice


@pytest.mark.parametrize("field,value", [(f, v) for f in _BIGGAN_FIELDS for v in _BIGGAN_WRONG
                                         if (f, v) not in _BIGGAN_VALID])
def test_biggan_config_field_of_wrong_type(field, value, tmp_path, real, synthetic):
    config = json.loads((real["biggan"] / "config.json").read_text())
    config[field] = _BIGGAN_WRONG[value]
    folder = F.biggan_dir(tmp_path / "bg", config, (real["biggan"] / "pytorch_model.bin").read_bytes())
    _read_both("biggan", "malformed: BigGAN config.json", folder / "config.json", tmp_path, synthetic,
               extra_names=("config.json",))


_BIGGAN_CONFIGS = {
    "not-an-object": "[1, 2]", "empty-file": "", "binary": b"\xff\xfe\x00", "truncated": '{"output_dim": 32, ',
    "layers-entry-of-two": None, "output-dim-disagrees": None, "nested-deep": "[" * 5000 + "]" * 5000,
}


@pytest.mark.parametrize("variant", list(_BIGGAN_CONFIGS))
def test_biggan_config_damaged(variant, tmp_path, real, synthetic):
    config = json.loads((real["biggan"] / "config.json").read_text())
    text = _BIGGAN_CONFIGS[variant]
    if variant == "layers-entry-of-two":
        text = json.dumps({**config, "layers": [[True, 1]] * len(config["layers"])})
    elif variant == "output-dim-disagrees":
        text = json.dumps({**config, "output_dim": 64})
    folder = F.biggan_dir(tmp_path / "bg", text, (real["biggan"] / "pytorch_model.bin").read_bytes())
    _read_both("biggan", "malformed: BigGAN config.json", folder / "config.json", tmp_path, synthetic,
               extra_names=("config.json",))


def _biggan_state(real):
    return torch.load(real["biggan"] / "pytorch_model.bin", weights_only=True)


_BIGGAN_WEIGHTS = {
    "a-list": lambda s: list(s.values()),
    "a-tensor": lambda s: torch.zeros(10**5),
    "empty-dict": lambda s: {},
    "missing-a-key": lambda s: {k: v for i, (k, v) in enumerate(s.items()) if i != 3},
    "missing-every-other-key": lambda s: {k: v for i, (k, v) in enumerate(s.items()) if i % 2},
    "unexpected-key": lambda s: {**s, "generator.extra": torch.zeros(3)},
    "wrong-shape": lambda s: {**s, "embeddings.weight": torch.zeros(3, 3)},
    "non-tensor-value": lambda s: {**s, "embeddings.weight": [1.0, 2.0]},
    "integer-key": lambda s: {**s, 7: torch.zeros(1)},
    "integer-dtype": lambda s: {**s, "embeddings.weight": s["embeddings.weight"].long()},
    "nested-dict": lambda s: {"state_dict": s},
}


@pytest.mark.parametrize("variant", list(_BIGGAN_WEIGHTS))
def test_biggan_weights_damaged(variant, tmp_path, real, synthetic):
    weights = F.torch_bytes(_BIGGAN_WEIGHTS[variant](_biggan_state(real)))
    weights = F.rewrite_zip(weights, extra={"archive/pad": bytes(600_000)})  # past the size check, to the keys
    folder = F.biggan_dir(tmp_path / "bg", (real["biggan"] / "config.json").read_text(), weights)
    _read_both("biggan", "malformed: BigGAN weights", folder / "pytorch_model.bin", tmp_path, synthetic,
               extra_names=("pytorch_model.bin",))


# ---------------------------------------------------------------------- truncations of every kind
_TRUNCATED = {"nvlabs": "stylegan2", "tensorflow": "stylegan2", "rosinality": "stylegan2", "directions": "directions",
              "trajectories": "trajectories", "checkpoint": "checkpoint", "npy": "import", "npz": "import",
              "biggan": "biggan"}


@pytest.mark.parametrize("point", range(12))
@pytest.mark.parametrize("kind", list(_TRUNCATED))
def test_truncated_file(kind, point, tmp_path, real, synthetic):
    source = real[kind] / "pytorch_model.bin" if kind == "biggan" else real[kind]
    data = source.read_bytes()
    cut = F.truncations(data, 12)[point]
    if kind == "biggan":
        folder = F.biggan_dir(tmp_path / "bg", (real["biggan"] / "config.json").read_text(), data[:cut])
        path = folder / "pytorch_model.bin"
    else:
        path = F.write(tmp_path / source.name, data[:cut])
    _read_both(_TRUNCATED[kind], f"malformed: truncated {kind}", path, tmp_path, synthetic,
               extra_names=("generator", "dataset", "checkpoint", "source", "directions"))


# ---------------------------------------------------------------------- direction files
_HEADER_FIELDS = ["schema", "schema_version", "library_version", "created", "generator", "space", "latent_dim",
                  "num_directions", "layers", "method", "score_kind", "calibration", "labels"]
#: (field, wrong value) pairs that are in fact allowed (e.g. created: null) — not hostile, left out
_HEADER_VALID = {("library_version", "string"), ("created", "null"), ("created", "string"), ("generator", "null"),
                 ("generator", "object"), ("layers", "null"), ("layers", "empty-list"), ("method", "null"),
                 ("method", "object"), ("score_kind", "null"), ("score_kind", "string"), ("calibration", "null")}


@pytest.mark.parametrize("field,value", [(f, v) for f in _HEADER_FIELDS for v in F.WRONG_JSON
                                         if (f, v) not in _HEADER_VALID])
def test_direction_header_field_of_wrong_type(field, value, tmp_path, real, synthetic):
    header = json.loads(F.safetensors_header(real["directions"].read_bytes())["__metadata__"]["latentdirs"])
    header[field] = F.WRONG_JSON[value]
    path = F.write(tmp_path / "bad.safetensors", F.with_header(real["directions"].read_bytes(), header))
    _read_both("directions", "malformed: direction header", path, tmp_path, synthetic,
               extra_names=("directions", "space"))


def _direction_variants(real):
    data = real["directions"].read_bytes()
    header = json.loads(F.safetensors_header(data)["__metadata__"]["latentdirs"])
    vectors = Directions.load(real["directions"]).vectors

    def file(tensors, meta=header, raw=None):
        return F.safetensors_bytes(tensors, {"latentdirs": raw if raw is not None else json.dumps(meta)})

    calibrated = {**header, "num_directions": 1, "calibration": {"kind": "monotone-piecewise-linear",
                                                                "transform": "shift-x", "units": "w", "range": [0, 1]}}
    return {
        "no-directions-tensor": file({"scores": torch.ones(Z_DIM)}),
        "integer-directions": file({"directions": torch.ones(Z_DIM, Z_DIM, dtype=torch.int32)}),
        "boolean-directions": file({"directions": torch.ones(Z_DIM, Z_DIM, dtype=torch.bool)}),
        "three-dimensional": file({"directions": vectors[None]}),
        "nan-rows": file({"directions": torch.full((Z_DIM, Z_DIM), float("nan"))}),
        "rows-not-unit": file({"directions": vectors * 3}),
        "scores-wrong-length": file({"directions": vectors, "scores": torch.ones(3)}),
        "scores-integer": file({"directions": vectors, "scores": torch.ones(Z_DIM, dtype=torch.int64)}),
        "calibrated-without-knots": file({"directions": vectors[:1]}, calibrated),
        "calibrated-knots-mismatched": file({"directions": vectors[:1], "calibration.knots_x": torch.arange(4.0),
                                             "calibration.knots_y": torch.arange(3.0)}, calibrated),
        "calibrated-knots-descending": file({"directions": vectors[:1], "calibration.knots_x": -torch.arange(4.0),
                                             "calibration.knots_y": torch.arange(4.0)}, calibrated),
        "calibrated-knots-nan": file({"directions": vectors[:1], "calibration.knots_x": torch.full((4,), float("nan")),
                                      "calibration.knots_y": torch.arange(4.0)}, calibrated),
        "calibrated-two-directions": file({"directions": vectors[:2], "calibration.knots_x": torch.arange(4.0),
                                           "calibration.knots_y": torch.arange(4.0)}, {**calibrated, "num_directions": 2}),
        "calibration-unknown-kind": file({"directions": vectors}, {**header, "calibration": {"kind": "spline"}}),
        "header-not-json": file({"directions": vectors}, raw="{not json"),
        "header-a-list": file({"directions": vectors}, raw="[1, 2]"),
        "header-number-too-long": file({"directions": vectors}, raw='{"schema": ' + "1" * 5000 + "}"),
        "header-nested-deep": file({"directions": vectors}, raw="[" * 100_000 + "]" * 100_000),
        "no-latentdirs-header": F.safetensors_bytes({"directions": vectors}, {"other": "x"}),
        "no-metadata-at-all": F.safetensors_bytes({"directions": vectors}, None),
        "labels-beyond-directions": file({"directions": vectors}, {**header, "labels": {"99": "x"}}),
        "labels-negative": file({"directions": vectors}, {**header, "labels": {"-1": "x"}}),
        "labels-not-decimal": file({"directions": vectors}, {**header, "labels": {"one": "x"}}),
        "labels-value-number": file({"directions": vectors}, {**header, "labels": {"1": 5}}),
        "generator-spec-number": file({"directions": vectors}, {**header, "generator": {"spec": 5}}),
        "generator-fingerprint-list": file({"directions": vectors}, {**header, "generator": {"fingerprint": [1]}}),
        "generator-options-list": file({"directions": vectors}, {**header, "generator": {**header["generator"],
                                                                                          "options": [1]}}),
        "method-options-list": file({"directions": vectors}, {**header, "method": {"name": "x", "options": [1]}}),
        "method-seed-text": file({"directions": vectors}, {**header, "method": {"name": "x", "seed": "0"}}),
        "layers-beyond-the-space": file({"directions": vectors}, {**header, "layers": [0, 5000]}),
        "space-unknown": file({"directions": vectors}, {**header, "space": "w+"}),
        "schema-version-true": file({"directions": vectors}, {**header, "schema_version": True}),
        "not-safetensors": b"PK\x03\x04 a zip, not safetensors",
        "empty-file": b"",
        "header-length-past-end": (10**6).to_bytes(8, "little") + b"{}",
        "tensor-past-end": F.raw_safetensors({"directions": {"dtype": "F32", "shape": [16, 16],
                                                             "data_offsets": [0, 1024]}}, bytes(100)),
    }


_DIRECTION_VARIANTS = ["no-directions-tensor", "integer-directions", "boolean-directions", "three-dimensional",
                       "nan-rows", "rows-not-unit", "scores-wrong-length", "scores-integer", "calibrated-without-knots",
                       "calibrated-knots-mismatched", "calibrated-knots-descending", "calibrated-knots-nan",
                       "calibrated-two-directions", "calibration-unknown-kind", "header-not-json", "header-a-list",
                       "header-number-too-long", "header-nested-deep", "no-latentdirs-header", "no-metadata-at-all",
                       "labels-beyond-directions", "labels-negative", "labels-not-decimal", "labels-value-number",
                       "generator-spec-number", "generator-fingerprint-list", "generator-options-list",
                       "method-options-list", "method-seed-text", "layers-beyond-the-space", "space-unknown",
                       "schema-version-true", "not-safetensors", "empty-file", "header-length-past-end",
                       "tensor-past-end"]


@pytest.mark.parametrize("variant", _DIRECTION_VARIANTS)
def test_direction_file_damaged(variant, tmp_path, real, synthetic):
    path = F.write(tmp_path / "bad.safetensors", _direction_variants(real)[variant])
    _read_both("directions", "malformed: direction file", path, tmp_path, synthetic,
               extra_names=("directions", "layers", "space"))


@pytest.mark.parametrize("variant", ["header-not-json", "header-a-list", "header-nested-deep", "labels-beyond-directions",
                                     "generator-spec-number", "schema-version-true", "empty-file", "not-safetensors"])
def test_direction_header_damaged_for_inspect(variant, tmp_path, real, synthetic):
    path = F.write(tmp_path / "bad.safetensors", _direction_variants(real)[variant])
    _read_both("header", "malformed: direction header (inspect)", path, tmp_path, synthetic,
               extra_names=("directions",))


def test_label_refuses_a_damaged_file_and_leaves_it_as_it_was(tmp_path, real):
    path = F.write(tmp_path / "bad.safetensors", _direction_variants(real)["labels-not-decimal"])
    before = path.read_bytes()
    check_cli("malformed: direction file", ["label", path, "0", "yaw"], names=("bad.safetensors",))
    assert path.read_bytes() == before


# ---------------------------------------------------------------------- trajectory datasets
def _trajectory_variants(real):
    data = TrajectoryData.load(real["trajectories"])
    tensors = {"z0": data.z0, "zt": data.zt, "delta": data.delta, "error": data.error}
    contiguous = lambda variant: ({k: v.contiguous() for k, v in variant[0].items()}, variant[1])  # noqa: E731
    meta = {"latentdirs": "trajectories/1", "transform": "shift-x"}
    variants = {f"missing-{name}": ({k: v for k, v in tensors.items() if k != name}, meta) for name in tensors}
    variants.update({
        "no-metadata": (tensors, None),
        "other-format": (tensors, {"latentdirs": "directions"}),
        "z0-one-dimensional": ({**tensors, "z0": data.z0[:, 0]}, meta),
        "zt-other-shape": ({**tensors, "zt": data.zt[:, :3]}, meta),
        "delta-two-dimensional": ({**tensors, "delta": data.delta[:, None]}, meta),
        "error-other-length": ({**tensors, "error": data.error[:3]}, meta),
        "latents-of-another-size": ({**tensors, "z0": data.z0[:, :3], "zt": data.zt[:, :3]}, meta),
        "no-rows": ({k: v[:0] for k, v in tensors.items()}, meta),
        "nan-latents": ({**tensors, "z0": torch.full_like(data.z0, float("nan"))}, meta),
        "other-transform": (tensors, {**meta, "transform": "zoom"}),
        "unknown-transform": (tensors, {**meta, "transform": "swirl"}),
        "integer-latents": ({**tensors, "z0": data.z0.long()}, meta),
    })
    return {name: contiguous(variant) for name, variant in variants.items()}


_TRAJECTORY_VARIANTS = ["missing-z0", "missing-zt", "missing-delta", "missing-error", "no-metadata", "other-format",
                        "z0-one-dimensional", "zt-other-shape", "delta-two-dimensional", "error-other-length",
                        "latents-of-another-size", "no-rows", "nan-latents", "other-transform", "unknown-transform",
                        "integer-latents"]


@pytest.mark.parametrize("variant", _TRAJECTORY_VARIANTS)
def test_trajectory_dataset_damaged(variant, tmp_path, real, synthetic):
    tensors, meta = _trajectory_variants(real)[variant]
    path = F.write(tmp_path / "bad.trajectories", F.safetensors_bytes(tensors, meta))
    _read_both("trajectories", "malformed: trajectory dataset", path, tmp_path, synthetic,
               extra_names=("dataset", "transform"))


# ---------------------------------------------------------------------- OroJaR checkpoints
def _checkpoint_variants(real):
    state = torch.load(real["checkpoint"], weights_only=True)
    variants = {f"missing-{key}": {k: v for k, v in state.items() if k != key} for key in state}
    variants.update({
        "not-a-dict": [state],
        "format-other": {**state, "format": "latentdirs.orojar-checkpoint/9"},
        "matrix-a-list": {**state, "matrix": state["matrix"].tolist()},
        "matrix-other-shape": {**state, "matrix": state["matrix"][:3]},
        "matrix-nan": {**state, "matrix": torch.full_like(state["matrix"], float("nan"))},
        "matrix-integer": {**state, "matrix": state["matrix"].long()},
        "optimiser-text": {**state, "optimiser": "adam"},
        "optimiser-state-other-shape": {**state, "optimiser": {**state["optimiser"], "state": {
            0: {**state["optimiser"]["state"][0], "exp_avg": torch.zeros(3, 3)}}}},
        "optimiser-two-groups": {**state, "optimiser": {**state["optimiser"],
                                                        "param_groups": state["optimiser"]["param_groups"] * 2}},
        "optimiser-no-groups": {**state, "optimiser": {"state": {}}},
        "options-not-json": {**state, "options": "{not json"},
        "options-a-list": {**state, "options": "[1, 2]"},
        "options-nested-deep": {**state, "options": "[" * 100_000},
        "options-other-run": {**state, "options": json.dumps({"lr": 99})},
        "seed-text": {**state, "seed": "0"},
        "seed-other": {**state, "seed": 12345},
        "step-negative": {**state, "step": -1},
        "step-boolean": {**state, "step": True},
        "history-two-dimensional": {**state, "history": torch.zeros(2, 2)},
    })
    return variants


_CHECKPOINT_VARIANTS = ["missing-format", "missing-matrix", "missing-optimiser", "missing-options", "missing-seed",
                        "missing-step", "missing-history", "not-a-dict", "format-other", "matrix-a-list",
                        "matrix-other-shape", "matrix-nan", "matrix-integer", "optimiser-text",
                        "optimiser-state-other-shape", "optimiser-two-groups", "optimiser-no-groups",
                        "options-not-json", "options-a-list", "options-nested-deep", "options-other-run", "seed-text",
                        "seed-other", "step-negative", "step-boolean", "history-two-dimensional"]


@pytest.mark.parametrize("variant", _CHECKPOINT_VARIANTS)
def test_orojar_checkpoint_damaged(variant, tmp_path, real, synthetic):
    path = F.write(tmp_path / "bad.pt", F.torch_bytes(_checkpoint_variants(real)[variant]))
    _read_both("checkpoint", "malformed: OroJaR checkpoint", path, tmp_path, synthetic,
               extra_names=("checkpoint", "resume"))


# ---------------------------------------------------------------------- .npy / .npz imports
def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


_ROWS = np.eye(4, Z_DIM)
_IMPORTS = {
    "npz-no-arrays": lambda: _npz(),
    "npz-without-lat-comp": lambda: _npz(lat_mean=_ROWS[0], act_comp=_ROWS),
    "npz-empty-lat-comp": lambda: _npz(lat_comp=np.zeros((0, 1, Z_DIM))),
    "npz-lat-comp-no-width": lambda: _npz(lat_comp=np.zeros((4, 1, 0))),
    "npz-string-lat-comp": lambda: _npz(lat_comp=np.array(["a", "b"])),
    "npz-bytes-lat-comp": lambda: _npz(lat_comp=np.array([b"a", b"b"])),
    "npz-bool-lat-comp": lambda: _npz(lat_comp=np.ones((4, 1, Z_DIM), dtype=bool)),
    "npz-complex-lat-comp": lambda: _npz(lat_comp=_ROWS.astype(complex)[:, None]),
    "npz-lat-comp-scalar": lambda: _npz(lat_comp=np.float32(1.0)),
    "npz-lat-comp-1d": lambda: _npz(lat_comp=_ROWS[0]),
    "npz-lat-comp-4d": lambda: _npz(lat_comp=_ROWS[:, None, None, :]),
    "npz-stdev-wrong-length": lambda: _npz(lat_comp=_ROWS[:, None], lat_stdev=np.ones(3)),
    "npz-stdev-strings": lambda: _npz(lat_comp=_ROWS[:, None], lat_stdev=np.array(["a"] * 4)),
    "npz-stdev-nan": lambda: _npz(lat_comp=_ROWS[:, None], lat_stdev=np.full(4, np.nan)),
    "npz-structured-lat-comp": lambda: _npz(lat_comp=np.zeros(4, dtype=[("a", "f4"), ("b", "f4")])),
    "npz-not-a-zip": lambda: b"PK\x03\x04 truncated",
    "npy-empty": lambda: _npy(np.zeros((0, Z_DIM))),
    "npy-no-width": lambda: _npy(np.zeros((4, 0))),
    "npy-strings": lambda: _npy(np.array(["left", "right"])),
    "npy-bool": lambda: _npy(np.ones((2, Z_DIM), dtype=bool)),
    "npy-complex": lambda: _npy(_ROWS.astype(complex)),
    "npy-scalar": lambda: _npy(np.float64(1.0)),
    "npy-4d": lambda: _npy(_ROWS[:, None, None, :]),
    "npy-nan": lambda: _npy(np.full((2, Z_DIM), np.nan)),
    "npy-inf": lambda: _npy(np.full((2, Z_DIM), np.inf)),
    "npy-zero-rows": lambda: _npy(np.zeros((2, Z_DIM))),
    "npy-wrong-width": lambda: _npy(np.eye(2, Z_DIM + 1)),
    "npy-structured": lambda: _npy(np.zeros(4, dtype=[("a", "f4")])),
    "npy-header-garbage": lambda: b"\x93NUMPY\x01\x00\x10\x00{'descr': oops}\n",
    "npy-version-9": lambda: b"\x93NUMPY\x09\x00" + _npy(_ROWS)[8:],
    "npy-truncated-data": lambda: _npy(_ROWS)[:-8],
    "npy-extra-data": lambda: _npy(_ROWS) + b"tail",
    "neither-npy-nor-npz": lambda: b"just text",
    "empty-file": lambda: b"",
}


@pytest.mark.parametrize("variant", list(_IMPORTS))
def test_import_of_damaged_arrays(variant, tmp_path, synthetic):
    suffix = ".npz" if variant.startswith("npz") else ".npy"
    path = F.write(tmp_path / f"bad{suffix}", _IMPORTS[variant]())
    _read_both("import", "malformed: .npy/.npz import", path, tmp_path, synthetic, extra_names=("source",))


# ====================================================================== 4. bad arguments
_ARGUMENTS = {
    "--seeds": ["", " ", "7-0", "1,,2", "-1", "a", "1.5", "0x10", "9" * 5000, "1-2-3", "0-", "1,2,", "0-99999999999",
                str(2**64)],
    "--indices": ["", "16", "0-16", "abc", "-3", "3-1", "0-30000000"],
    "--alphas": ["", "1:2", "1:2:0", "a:b:3", "nan", "inf,1", "1,,2", "0:1:100000000", "1e400", "0:1:1.5", "1:2:3:4",
                 ",", "0:1:" + "9" * 5000],
    "--layers": ["x", "-1", "3-1", "0-3000000"],
}


@pytest.mark.parametrize("option,value", [(o, v) for o, values in _ARGUMENTS.items() for v in values])
def test_bad_edit_argument(option, value, tmp_path, real):
    out = tmp_path / "out"
    args = ["edit", real["directions"], "-g", "synthetic", "--device", "cpu", option, value, "-o", out]
    check_cli("argument: edit", args, names=(option,), outputs=[out])


_DISCOVER_ARGUMENTS = [("--opt", "x"), ("--opt", "=5"), ("--opt", "1x=2"), ("--opt", "x=" + "[" * 10_000),
                       ("--opt", "x=" + "1" * 5000), ("--layers", "0-3000000"), ("--layers", "a-b"),
                       ("--gen-opt", "no-equals"), ("--seed", str(2**70)), ("--seed", "-1"), ("-k", "0"),
                       ("-k", "abc"), ("--opt", "steps=abc"), ("--opt", "num_directions=NaN")]


@pytest.mark.parametrize("option,value", _DISCOVER_ARGUMENTS)
def test_bad_discover_argument(option, value, tmp_path):
    out = tmp_path / "out.safetensors"
    args = ["discover", "synthetic", "-m", "sefa", "--device", "cpu", option, value, "-o", out]
    check_cli("argument: discover", args, names=(option, value.split("=")[0], "--options", "num_directions",
                                                "steps", "seed", "opt"), outputs=[out])


@pytest.mark.parametrize("value", ["0", "-1", "3:1", "nan", "a", "1:2:3", "inf", ":", "1:"])
def test_bad_evaluate_strength(value, tmp_path, real):
    out = tmp_path / "report"
    args = ["evaluate", real["directions"], "-g", "synthetic", "--strength", value, "--report", out]
    check_cli("argument: evaluate", args, names=("--strength",), outputs=[out])


# ====================================================================== 5. properties (Hypothesis)
_ANY = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=12),
                 st.lists(st.one_of(st.integers(), st.floats(), st.text(max_size=3), st.none()), max_size=6),
                 st.tuples(st.integers(), st.integers()), st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
                 st.frozensets(st.integers(), max_size=3), st.binary(max_size=6))
_SPEC_TEXT = st.text(alphabet="0123456789-,:. eEinfa+x_", max_size=24)


def _either(call, expected_type):
    """``call()`` returns ``expected_type`` or raises SpecError — never any other exception."""
    try:
        result = call()
    except SpecError:
        return None
    assert isinstance(result, expected_type)
    return result


@settings(max_examples=300, deadline=None)
@given(st.one_of(_SPEC_TEXT, _ANY), st.one_of(st.none(), st.integers(0, 50)))
def test_index_spec_result_or_spec_error(text, upper):
    result = _either(lambda: parse_index_spec(text, upper=upper, limit=1000), list)
    if result is not None:
        assert len(result) <= 1000 and len(set(result)) == len(result)
        assert all(isinstance(v, int) and v >= 0 and (upper is None or v < upper) for v in result)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10**12), max_size=40))
def test_index_spec_round_trip(values):
    assert parse_index_spec(",".join(map(str, values)) or "0") == (list(dict.fromkeys(values)) or [0])


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**15), st.integers(0, 500))
def test_index_range_round_trip_and_count_limit(start, length):
    text = f"{start}-{start + length}"
    assert parse_index_spec(text) == list(range(start, start + length + 1))
    with pytest.raises(SpecError, match=f"at most {length}"):
        parse_index_spec(text, limit=length)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_SPEC_TEXT, _ANY))
def test_alphas_result_or_spec_error(text):
    result = _either(lambda: parse_alphas(text, limit=1000), list)
    if result is not None:
        assert 1 <= len(result) <= 1000 and all(isinstance(v, float) and math.isfinite(v) for v in result)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=30))
def test_alphas_round_trip(values):
    assert parse_alphas(",".join(map(repr, values))) == values
    assert parse_alphas(values) == values


@settings(max_examples=300, deadline=None)
@given(st.one_of(_SPEC_TEXT, _ANY))
def test_strength_range_result_or_spec_error(text):
    result = _either(lambda: parse_strength_range(text), tuple)
    if result is not None:
        low, high = result
        assert 0 < low <= high and math.isfinite(high)


@settings(max_examples=200, deadline=None)
@given(st.floats(1e-6, 1e6), st.floats(1e-6, 1e6))
def test_strength_range_round_trip(a, b):
    low, high = sorted((a, b))
    assert parse_strength_range(f"{low!r}:{high!r}") == (low, high)


_JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                               st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8)),
                     lambda inner: st.one_of(st.lists(inner, max_size=4),
                                             st.dictionaries(st.text(max_size=4), inner, max_size=4)), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40), _ANY))
def test_option_result_or_spec_error(text):
    result = _either(lambda: parse_option(text), tuple)
    if result is not None:
        assert result[0].isidentifier()


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True), _JSON)
def test_option_round_trip(key, value):
    assert parse_option(f"{key}={json.dumps(value)}") == (key, value)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=30), _ANY))
def test_generator_spec_result_or_spec_error(spec):
    result = _either(lambda: split_generator_spec(spec), tuple)
    if result is not None:
        family, argument = result
        assert family == spec.strip().partition(":")[0] and (argument is None or argument)


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True), st.from_regex(r"[^\s:][^\s]{0,20}", fullmatch=True))
def test_generator_spec_round_trip(family, argument):
    assert split_generator_spec(f"{family}:{argument}") == (family, argument)
    assert split_generator_spec(family) == (family, None)


@pytest.fixture(scope="module")
def header_material(real, tmp_path_factory):
    data = real["directions"].read_bytes()
    return (json.loads(F.safetensors_header(data)["__metadata__"]["latentdirs"]), data,
            tmp_path_factory.mktemp("headers"))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_HEADER_FIELDS + ["extra"]), _JSON, min_size=1, max_size=4))
def test_header_fields_give_directions_or_direction_file_error(header_material, changes):
    header, data, folder = header_material
    path = folder / "h.safetensors"
    path.write_bytes(F.with_header(data, {**header, **changes}))
    try:
        loaded = Directions.load(path)
    except DirectionFileError as error:
        assert "\n" not in str(error)
        return
    assert isinstance(loaded, Directions) and len(loaded) == Z_DIM
    assert all(isinstance(k, int) and isinstance(v, str) for k, v in loaded.labels.items())
    loaded.label_of(0), repr(loaded), loaded.generator_spec, loaded.fingerprint, loaded.method_name, loaded.layers


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.dictionaries(st.sampled_from(_HEADER_FIELDS), _JSON, max_size=4), _ANY))
def test_meta_from_python_gives_directions_or_invalid_value(meta):
    try:
        directions = Directions(torch.eye(3, 5), meta=meta)
    except InvalidValueError as error:
        assert "\n" not in str(error)
        return
    assert directions.meta["num_directions"] == 3 and directions.to_bytes()


# ====================================================================== 6. reproducible files
def test_source_date_epoch_makes_discovery_byte_identical(tmp_path, monkeypatch, synthetic):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first = latentdirs.discover(synthetic, "sefa").save(tmp_path / "a.safetensors").read_bytes()
    second = latentdirs.discover(synthetic, "sefa").save(tmp_path / "b.safetensors").read_bytes()
    assert first == second
    assert read_header(tmp_path / "a.safetensors")["created"] == "2023-11-14T22:13:20+00:00"
    result = _discover_with_epoch(tmp_path, "1700000000")
    assert result.exit_code == 0 and (tmp_path / "cli.safetensors").read_bytes() == first


def _discover_with_epoch(tmp_path, epoch):
    from click.testing import CliRunner

    from latentdirs.cli.main import cli

    return CliRunner(env={"SOURCE_DATE_EPOCH": epoch}).invoke(
        cli, ["discover", "synthetic", "-m", "sefa", "-o", str(tmp_path / "cli.safetensors")])


@pytest.mark.parametrize("epoch", ["", "abc", "-1", "1.5", " 12 x", "99999999999999", "１２３", "253402300800"])
def test_source_date_epoch_must_be_a_whole_number(epoch, tmp_path, monkeypatch, synthetic):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
    check_api("argument: SOURCE_DATE_EPOCH", lambda: latentdirs.discover(synthetic, "sefa"),
              names=("SOURCE_DATE_EPOCH",))
    check_cli("argument: SOURCE_DATE_EPOCH", ["discover", "synthetic", "-o", tmp_path / "o.safetensors"],
              names=("SOURCE_DATE_EPOCH",), outputs=[tmp_path / "o.safetensors"])


def test_catalogue_is_large_enough():
    """Runs last in this module: the catalogue holds at least 400 attempts (the issue's goal)."""
    attempts = sum(counts["attempts"] for counts in CATALOGUE.values())
    failures = sum(counts[key] for counts in CATALOGUE.values()
                   for key in ("code_executions", "tracebacks", "partial_outputs", "over_bound"))
    if len(CATALOGUE) < 20:  # a selection of this module ran (-k): nothing to judge
        pytest.skip("only part of the catalogue ran")
    assert attempts >= 400 and failures == 0, (attempts, failures)
