"""Read NVlabs StyleGAN3 network pickles into (config, state dict with NVIDIA's parameter names).

An NVlabs snapshot is a dict whose ``G_ema`` is a persistent ``Generator`` record with a ``mapping``
and a ``synthesis`` that has an ``input`` (``SynthesisInput``) and the layers named in its
``layer_names``. The pickle goes through StyleGAN2's restricted unpickler (nothing in it runs); the
configuration comes from the module attributes NVIDIA stores (``in_size``, ``up_factor``,
``padding``, ``conv_kernel``, ``is_torgb``, ``conv_clamp``, ``sampling_rate``, ``bandwidth``, ``size``,
``output_scale`` … — Python or NumPy scalars and arrays of either NumPy era), each bounded and
cross-checked against the tensor shapes, and the layer chain is checked consistent before anything
is allocated for the network.

Refused with a one-line pointer: StyleGAN2 files (``stylegan2:PATH`` reads them), StyleGAN-XL pickles
(autonomousvision/stylegan_xl: NVlabs persistence, but a mapping with ``embed_proj`` and a
``torch.nn.Embedding`` class embedding, ``SuperresGenerator`` for its higher resolutions) and
StyleGAN-T pickles (autonomousvision/stylegan-t: ``dill`` pickles of classes from the module
``networks.generator``, no NVlabs persistence) — both detected from their identifying names in the
file's bytes, before unpickling (their globals are outside the allow-list anyway).
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentdirs.errors import LatentDirsError, MissingWeightsError, NotSupportedError, WeightsMismatchError, invalid
from latentdirs.generators.stylegan2.loaders import (_child, _converted, _flatten_record, _is_safetensors,
                                                     _mapping, _require_default_activations)
from latentdirs.generators.stylegan2.unpickle import (MalformedPickle, PersistentRecord, TFNetworkRecord,
                                                     restricted_load_file)
from latentdirs.generators.stylegan3.network import InputSpec, LayerSpec, StyleGAN3Config, activation_elements
from latentdirs.weights import describe_names, is_legacy_torch

#: bounds on what a file may declare (the largest official nets: 1024 px, 1044-px feature maps, 1024 channels)
MAX_LAYERS = 64
MAX_SIDE = 4096
MAX_CHANNELS = 16384
MAX_W_DIM = 8192
MAX_FACTOR = 16
MAX_TAPS = 512
MAX_KERNEL = 7
#: per-sample activation bound (elements): an official 1024-px config-R layer needs about 3·10⁸
MAX_ACTIVATION = 1 << 31

#: identifying byte strings of other projects' pickles (what their files contain, not their code)
FOREIGN_MARKERS: tuple[tuple[str, tuple[bytes, ...]], ...] = (
    ("a StyleGAN-XL pickle (autonomousvision/stylegan_xl)", (b"embed_proj", b"SuperresGenerator",
                                                             b"networks_stylegan3_resetting")),
    ("a StyleGAN-T pickle (autonomousvision/stylegan-t)", (b"networks.generator", b"StyleSplit")),
)
_SUPPORTED = "NVlabs StyleGAN3 network pickles (config-T and config-R, a dict with G_ema)"
_ZIP_MAGIC = b"PK\x03\x04"


def read_stylegan3(path: str | Path) -> tuple[StyleGAN3Config, dict[str, torch.Tensor], str]:
    """(config, state dict, format name ``"nvlabs-pickle"``) of a StyleGAN3 network pickle.

    Every malformed layout is a one-line :class:`WeightsMismatchError` naming the file and what was
    found; other generators' files are :class:`NotSupportedError` s saying where they load.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingWeightsError(f"generator: no StyleGAN3 file at {str(path)!r}; give the path of an NVlabs "
                                  "StyleGAN3 network pickle (.pkl)")
    with open(path, "rb") as handle:
        head = handle.read(64)
    if head[:4] == _ZIP_MAGIC or is_legacy_torch(head) or _is_safetensors(head, path.stat().st_size):
        raise invalid("generator", f"{path.name}: a torch or safetensors file", _SUPPORTED,
                      "StyleGAN2 .pt/.safetensors files load as stylegan2:PATH", cls=NotSupportedError)
    foreign = foreign_kind(path)
    if foreign:
        raise invalid("generator", f"{path.name}: {foreign}", _SUPPORTED,
                      "Its architecture differs from StyleGAN3's; nothing from the file was run", cls=NotSupportedError)
    loaded = restricted_load_file(path, expected="NVlabs StyleGAN3 network pickle")
    if isinstance(loaded, tuple) and len(loaded) == 3 and isinstance(loaded[2], TFNetworkRecord):
        raise _pointer_to_stylegan2(path, "a TensorFlow StyleGAN2 pickle")
    if not (isinstance(loaded, dict) and isinstance(loaded.get("G_ema"), PersistentRecord)):
        raise invalid("generator", f"{path.name}: a pickle without G_ema", _SUPPORTED,
                      "Give the network snapshot (network-snapshot-*.pkl or a released .pkl)", cls=WeightsMismatchError)
    g_ema = loaded["G_ema"]
    if not is_stylegan3(g_ema):
        raise _pointer_to_stylegan2(path, "an NVlabs StyleGAN2 network pickle")
    return _converted(path, "an NVlabs StyleGAN3 pickle", _from_nvlabs, g_ema, family="StyleGAN3",
                      allowed=f"{_SUPPORTED} with NVIDIA's layout")


