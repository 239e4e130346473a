"""Test-only writers of StyleGAN2 files in the three formats users have, from our own network's weights.

* NVlabs network pickle: every module reduces to ``torch_utils.persistence._reconstruct_persistent_obj``
  with the persistence ``meta`` layout (module_src, class_name, state with _parameters, _buffers,
  _modules, plain attributes, ``_init_kwargs`` as ``dnnlib.util.EasyDict``). The module_src written
  here would raise if anything executed it.
* TensorFlow pickle: ``(G, D, Gs)`` of ``dnnlib.tflib.network.Network`` objects with TF variable names
  and layouts (transposed, Conv0_up flipped, ``mod_bias`` without the +1, ``noise{k}``, ``LabelEmbed``
  for conditional StyleGAN2-ADA nets) and the keyword arguments on ``Gs`` as NVlabs' legacy.py reads them.
* rosinality: ``{"g_ema": state, "latent_avg": w_avg}`` (or a training checkpoint) with its key names.

The fake ``torch_utils`` / ``dnnlib`` modules exist only while pickling.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import torch

from latentdirs.generators.stylegan2.network import StyleGAN2Config, StyleGAN2Generator

EXECUTION_TRAP = "raise SystemExit('module_src was executed')\n"


def tiny_config(**changes) -> StyleGAN2Config:
    values = dict(z_dim=16, w_dim=16, c_dim=0, img_resolution=32, img_channels=3,
                  channels={4: 16, 8: 16, 16: 8, 32: 8}, mapping_layers=2, architecture="skip",
                  conv_clamp=None, mapping_lr=0.01)
    values.update(changes)
    return StyleGAN2Config(**values)


def random_network(config: StyleGAN2Config, seed: int = 0) -> StyleGAN2Generator:
    torch.manual_seed(seed)
    network = StyleGAN2Generator(config)
    with torch.no_grad():
        for name, value in network.state_dict().items():
            if name.endswith(("noise_strength", ".bias")) and "affine" not in name:
                value.copy_(0.1 * torch.randn(value.shape))
            if name == "mapping.w_avg":
                value.copy_(0.5 * torch.randn(value.shape))
            if name.endswith("torgb.weight"):
                value.mul_(0.1)  # keep random images in about [-1, 1] like a trained net
    return network.eval()


@contextlib.contextmanager
def _fake_modules(**modules):
    previous = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, module in previous.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


# ---------------------------------------------------------------------- NVlabs
def write_nvlabs_pickle(network: StyleGAN2Generator, path: Path, *, extra_state: dict | None = None,
                        protocol: int = 4) -> Path:
    """``protocol`` 2 stores bytes through ``_codecs.encode`` and sets as ``__builtin__.set`` (old pickles)."""
    persistence = types.ModuleType("torch_utils.persistence")
    util = types.ModuleType("dnnlib.util")

    def _reconstruct_persistent_obj(meta):  # never called when loading with latentdirs
        raise AssertionError("not for loading")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    util.EasyDict = EasyDict

    class Record:
        def __init__(self, meta):
            self.meta = meta

        def __reduce__(self):
            return _reconstruct_persistent_obj, (self.meta,)

    config = network.config

    def record(module: torch.nn.Module, class_name: str, attributes: dict) -> Record:
        state = {
            "training": False,
            "_parameters": collections.OrderedDict((k, v) for k, v in module._parameters.items()),
            "_buffers": collections.OrderedDict((k, v) for k, v in module._buffers.items()),
            "_non_persistent_buffers_set": set(),
            "_backward_hooks": collections.OrderedDict(), "_forward_hooks": collections.OrderedDict(),
            "_modules": collections.OrderedDict(), "_init_args": (), "_init_kwargs": EasyDict(),
        }
        state.update(attributes)
        for name, child in module._modules.items():
            state["_modules"][name] = build(child, name)
        return Record({"type": "class", "version": 6, "module_src": EXECUTION_TRAP, "class_name": class_name,
                       "state": state})

    def build(module: torch.nn.Module, name: str) -> Record:
        kind = type(module).__name__
        attributes: dict = {}
        if kind == "FullyConnected":
            attributes = {"activation": "lrelu" if module.lrelu else "linear",
                          "weight_gain": np.float64(module.weight_gain), "bias_gain": np.float64(module.bias_gain)}
        elif kind == "SynthesisLayer":
            attributes = {"conv_clamp": config.conv_clamp, "up": 2 if module.up else 1, "use_noise": True,
                          "activation": "lrelu"}
        elif kind == "SynthesisBlock":
            attributes = {"architecture": config.architecture, "resolution": module.resolution}
        elif kind == "MappingNetwork":
            attributes = {"z_dim": config.z_dim, "c_dim": config.c_dim, "w_dim": config.w_dim,
                          "num_ws": config.num_ws, "num_layers": config.mapping_layers, "w_avg_beta": 0.995,
                          "embed_features": config.embed_features, "layer_features": config.mapping_features}
        names = {"FullyConnected": "FullyConnectedLayer", "ToRGB": "ToRGBLayer", "SkipConv": "Conv2dLayer",
                 "StyleGAN2Generator": "Generator"}
        return record(module, names.get(kind, kind), attributes)

    g_ema = build(network, "G_ema")
    g_ema.meta["state"]["_init_kwargs"] = EasyDict(z_dim=config.z_dim, c_dim=config.c_dim, w_dim=config.w_dim,
                                                   img_resolution=config.img_resolution,
                                                   img_channels=config.img_channels,
                                                   synthesis_kwargs=EasyDict(architecture=config.architecture,
                                                                             conv_clamp=config.conv_clamp))
    data = {"G": g_ema, "D": None, "G_ema": g_ema, "training_set_kwargs": EasyDict(resolution=config.img_resolution),
            "augment_pipe": None, **(extra_state or {})}
    torch_utils = types.ModuleType("torch_utils")
    dnnlib = types.ModuleType("dnnlib")
    with _fake_modules(torch_utils=torch_utils, **{"torch_utils.persistence": persistence, "dnnlib": dnnlib,
                                                  "dnnlib.util": util}):
        path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path


# ---------------------------------------------------------------------- TensorFlow
def write_tensorflow_pickle(network: StyleGAN2Generator, path: Path, *, kwargs: dict | None = None,
                            version: int = 4) -> Path:
    """``kwargs``: extra TF keyword arguments stored on Gs (e.g. ``resample_kernel`` to test a refusal)."""
    network_module = types.ModuleType("dnnlib.tflib.network")

    class Network:
        def __init__(self, name, variables, components=None, static_kwargs=None):
            self.state = {"version": version, "name": name, "static_kwargs": static_kwargs or {},
                          "components": components or {}, "build_module_src": EXECUTION_TRAP,
                          "build_func_name": "G_main", "variables": variables}

        def __getstate__(self):
            return self.state

    Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
    network_module.Network = Network
    state = {k: v.detach().numpy().astype(np.float32) for k, v in network.state_dict().items()}
    config = network.config
    mapping = [(f"Dense{i}/{part}", state[f"mapping.fc{i}.{part}"].T if part == "weight" else state[f"mapping.fc{i}.{part}"])
               for i in range(config.mapping_layers) for part in ("weight", "bias")]
    if config.c_dim:
        mapping += [("LabelEmbed/weight", state["mapping.embed.weight"].T), ("LabelEmbed/bias", state["mapping.embed.bias"])]
    synthesis = [("4x4/Const/const", state["synthesis.b4.const"][None])]
    noise_index = 0
    for resolution in config.resolutions:
        layers = [("Conv", "conv1")] if resolution == 4 else [("Conv0_up", "conv0"), ("Conv1", "conv1")]
        for tf_name, name in layers:
            prefix, scope = f"synthesis.b{resolution}.{name}", f"{resolution}x{resolution}/{tf_name}"
            weight = state[f"{prefix}.weight"].transpose(2, 3, 1, 0)
            if tf_name == "Conv0_up":
                weight = weight[::-1, ::-1]
            synthesis += [(f"{scope}/weight", np.ascontiguousarray(weight)),
                          (f"{scope}/mod_weight", state[f"{prefix}.affine.weight"].T),
                          (f"{scope}/mod_bias", state[f"{prefix}.affine.bias"] - 1),
                          (f"{scope}/bias", state[f"{prefix}.bias"])]
            if config.use_noise:
                synthesis += [(f"{scope}/noise_strength", state[f"{prefix}.noise_strength"]),
                              (f"noise{noise_index}", state[f"{prefix}.noise_const"][None, None])]
            noise_index += 1
        prefix, scope = f"synthesis.b{resolution}.torgb", f"{resolution}x{resolution}/ToRGB"
        if f"{prefix}.weight" in state:
            synthesis += [(f"{scope}/weight", state[f"{prefix}.weight"].transpose(2, 3, 1, 0)),
                          (f"{scope}/mod_weight", state[f"{prefix}.affine.weight"].T),
                          (f"{scope}/mod_bias", state[f"{prefix}.affine.bias"] - 1),
                          (f"{scope}/bias", state[f"{prefix}.bias"])]
        if f"synthesis.b{resolution}.skip.weight" in state:
            skip = state[f"synthesis.b{resolution}.skip.weight"].transpose(2, 3, 1, 0)[::-1, ::-1]
            synthesis.append((f"{resolution}x{resolution}/Skip/weight", np.ascontiguousarray(skip)))
    static_kwargs = {"latent_size": config.z_dim, "label_size": config.c_dim, "dlatent_size": config.w_dim,
                     "resolution": config.img_resolution, "num_channels": config.img_channels,
                     "mapping_layers": config.mapping_layers, "architecture": config.architecture,
                     "conv_clamp": config.conv_clamp, "use_noise": config.use_noise, **(kwargs or {})}
    gs = Network("G", [("dlatent_avg", state["mapping.w_avg"])],
                 {"mapping": Network("G_mapping", mapping, static_kwargs=static_kwargs),
                  "synthesis": Network("G_synthesis", synthesis, static_kwargs=static_kwargs)},
                 static_kwargs=static_kwargs)
    dnnlib = types.ModuleType("dnnlib")
    tflib = types.ModuleType("dnnlib.tflib")
    with _fake_modules(dnnlib=dnnlib, **{"dnnlib.tflib": tflib, "dnnlib.tflib.network": network_module}):
        path.write_bytes(pickle.dumps((gs, gs, gs), protocol=4))
    return path


# ---------------------------------------------------------------------- rosinality
def rosinality_state(network: StyleGAN2Generator) -> dict[str, torch.Tensor]:
    state = {k: v.detach().clone() for k, v in network.state_dict().items()}
    config = network.config
    out = {}
    for i in range(config.mapping_layers):
        out[f"style.{i + 1}.weight"] = state[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = state[f"mapping.fc{i}.bias"]
    out["input.input"] = state["synthesis.b4.const"][None]
    layers = [("conv1", "synthesis.b4.conv1")]
    for j, resolution in enumerate(config.resolutions[1:]):
        layers += [(f"convs.{2 * j}", f"synthesis.b{resolution}.conv0"), (f"convs.{2 * j + 1}", f"synthesis.b{resolution}.conv1")]
    for k, (name, prefix) in enumerate(layers):
        out[f"{name}.conv.weight"] = state[f"{prefix}.weight"][None]
        out[f"{name}.conv.modulation.weight"] = state[f"{prefix}.affine.weight"]
        out[f"{name}.conv.modulation.bias"] = state[f"{prefix}.affine.bias"]
        out[f"{name}.noise.weight"] = state[f"{prefix}.noise_strength"].reshape(1)
        out[f"{name}.activate.bias"] = state[f"{prefix}.bias"]
        out[f"noises.noise_{k}"] = state[f"{prefix}.noise_const"][None, None]
        if name.startswith("convs") and int(name.split(".")[1]) % 2 == 0:
            out[f"{name}.conv.blur.kernel"] = torch.ones(4, 4)  # rosinality keeps its blur kernels as buffers
    for j, resolution in enumerate(config.resolutions):
        name = "to_rgb1" if resolution == 4 else f"to_rgbs.{j - 1}"
        prefix = f"synthesis.b{resolution}.torgb"
        out[f"{name}.conv.weight"] = state[f"{prefix}.weight"][None]
        out[f"{name}.conv.modulation.weight"] = state[f"{prefix}.affine.weight"]
        out[f"{name}.conv.modulation.bias"] = state[f"{prefix}.affine.bias"]
        out[f"{name}.bias"] = state[f"{prefix}.bias"].reshape(1, -1, 1, 1)
    return out


def write_rosinality(network: StyleGAN2Generator, path: Path, *, training: bool = False) -> Path:
    state = rosinality_state(network)
    if training:
        torch.save({"g": state, "d": {}, "g_ema": state, "g_optim": {}, "d_optim": {},
                    "args": argparse.Namespace(size=network.config.img_resolution, n_mlp=99)}, path)
    else:
        torch.save({"g_ema": state, "latent_avg": network.mapping.w_avg.detach().clone()}, path)
    return path
