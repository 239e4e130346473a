"""``stylegan3:PATH``: StyleGAN3 (config-T and config-R) networks from NVlabs pickles, without their code.

Loads NVlabs stylegan3 network pickles (:mod:`.loaders`, the same restricted unpickler as StyleGAN2:
nothing from a file runs) into this project's own implementation (:mod:`.network`). ``stylegan2:`` on
a StyleGAN3 file and ``stylegan3:`` on a StyleGAN2 file each answer with a one-line pointer to the other.

Spaces: ``z`` (default), ``w`` (``[N, w_dim]``) and ``w+`` (``[N, num_ws, w_dim]``, ``num_ws`` = layers
+ 1: slot 0 feeds the input's affine, slot ``i`` layer ``i - 1``). Truncation ψ (and
``truncation_cutoff``) is applied in the mapping z → w, towards the stored ``w_avg``.

StyleGAN3 has no noise inputs, so there is no ``noise_mode``. NVIDIA runs its fp16 layers in fp16 on
CUDA only; here (as NVIDIA on a CPU) every layer computes in float32 — ``describe()`` records which
layers were trained in fp16.

SeFa factorises the affines that read W+ slots: projection layer ``i`` reads slot ``i`` — 0 is the
input's affine ``[4, w_dim]`` (rotation and translation of the Fourier features), ``i ≥ 1`` layer
``L{i-1}``'s. The default takes every slot, the input included, because a direction file with no
layer list edits every slot (SeFa should see all it moves), and the input's 4 columns weigh little
beside thousands of others; ``--layers 1-N`` leaves it out.

Geometric edits: :meth:`StyleGAN3Adapter.with_input_transform` (and the loader options ``translate``,
``rotate``) render with a user transform of the Fourier features' grid — exact translations and
rotations of the picture (see the method for the sign convention).
"""

from __future__ import annotations

import copy
import math
import numbers
from pathlib import Path
from typing import Any, Sequence

import torch

from latentdirs.errors import NotSupportedError, WeightsMismatchError, invalid
from latentdirs.generators.base import GeneratorAdapter
from latentdirs.generators.stylegan_spaces import StyleSpaces, as_rgb, check_family_options
from latentdirs.generators.stylegan3.loaders import read_stylegan3
from latentdirs.generators.stylegan3.network import StyleGAN3Config, StyleGAN3Generator, parameter_count
from latentdirs.weights import build_with_state


