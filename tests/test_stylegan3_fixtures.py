"""The StyleGAN3 reference fixtures and pickle writers (tests/stylegan3_fixtures) are what they claim."""

from __future__ import annotations

import io
import pickle
import pickletools
import re

import numpy as np
import pytest
import torch

from latentdirs.errors import WeightsMismatchError
from latentdirs.generators.stylegan2.unpickle import EasyDict, PersistentRecord, restricted_load
from tests.stylegan2_fixtures import EXECUTION_TRAP
from tests.stylegan3_fixtures import (CASES, load_reference, record_layout, record_state_dict, write_foreign_pickle,
                                      write_stylegan3_pickle)


def pickle_globals(data: bytes) -> set[str]:
    """Every ``module.name`` global a pickle references: GLOBAL, or STACK_GLOBAL after two strings
    (pushed, or fetched from the memo, where picklers keep repeated module names)."""
    found, strings, memo, last = set(), [], {}, None
    for opcode, argument, _ in pickletools.genops(data):
        name = opcode.name
        if name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            strings.append(argument)
            last = argument
        elif name == "MEMOIZE":
            memo[len(memo)] = last
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(argument)] = last
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            last = memo.get(int(argument))
            if isinstance(last, str):
                strings.append(last)
        elif name == "GLOBAL":
            found.add(argument.replace(" ", "."))
            last = None
        elif name == "STACK_GLOBAL":
            found.add(f"{strings[-2]}.{strings[-1]}")
            last = None
        elif name != "FRAME":
            last = None
    return found


def module(record: PersistentRecord, dotted: str) -> PersistentRecord:
    for name in dotted.split("."):
        record = record.state["_modules"][name]
    return record


@pytest.fixture(scope="module", params=CASES)
def reference(request):
    return load_reference(request.param)