def _pointer_to_stylegan2(path: Path, found: str) -> LatentDirsError:
    return invalid("generator", f"{path.name}: {found}", f"{_SUPPORTED} for stylegan3:",
                   "This is a StyleGAN2 file: load it as stylegan2:PATH", cls=NotSupportedError)


def foreign_kind(path: Path, chunk: int = 1 << 22) -> str | None:
    """What other project's pickle ``path`` is (:data:`FOREIGN_MARKERS`), or None; read in chunks
    (one chunk in memory at a time), so checking costs no copy of the weights."""
    longest = max(len(marker) for _, markers in FOREIGN_MARKERS for marker in markers)
    tail = b""
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            window = tail + block
            for kind, markers in FOREIGN_MARKERS:
                if any(marker in window for marker in markers):
                    return kind
            tail = window[-longest:]
    return None


def is_stylegan3(g_ema: PersistentRecord) -> bool:
    """A generator whose synthesis starts from a ``SynthesisInput`` (StyleGAN3) rather than a const block."""
    synthesis = _child(g_ema, "synthesis")
    source = str(synthesis.meta.get("module_src", "")) if synthesis is not None else ""
    return _child(g_ema, "synthesis", "input") is not None or "class SynthesisInput" in source


# ---------------------------------------------------------------------- attribute readers
def _integer(record: PersistentRecord, key: str, where: str, low: int, high: int) -> int:
    value = record.state[key]
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise MalformedPickle(f"{where}.{key} is a {type(value).__name__}, not an integer")
    if not low <= int(value) <= high:
        raise MalformedPickle(f"{where}.{key} = {int(value)}; allowed: {low}-{high}")
    return int(value)


def _number(record: PersistentRecord, key: str, where: str, *, positive: bool = True) -> float:
    value = record.state[key]
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise MalformedPickle(f"{where}.{key} is {_show(value)}, not a finite number")
    if positive and not float(value) > 0:
        raise MalformedPickle(f"{where}.{key} = {float(value)}; allowed: a positive number")
    return float(value)


def _flag(record: PersistentRecord, key: str, where: str, default: bool | None = None) -> bool:
    value = record.state.get(key, default)
    if not isinstance(value, (bool, np.bool_)):
        raise MalformedPickle(f"{where}.{key} is {_show(value)}, not a bool")
    return bool(value)


def _side(record: PersistentRecord, key: str, where: str) -> int:
    """A square size stored as an int or a [width, height] array (NVIDIA broadcasts it to two)."""
    value = record.state[key]
    items = np.asarray(value).reshape(-1).tolist() if isinstance(value, (np.ndarray, list, tuple)) else [value]
    if len(items) not in (1, 2) or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items):
        raise MalformedPickle(f"{where}.{key} is {_show(value)}, not a size (an int or [width, height])")
    if len(set(items)) != 1:
        raise MalformedPickle(f"{where}.{key} = {items}; only square networks are supported")
    if not 1 <= int(items[0]) <= MAX_SIDE:
        raise MalformedPickle(f"{where}.{key} = {int(items[0])}; allowed: 1-{MAX_SIDE}")
    return int(items[0])


