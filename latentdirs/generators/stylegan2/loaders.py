"""Read the StyleGAN2 files users have into (config, state dict with NVlabs parameter names).

Formats, recognised by content, not extension:

* NVlabs network pickles (stylegan2-ada-pytorch and the stylegan3 repository's StyleGAN2): ``G_ema``;
* old TensorFlow StyleGAN2 / StyleGAN2-ADA pickles ``(G, D, Gs)``: ``Gs`` (as NVlabs' legacy.py maps it);
* rosinality ``.pt`` checkpoints (torch.save zip or legacy files): ``g_ema`` plus ``latent_avg``, or
  training checkpoints with ``g``, ``d``, ``args`` (``args`` is an argparse.Namespace, allowed explicitly).
* safetensors state dicts of a generator with NVlabs parameter names (``mapping.fc0.weight``,
  ``synthesis.b4.const`` …; what ``training/train_stylegan2.py`` ships), options in the metadata.

Pickles go through :mod:`.unpickle` (nothing in them runs); torch files through
``torch.load(weights_only=True)``. Every size is inferred from tensor shapes.
"""

from __future__ import annotations

import argparse
import collections
import math
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from latentdirs.errors import LatentDirsError, MissingWeightsError, NotSupportedError, WeightsMismatchError, invalid
from latentdirs.generators.stylegan2.network import StyleGAN2Config
from latentdirs.generators.stylegan2.unpickle import (MalformedPickle, PersistentRecord, TFNetworkRecord,
                                                     restricted_load_file)
from latentdirs.weights import describe_names, is_legacy_torch, library_reason, load_torch_weights

_ZIP_MAGIC = b"PK\x03\x04"
#: what format detection reads of a file (is_legacy_torch reads at most 64 bytes)
_HEAD_BYTES = 64


