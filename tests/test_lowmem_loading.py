"""Loading network files without a second copy of the weights (issue 16 item 6).

The files are written in each format from a network whose convolutions are large enough (> 64 KiB)
that their storages take the deferred path of the unpickler, while the small ones are read inline;
the weights must come back bit for bit, the network's tensors must be the file's tensors (no copy),
and the extra peak memory of a load, measured in a fresh process, must stay near the file's size.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import latentdirs
from latentdirs.errors import WeightsMismatchError
from latentdirs.generators.stylegan2.loaders import read_checkpoint
from latentdirs.generators.stylegan2.network import StyleGAN2Generator
from latentdirs.generators.stylegan2.unpickle import DEFER_AT, PickleSource, RestrictedUnpickler
from latentdirs.weights import build_with_state
from tests.hostile import files as F
from tests.stylegan2_fixtures import (random_network, rosinality_state, tiny_config, write_nvlabs_pickle,
                                      write_rosinality, write_tensorflow_pickle)

REPOSITORY = Path(__file__).resolve().parents[1]
#: convolutions of 64 x 64 x 3 x 3 float32 = 144 KiB: deferred; mapping layers of 32 x 32: read inline
CONFIG = dict(z_dim=32, w_dim=32, channels={4: 64, 8: 64, 16: 32, 32: 32})


@pytest.fixture(scope="module")
def network():
    return random_network(tiny_config(**CONFIG), seed=7)


def _safetensors(network: StyleGAN2Generator, path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(path),
              metadata={"architecture": "skip", "mapping_lr": "0.01", "conv_clamp": "none"})
    return path


@pytest.fixture(scope="module")
def files(network, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lowmem")
    return {"nvlabs-protocol-4": write_nvlabs_pickle(network, folder / "p4.pkl"),
            "nvlabs-protocol-2": write_nvlabs_pickle(network, folder / "p2.pkl", protocol=2),
            "tensorflow": write_tensorflow_pickle(network, folder / "tf.pkl"),
            "rosinality": write_rosinality(network, folder / "g.pt"),
            "safetensors": _safetensors(network, folder / "g.safetensors")}


# ---------------------------------------------------------------------- the same weights, not copied
@pytest.mark.parametrize("kind", ["nvlabs-protocol-4", "nvlabs-protocol-2", "tensorflow", "rosinality", "safetensors"])
def test_every_format_loads_bit_identical_weights(kind, files, network):
    generator = latentdirs.load_generator(f"stylegan2:{files[kind]}", device="cpu")
    loaded, expected = generator.network.state_dict(), network.state_dict()
    assert set(loaded) == set(expected)
    for name, value in expected.items():
        assert loaded[name].dtype == torch.float32 and torch.equal(loaded[name], value), name


@pytest.mark.parametrize("kind", ["nvlabs-protocol-4", "nvlabs-protocol-2"])
def test_large_storages_are_deferred_and_the_memo_keeps_no_blob(kind, files, network):
    data = files[kind].read_bytes()
    unpickler = RestrictedUnpickler(PickleSource.of_bytes(data), name="n.pkl")
    unpickler.load()
    deferred = sorted(storage._size() * storage.element_size() for storage in unpickler._storages.values())
    large = sorted(v.numel() * 4 for v in network.state_dict().values() if v.numel() * 4 >= DEFER_AT)
    assert len(large) == 4 and deferred == large  # the 64-channel convolutions; nothing else is that long
    assert len(unpickler.memo) > 100
    assert not any(isinstance(v, (bytes, str)) and len(v) >= DEFER_AT for v in unpickler.memo.values())


@pytest.mark.parametrize("kind", ["nvlabs-protocol-4", "rosinality"])
def test_the_network_holds_the_files_tensors_themselves(kind, files):
    """No copy between the reader and the network: each parameter is the state's tensor, frozen, on the CPU."""
    config, state, _ = read_checkpoint(files[kind])
    pointers = {name: tensor.data_ptr() for name, tensor in state.items()}
    from latentdirs.generators.stylegan2 import StyleGAN2Adapter

    generator = StyleGAN2Adapter(config, state, spec="stylegan2:x", source_format=kind, device="cpu")
    tensors = dict(generator.network.state_dict(keep_vars=True))
    assert {name: tensor.data_ptr() for name, tensor in tensors.items()} == pointers
    for name, tensor in tensors.items():
        assert tensor.device.type == "cpu" and not tensor.is_meta and tensor.is_contiguous(), name
        assert not tensor.requires_grad, name
    assert all(isinstance(p, torch.nn.Parameter) for p in generator.network.parameters())
    assert set(dict(generator.network.named_buffers())) == {n for n in tensors if n.endswith(("w_avg", "noise_const"))}


# ---------------------------------------------------------------------- build_with_state
def _build(state):
    return build_with_state(lambda: StyleGAN2Generator(tiny_config()), state, param="generator", source="test",
                            what="the test network", fix="Use the test's own weights")


