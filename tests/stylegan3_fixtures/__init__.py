"""StyleGAN3 reference fixtures: NVIDIA's outputs on tiny networks, and writers of pickles in NVIDIA's layout.

``reference/<case>.safetensors`` + ``reference/<case>.json`` were produced once by
:mod:`tests.stylegan3_fixtures.make_reference` from NVlabs/stylegan3 (commit in the JSON, key
``nvidia_commit``); nothing from NVIDIA's tree is imported here, so this works without it.

* :func:`load_reference` — a case's G_ema weights (state-dict names), inputs and NVIDIA's outputs.
* :func:`write_stylegan3_pickle` — a network pickle with exactly the recorded layout (classes, every
  attribute with its Python/NumPy type, ``_init_kwargs``, parameter/buffer names) whose ``module_src``
  raises if executed; NumPy values spelled as numpy < 2 (``numpy.core.multiarray``) or ≥ 2
  (``numpy._core.multiarray``) wrote them; optionally missing one synthesis layer.
* :func:`write_foreign_pickle` — small StyleGAN-XL / StyleGAN-T pickles laid out as those projects write them.
* :func:`record_layout` / :func:`record_state_dict` — the layout and tensors of an unpickled G_ema record
  (what the writer must reproduce; also what the reference JSON holds).

Layout values are encoded as ``{"t": type, ...}`` JSON objects so the exact type survives (a
``numpy.float64`` stays a ``numpy.float64``, an ``EasyDict`` an ``EasyDict``).
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import pickle
import types
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file

from latentdirs.generators.stylegan2.unpickle import EasyDict as UnpickledEasyDict, PersistentRecord
from tests.stylegan2_fixtures import EXECUTION_TRAP

REFERENCE_DIR = Path(__file__).parent / "reference"
CASES: tuple[str, ...] = ("t32", "r32", "t32-fp16", "r32-fp16", "t256", "t32-cond")
#: state keys that hold tensors or child modules; everything else in a module's state is an attribute
TENSOR_KEYS = ("_parameters", "_buffers")
MODULES_KEY = "_modules"


@dataclasses.dataclass(frozen=True)
class Reference:
    """One reference case.

    ``weights``: G_ema state dict (float32, NVIDIA's names, e.g. ``synthesis.L3_36_16.up_filter``).
    ``inputs``: ``z`` [N, z_dim] float32, ``c`` [N, c_dim] one-hot float32 or None, ``psi`` (float),
    ``cutoff`` (int), ``transform`` [3, 3] float32 — the matrix set into ``synthesis.input.transform``
    (NVIDIA's gen_images.py: inverse of make_transform(translate, rotate)), ``translate`` (x, y),
    ``rotate`` (degrees).
    ``outputs``: ``ws`` [N, num_ws, w_dim] (mapping at ψ = 1), ``ws_psi`` (ψ = psi, cutoff), ``images``
    [N, 3, R, R] (ψ = 1, about [-1, 1]), ``images_psi``, ``images_transformed`` (ψ = 1 with ``transform``).
    N = 2, except t256: N = 1 and only ``ws``, ``ws_psi``, ``images`` (file size; ψ and the transform
    are covered by the 32-px cases).
    ``meta``: the JSON (NVIDIA commit, torch version, constructor kwargs, layout).
    """

    case: str
    layout: dict
    weights: dict[str, torch.Tensor]
    inputs: dict[str, Any]
    outputs: dict[str, torch.Tensor]
    meta: dict


def load_reference(case: str) -> Reference:
    if case not in CASES:
        raise ValueError(f"unknown StyleGAN3 reference case {case!r}; cases: {', '.join(CASES)}")
    meta = json.loads((REFERENCE_DIR / f"{case}.json").read_text())
    tensors = load_file(str(REFERENCE_DIR / f"{case}.safetensors"))
    weights = {k: v for k, v in tensors.items() if not k.startswith(("inputs.", "outputs."))}
    outputs = {k.removeprefix("outputs."): v for k, v in tensors.items() if k.startswith("outputs.")}
    scalars = meta["inputs"]
    inputs = {"z": tensors["inputs.z"], "c": tensors.get("inputs.c"), "psi": scalars["psi"],
              "cutoff": scalars["cutoff"], "transform": tensors["inputs.transform"],
              "translate": tuple(scalars["translate"]), "rotate": scalars["rotate"]}
    return Reference(case=case, layout=meta["layout"], weights=weights, inputs=inputs, outputs=outputs, meta=meta)


# ---------------------------------------------------------------------- exact-type JSON encoding
def encode_value(value: Any) -> dict:
    """A state attribute as JSON that keeps its exact type (see :func:`decode_value`)."""
    if value is None:
        return {"t": "None"}
    if isinstance(value, np.generic):  # before float: numpy.float64 is a float subclass
        return {"t": "numpy.scalar", "dtype": value.dtype.str, "v": value.item()}
    if isinstance(value, np.ndarray):
        return {"t": "numpy.ndarray", "dtype": value.dtype.str, "shape": list(value.shape), "v": value.tolist()}
    for kind in (bool, int, float, str):
        if type(value) is kind:
            return {"t": kind.__name__, "v": value}
    if type(value) in (list, tuple, set):
        items = sorted(value, key=repr) if isinstance(value, set) else value
        return {"t": type(value).__name__, "v": [encode_value(item) for item in items]}
    names = {dict: "dict", collections.OrderedDict: "OrderedDict", UnpickledEasyDict: "EasyDict"}
    if type(value) in names:
        return {"t": names[type(value)], "v": [[encode_value(k), encode_value(v)] for k, v in value.items()]}
    raise TypeError(f"unexpected attribute of type {type(value).__module__}.{type(value).__qualname__}")


def decode_value(data: dict, easydict: type = UnpickledEasyDict) -> Any:
    """Inverse of :func:`encode_value`; ``easydict`` is the class EasyDict values become."""
    kind, value = data["t"], data.get("v")
    if kind == "None":
        return None
    if kind == "numpy.scalar":
        return np.array(value, dtype=np.dtype(data["dtype"]))[()]
    if kind == "numpy.ndarray":
        return np.array(value, dtype=np.dtype(data["dtype"])).reshape(data["shape"])
    if kind in ("bool", "int", "float", "str"):
        return {"bool": bool, "int": int, "float": float, "str": str}[kind](value)
    if kind in ("list", "tuple", "set"):
        return {"list": list, "tuple": tuple, "set": set}[kind](decode_value(item, easydict) for item in value)
    if kind in ("dict", "OrderedDict", "EasyDict"):
        mapping = {"dict": dict, "OrderedDict": collections.OrderedDict, "EasyDict": easydict}[kind]()
        for k, v in value:
            mapping[decode_value(k, easydict)] = decode_value(v, easydict)
        return mapping
    raise ValueError(f"unknown encoded type {kind!r}")


# ---------------------------------------------------------------------- layout of unpickled records
def record_layout(record: PersistentRecord, snapshot_keys: list[str] | None = None) -> dict:
    """The layout of an unpickled G_ema :class:`PersistentRecord` tree.

    ``modules``: depth-first list, each ``{"name": dotted name ("" = G_ema), "class_name", "meta":
    the meta keys other than module_src/state, "state": [[key, encoded]...]}`` in the pickled state's
    order; ``_parameters``/``_buffers`` become ``{"t": "tensors", "container", "v": [[name, shape or
    None]...]}``, ``_modules`` ``{"t": "modules", "container", "v": [child names]}``.
    """
    modules: list[dict] = []
    _walk(record, "", modules)
    return {"snapshot_keys": snapshot_keys or ["G_ema"], "modules": modules}


def _walk(record: PersistentRecord, name: str, out: list[dict]) -> None:
    meta = {k: encode_value(v) for k, v in record.meta.items() if k not in ("module_src", "state")}
    entry = {"name": name, "class_name": record.class_name, "meta": meta, "state": []}
    out.append(entry)
    children = []
    for key, value in record.state.items():
        if key in TENSOR_KEYS:
            encoded = {"t": "tensors", "container": type(value).__name__,
                       "v": [[k, None if t is None else list(t.shape)] for k, t in value.items()]}
        elif key == MODULES_KEY:
            encoded = {"t": "modules", "container": type(value).__name__, "v": list(value)}
            children = [(k, child) for k, child in value.items()]
        else:
            encoded = encode_value(value)
        entry["state"].append([key, encoded])
    for key, child in children:
        if not isinstance(child, PersistentRecord):
            raise TypeError(f"child module {name}.{key} is a {type(child).__name__}, not a persistent object")
        _walk(child, f"{name}.{key}" if name else key, out)


def record_state_dict(record: PersistentRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every parameter and buffer tensor under ``record`` by state-dict name (None entries skipped)."""
    tensors: dict[str, torch.Tensor] = {}
    for key in TENSOR_KEYS:
        for name, tensor in record.state.get(key, {}).items():
            if tensor is not None:
                tensors[prefix + name] = tensor
    for name, child in record.state.get(MODULES_KEY, {}).items():
        if isinstance(child, PersistentRecord):
            tensors.update(record_state_dict(child, f"{prefix}{name}."))
    return tensors


# ---------------------------------------------------------------------- a pickler that spells globals as asked
class _SpellingPickler(pickle._Pickler):  # the pure-Python pickler: its save_global can be overridden
    """Writes chosen stand-in objects as the globals named in ``spellings`` (id → (module, name)).

    Lets the fixtures reference ``numpy.core.multiarray`` under numpy 2, and ``torch_utils`` /
    ``dnnlib`` / foreign projects' modules, without installing any fake module in ``sys.modules``.
    """

    def __init__(self, file: io.BytesIO, protocol: int, spellings: dict[int, tuple[str, str]],
                 override: Callable[[Any], Any] | None = None) -> None:
        super().__init__(file, protocol=protocol)
        self.spellings = spellings
        self.override = override

    def reducer_override(self, obj: Any) -> Any:
        return self.override(obj) if self.override is not None else NotImplemented

    def save_global(self, obj: Any, name: str | None = None) -> None:
        spelled = self.spellings.get(id(obj))
        if spelled is None:
            return super().save_global(obj, name)
        module, qualname = spelled
        if self.proto >= 4:
            self.save(module)
            self.save(qualname)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode("utf-8"))
        self.memoize(obj)

    def save_type_spelled(self, obj: type) -> None:
        if id(obj) in self.spellings:
            return self.save_global(obj)
        return pickle._Pickler.dispatch[type](self, obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[types.FunctionType] = save_global
    dispatch[type] = save_type_spelled


def _stand_in_function(label: str) -> Callable[..., Any]:
    def stand_in(*args: Any) -> Any:  # only ever pickled by name, never called
        raise AssertionError(f"stand-in for {label} called")

    return stand_in


class _Reduced:
    """An object that pickles as ``func(*args)`` followed by BUILD ``state`` (when given)."""

    def __init__(self, func: Callable[..., Any], args: tuple, state: Any = None) -> None:
        self.reduced = (func, args) if state is None else (func, args, state)

    def __reduce__(self) -> tuple:
        return self.reduced


def _numpy_spellings(numpy_era: str) -> tuple[dict[int, tuple[str, str]], Callable[[Any], Any]]:
    """Stand-ins for numpy's scalar/_reconstruct under the module path numpy < 2 or ≥ 2 pickles name."""
    if numpy_era not in ("1", "2"):
        raise ValueError(f"numpy_era must be '1' or '2', not {numpy_era!r}")
    core = "numpy.core.multiarray" if numpy_era == "1" else "numpy._core.multiarray"
    scalar, reconstruct = _stand_in_function("scalar"), _stand_in_function("_reconstruct")
    spellings = {id(scalar): (core, "scalar"), id(reconstruct): (core, "_reconstruct"),
                 id(np.ndarray): ("numpy", "ndarray"), id(np.dtype): ("numpy", "dtype")}

    def override(obj: Any) -> Any:
        # the reductions numpy itself uses for protocols 2-4: scalar(dtype, bytes) and
        # _reconstruct(ndarray, (0,), b"b") + BUILD (1, shape, dtype, is_fortran, bytes)
        if isinstance(obj, np.generic):
            return scalar, (obj.dtype, obj.tobytes())
        if isinstance(obj, np.ndarray):
            contiguous = np.ascontiguousarray(obj)
            return reconstruct, (np.ndarray, (0,), b"b"), (1, contiguous.shape, contiguous.dtype, False,
                                                            contiguous.tobytes())
        return NotImplemented

    return spellings, override


def _dumps(data: Any, protocol: int, spellings: dict[int, tuple[str, str]], numpy_era: str = "2") -> bytes:
    numpy_spellings, override = _numpy_spellings(numpy_era)
    buffer = io.BytesIO()
    _SpellingPickler(buffer, protocol, {**numpy_spellings, **spellings}, override).dump(data)
    return buffer.getvalue()


# ---------------------------------------------------------------------- NVlabs StyleGAN3 writer
_RECONSTRUCT = _stand_in_function("_reconstruct_persistent_obj")


class _PersistentStandIn:
    """Pickles as ``torch_utils.persistence._reconstruct_persistent_obj(meta)``, as NVIDIA's Decorator does."""

    def __init__(self, meta: dict) -> None:
        self.meta = meta

    def __reduce__(self) -> tuple:
        return _RECONSTRUCT, (self.meta,)


class _EasyDict(dict):
    """Pickles as ``dnnlib.util.EasyDict`` (a dict subclass: NEWOBJ then SETITEMS)."""


def _nvlabs_spellings() -> dict[int, tuple[str, str]]:
    return {id(_RECONSTRUCT): ("torch_utils.persistence", "_reconstruct_persistent_obj"),
            id(_EasyDict): ("dnnlib.util", "EasyDict")}


def write_stylegan3_pickle(reference: Reference, path: Path, *, numpy_era: str = "2", drop: str | None = None,
                           protocol: int = 4) -> Path:
    """Write ``{"G_ema": ...}`` (the recorded snapshot keys) in NVIDIA's persistence layout.

    Every module is ``_reconstruct_persistent_obj(meta)`` with the recorded meta keys, a
    ``module_src`` that raises if executed, and the recorded state: attributes with their exact
    types, parameters as ``torch.nn.Parameter`` (requires_grad False, as in NVIDIA's snapshots),
    buffers as tensors, None entries kept. ``numpy_era`` "1"/"2" spells NumPy scalars and arrays as
    numpy < 2 / ≥ 2 pickles them. ``drop="L3"`` leaves synthesis layer ``L3_*`` out of
    ``synthesis._modules`` (its name stays in ``layer_names``: a G_ema missing a layer).
    """
    modules = list(reference.layout["modules"])
    if drop is not None:
        dropped = [m["name"] for m in modules if m["name"].startswith(f"synthesis.{drop}_") and m["name"].count(".") == 1]
        if len(dropped) != 1:
            raise ValueError(f"drop={drop!r} matches no single synthesis layer")
        modules = [m for m in modules if m["name"] != dropped[0] and not m["name"].startswith(dropped[0] + ".")]
    by_name = {m["name"]: m for m in modules}
    root = _build_module(by_name, "", reference.weights)
    data = {key: root for key in reference.layout["snapshot_keys"]}
    path = Path(path)
    path.write_bytes(_dumps(data, protocol, _nvlabs_spellings(), numpy_era))
    return path


def _build_module(by_name: dict[str, dict], name: str, weights: dict[str, torch.Tensor]) -> _PersistentStandIn:
    entry = by_name[name]
    prefix = f"{name}." if name else ""
    containers = {"dict": dict, "OrderedDict": collections.OrderedDict}
    state: dict[str, Any] = {}
    for key, encoded in entry["state"]:
        if encoded.get("t") == "tensors":
            tensors = containers[encoded["container"]]()
            for tensor_name, shape in encoded["v"]:
                tensors[tensor_name] = None if shape is None else _tensor(weights[prefix + tensor_name], key)
            state[key] = tensors
        elif encoded.get("t") == "modules":
            children = containers[encoded["container"]]()
            for child in encoded["v"]:
                child_name = prefix + child
                if child_name in by_name:  # absent only when dropped
                    children[child] = _build_module(by_name, child_name, weights)
            state[key] = children
        else:
            state[key] = decode_value(encoded, easydict=_EasyDict)
    meta = {k: decode_value(v) for k, v in entry["meta"].items()}
    ordered = {"type": meta.pop("type", "class"), "version": meta.pop("version", 6), "module_src": EXECUTION_TRAP,
               "class_name": entry["class_name"], "state": state, **meta}
    return _PersistentStandIn(ordered)


def _tensor(value: torch.Tensor, key: str) -> torch.Tensor:
    value = value.detach().clone()
    return torch.nn.Parameter(value, requires_grad=False) if key == "_parameters" else value


# ---------------------------------------------------------------------- foreign projects' pickles
def write_foreign_pickle(kind: str, path: Path, *, with_embedding: bool = True) -> Path:
    """A small network pickle laid out as StyleGAN-XL's or StyleGAN-T's snapshots are.

    ``"stylegan-xl"`` (autonomousvision/stylegan_xl @ 4241ff9, training/networks_stylegan3_resetting.py,
    saved with ``dill.dump(dict(G, D, G_ema, augment_pipe, training_set_kwargs))``): NVIDIA's persistence
    layout, but G_ema's class is ``SuperresGenerator`` (attributes ``path_stem``, ``up_factor``,
    ``head_layer_names``; its module_src also defines ``SuperresGenerator`` and reads
    ``in_embeddings/tf_efficientnet_lite0.pkl``); its ``mapping`` (class MappingNetwork) has
    ``embed_proj`` (FullyConnectedLayer, embedding → z_dim) and ``embed``, a plain
    ``torch.nn.Embedding`` (not persistent: pickled as the global ``torch.nn.modules.sparse.Embedding``
    + NEWOBJ + BUILD), and ``w_avg`` of shape [c_dim, w_dim] (class-wise centres); its synthesis
    records ``channel_base``, ``conv_kernel``, ``use_radial_filters``, ``sampling_rates``.
    ``with_embedding=False`` leaves ``embed`` out so the file gets past a restricted unpickler that
    refuses ``torch.nn.modules.sparse.Embedding`` and the XL records themselves can be recognised.

    ``"stylegan-t"`` (autonomousvision/stylegan-t @ 36ab80c, networks/generator.py, saved with
    ``dill.dump(dict(G, D, G_ema, training_set_kwargs))``): no persistence at all — plain classes
    pickled by reference: ``networks.generator.Generator`` (attributes ``conditional``, ``train_mode``,
    ``trainable_layers``) with ``mapping`` = ``networks.generator.MappingNetwork`` (``mlp`` =
    ``networks.shared.MLP``, buffer ``x_avg``, ``x_avg_beta``; a text-conditional one also holds
    ``clip`` = ``networks.clip.CLIP``, left out here: unconditional) and ``synthesis`` =
    ``networks.generator.SynthesisNetwork`` of ``SynthesisBlock`` s ``b8``… (``input`` =
    ``SynthesisInput``, ``convs1`` = ``torch.nn.ModuleList`` of ``SynthesisLayer``, ``torgb`` =
    ``ToRGBLayer``, affines ``StyleSplit``). Any restricted unpickler meets the global
    ``networks.generator.Generator`` first.
    """
    if kind == "stylegan-xl":
        data = _stylegan_xl(with_embedding)
        payload = _dumps(data, 4, {**_nvlabs_spellings(), **_XL_SPELLINGS})
    elif kind == "stylegan-t":
        payload = _dumps(_stylegan_t(), 4, _T_SPELLINGS)
    else:
        raise ValueError(f"kind must be 'stylegan-xl' or 'stylegan-t', not {kind!r}")
    path = Path(path)
    path.write_bytes(payload)
    return path


#: the lines of StyleGAN-XL's module source that identify it, after a line that raises if executed
XL_MODULE_SRC = (EXECUTION_TRAP + "embed_path = 'in_embeddings/tf_efficientnet_lite0.pkl'\n"
                 "self.embed_proj = FullyConnectedLayer(self.embed.embedding_dim, self.z_dim, activation='lrelu')\n"
                 "class SuperresGenerator(torch.nn.Module):\n")


def _plain_module_state(parameters: dict | None = None, buffers: dict | None = None, modules: dict | None = None,
                        **attributes: Any) -> dict:
    state: dict[str, Any] = {"training": False, "_parameters": dict(parameters or {}), "_buffers": dict(buffers or {}),
                             "_non_persistent_buffers_set": set(), "_backward_pre_hooks": collections.OrderedDict(),
                             "_backward_hooks": collections.OrderedDict(), "_forward_hooks": collections.OrderedDict(),
                             "_forward_pre_hooks": collections.OrderedDict(),
                             "_state_dict_hooks": collections.OrderedDict(),
                             "_load_state_dict_pre_hooks": collections.OrderedDict(), "_modules": dict(modules or {})}
    state.update(attributes)
    return state


def _parameter(*shape: int, scale: float = 1.0, generator: torch.Generator) -> torch.nn.Parameter:
    return torch.nn.Parameter(scale * torch.randn(shape, generator=generator), requires_grad=False)


def _xl_record(class_name: str, state: dict, init_kwargs: dict | None = None) -> _PersistentStandIn:
    state = {**state, "_init_args": (), "_init_kwargs": dict(init_kwargs or {})}
    return _PersistentStandIn({"type": "class", "version": 6, "module_src": XL_MODULE_SRC, "class_name": class_name,
                               "state": state})


def _xl_fc(in_features: int, out_features: int, activation: str, gen: torch.Generator, lr: float = 1.0):
    return _xl_record("FullyConnectedLayer", _plain_module_state(
        {"weight": _parameter(out_features, in_features, generator=gen), "bias": _parameter(out_features, scale=0.0, generator=gen)},
        in_features=in_features, out_features=out_features, activation=activation,
        weight_gain=np.float64(lr / np.sqrt(in_features)), bias_gain=lr))


def _plain_instance(cls: type, state: dict) -> Any:
    """An instance of stand-in ``cls`` holding ``state``: pickles as class global, NEWOBJ, BUILD state (as
    pickle and dill write a plain ``torch.nn.Module``)."""
    instance = cls.__new__(cls)
    instance.__dict__.update(state)
    return instance


class _TorchEmbeddingClass:  # spelled torch.nn.modules.sparse.Embedding
    pass


_XL_SPELLINGS = {id(_TorchEmbeddingClass): ("torch.nn.modules.sparse", "Embedding")}


def _stylegan_xl(with_embedding: bool) -> dict:
    gen = torch.Generator().manual_seed(7)
    z_dim = w_dim = 8
    c_dim, embedding_dim, resolution = 4, 6, 32
    mapping_modules: dict[str, Any] = {}
    if with_embedding:
        mapping_modules["embed"] = _plain_instance(_TorchEmbeddingClass, _plain_module_state(
            {"weight": _parameter(c_dim, embedding_dim, generator=gen)}, num_embeddings=c_dim,
            embedding_dim=embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
            sparse=False))
    mapping_modules["embed_proj"] = _xl_fc(embedding_dim, z_dim, "lrelu", gen)
    mapping_modules["fc0"] = _xl_fc(2 * z_dim, w_dim, "lrelu", gen, 0.01)
    mapping = _xl_record("MappingNetwork", _plain_module_state(
        buffers={"w_avg": torch.zeros(c_dim, w_dim)}, modules=mapping_modules, z_dim=z_dim, c_dim=c_dim, w_dim=w_dim,
        num_ws=4, num_layers=1, w_avg_beta=0.998), {"z_dim": z_dim, "c_dim": c_dim, "w_dim": w_dim, "num_ws": 4})
    synthesis_input = _xl_record("SynthesisInput", _plain_module_state(
        {"weight": _parameter(8, 8, generator=gen)},
        {"transform": torch.eye(3), "freqs": torch.randn(8, 2, generator=gen), "phases": torch.rand(8, generator=gen)},
        {"affine": _xl_fc(w_dim, 4, "linear", gen)}, w_dim=w_dim, channels=8, size=np.array([36, 36]),
        sampling_rate=np.float64(16.0), bandwidth=np.float64(2.0)))
    layers = {}
    for index, (name, size, channels) in enumerate([("L0_36_8", 36, 8), ("L1_32_3", 32, 3)]):
        layers[name] = _xl_record("SynthesisLayer", _plain_module_state(
            {"weight": _parameter(channels, 8, 1, 1, generator=gen), "bias": _parameter(channels, scale=0.0, generator=gen)},
            {"magnitude_ema": torch.ones([]), "up_filter": None, "down_filter": None},
            {"affine": _xl_fc(w_dim, 8, "linear", gen)}, w_dim=w_dim, is_torgb=index == 1, in_channels=8,
            out_channels=channels, in_size=np.array([36, 36]), out_size=np.array([size, size])))
    synthesis = _xl_record("SynthesisNetwork", _plain_module_state(
        modules={"input": synthesis_input, **layers}, w_dim=w_dim, num_ws=4, img_resolution=resolution, img_channels=3,
        num_layers=2, num_critical=1, margin_size=10, output_scale=0.25, num_fp16_res=0, channel_base=256,
        last_stopband_rel=2 ** 0.3, first_stopband=2 ** 2.1, first_cutoff=2, channel_max=8, conv_kernel=1,
        use_radial_filters=True, sampling_rates=np.array([16.0, 32.0]), layer_names=list(layers)))
    g_ema = _xl_record("SuperresGenerator", _plain_module_state(
        modules={"mapping": mapping, "synthesis": synthesis}, path_stem="stem/best_model.pkl", up_factor=2,
        z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_channels=3, img_resolution=resolution, num_ws=4,
        head_layer_names=["L1_32_3"]),
        {"img_resolution": resolution, "path_stem": "stem/best_model.pkl", "head_layers": 1, "up_factor": 2})
    return {"G": g_ema, "D": None, "G_ema": g_ema, "augment_pipe": None,
            "training_set_kwargs": {"class_name": "training.dataset.ImageFolderDataset", "resolution": resolution}}


_T_CLASSES = {name: type(name, (), {}) for name in (
    "networks.generator.Generator", "networks.generator.MappingNetwork", "networks.shared.MLP",
    "networks.shared.FullyConnectedLayer", "networks.generator.SynthesisNetwork", "networks.generator.SynthesisBlock",
    "networks.generator.SynthesisInput", "networks.generator.SynthesisLayer", "networks.generator.ToRGBLayer",
    "networks.generator.StyleSplit", "torch.nn.modules.container.ModuleList")}
_T_SPELLINGS = {id(cls): tuple(name.rsplit(".", 1)) for name, cls in _T_CLASSES.items()}


def _t_object(name: str, **state: Any) -> Any:
    return _plain_instance(_T_CLASSES[name], _plain_module_state(**state))


def _stylegan_t() -> dict:
    gen = torch.Generator().manual_seed(11)
    z_dim, channels = 8, 8

    def fc(in_features: int, out_features: int) -> Any:
        return _t_object("networks.shared.FullyConnectedLayer",
                         parameters={"weight": _parameter(out_features, in_features, generator=gen),
                                     "bias": _parameter(out_features, scale=0.0, generator=gen)},
                         in_features=in_features, out_features=out_features, activation="linear",
                         weight_gain=np.float64(1 / np.sqrt(in_features)), bias_gain=1)

    def style_split() -> Any:
        return _t_object("networks.generator.StyleSplit", modules={"proj": fc(z_dim, 3 * channels)})

    def layer(residual: bool) -> Any:
        return _t_object("networks.generator.SynthesisLayer",
                         parameters={"weight": _parameter(channels, channels, 3, 3, generator=gen),
                                     "bias": _parameter(channels, scale=0.0, generator=gen),
                                     "noise_strength": _parameter(scale=0.0, generator=gen)},
                         buffers={"resample_filter": torch.ones(4, 4) / 16, "noise_const": torch.randn(8, 8, generator=gen)},
                         modules={"affine": style_split()}, in_channels=channels, out_channels=channels, w_dim=z_dim,
                         resolution=8, up=1, use_noise=True, activation="lrelu", conv_clamp=256, padding=1,
                         act_gain=np.sqrt(2), residual=residual)

    mlp = _t_object("networks.shared.MLP", modules={"0": fc(z_dim, z_dim)}, num_layers=1, out_dim=z_dim)
    mapping = _t_object("networks.generator.MappingNetwork", buffers={"x_avg": torch.zeros(z_dim)},
                        modules={"mlp": mlp}, z_dim=z_dim, x_avg_beta=0.995, num_ws=3, c_dim=0, w_dim=z_dim)
    block = _t_object("networks.generator.SynthesisBlock", buffers={"resample_filter": torch.ones(4, 4) / 16},
                      modules={"input": _t_object("networks.generator.SynthesisInput",
                                                  parameters={"weight": _parameter(channels, channels, generator=gen)},
                                                  buffers={"transform": torch.eye(3), "freqs": torch.randn(channels, 2, generator=gen),
                                                           "phases": torch.rand(channels, generator=gen)},
                                                  modules={"affine": fc(z_dim, 4)}, w_dim=z_dim, channels=channels,
                                                  size=np.array([8, 8]), sampling_rate=8, bandwidth=2),
                               "convs1": _t_object("torch.nn.modules.container.ModuleList",
                                                   modules={"0": layer(False), "1": layer(True)}),
                               "torgb": _t_object("networks.generator.ToRGBLayer",
                                                  parameters={"weight": _parameter(3, channels, 1, 1, scale=0.1, generator=gen),
                                                              "bias": _parameter(3, scale=0.0, generator=gen)},
                                                  modules={"affine": style_split()}, in_channels=channels, out_channels=3,
                                                  w_dim=z_dim, conv_clamp=256, weight_gain=np.float64(1 / np.sqrt(channels)))},
                      in_channels=0, out_channels=channels, w_dim=z_dim, resolution=8, img_channels=3, is_last=True,
                      architecture="orig", use_fp16=False, channels_last=False, fused_modconv_default="inference_only",
                      num_conv=3, num_torgb=1)
    synthesis = _t_object("networks.generator.SynthesisNetwork", modules={"b8": block}, w_dim=z_dim, img_resolution=8,
                          img_resolution_log2=3, img_channels=3, num_fp16_res=0, block_resolutions=[8], num_ws=4)
    g_ema = _t_object("networks.generator.Generator", modules={"mapping": mapping, "synthesis": synthesis}, z_dim=z_dim,
                      conditional=False, img_resolution=8, img_channels=3, w_dim=z_dim, c_dim=0, num_ws=4,
                      train_mode="all", trainable_layers=["synthesis", "mapping.mlp"])
    return {"G": g_ema, "D": None, "G_ema": g_ema, "training_set_kwargs": {"resolution": 8}}