def _padding(record: PersistentRecord, where: str) -> tuple[int, int, int, int]:
    value = record.state["padding"]
    items = list(value) if isinstance(value, (list, tuple, np.ndarray)) else None
    if (items is None or len(items) != 4
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and abs(int(v)) <= 4 * MAX_SIDE
                       for v in items)):
        raise MalformedPickle(f"{where}.padding is {_show(value)}; allowed: four integers [x0, x1, y0, y1]")
    return tuple(int(v) for v in items)  # type: ignore[return-value]


def _clamp(record: PersistentRecord, where: str) -> float | None:
    if record.state.get("conv_clamp") is None:
        return None
    return _number(record, "conv_clamp", where)


def _show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


# ---------------------------------------------------------------------- NVlabs → config
def _from_nvlabs(g_ema: PersistentRecord) -> tuple[StyleGAN3Config, dict[str, torch.Tensor], str]:
    synthesis, mapping = _child(g_ema, "synthesis"), _child(g_ema, "mapping")
    if synthesis is None or mapping is None:
        raise MalformedPickle("G_ema without its synthesis and mapping modules")
    _require_default_activations(g_ema)  # mapping.fc* must be leaky ReLU
    layers = _layer_records(synthesis)
    state = _flatten_record(g_ema)
    w_dim = _integer(g_ema, "w_dim", "G_ema", 1, MAX_W_DIM)
    specs = tuple(_layer_spec(name, record, w_dim, state) for name, record in layers)
    input_record = _child(g_ema, "synthesis", "input")
    input_spec = _input_spec(input_record, w_dim, state)
    config = StyleGAN3Config(
        z_dim=_integer(g_ema, "z_dim", "G_ema", 1, MAX_W_DIM), w_dim=w_dim, c_dim=_integer(g_ema, "c_dim", "G_ema", 0, 100_000),
        img_resolution=_integer(g_ema, "img_resolution", "G_ema", 1, MAX_SIDE),
        img_channels=_integer(g_ema, "img_channels", "G_ema", 1, 4), input=input_spec, layers=specs,
        output_scale=_number(synthesis, "output_scale", "G_ema.synthesis", positive=False),
        mapping_layers=_integer(mapping, "num_layers", "G_ema.mapping", 1, MAX_LAYERS),
        mapping_lr=_mapping_lr(mapping))
    _check_chain(config, synthesis)
    _check_mapping(config, state)
    return config, state, "nvlabs-pickle"