def test_build_with_state_copies_only_what_it_must():
    reference = random_network(tiny_config(), seed=2).state_dict()
    state = {name: value.clone() for name, value in reference.items()}
    state["mapping.fc1.bias"] = state["mapping.fc0.bias"]  # one tensor under two names: must be two afterwards
    whole = torch.cat([state["synthesis.b4.const"].reshape(-1), torch.zeros(100)])
    state["synthesis.b4.const"] = whole[:reference["synthesis.b4.const"].numel()].view_as(reference["synthesis.b4.const"])
    state["synthesis.b8.conv0.weight"] = state["synthesis.b8.conv0.weight"].double()  # cast to the network's float32
    state["synthesis.b8.conv1.weight"] = state["synthesis.b8.conv1.weight"].transpose(2, 3).contiguous().transpose(2, 3)
    network = _build(state)
    built = network.state_dict()
    untouched = "synthesis.b16.conv0.weight"
    assert built[untouched].data_ptr() == state[untouched].data_ptr(), "an owned float32 tensor is taken as it is"
    assert built["mapping.fc0.bias"].data_ptr() != built["mapping.fc1.bias"].data_ptr()
    assert built["synthesis.b4.const"].untyped_storage().nbytes() == built["synthesis.b4.const"].numel() * 4
    for name, value in built.items():
        assert value.dtype == torch.float32 and value.is_contiguous() and not value.is_meta, name
        assert torch.equal(value, state[name].float()), name
    network.mapping.fc0.bias.data.add_(1)  # the two names are independent parameters now
    assert not torch.equal(network.mapping.fc0.bias, network.mapping.fc1.bias)


def test_build_with_state_checks_the_state_before_building():
    state = random_network(tiny_config(), seed=2).state_dict()
    state.pop("mapping.w_avg")
    state["synthesis.b4.const"] = torch.zeros(3, 3)
    with pytest.raises(WeightsMismatchError, match=r"^generator: got 'test with 1 missing, 1 wrongly shaped'; allowed: "
                                                   r"exactly the parameters and shapes of the test network\. First "
                                                   r"differences — missing: mapping.w_avg; wrong shapes: "
                                                   r"synthesis.b4.const \(3, 3\)"):
        _build(state)


class _WithHiddenBuffer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(4, 4))
        self.register_buffer("window", torch.hann_window(4), persistent=False)