class StyleGAN3Adapter(StyleSpaces, GeneratorAdapter):
    """Adapter over :class:`~.network.StyleGAN3Generator`."""

    family = "stylegan3"

    def __init__(self, config: StyleGAN3Config, state: dict[str, torch.Tensor], *, spec: str, source_format: str,
                 truncation_cutoff: int | None = None, device: str | torch.device = "auto") -> None:
        spaces = check_family_options(config, spec, truncation_cutoff)
        _check_implied_size(config, state, spec)
        # built on the meta device and given the file's tensors themselves: one copy of the weights
        network = build_with_state(lambda: StyleGAN3Generator(config), state, param="generator", source=spec,
                                   what="the StyleGAN3 generator its module attributes describe",
                                   fix="The file is damaged or was edited; use the original network file")
        self.config = config
        self.source_format = source_format
        self.truncation_cutoff = truncation_cutoff
        #: the user transform renders use ([3, 3], NVIDIA's inverse convention), None = the stored buffer
        self.input_transform: torch.Tensor | None = None
        #: ``{"translate": [tx, ty], "rotate": degrees}`` of a view, None for the file's own transform
        self.geometry: dict[str, Any] | None = None
        super().__init__(spec=spec, network=network, spaces=spaces, resolution=config.img_resolution,
                         class_names=[str(i) for i in range(config.c_dim)], device=device)

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        described.update(source_format=self.source_format, truncation_cutoff=self.truncation_cutoff,
                         config=self.config.variant, conv_clamp=self.config.conv_clamp,
                         fp16_layers=[layer.name for layer in self.config.layers if layer.use_fp16],
                         input_transform=None if self.geometry is None else dict(self.geometry))
        return described

    # ------------------------------------------------------------------ geometric edits
    def with_input_transform(self, *, translate: Sequence[float] = (0.0, 0.0), rotate: float = 0.0) -> "StyleGAN3Adapter":
        """A view of this generator (the same network, weights and fingerprint) whose renders move the
        picture: ``translate=(tx, ty)`` in units of the image width (each within ±1; ``+tx`` moves the
        content ``tx·R`` pixels to the right, ``+ty`` down), ``rotate`` in degrees (any finite number;
        positive turns the content counter-clockwise as displayed), rotation about the centre first.

        This is NVIDIA's ``gen_images.py --translate/--rotate`` convention: the motion
        ``M = [[cos, sin, tx], [-sin, cos, ty]]`` (image coordinates, y down) whose inverse goes into the
        input's ``transform`` buffer (it maps output positions to feature positions). The view replaces
        the file's stored transform (identity in released files); ``describe()`` and the load options
        record it, so files made with the view reload it.
        """
        tx, ty = check_translate(translate)
        degrees = check_rotate(rotate)
        view = copy.copy(self)
        view.geometry = {"translate": [tx, ty], "rotate": degrees}
        view.input_transform = user_transform(tx, ty, degrees).to(self.device)
        view.load_options = {**self.load_options, **view.geometry}
        return view

    # ------------------------------------------------------------------ spaces
    def _synthesize(self, latents: torch.Tensor, space: str, classes: torch.Tensor | None,
                    truncation: float | None) -> torch.Tensor:
        ws = self._ws(latents, space, classes, truncation)
        return as_rgb(self.network.synthesis(ws, self.input_transform))

    # ------------------------------------------------------------------ SeFa
    def sefa_space(self, layers: Sequence[int] | None) -> str:
        """SeFa factorises the affines that read W+ slots: its directions live in ``w+``."""
        return "w+"

    @property
    def projection_layers(self) -> tuple[str, ...]:
        """``("input", "L0_…", …)``: index ``i`` is the affine reading W+ slot ``i``."""
        return ("input", *(layer.name for layer in self.config.layers))

    def projection_weights(self, layers: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Affines ``[w_dim, outputs]`` of the chosen W+ slots (default: all; slot 0's has 4 outputs)."""
        chosen = self.check_layers(layers) or list(range(self.config.num_ws))
        modules = self.network.synthesis.style_layers()
        return [modules[i].affine.weight.detach().T.float().cpu().contiguous() for i in chosen]


# ---------------------------------------------------------------------- helpers
def user_transform(tx: float, ty: float, degrees: float) -> torch.Tensor:
    """NVIDIA's input ``transform`` buffer ``[3, 3]`` for a motion of the content by ``(tx, ty)`` image
    widths after a rotation by ``degrees`` (counter-clockwise as displayed): the inverse of
    ``[[c, s, tx], [-s, c, ty], [0, 0, 1]]``, i.e. ``[[c, -s, -(c·tx - s·ty)], [s, c, -(s·tx + c·ty)]]``."""
    angle = math.radians(degrees)
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, -(c * tx - s * ty)], [s, c, -(s * tx + c * ty)], [0.0, 0.0, 1.0]],
                        dtype=torch.float64).float()


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def check_translate(translate: Any) -> tuple[float, float]:
    items = list(translate) if isinstance(translate, (list, tuple)) else None
    if items is None or len(items) != 2 or not all(_is_number(v) and abs(float(v)) <= 1 for v in items):
        raise invalid("translate", translate, "two finite numbers within ±1 (tx, ty in image widths)",
                      "e.g. translate=(0.1, 0) moves the picture a tenth of its width to the right")
    return float(items[0]), float(items[1])


def check_rotate(rotate: Any) -> float:
    if not _is_number(rotate):
        raise invalid("rotate", rotate, "a finite number of degrees", "e.g. rotate=15 (counter-clockwise)")
    return float(rotate)


def _check_implied_size(config: StyleGAN3Config, state: dict[str, Any], spec: str) -> None:
    """Refuse a configuration describing a network much larger than the weights stored (the loader
    cross-checks shapes already; this is the last line before anything is built)."""
    implied = parameter_count(config)
    stored = sum(value.numel() for value in state.values() if isinstance(value, torch.Tensor))
    if implied > 2 * stored:
        raise invalid("generator", f"{spec}: module attributes describing a network of {implied} values, with "
                      f"{stored} stored", "a file holding every weight of the network its attributes describe",
                      "The file is damaged or crafted; nothing was allocated for the network",
                      cls=WeightsMismatchError)


def load_stylegan3(argument: str | None, *, device: str | torch.device = "auto", truncation_cutoff: int | None = None,
                   translate: Sequence[float] | None = None, rotate: float | None = None,
                   noise_mode: str | None = None) -> StyleGAN3Adapter:
    """``stylegan3:PATH`` — an NVlabs StyleGAN3 network pickle. ``translate`` / ``rotate``: render through
    :meth:`StyleGAN3Adapter.with_input_transform` (omitted: the file's stored transform). ``noise_mode``
    exists only to be refused clearly: StyleGAN3 has no noise inputs (stylegan2: takes it)."""
    if noise_mode is not None:
        raise invalid("noise_mode", noise_mode, "none: StyleGAN3 networks have no noise inputs (their images "
                      "depend on the latent alone)", "Drop --gen-opt noise_mode", cls=NotSupportedError)
    config, state, source_format = read_stylegan3(Path(str(argument)))
    adapter = StyleGAN3Adapter(config, state, spec=f"stylegan3:{argument}", source_format=source_format,
                               truncation_cutoff=truncation_cutoff, device=device)
    if translate is None and rotate is None:
        return adapter
    return adapter.with_input_transform(translate=(0.0, 0.0) if translate is None else translate,
                                        rotate=0.0 if rotate is None else rotate)


__all__ = ["StyleGAN3Adapter", "load_stylegan3", "user_transform"]