def read_checkpoint(path: str | Path) -> tuple[StyleGAN2Config, dict[str, torch.Tensor], str]:
    """(config, state dict, format name) of a StyleGAN2 file.

    Every malformed layout — a missing entry, a value of the wrong type, a module that contains
    itself — is a one-line :class:`WeightsMismatchError` naming the file and what was found.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingWeightsError(f"generator: no StyleGAN2 file at {str(path)!r}; give the path of a network "
                                  "pickle (.pkl) or a rosinality checkpoint (.pt)")
    with open(path, "rb") as handle:  # the format from the first bytes; each reader reads the file itself
        head = handle.read(_HEAD_BYTES)
    if _is_safetensors(head, path.stat().st_size):
        return _converted(path, "a safetensors state dict", _from_safetensors, path)
    if head[:4] == _ZIP_MAGIC or is_legacy_torch(head):
        checkpoint = load_torch_weights(path, param="generator", extra_globals=[argparse.Namespace])
        return _converted(path, "a rosinality checkpoint", _from_rosinality, checkpoint)
    loaded = restricted_load_file(path)  # streamed: about one copy of the weights at the peak
    if isinstance(loaded, dict) and isinstance(loaded.get("G_ema"), PersistentRecord):
        return _converted(path, "an NVlabs network pickle", _from_nvlabs, loaded["G_ema"])
    if isinstance(loaded, tuple) and len(loaded) == 3 and isinstance(loaded[2], TFNetworkRecord):
        return _converted(path, "a TensorFlow network pickle", _from_tensorflow, loaded[2])
    raise WeightsMismatchError(f"generator: {str(path)!r} is a pickle, but neither an NVlabs network pickle "
                               "(a dict with G_ema) nor a TensorFlow one (G, D, Gs)")


_Converted = tuple[StyleGAN2Config, dict[str, torch.Tensor], str]


def _converted(path: Path, kind: str, convert: Callable[[Any], _Converted], value: Any, *,
               family: str = "StyleGAN2", allowed: str | None = None) -> _Converted:
    """``convert(value)``, with every layout error of a hostile or damaged file as one line naming it
    (``family``: the architecture the file should hold; ``allowed``: what is accepted, by default ``kind``
    with the family's layout)."""
    allowed = allowed or f"{kind} with {family}'s layout"
    fix = f"Nothing from the file was run; the file is damaged or not a {family} generator"
    try:
        return convert(value)
    except LatentDirsError:
        raise
    except MalformedPickle as error:
        raise invalid("generator", f"{path.name}: {error}", allowed, fix, cls=WeightsMismatchError) from None
    except KeyError as error:
        raise invalid("generator", f"{path.name}: {kind} without the entry {error}", allowed, fix,
                      cls=WeightsMismatchError) from None
    except (IndexError, TypeError, ValueError, AttributeError, RuntimeError, RecursionError, OverflowError) as error:
        raise invalid("generator", f"{path.name}: {kind} whose layout is unexpected ({library_reason(error)})",
                      allowed, fix, cls=WeightsMismatchError) from None


def _mapping(value: Any, what: str) -> dict[Any, Any]:
    """``value`` if it is a dict, ``{}`` for None; anything else is a malformed layout."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedPickle(f"{what} is a {type(value).__name__}, not a dict")
    return value


# ---------------------------------------------------------------------- NVlabs
#: NVlabs generators nest modules four deep (G_ema.synthesis.b64.conv0.affine); far deeper is not a network
_MAX_MODULE_DEPTH = 32


def _flatten_record(record: PersistentRecord) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of ``record`` and its sub-modules, by dotted name, as float32 tensors.

    A float32 tensor that alone fills its storage is taken as it is (a second copy of every weight
    was most of a load's peak memory); any other value — another dtype, a numpy array, a view of
    part of a storage, a storage shared with another tensor — is copied. A tensor object referenced
    under several names is copied once (the names share the copy).
    """
    values: list[tuple[str, Any]] = []
    for name, item in _records(record):
        prefix = f"{name}." if name else ""
        for group in ("_parameters", "_buffers"):
            for key, value in _mapping(item.state.get(group), f"{name or 'G_ema'}.{group}").items():
                if value is None:
                    continue
                if not isinstance(value, (torch.Tensor, np.ndarray)):
                    raise MalformedPickle(f"{prefix}{key} is a {type(value).__name__}, not a tensor")
                values.append((f"{prefix}{key}", value))
    storage_users = collections.Counter(_storage_key(value) for _, value in values if isinstance(value, torch.Tensor))
    tensors: dict[str, torch.Tensor] = {}
    copies: dict[int, torch.Tensor] = {}
    for name, value in values:
        if id(value) not in copies:
            copies[id(value)] = (value.detach() if _owns_its_storage(value, storage_users)
                                 else torch.as_tensor(value).detach().float().clone())
        tensors[name] = copies[id(value)]
    return tensors


def _storage_key(tensor: torch.Tensor) -> tuple[int, int]:
    storage = tensor.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


def _owns_its_storage(value: Any, storage_users: collections.Counter) -> bool:
    """A float32 tensor, the only one over its storage, that covers all of it contiguously."""
    return (isinstance(value, torch.Tensor) and value.dtype == torch.float32 and value.numel() > 0
            and value.is_contiguous() and value.storage_offset() == 0
            and value.numel() * 4 == value.untyped_storage().nbytes() and storage_users[_storage_key(value)] == 1)


def _child(record: PersistentRecord, *path: str) -> PersistentRecord | None:
    for name in path:
        record = _mapping(record.state.get("_modules"), "_modules").get(name)
        if not isinstance(record, PersistentRecord):
            return None
    return record


def _from_nvlabs(g_ema: PersistentRecord) -> tuple[StyleGAN2Config, dict[str, torch.Tensor], str]:
    state = _flatten_record(g_ema)
    if any(k.startswith("synthesis.input.") for k in state) or "SynthesisInput" in str(
            (_child(g_ema, "synthesis") or g_ema).meta.get("module_src", "")):
        raise invalid("generator", "a StyleGAN3 (config-T/R) network pickle",
                      "StyleGAN2 files for stylegan2: (NVlabs, TensorFlow, rosinality, safetensors)",
                      "This is a StyleGAN3 pickle: load it as stylegan3:PATH", cls=NotSupportedError)
    standard = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64
    for key in [k for k in state if k.endswith("resample_filter")]:
        if not torch.allclose(state.pop(key), standard):  # this implementation hard-wires the default filter
            raise NotSupportedError(f"generator: {key} is not the default [1, 3, 3, 1] filter; not supported")
    _require_default_activations(g_ema)
    b4 = _child(g_ema, "synthesis", "b4")
    conv = _child(g_ema, "synthesis", "b4", "conv1")
    fc0 = _child(g_ema, "mapping", "fc0")
    clamp = conv.state.get("conv_clamp") if conv is not None else None
    config = _config_from_shapes(
        state, architecture=str(b4.state.get("architecture", "skip")) if b4 is not None else "skip",
        conv_clamp=None if clamp is None else float(clamp),
        mapping_lr=float(fc0.state.get("bias_gain", 0.01)) if fc0 is not None else 0.01)
    return config, state, "nvlabs-pickle"


def _records(record: PersistentRecord) -> Iterator[tuple[str, PersistentRecord]]:
    """(dotted name, record) of ``record`` (named "") and its persistent sub-modules, parents first.

    Iterative; a module reached twice (a reference cycle, or a module shared between two places,
    which networks never pickle) or nesting deeper than :data:`_MAX_MODULE_DEPTH` is refused.
    """
    seen: set[int] = set()
    stack: list[tuple[str, PersistentRecord, int]] = [("", record, 0)]
    while stack:
        name, item, depth = stack.pop()
        if id(item) in seen:
            raise MalformedPickle(f"module {name or 'G_ema'!r} is reached twice (a reference cycle)")
        if depth > _MAX_MODULE_DEPTH:
            raise MalformedPickle(f"modules nested more than {_MAX_MODULE_DEPTH} deep")
        seen.add(id(item))
        yield name, item
        modules = _mapping(item.state.get("_modules"), f"{name or 'G_ema'}._modules")
        children = [(f"{name}.{key}" if name else str(key), child) for key, child in modules.items()
                    if isinstance(child, PersistentRecord)]
        stack.extend((child_name, child, depth + 1) for child_name, child in reversed(children))


def _require_default_activations(g_ema: PersistentRecord) -> None:
    """Mapping layers and synthesis convolutions must use leaky ReLU (the only activation implemented here)."""
    for name, layer in _records(g_ema):
        activation = layer.state.get("activation", "lrelu")
        if re.fullmatch(r"mapping\.fc\d+|synthesis\.b\d+\.conv[01]", name) and activation != "lrelu":
            raise NotSupportedError(f"generator: {name} uses activation {activation!r}; only StyleGAN2's "
                                    "default 'lrelu' is supported")


# ---------------------------------------------------------------------- shapes → config
def _config_from_shapes(state: dict[str, torch.Tensor], *, architecture: str, conv_clamp: float | None,
                        mapping_lr: float) -> StyleGAN2Config:
    try:
        mapping_layers = len({int(m.group(1)) for k in state if (m := re.match(r"mapping\.fc(\d+)\.weight$", k))})
        w_dim = state[f"mapping.fc{max(mapping_layers - 1, 0)}.weight"].shape[0]
        hidden = state["mapping.fc0.weight"].shape[0] if mapping_layers > 1 else w_dim
        first_in = state["mapping.fc0.weight"].shape[1]
        c_dim = state["mapping.embed.weight"].shape[1] if "mapping.embed.weight" in state else 0
        embed = state["mapping.embed.weight"].shape[0] if c_dim else 0
        resolutions = sorted(int(m.group(1)) for k in state if (m := re.match(r"synthesis\.b(\d+)\.conv1\.weight$", k)))
        channels = {r: state[f"synthesis.b{r}.conv1.weight"].shape[0] for r in resolutions}
        img_resolution = resolutions[-1]
        img_channels = state[f"synthesis.b{img_resolution}.torgb.weight"].shape[0]
    except KeyError as error:
        raise MalformedPickle(f"weights without the StyleGAN2 parameter {error}") from None
    except IndexError:
        raise MalformedPickle("StyleGAN2 parameters of too few dimensions (or no synthesis blocks)") from None
    if resolutions != [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]:
        raise MalformedPickle(f"synthesis blocks {describe_names([str(r) for r in resolutions])}, not 4, 8, … up "
                              "to a power of two")
    if architecture not in ("skip", "resnet"):
        raise NotSupportedError(f"generator: architecture {architecture!r}; supported: skip, resnet")
    for label, value in (("conv_clamp", conv_clamp), ("mapping learning-rate multiplier", mapping_lr)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise MalformedPickle(f"{label} {value!r}; allowed: a finite positive number")
    return StyleGAN2Config(z_dim=first_in - embed, w_dim=w_dim, c_dim=c_dim, img_resolution=img_resolution,
                           img_channels=img_channels, channels=channels, mapping_layers=mapping_layers,
                           architecture=architecture, conv_clamp=conv_clamp, mapping_lr=mapping_lr,
                           embed_features=embed or None, mapping_features=hidden,
                           use_noise="synthesis.b4.conv1.noise_strength" in state)


# ---------------------------------------------------------------------- safetensors
#: safetensors metadata keys this format reads, with the values assumed when a key is absent (NVlabs' defaults)
SAFETENSORS_OPTIONS = {"architecture": "skip", "mapping_lr": "0.01", "conv_clamp": "none"}


def _is_safetensors(head: bytes, size: int) -> bool:
    """A safetensors file (``head``: its first bytes, ``size``: its length): an 8-byte little-endian header
    length that fits the file, then a JSON object."""
    if size < 10 or len(head) < 9:
        return False
    header = int.from_bytes(head[:8], "little")
    return 2 <= header <= size - 8 and head[8:9] == b"{"


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    import json

    try:
        header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MalformedPickle(f"a safetensors header that is not JSON ({error.__class__.__name__})") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in _mapping(metadata, "safetensors __metadata__").items()}


def _from_safetensors(path: Path) -> tuple[StyleGAN2Config, dict[str, torch.Tensor], str]:
    """NVlabs-named tensors; ``architecture``, ``mapping_lr``, ``conv_clamp`` (a number or ``none``) from
    the metadata. Non-finite weights are refused (``mapping.w_avg`` may be all NaN: estimated then)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    data = path.read_bytes()
    options = {**SAFETENSORS_OPTIONS, **_safetensors_metadata(data)}
    try:
        stored = load(data)
    except SafetensorError as error:
        raise MalformedPickle(f"an unreadable safetensors file ({library_reason(error)})") from None
    del data
    state: dict[str, torch.Tensor] = {}
    for key in list(stored):
        value = stored.pop(key)  # each stored tensor is dropped as soon as its copy exists
        if not value.is_floating_point():
            raise MalformedPickle(f"{key} of dtype {value.dtype}, not floating point")
        # safetensors' tensors view read-only bytes objects; the network's parameters must own their memory
        value = value.to(torch.float32, copy=True)
        finite = torch.isfinite(value)
        if not bool(finite.all()) and not (key == "mapping.w_avg" and bool(torch.isnan(value).all())):
            raise MalformedPickle(f"{key} holds {int((~finite).sum())} non-finite values")
        state[key] = value
    try:
        mapping_lr = float(options["mapping_lr"])
        clamp = None if options["conv_clamp"].lower() == "none" else float(options["conv_clamp"])
    except ValueError:
        raise MalformedPickle(f"metadata mapping_lr={options['mapping_lr']!r}, conv_clamp={options['conv_clamp']!r}; "
                              "allowed: numbers (conv_clamp may be 'none')") from None
    config = _config_from_shapes(state, architecture=options["architecture"], conv_clamp=clamp,
                                 mapping_lr=mapping_lr)
    return config, state, "safetensors"


# ---------------------------------------------------------------------- rosinality
def _from_rosinality(checkpoint: Any) -> tuple[StyleGAN2Config, dict[str, torch.Tensor], str]:
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("g_ema"), dict):
        raise WeightsMismatchError("generator: a torch checkpoint without 'g_ema'; expected a rosinality "
                                   "StyleGAN2 checkpoint (converted: g_ema + latent_avg; training: g, d, g_ema, args)")
    source = checkpoint["g_ema"]
    state: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        name = _rosinality_name(str(key))
        if name is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise MalformedPickle(f"g_ema[{str(key)!r}] is a {type(value).__name__}, not a tensor")
        value = value.detach().float()
        if name.endswith("conv.weight"):
            value = value[0]
        state[name.replace(".conv.weight", ".weight")] = value.reshape(_target_shape(name, value))
    if not any(k.startswith("mapping.fc") for k in state):
        raise WeightsMismatchError("generator: g_ema holds no 'style.N' mapping layers; not a rosinality StyleGAN2")
    w_dim = state["mapping.fc0.weight"].shape[0]
    latent_avg = checkpoint.get("latent_avg")
    state["mapping.w_avg"] = (torch.as_tensor(latent_avg).float().reshape(w_dim) if latent_avg is not None
                              else torch.full((w_dim,), float("nan")))
    place_rosinality_noise(state)
    config = _config_from_shapes(state, architecture="skip", conv_clamp=None, mapping_lr=0.01)
    return config, state, "rosinality-pt"


def _rosinality_name(key: str) -> str | None:
    """rosinality key → NVlabs key (None for buffers that carry no weights: blur kernels)."""
    if key.endswith(".kernel"):
        return None
    if m := re.match(r"style\.(\d+)\.(weight|bias)$", key):
        return f"mapping.fc{int(m.group(1)) - 1}.{m.group(2)}"
    if key == "input.input":
        return "synthesis.b4.const"
    if m := re.match(r"noises\.noise_(\d+)$", key):
        return f"noise:{m.group(1)}"
    layer, rest = _rosinality_layer(key)
    if layer is None:
        return None
    rest = {"conv.weight": "conv.weight", "conv.modulation.weight": "affine.weight",
            "conv.modulation.bias": "affine.bias", "noise.weight": "noise_strength", "activate.bias": "bias",
            "bias": "bias"}.get(rest)
    return f"{layer}.{rest}" if rest else None


def _rosinality_layer(key: str) -> tuple[str | None, str]:
    if key.startswith("conv1."):
        return "synthesis.b4.conv1", key[len("conv1."):]
    if key.startswith("to_rgb1."):
        return "synthesis.b4.torgb", key[len("to_rgb1."):]
    if m := re.match(r"convs\.(\d+)\.(.*)$", key):
        index = int(m.group(1))
        return f"synthesis.b{8 * 2 ** (index // 2)}.conv{index % 2}", m.group(2)
    if m := re.match(r"to_rgbs\.(\d+)\.(.*)$", key):
        return f"synthesis.b{8 * 2 ** int(m.group(1))}.torgb", m.group(2)
    return None, key


def _target_shape(name: str, value: torch.Tensor) -> tuple[int, ...]:
    if name.endswith(("noise_strength",)):
        return ()
    if name.endswith(".bias") and value.dim() == 4:  # to_rgb bias [1, 3, 1, 1]
        return (value.numel(),)
    if name == "synthesis.b4.const":
        return tuple(value.shape[1:])
    if name.startswith("noise:"):
        return tuple(value.shape[-2:])
    return tuple(value.shape)


def place_rosinality_noise(state: dict[str, torch.Tensor]) -> None:
    """rosinality's ``noises.noise_k`` (one per conv, in order) → ``…conv*.noise_const``."""
    layers = ["synthesis.b4.conv1"]
    resolution = 8
    while f"synthesis.b{resolution}.conv0.weight" in state:
        layers += [f"synthesis.b{resolution}.conv0", f"synthesis.b{resolution}.conv1"]
        resolution *= 2
    for key in [k for k in state if k.startswith("noise:")]:
        state[f"{layers[int(key.split(':')[1])]}.noise_const"] = state.pop(key)


# ---------------------------------------------------------------------- TensorFlow
#: TensorFlow keyword arguments whose non-default values this implementation cannot reproduce
_TF_DEFAULTS = {"resample_kernel": [1, 3, 3, 1], "nonlinearity": "lrelu", "mapping_nonlinearity": "lrelu"}


def _tf_variables(record: TFNetworkRecord) -> dict[str, np.ndarray]:
    variables = record.state.get("variables") or []
    if not isinstance(variables, (list, tuple)) or not all(isinstance(v, tuple) and len(v) == 2 for v in variables):
        raise MalformedPickle("TensorFlow 'variables' that are not a list of (name, array) pairs")
    return {str(name): np.asarray(value) for name, value in variables}


def _tf_kwargs(gs: TFNetworkRecord, synthesis: TFNetworkRecord) -> dict[str, Any]:
    """Gs's keyword arguments (what NVlabs' legacy.py reads), the synthesis component's as a fallback."""
    kwargs = dict(_mapping(synthesis.state.get("static_kwargs"), "synthesis static_kwargs"))
    kwargs.update(_mapping(gs.state.get("static_kwargs"), "Gs static_kwargs"))
    for name, default in _TF_DEFAULTS.items():
        value = kwargs.get(name)
        if value is not None and not np.array_equal(np.ravel(value), np.ravel(default)):
            raise NotSupportedError(f"generator: the TensorFlow pickle sets {name}={value!r}; only the default "
                                    f"{default!r} is supported")
    return kwargs


#: synthesis variables that hold no weights (the progressive-growing level of detail)
_TF_IGNORED = {"lod"}


class _ReadTracking(dict):
    """A dict that remembers which keys were read with ``[]`` (membership tests do not count)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.read: set[Any] = set()

    def __getitem__(self, key: Any) -> Any:
        self.read.add(key)
        return super().__getitem__(key)


def _from_tensorflow(gs: TFNetworkRecord) -> tuple[StyleGAN2Config, dict[str, torch.Tensor], str]:
    components = _mapping(gs.state.get("components"), "Gs components")
    mapping, synthesis = components.get("mapping"), components.get("synthesis")
    if not isinstance(mapping, TFNetworkRecord) or not isinstance(synthesis, TFNetworkRecord):
        raise WeightsMismatchError("generator: TensorFlow Gs without mapping/synthesis components")
    if int(gs.state.get("version", 0)) < 4:
        raise NotSupportedError(f"generator: TensorFlow network pickle version {gs.state.get('version')!r}; "
                                "StyleGAN2 pickles (version 4 or later) are supported, StyleGAN1 ones are not")
    kwargs = _tf_kwargs(gs, synthesis)
    own, mvars = _tf_variables(gs), _tf_variables(mapping)
    svars = _ReadTracking(_tf_variables(synthesis))
    if any(name.startswith("LabelConcat") for name in mvars):
        raise NotSupportedError("generator: conditional pickles of the original TensorFlow StyleGAN2 (LabelConcat) "
                                "are not supported (NVlabs' legacy.py cannot convert them either); conditional "
                                "StyleGAN2-ADA TensorFlow pickles (LabelEmbed) are")
    if any(name.startswith("ToRGB_lod") for name in svars):
        raise NotSupportedError("generator: a TensorFlow StyleGAN2 with the 'orig' architecture (configs A-D); "
                                "only configs E/F (skip, resnet) are supported")
    if "4x4/Const/const" not in svars:
        raise WeightsMismatchError("generator: the TensorFlow pickle is not a StyleGAN2 generator "
                                   "(no synthesis 4x4/Const/const)")

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    def conv_weight(array: np.ndarray, *, flip: bool = False) -> torch.Tensor:
        # TF [k, k, in, out] → [out, in, k, k]; NVlabs flips the kernels of TF's up-sampling convs
        return tensor((array[::-1, ::-1] if flip else array).transpose(3, 2, 0, 1))

    state: dict[str, torch.Tensor] = {"mapping.w_avg": tensor(own["dlatent_avg"])}
    for name, value in mvars.items():
        if m := re.match(r"(Dense(\d+)|LabelEmbed)/(weight|bias)$", name):
            layer = f"fc{m.group(2)}" if m.group(2) is not None else "embed"
            state[f"mapping.{layer}.{m.group(3)}"] = tensor(value.T if m.group(3) == "weight" else value)
    state["synthesis.b4.const"] = tensor(svars["4x4/Const/const"][0])
    noise_index = 0
    resolution = 4
    while resolution == 4 or f"{resolution}x{resolution}/Conv1/weight" in svars:
        tf_layers = [("Conv", "conv1")] if resolution == 4 else [("Conv0_up", "conv0"), ("Conv1", "conv1")]
        for tf_name, name in tf_layers:
            prefix, scope = f"synthesis.b{resolution}.{name}", f"{resolution}x{resolution}/{tf_name}"
            state[f"{prefix}.weight"] = conv_weight(svars[f"{scope}/weight"], flip=tf_name == "Conv0_up")
            state[f"{prefix}.affine.weight"] = tensor(svars[f"{scope}/mod_weight"].T)
            state[f"{prefix}.affine.bias"] = tensor(svars[f"{scope}/mod_bias"] + 1)
            state[f"{prefix}.bias"] = tensor(svars[f"{scope}/bias"])
            if f"{scope}/noise_strength" in svars:  # absent when trained with use_noise=False
                state[f"{prefix}.noise_strength"] = tensor(svars[f"{scope}/noise_strength"]).reshape(())
                state[f"{prefix}.noise_const"] = tensor(svars[f"noise{noise_index}"][0, 0])
            noise_index += 1
        scope, prefix = f"{resolution}x{resolution}/ToRGB", f"synthesis.b{resolution}.torgb"
        if f"{scope}/weight" in svars:  # every block in skip nets, the last only in resnet nets
            state[f"{prefix}.weight"] = conv_weight(svars[f"{scope}/weight"])
            state[f"{prefix}.affine.weight"] = tensor(svars[f"{scope}/mod_weight"].T)
            state[f"{prefix}.affine.bias"] = tensor(svars[f"{scope}/mod_bias"] + 1)
            state[f"{prefix}.bias"] = tensor(svars[f"{scope}/bias"])
        if f"{resolution}x{resolution}/Skip/weight" in svars:
            state[f"synthesis.b{resolution}.skip.weight"] = conv_weight(svars[f"{resolution}x{resolution}/Skip/weight"],
                                                                        flip=True)
        resolution *= 2
    unused = sorted(set(svars) - svars.read - _TF_IGNORED)
    if unused:  # a block whose Conv1 is missing would otherwise end the network early, silently
        raise MalformedPickle(f"synthesis variables {describe_names(unused, 3)} that no layer of the network "
                              "read (a missing variable cut the network short?)")
    clamp = kwargs.get("conv_clamp")
    config = _config_from_shapes(state, architecture=str(kwargs.get("architecture") or "skip"),
                                 conv_clamp=None if clamp is None else float(clamp),
                                 mapping_lr=float(kwargs.get("mapping_lrmul") or 0.01))
    return config, state, "tensorflow-pickle"


__all__ = ["read_checkpoint"]