def test_reference_holds_nvidia_weights_inputs_and_outputs(reference):
    meta, layout = reference.meta, reference.layout
    assert re.fullmatch(r"[0-9a-f]{40}", meta["nvidia_commit"])
    assert layout["snapshot_keys"] == ["G_ema"] and layout["modules"][0]["class_name"] == "Generator"
    assert all(v.dtype == torch.float32 for v in reference.weights.values())
    assert "synthesis.input.freqs" in reference.weights and "mapping.w_avg" in reference.weights
    z, ws = reference.inputs["z"], reference.outputs["ws"]
    assert z.shape[1] == 16 and ws.shape == (z.shape[0], 16, 16)
    resolution = 256 if reference.case == "t256" else 32
    assert reference.outputs["images"].shape == (z.shape[0], 3, resolution, resolution)
    assert torch.isfinite(reference.outputs["images"]).all() and 0.05 < reference.outputs["images"].std() < 3
    # truncation: the first `cutoff` ws moved towards w_avg, the others untouched
    psi, cutoff, w_avg = reference.inputs["psi"], reference.inputs["cutoff"], reference.weights["mapping.w_avg"]
    assert torch.allclose(reference.outputs["ws_psi"][:, :cutoff], w_avg.lerp(ws[:, :cutoff], psi), atol=1e-6)
    assert torch.equal(reference.outputs["ws_psi"][:, cutoff:], ws[:, cutoff:])
    # the input transform NVIDIA's gen_images.py sets: inverse of rotate 15° + translate (0.1, 0)
    angle = np.radians(reference.inputs["rotate"])
    forward = torch.tensor([[np.cos(angle), np.sin(angle), 0.1], [-np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    assert torch.allclose(reference.inputs["transform"].double() @ forward, torch.eye(3, dtype=torch.float64), atol=1e-6)
    if reference.case == "t32-cond":
        assert reference.inputs["c"].shape == (2, 3) and torch.equal(reference.inputs["c"].sum(1), torch.ones(2))
    else:
        assert reference.inputs["c"] is None


def test_reference_cases_are_the_configurations_asked_for():
    def layer_attributes(case: str, name: str) -> dict:
        entry = next(m for m in load_reference(case).layout["modules"] if m["name"] == name)
        return dict(entry["state"])

    first_t, first_r = layer_attributes("t32", "synthesis.L0_36_16"), layer_attributes("r32", "synthesis.L0_36_32")
    assert first_t["conv_kernel"]["v"] == 3 and first_r["conv_kernel"]["v"] == 1
    assert first_t["conv_clamp"] == {"t": "None"} and layer_attributes("t32-fp16", "synthesis.L0_36_16")["conv_clamp"]["v"] == 256
    radial = [dict(m["state"]) for m in load_reference("r32").layout["modules"]
              if dict(m["state"]).get("down_radial", {}).get("v") is True]
    assert radial and all(dict(state["_buffers"]["v"])["down_filter"].__len__() == 2 for state in radial)  # 2-D filters
    def use_fp16(case: str) -> list:
        return [dict(m["state"])["use_fp16"] for m in load_reference(case).layout["modules"] if m["class_name"] == "SynthesisLayer"]

    # numpy bools; at 32 px num_fp16_res 4 puts every layer in fp16 (sampling rate × 2^4 > 32)
    assert use_fp16("r32-fp16") == [{"t": "numpy.scalar", "dtype": "|b1", "v": True}] * 15
    assert use_fp16("t32") == [{"t": "numpy.scalar", "dtype": "|b1", "v": False}] * 15
    init_kwargs = dict(load_reference("t32-fp16").layout["modules"][0]["state"])["_init_kwargs"]["v"]
    assert "num_fp16_res" not in [key["v"] for key, _ in init_kwargs]  # train.py without --fp32 leaves the defaults
    names = [m["name"] for m in load_reference("t256").layout["modules"] if m["class_name"] == "SynthesisLayer"]
    assert len(names) == 15 and names[0].startswith("synthesis.L0_36_") and names[-1].startswith("synthesis.L14_256_3")


@pytest.mark.parametrize("numpy_era", ["1", "2"])
def test_writer_round_trips_every_attribute_and_tensor_bit_for_bit(reference, numpy_era, tmp_path):
    path = write_stylegan3_pickle(reference, tmp_path / "network.pkl", numpy_era=numpy_era)
    data = path.read_bytes()
    loaded = restricted_load(data, name=path.name)
    assert list(loaded) == ["G_ema"]
    g_ema = loaded["G_ema"]
    assert record_layout(g_ema) == reference.layout  # classes, attribute values and exact types, tensor names/shapes
    tensors = record_state_dict(g_ema)
    assert tensors.keys() == reference.weights.keys()
    for name, tensor in tensors.items():
        expected = reference.weights[name]
        assert tensor.dtype == expected.dtype and tensor.shape == expected.shape
        assert torch.equal(tensor.view(torch.int32), expected.view(torch.int32))  # bit for bit
    # spot checks of the types a loader meets (not only their encodings)
    synthesis_input = module(g_ema, "synthesis.input")
    assert type(synthesis_input.state["sampling_rate"]) is np.float64
    assert isinstance(synthesis_input.state["size"], np.ndarray) and synthesis_input.state["size"].dtype == np.int64
    assert type(g_ema.state["_init_kwargs"]["mapping_kwargs"]) is EasyDict
    assert all(r.meta["module_src"] == EXECUTION_TRAP for r in _records(g_ema))


def _records(record: PersistentRecord):
    yield record
    for child in record.state["_modules"].values():
        yield from _records(child)


def test_both_numpy_eras_are_in_the_bytes(tmp_path):
    reference = load_reference("t32")
    old = pickle_globals(write_stylegan3_pickle(reference, tmp_path / "old.pkl", numpy_era="1").read_bytes())
    new = pickle_globals(write_stylegan3_pickle(reference, tmp_path / "new.pkl", numpy_era="2").read_bytes())
    assert {"numpy.core.multiarray.scalar", "numpy.core.multiarray._reconstruct"} <= old
    assert {"numpy._core.multiarray.scalar", "numpy._core.multiarray._reconstruct"} <= new
    assert not any(name.startswith("numpy._core") for name in old)
    assert not any(name.startswith("numpy.core") for name in new)
    common = {"torch_utils.persistence._reconstruct_persistent_obj", "dnnlib.util.EasyDict", "numpy.dtype",
              "numpy.ndarray", "torch._utils._rebuild_parameter", "torch._utils._rebuild_tensor_v2",
              "torch.storage._load_from_bytes"}
    assert common <= old and common <= new


def test_protocol_2_pickles_round_trip(tmp_path):
    reference = load_reference("r32")
    data = write_stylegan3_pickle(reference, tmp_path / "p2.pkl", protocol=2, numpy_era="1").read_bytes()
    assert data[:2] == b"\x80\x02" and "_codecs.encode" in pickle_globals(data)
    g_ema = restricted_load(data)["G_ema"]
    assert record_layout(g_ema) == reference.layout
    assert all(torch.equal(t, reference.weights[k]) for k, t in record_state_dict(g_ema).items())


def test_drop_leaves_one_synthesis_layer_out(tmp_path):
    reference = load_reference("t32")
    g_ema = restricted_load(write_stylegan3_pickle(reference, tmp_path / "hostile.pkl", drop="L3").read_bytes())["G_ema"]
    synthesis = module(g_ema, "synthesis")
    assert "L3_36_16" not in synthesis.state["_modules"] and "L3_36_16" in synthesis.state["layer_names"]
    assert "L2_36_16" in synthesis.state["_modules"] and "L4_36_16" in synthesis.state["_modules"]
    tensors = record_state_dict(g_ema)
    assert not any(name.startswith("synthesis.L3_") for name in tensors)
    assert len(tensors) == len(reference.weights) - sum(k.startswith("synthesis.L3_") for k in reference.weights)
    with pytest.raises(ValueError, match="L99"):
        write_stylegan3_pickle(reference, tmp_path / "none.pkl", drop="L99")


def test_module_src_raises_if_executed():
    with pytest.raises(SystemExit):
        exec(EXECUTION_TRAP, {})


class _ClassRecorder(pickle.Unpickler):
    """Test-only: any non-torch class becomes a record of its dotted name (to inspect StyleGAN-T's layout)."""

    def find_class(self, module_name: str, name: str):
        if module_name.startswith(("torch._utils", "torch.storage", "collections", "numpy")):
            return super().find_class(module_name, name)
        return type(name, (), {"path": f"{module_name}.{name}"})


def test_stylegan_xl_pickle_carries_its_marks(tmp_path):
    data = write_foreign_pickle("stylegan-xl", tmp_path / "xl.pkl").read_bytes()
    assert "torch.nn.modules.sparse.Embedding" in pickle_globals(data)
    with pytest.raises(WeightsMismatchError, match=r"torch\.nn\.modules\.sparse\.Embedding"):
        restricted_load(data, name="xl.pkl")
    loaded = restricted_load(write_foreign_pickle("stylegan-xl", tmp_path / "xl2.pkl", with_embedding=False).read_bytes())
    g_ema = loaded["G_ema"]
    assert g_ema.class_name == "SuperresGenerator" and g_ema.state["head_layer_names"]
    assert "class SuperresGenerator" in g_ema.meta["module_src"]
    mapping = module(g_ema, "mapping")
    assert "embed_proj" in mapping.state["_modules"]
    assert mapping.state["_buffers"]["w_avg"].shape == (mapping.state["c_dim"], mapping.state["w_dim"])
    assert "input" in module(g_ema, "synthesis").state["_modules"]  # a StyleGAN3-like synthesis underneath


def test_stylegan_t_pickle_carries_its_marks(tmp_path):
    data = write_foreign_pickle("stylegan-t", tmp_path / "t.pkl").read_bytes()
    names = pickle_globals(data)
    assert {"networks.generator.Generator", "networks.shared.MLP", "networks.generator.SynthesisBlock"} <= names
    assert "torch_utils.persistence._reconstruct_persistent_obj" not in names
    with pytest.raises(WeightsMismatchError, match=r"networks\.generator\.Generator"):
        restricted_load(data, name="t.pkl")
    g_ema = _ClassRecorder(io.BytesIO(data)).load()["G_ema"]
    assert type(g_ema).path == "networks.generator.Generator"
    mapping = g_ema._modules["mapping"]
    assert type(mapping._modules["mlp"]).path == "networks.shared.MLP" and "x_avg" in mapping._buffers
    block = g_ema._modules["synthesis"]._modules["b8"]
    assert type(block._modules["convs1"]).path == "torch.nn.modules.container.ModuleList"
    assert type(block._modules["input"]).path == "networks.generator.SynthesisInput"


def test_unknown_foreign_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="stylegan-xl"):
        write_foreign_pickle("stylegan4", tmp_path / "x.pkl")
