"""``module:pkg.mod:factory``: any torch generator a user brings.

The factory is called with no arguments and returns an ``nn.Module`` mapping latents ``[N, D]`` to
images ``[N, 3, H, W]`` in [-1, 1]. Options (``load_generator(spec, latent_dim=…, first_layer=…)`` or
``--gen-opt KEY=VALUE`` on the CLI; ``--opt`` is for the discovery method's options):

* ``latent_dim`` — D; default: the module's ``latent_dim`` / ``z_dim`` / ``nz`` attribute;
* ``first_layer`` — dotted name of the layer that projects the latent (``nn.Linear`` or
  ``nn.ConvTranspose2d``), which enables SeFa;
* ``latent_shape`` — ``"flat"`` (default, ``[N, D]``) or ``"image"`` (``[N, D, 1, 1]``, DCGAN style);
* ``resolution`` — output size; default: measured by rendering one latent.

Importing the module runs the user's own code, by their explicit request in the spec; a spec read
from a direction file or manifest is never loaded this way
(:func:`~latentdirs.registry.generator_from_record` refuses it unless the user passes it with ``-g``).
"""

from __future__ import annotations

import importlib
from typing import Sequence

import torch
from torch import nn

from latentdirs.errors import NotSupportedError, UnknownNameError, describe_allowed, invalid
from latentdirs.generators.base import GeneratorAdapter, LatentSpace


class ModuleAdapter(GeneratorAdapter):
    """Adapter over a user-supplied ``nn.Module``."""

    family = "module"

    def __init__(self, module: nn.Module, *, spec: str, latent_dim: int | None = None,
                 first_layer: str | None = None, latent_shape: str = "flat", resolution: int | None = None,
                 device: str | torch.device = "auto") -> None:
        if not isinstance(module, nn.Module):
            raise invalid("generator", spec, "a factory returning a torch.nn.Module",
                          f"It returned {type(module).__name__}")
        if latent_dim is None:
            latent_dim = next((int(getattr(module, a)) for a in ("latent_dim", "z_dim", "nz")
                               if isinstance(getattr(module, a, None), int)), None)
        if latent_dim is None or int(latent_dim) < 1:
            raise invalid("latent_dim", latent_dim, "a positive integer",
                          "Pass --gen-opt latent_dim=D (load_generator(…, latent_dim=D)) or give the "
                          "module a latent_dim attribute")
        if latent_shape not in ("flat", "image"):
            raise invalid("latent_shape", latent_shape, "'flat' or 'image'")
        self.latent_shape = latent_shape
        self.first_layer = first_layer
        if first_layer is not None:
            self._first_layer_module(module, first_layer)  # validate early
        super().__init__(spec=spec, network=module, spaces=[LatentSpace("z", int(latent_dim))],
                         resolution=resolution or 1, device=device)
        if resolution is None:
            with torch.no_grad():
                self.resolution = int(self.synthesize(torch.zeros(1, self.z_dim)).shape[-1])

    @staticmethod
    def _first_layer_module(module: nn.Module, name: str) -> nn.Module:
        layers = dict(module.named_modules())
        if name not in layers:
            raise invalid("first_layer", name, f"{describe_allowed(n for n in layers if n) or 'none'} (the module's "
                          "submodules)", cls=UnknownNameError)
        layer = layers[name]
        if not isinstance(layer, (nn.Linear, nn.ConvTranspose2d)):
            raise invalid("first_layer", name, "an nn.Linear or nn.ConvTranspose2d",
                          f"{name!r} is a {type(layer).__name__}")
        return layer

    def _synthesize(self, latents: torch.Tensor, space: str, classes: torch.Tensor | None,
                    truncation: float | None) -> torch.Tensor:
        inputs = latents[:, :, None, None] if self.latent_shape == "image" else latents
        return self.network(inputs)

    def projection_weights(self, layers: Sequence[int] | None = None) -> list[torch.Tensor]:
        """``first_layer``'s weight as ``[D, outputs]`` (Linear: transposed; ConvTranspose2d: flattened)."""
        self.check_layers(layers)
        if self.first_layer is None:
            raise NotSupportedError(f"{self.spec}: SeFa needs the latent's first layer; pass "
                                    "--gen-opt first_layer=NAME (an nn.Linear or nn.ConvTranspose2d), "
                                    "or use a learned method such as -m orojar")
        layer = self._first_layer_module(self.network, self.first_layer)
        weight = layer.weight.detach().float().cpu()
        matrix = weight.T if isinstance(layer, nn.Linear) else weight.reshape(weight.shape[0], -1)
        if matrix.shape[0] != self.z_dim:
            raise invalid("first_layer", self.first_layer, f"a layer with {self.z_dim} latent inputs",
                          f"it has {matrix.shape[0]}")
        return [matrix.contiguous()]


def load_module(argument: str | None, *, device: str | torch.device = "auto", latent_dim: int | None = None,
                first_layer: str | None = None, latent_shape: str = "flat",
                resolution: int | None = None) -> ModuleAdapter:
    """``module:pkg.mod:factory`` → :class:`ModuleAdapter` (options as in the module docstring)."""
    target = argument or ""
    module_name, sep, factory_name = target.rpartition(":")
    if not sep or not module_name or not factory_name:
        raise invalid("generator", f"module:{target}", "module:package.module:factory")
    try:
        imported = importlib.import_module(module_name)
    except ImportError as error:
        raise invalid("generator", f"module:{target}", "module:PACKAGE.MODULE:FACTORY naming an importable module",
                      f"Python cannot import {module_name!r} ({error}); check the name and that it is on PYTHONPATH",
                      cls=UnknownNameError) from None
    factory = getattr(imported, factory_name, None)
    if not callable(factory):
        raise invalid("generator", f"module:{target}", "module:PACKAGE.MODULE:FACTORY naming a callable factory",
                      f"{module_name!r} has no callable {factory_name!r}", cls=UnknownNameError)
    return ModuleAdapter(factory(), spec=f"module:{target}", latent_dim=latent_dim, first_layer=first_layer,
                         latent_shape=latent_shape, resolution=resolution, device=device)