def _layer_records(synthesis: PersistentRecord) -> list[tuple[str, PersistentRecord]]:
    """(name, record) of each layer in ``layer_names`` order; a listed layer that is missing, a layer
    module that is not listed, or names out of order are refused (a dropped layer must not go unseen)."""
    names = synthesis.state["layer_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not 2 <= len(names) <= MAX_LAYERS:
        raise MalformedPickle(f"G_ema.synthesis.layer_names is {_show(names)}; allowed: a list of 2-{MAX_LAYERS} names")
    modules = _mapping(synthesis.state.get("_modules"), "G_ema.synthesis._modules")
    missing = [n for n in names if not isinstance(modules.get(n), PersistentRecord)]
    if missing:
        raise MalformedPickle(f"G_ema.synthesis misses the layer(s) {describe_names(missing, 3)} listed in layer_names")
    unlisted = sorted(str(k) for k in modules if k != "input" and k not in names)
    if unlisted:
        raise MalformedPickle(f"G_ema.synthesis has modules {describe_names(unlisted, 3)} not in layer_names")
    wrong = [n for i, n in enumerate(names) if not n.startswith(f"L{i}_")]
    if wrong:
        raise MalformedPickle(f"G_ema.synthesis.layer_names {describe_names(wrong, 3)} out of order (L0_…, L1_…, …); "
                              "a layer is missing")
    return [(n, modules[n]) for n in names]


def _filter_shape(state: dict[str, torch.Tensor], key: str, taps: int, factor: int, radial: bool) -> tuple[int, ...]:
    """The shape the filter buffer ``key`` must have: () when NVIDIA stores None (one tap)."""
    tensor = state.get(key)
    if taps == 1:
        if tensor is not None:
            raise MalformedPickle(f"{key} is stored, but the layer has one tap (no filter)")
        return ()
    expected = (taps, taps) if radial else (taps,)
    if tensor is None or tuple(tensor.shape) != expected:
        raise MalformedPickle(f"{key} of shape {None if tensor is None else tuple(tensor.shape)}; "
                              f"the layer's attributes say {expected}")
    if not bool(torch.isfinite(tensor).all()):
        raise MalformedPickle(f"{key} holds non-finite values")
    return expected


def _layer_spec(name: str, record: PersistentRecord, w_dim: int, state: dict[str, torch.Tensor]) -> LayerSpec:
    where = f"G_ema.synthesis.{name}"
    prefix = f"synthesis.{name}"
    is_torgb = _flag(record, "is_torgb", where)
    in_channels = _integer(record, "in_channels", where, 1, MAX_CHANNELS)
    out_channels = _integer(record, "out_channels", where, 1, MAX_CHANNELS)
    kernel = _integer(record, "conv_kernel", where, 1, MAX_KERNEL)
    up, down = (_integer(record, key, where, 1, MAX_FACTOR) for key in ("up_factor", "down_factor"))
    up_taps, down_taps = (_integer(record, key, where, 1, MAX_TAPS) for key in ("up_taps", "down_taps"))
    down_radial = _flag(record, "down_radial", where, False)
    expected = {f"{prefix}.weight": (out_channels, in_channels, kernel, kernel), f"{prefix}.bias": (out_channels,),
                f"{prefix}.affine.weight": (in_channels, w_dim), f"{prefix}.affine.bias": (in_channels,),
                f"{prefix}.magnitude_ema": ()}
    for key, shape in expected.items():
        if key not in state or tuple(state[key].shape) != shape:
            found = tuple(state[key].shape) if key in state else "missing"
            raise MalformedPickle(f"{key} is {found}; the layer's attributes say {shape}")
    magnitude = state[f"{prefix}.magnitude_ema"]
    if not (bool(torch.isfinite(magnitude)) and float(magnitude) > 0):
        raise MalformedPickle(f"{prefix}.magnitude_ema = {float(magnitude)}; allowed: a finite positive number")
    spec = LayerSpec(
        name=name, in_channels=in_channels, out_channels=out_channels, in_size=_side(record, "in_size", where),
        out_size=_side(record, "out_size", where), up_factor=up, down_factor=down, padding=_padding(record, where),
        conv_kernel=kernel, is_torgb=is_torgb,
        up_filter=_filter_shape(state, f"{prefix}.up_filter", up_taps, up, False),
        down_filter=_filter_shape(state, f"{prefix}.down_filter", down_taps, down, down_radial),
        conv_clamp=_clamp(record, where), use_fp16=_flag(record, "use_fp16", where, False))
    computed = spec.computed_out_size
    if min(spec.upsampled_size) < down_taps or computed != (spec.out_size,) * 2:
        raise MalformedPickle(f"{where}: padding {list(spec.padding)}, factors {up}/{down} and filters give "
                              f"{computed[0]}×{computed[1]} from {spec.in_size}², not its out_size {spec.out_size}")
    return spec


def _input_spec(record: PersistentRecord | None, w_dim: int, state: dict[str, torch.Tensor]) -> InputSpec:
    if record is None:
        raise MalformedPickle("G_ema.synthesis without its input (SynthesisInput)")
    where = "G_ema.synthesis.input"
    spec = InputSpec(channels=_integer(record, "channels", where, 1, MAX_CHANNELS), size=_side(record, "size", where),
                     sampling_rate=_number(record, "sampling_rate", where),
                     bandwidth=_number(record, "bandwidth", where))
    if not spec.bandwidth < spec.sampling_rate / 2:
        raise MalformedPickle(f"{where}: bandwidth {spec.bandwidth} not below half the sampling rate {spec.sampling_rate}")
    expected = {"synthesis.input.weight": (spec.channels, spec.channels), "synthesis.input.affine.weight": (4, w_dim),
                "synthesis.input.affine.bias": (4,), "synthesis.input.transform": (3, 3),
                "synthesis.input.freqs": (spec.channels, 2), "synthesis.input.phases": (spec.channels,)}
    for key, shape in expected.items():
        if key not in state or tuple(state[key].shape) != shape:
            found = tuple(state[key].shape) if key in state else "missing"
            raise MalformedPickle(f"{key} is {found}; the input's attributes say {shape}")
    if not bool(torch.isfinite(state["synthesis.input.transform"]).all()):
        raise MalformedPickle("synthesis.input.transform holds non-finite values")
    return spec


def _mapping_lr(mapping: PersistentRecord) -> float:
    fc0 = _child(mapping, "fc0")
    return 0.01 if fc0 is None else _number(fc0, "bias_gain", "G_ema.mapping.fc0")


def _check_chain(config: StyleGAN3Config, synthesis: PersistentRecord) -> None:
    """Each layer reads what the one before it writes; only the last is the ToRGB; sizes end at the
    image's; the stored counts agree; a render's activations stay bounded."""
    previous_channels, previous_size = config.input.channels, config.input.size
    for index, layer in enumerate(config.layers):
        if (layer.in_channels, layer.in_size) != (previous_channels, previous_size):
            raise MalformedPickle(f"{layer.name} reads {layer.in_channels} channels at {layer.in_size}², but the "
                                  f"layer before it writes {previous_channels} at {previous_size}²")
        if layer.is_torgb != (index == len(config.layers) - 1):
            raise MalformedPickle(f"{layer.name} is_torgb={layer.is_torgb}; only the last layer is the ToRGB")
        if layer.is_torgb and (layer.conv_kernel, layer.up_factor, layer.down_factor) != (1, 1, 1):
            raise MalformedPickle(f"{layer.name}: a ToRGB layer with kernel {layer.conv_kernel} and factors "
                                  f"{layer.up_factor}/{layer.down_factor}; NVIDIA's is 1×1 without resampling")
        previous_channels, previous_size = layer.out_channels, layer.out_size
    if (previous_channels, previous_size) != (config.img_channels, config.img_resolution):
        raise MalformedPickle(f"the last layer writes {previous_channels} channels at {previous_size}², but G_ema "
                              f"declares {config.img_channels} at {config.img_resolution}²")
    for key, expected in (("num_ws", config.num_ws), ("num_layers", len(config.layers) - 1)):
        if key in synthesis.state and _integer(synthesis, key, "G_ema.synthesis", 0, 10 * MAX_LAYERS) != expected:
            raise MalformedPickle(f"G_ema.synthesis.{key} = {synthesis.state[key]}, but its layers give {expected} "
                                  "(a layer is missing?)")
    if activation_elements(config) > MAX_ACTIVATION:
        raise MalformedPickle(f"layers whose activations need {activation_elements(config)} values per image; "
                              f"allowed: at most {MAX_ACTIVATION}")


def _check_mapping(config: StyleGAN3Config, state: dict[str, torch.Tensor]) -> None:
    w = config.w_dim
    widths = [config.z_dim + (w if config.c_dim else 0)] + [w] * config.mapping_layers
    expected = {f"mapping.fc{i}.weight": (widths[i + 1], widths[i]) for i in range(config.mapping_layers)}
    expected.update({f"mapping.fc{i}.bias": (w,) for i in range(config.mapping_layers)})
    expected["mapping.w_avg"] = (w,)
    if config.c_dim:
        expected.update({"mapping.embed.weight": (w, config.c_dim), "mapping.embed.bias": (w,)})
    for key, shape in expected.items():
        if key not in state or tuple(state[key].shape) != shape:
            found = tuple(state[key].shape) if key in state else "missing"
            raise MalformedPickle(f"{key} is {found}; G_ema's z_dim/c_dim/w_dim and mapping num_layers say {shape}")


__all__ = ["FOREIGN_MARKERS", "foreign_kind", "is_stylegan3", "read_stylegan3"]