class _WithTensorAttribute(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = torch.nn.Linear(4, 4)
        self.inner.taps = torch.ones(3) / 3


@pytest.mark.parametrize("network, state, hidden", [
    (_WithHiddenBuffer, {"weight": torch.ones(4, 4)}, "window"),
    (_WithTensorAttribute, {"inner.weight": torch.ones(4, 4), "inner.bias": torch.ones(4)}, "inner.taps")])
def test_build_with_state_refuses_a_network_with_tensors_outside_its_state_dict(network, state, hidden):
    with pytest.raises(RuntimeError, match=f"{network.__name__} keeps {hidden} outside its state dict"):
        build_with_state(network, state, param="generator", source="t", what="w", fix="f")


# ---------------------------------------------------------------------- hostile files on the deferred path
def _lying_blob(numel: int, stored: int) -> bytes:
    """A legacy torch.save of ``stored`` floats whose pickle declares ``numel`` (any count, unlike F.lie_numel)."""
    program = F.torch_bytes(F.storage(stored), legacy=True)
    pattern = re.compile(rb"(X\x03\x00\x00\x00cpu(?:q.)?)(K.|M..|J....)", re.S)
    assert len(pattern.findall(program)) == 1, "layout of torch.save's pickle changed"
    return pattern.sub(lambda m: m.group(1) + b"J" + struct.pack("<i", numel), program)


def _nvlabs_file(tmp_path: Path, tensors: dict, protocol: int = 4) -> Path:
    return F.write(tmp_path / "bad.pkl", F.nvlabs_with(tensors, protocol=protocol))


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_lying_storage_blob_is_refused_the_same_deferred_or_not(protocol, tmp_path):
    messages = []
    for stored in (4, 40_000):  # a 16-byte blob is read inline, a 160 KB one deferred
        blob = _lying_blob(2**31 - 1, stored)
        path = _nvlabs_file(tmp_path, {"w": F.Rebuild(F.LoadFromBytes(blob), 0, (4,), (1,))}, protocol)
        with pytest.raises(WeightsMismatchError) as error:
            latentdirs.load_generator(f"stylegan2:{path}", device="cpu")
        messages.append(re.sub(r"storage '\d+'", "storage 'KEY'", str(error.value)))  # torch names it by address
    assert messages[0] == messages[1]
    assert messages[0].startswith("generator: got \"bad.pkl (an embedded storage): storage 'KEY' declared as "
                                  "2147483647 elements but stored as a truncated record\"; allowed: storages stored "
                                  "in full. Nothing was allocated"), messages[0]


def test_a_file_cut_inside_a_deferred_storage_is_a_truncated_pickle(tmp_path, files):
    data = files["nvlabs-protocol-4"].read_bytes()
    offset = data.index(b"\x8e")  # the first BINBYTES8: a deferred storage blob (pickle's large-bytes opcode)
    (tmp_path / "cut.pkl").write_bytes(data[:offset + 9 + DEFER_AT // 2])
    with pytest.raises(WeightsMismatchError, match=r"^generator: got 'cut.pkl: not a readable network pickle "
                                                   r"\(EOFError\)'.*may be truncated"):
        latentdirs.load_generator(f"stylegan2:{tmp_path / 'cut.pkl'}", device="cpu")


@pytest.mark.parametrize("opcode, protocol", [(pickle.BINBYTES8, 4), (pickle.BINUNICODE8, 4), (pickle.BYTEARRAY8, 5),
                                              (pickle.FRAME, 4)])
def test_a_declared_length_beyond_the_file_allocates_nothing(opcode, protocol, tmp_path):
    """An item declaring 2^36 bytes (64 GiB; BYTEARRAY8's own handler would zero-fill it): refused from
    the file's size before anything of that length is allocated."""
    data = bytes([pickle.PROTO[0], protocol]) + opcode + (1 << 36).to_bytes(8, "little") + b"xx."
    path = F.write(tmp_path / "huge.pkl", data)
    with pytest.raises(WeightsMismatchError, match=r"huge.pkl: not a readable network pickle \(EOFError\)"):
        latentdirs.load_generator(f"stylegan2:{path}", device="cpu")


def test_one_stored_blob_named_twice_becomes_one_storage():
    """One bytes item (memoised once) handed to two storage loads: read and allocated once, not twice."""
    blob = F.torch_bytes(F.storage(40_000), legacy=True)
    source = PickleSource.of_bytes(pickle.dumps([F.LoadFromBytes(blob), F.LoadFromBytes(blob)], protocol=4))
    unpickler = RestrictedUnpickler(source, name="t.pkl")
    first, second = unpickler.load()
    assert first is second and len(unpickler._storages) == 1


def test_deferred_items_anywhere_else_stay_inert(tmp_path):
    """A deferred blob that the pickle also places where a tensor belongs is refused there, never read."""
    blob = F.torch_bytes(F.storage(40_000), legacy=True)
    path = _nvlabs_file(tmp_path, {"a": F.Rebuild(F.LoadFromBytes(blob), 0, (4,), (1,)), "w": blob})
    with pytest.raises(WeightsMismatchError, match=r"bad.pkl: w is a DeferredBytes, not a tensor"):
        latentdirs.load_generator(f"stylegan2:{path}", device="cpu")


# ---------------------------------------------------------------------- memory, in a fresh process
_MEASURE = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    import torch
    import latentdirs
    import latentdirs.generators.stylegan2
    torch.set_num_threads(1)
    def status(field):
        return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(field + ':'))
    base = status('VmRSS')
    try:
        Path('/proc/self/clear_refs').write_text('5')
    except OSError:
        base = max(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    generator = latentdirs.load_generator('stylegan2:' + sys.argv[1], device='cpu')
    print(json.dumps({'extra': (status('VmHWM') - base) * 1024,
                      'dynamo': 'torch._dynamo' in sys.modules,
                      'params': sum(p.numel() for p in generator.network.parameters())}))
""")


def test_peak_memory_of_a_load_stays_near_the_file_size(tmp_path):
    """A 256-px-shaped pickle of about 25 MB: the load's extra peak stays below 1.6 x the file (it was ~5 x).

    One copy of the weights is 1 x; the rest is one storage blob at a time, the pickle's small objects
    and allocator slack. The best of two fresh processes is taken (other processes cannot add to a
    process's own resident memory, but allocator timing can vary a little).
    """
    channels = {4: 256, 8: 256, 16: 256, 32: 256, 64: 128, 128: 64, 256: 32}
    config = tiny_config(z_dim=256, w_dim=256, img_resolution=256, channels=channels, mapping_layers=8)
    path = write_nvlabs_pickle(random_network(config), tmp_path / "net256.pkl")
    size = path.stat().st_size
    assert 20e6 < size < 40e6
    runs = []
    for _ in range(2):
        result = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True,
                                cwd=REPOSITORY, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda run: run["extra"])
    assert best["params"] * 4 > 0.95 * size, "the file is mostly weights"
    assert best["extra"] < 1.6 * size, f"extra peak {best['extra'] / size:.2f} x the file's {size} bytes"
    assert not best["dynamo"], "building on the meta device imported torch._dynamo (about 70 MiB)"
