"""``biggan:NAME_OR_DIR``: BigGAN-deep through the real ``pytorch_pretrained_biggan.BigGAN`` class.

Spec argument:

* ``biggan-deep-128`` / ``-256`` / ``-512`` — resolved through the package's own download cache
  (``$PYTORCH_PRETRAINED_BIGGAN_CACHE`` or ``~/.pytorch_pretrained_biggan``); needs internet once;
* a directory holding ``config.json`` and ``pytorch_model.bin`` — loads offline.

The weights are read with ``torch.load(weights_only=True)`` (the package's own ``from_pretrained``
unpickles without that guard), their key set and shapes are compared with the model's (the package
loads with ``strict=False`` and would take a wrong file silently), and the network stays in eval mode
(in train mode spectral norm changes the weights on every forward).

Latent spaces:

* ``z`` — 128-d (``config.z_dim``), sampled as the package does: ψ · truncnorm(−2, 2);
* ``blocks`` — one z per consumer of the conditioning vector: layer 0 = ``gen_z`` (the input
  projection), layer ``1 + i`` = GenBlock ``i``. With the same z in every layer this is exactly the
  package's forward; an edit restricted to some layers acts on those blocks only (like StyleGAN's W+).

Classes are ImageNet ids (0-999 for the released models). Names are refused: the package's
``one_hot_from_names`` needs nltk + WordNet, and no offline list ships with it.

Truncation ψ ∈ (0, 1] also selects stored batch-norm statistics on a grid of step
1/(n_stats − 1) = 0.02; values off that grid are snapped to it with a warning. Note a quirk the
package has and this adapter keeps, so that its output equals the package's: for ψ = 0.14, 0.28,
0.56, 0.58 the package's ``modf``-based lookup lands a rounding error away from the grid point and,
with its interpolation weights swapped, reads the neighbouring statistics row.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from latentdirs.errors import MissingWeightsError, UnknownNameError, WeightsMismatchError, invalid
from latentdirs.generators.base import GeneratorAdapter, LatentSpace
from latentdirs.weights import check_state_dict, load_torch_weights

HUB_NAMES = ("biggan-deep-128", "biggan-deep-256", "biggan-deep-512")
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "pytorch_model.bin"
BLOCKS_SPACE = "blocks"


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight a spectral-normalised layer uses in eval mode: ``weight_orig / σ`` (no power iteration)."""
    from torch.nn.utils.spectral_norm import SpectralNorm

    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, SpectralNorm):
            with torch.no_grad():
                return hook.compute_weight(module, do_power_iteration=False).detach()
    return module.weight.detach()


class BigGANAdapter(GeneratorAdapter):
    """Adapter over a ``pytorch_pretrained_biggan.BigGAN`` model (see the module docstring)."""

    family = "biggan"

    def __init__(self, model: nn.Module, *, spec: str, device: str | torch.device = "auto") -> None:
        config = model.config
        self.config = config
        self.blocks = [layer for layer in model.generator.layers if type(layer).__name__ == "GenBlock"]
        self.stats_step = 1.0 / (config.n_stats - 1)
        spaces = [LatentSpace("z", config.z_dim), LatentSpace(BLOCKS_SPACE, config.z_dim, 1 + len(self.blocks))]
        super().__init__(spec=spec, network=model, spaces=spaces, resolution=config.output_dim,
                         class_names=[str(i) for i in range(config.num_classes)], device=device)

    # ------------------------------------------------------------------ classes and truncation
    def resolve_class(self, value: int | str | None) -> int | None:
        if isinstance(value, str) and not value.strip().isdigit():
            raise UnknownNameError(
                f"class: got {value!r}; allowed: integer ImageNet ids 0-{self.num_classes - 1} "
                "(e.g. --class 207). Class names need nltk's WordNet, which pytorch-pretrained-biggan "
                "does not ship offline")
        return super().resolve_class(value)

    def check_truncation(self, truncation: float | None) -> float | None:
        """ψ in (0, 1], snapped to the package's statistics grid (step 0.02) with a warning when off it."""
        value = super().check_truncation(truncation)
        if value is None:
            return None
        index = round(value / self.stats_step)
        if index == 0:
            raise invalid("truncation", truncation, f"a number in [{self.stats_step:g}, 1]",
                          f"BigGAN has no statistics below {self.stats_step:g}")
        snapped = index / (self.config.n_stats - 1)
        if abs(snapped - value) > 1e-6:
            warnings.warn(f"truncation {value:g} is off BigGAN's statistics grid (step {self.stats_step:g}); "
                          f"using {snapped:g}", stacklevel=3)
        return snapped

    # ------------------------------------------------------------------ sampling and spaces
    def _sample_z(self, n: int, generator: torch.Generator | None, truncation: float | None) -> torch.Tensor:
        """ψ · truncnorm(−2, 2), as the package's ``truncated_noise_sample``, seeded from ``generator``."""
        import numpy as np
        from scipy.stats import truncnorm

        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        values = truncnorm.rvs(-2, 2, size=(n, self.z_dim), random_state=np.random.RandomState(seed))
        return torch.from_numpy(values.astype(np.float32)) * (truncation or 1.0)

    def to_space(self, latents: torch.Tensor, src: str, dst: str, *, truncation: float | None = None,
                 classes: Any = None) -> torch.Tensor:
        """``z`` → ``blocks`` repeats z in every layer; other mappings are refused."""
        if src == "z" and dst == BLOCKS_SPACE:
            return latents.unsqueeze(1).expand(-1, self.spaces[BLOCKS_SPACE].num_layers, -1).contiguous()
        return super().to_space(latents, src, dst, truncation=truncation, classes=classes)

    # ------------------------------------------------------------------ synthesis
    def _synthesize(self, latents: torch.Tensor, space: str, classes: torch.Tensor | None,
                    truncation: float | None) -> torch.Tensor:
        psi = truncation if truncation is not None else 1.0
        one_hot = nn.functional.one_hot(classes, self.num_classes).to(latents.dtype)
        embedding = self.network.embeddings(one_hot)
        generator = self.network.generator
        if space == "z":
            return generator(torch.cat([latents, embedding], dim=1), psi)
        conditions = [torch.cat([latents[:, layer], embedding], dim=1) for layer in range(latents.shape[1])]
        # The package's Generator.forward, with each consumer fed its own conditioning vector.
        x = generator.gen_z(conditions[0])
        x = x.view(-1, 4, 4, 16 * self.config.channel_width).permute(0, 3, 1, 2).contiguous()
        block = 0
        for layer in generator.layers:
            if type(layer).__name__ == "GenBlock":
                block += 1
                x = layer(x, conditions[block], psi)
            else:
                x = layer(x)
        x = generator.relu(generator.bn(x, psi))
        return generator.tanh(generator.conv_to_rgb(x)[:, :3])

    # ------------------------------------------------------------------ SeFa
    @property
    def projection_layers(self) -> tuple[str, ...]:
        """Layer 0 = ``gen_z``; layer ``1 + i`` = GenBlock ``i``'s conditional batch norms."""
        return ("gen_z",) + tuple(f"block{i}" for i in range(len(self.blocks)))

    def sefa_space(self, layers: Sequence[int] | None) -> str:
        """SeFa on the default ``gen_z`` lives in ``z``; on chosen layers, in ``blocks`` (edits hit only those)."""
        return "z" if layers is None else BLOCKS_SPACE

    def projection_weights(self, layers: Sequence[int] | None = None) -> list[torch.Tensor]:
        """z-columns of the chosen consumers, ``[z_dim, outputs]`` each (default: ``gen_z`` only).

        ``gen_z`` is a spectral-norm linear 256 → 4·4·16·ch on ``[z, class embedding]``; a GenBlock's
        four conditional batch norms each have ``scale`` and ``offset`` linears 256 → C.
        """
        chosen = self.check_layers(layers) or [0]
        z_dim = self.z_dim
        matrices = []
        for layer in chosen:
            if layer == 0:
                modules = [self.network.generator.gen_z]
            else:
                block = self.blocks[layer - 1]
                modules = [getattr(getattr(block, f"bn_{k}"), part) for k in range(4) for part in ("scale", "offset")]
            matrices.extend(effective_weight(m)[:, :z_dim].T.float().cpu().contiguous() for m in modules)
        return matrices


# ---------------------------------------------------------------------- loading
def _resolve_files(argument: str) -> tuple[Path, Path]:
    """(config.json, pytorch_model.bin) for a hub name (through the package cache) or a directory."""
    if argument in HUB_NAMES:
        from pytorch_pretrained_biggan import file_utils, model as biggan_model

        urls = (biggan_model.PRETRAINED_CONFIG_ARCHIVE_MAP[argument], biggan_model.PRETRAINED_MODEL_ARCHIVE_MAP[argument])
        try:
            return tuple(Path(file_utils.cached_path(url)) for url in urls)  # type: ignore[return-value]
        except Exception as error:  # requests/botocore errors when offline
            raise MissingWeightsError(
                f"generator: cannot fetch {argument!r} ({type(error).__name__}); without internet, put "
                f"{CONFIG_NAME} (from {urls[0]}) and {WEIGHTS_NAME} (from {urls[1]}) into one directory "
                f"and use 'biggan:/that/directory'") from None
    directory = Path(argument).expanduser()
    if not directory.is_dir():
        raise invalid("generator", f"biggan:{argument}",
                      f"biggan:NAME with NAME in {', '.join(HUB_NAMES)}, or biggan:DIR with {CONFIG_NAME} and {WEIGHTS_NAME}",
                      cls=MissingWeightsError)
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (directory / name).is_file()]
    if missing:
        raise MissingWeightsError(f"generator: {str(directory)!r} lacks {' and '.join(missing)}; a BigGAN "
                                  f"directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    return directory / CONFIG_NAME, directory / WEIGHTS_NAME


#: config.json is a few hundred bytes; anything far larger is not one
MAX_CONFIG_BYTES = 64 * 1024
#: refuse configs describing more parameters than this (8 GiB of float32; biggan-deep-512 has 59 M)
MAX_PARAMETERS = 1 << 31
#: integer fields of config.json and their allowed ranges (the released models use 1…1000 and n_stats 51)
_INTEGER_FIELDS = {"output_dim": (8, 8192), "z_dim": (1, 4096), "class_embed_dim": (1, 4096),
                   "channel_width": (1, 2048), "num_classes": (1, 100_000), "attention_layer_position": (-1, 256),
                   "n_stats": (2, 1001)}
_MAX_LAYERS = 64
_MAX_CHANNEL_MULTIPLIER = 64


def read_config(config_path: Path) -> Any:
    """Parse and validate ``config.json`` into a ``BigGANConfig`` (sizes, types and ranges; no model is built).

    Missing fields take the package's defaults (the 128 px model); unknown fields are ignored.
    """
    from pytorch_pretrained_biggan import BigGANConfig

    def refuse(found: str, allowed: str) -> WeightsMismatchError:
        return invalid("generator", f"{_where(config_path)}: {found}", allowed,  # type: ignore[return-value]
                       "Use the config.json that came with these weights", cls=WeightsMismatchError)

    size = config_path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise refuse(f"a config.json of {size} bytes", f"at most {MAX_CONFIG_BYTES} bytes (a usable BigGAN config "
                     "is a few hundred)")
    try:
        given = json.loads(config_path.read_text("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise refuse(f"not JSON ({type(error).__name__})", "a usable BigGAN config: one JSON object") from None
    if not isinstance(given, dict):
        raise refuse(f"a JSON {type(given).__name__}", "a usable BigGAN config: one JSON object")
    fields = {**BigGANConfig().to_dict(), **{k: v for k, v in given.items() if k in BigGANConfig().to_dict()}}
    for name, (low, high) in _INTEGER_FIELDS.items():
        value = fields[name]
        if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
            raise refuse(f"{name} = {_short(value)}", f"an integer {low}-{high}")
    if not (isinstance(fields["eps"], (int, float)) and not isinstance(fields["eps"], bool)
            and math.isfinite(fields["eps"]) and 0 < fields["eps"] < 1):
        raise refuse(f"eps = {_short(fields['eps'])}", "a number in (0, 1)")
    layers = fields["layers"]
    multipliers = range(1, _MAX_CHANNEL_MULTIPLIER + 1)
    if not (isinstance(layers, list) and 1 <= len(layers) <= _MAX_LAYERS and all(
            isinstance(layer, (list, tuple)) and len(layer) == 3 and isinstance(layer[0], bool)
            and all(isinstance(m, int) and not isinstance(m, bool) and m in multipliers for m in layer[1:])
            for layer in layers)):
        raise refuse(f"layers = {_short(layers)}", f"1-{_MAX_LAYERS} entries [up-sample (true/false), input channel "
                     f"multiplier, output channel multiplier], multipliers 1-{_MAX_CHANNEL_MULTIPLIER}")
    rendered = 4 * 2 ** sum(bool(layer[0]) for layer in layers)
    if rendered != fields["output_dim"]:
        raise refuse(f"output_dim = {fields['output_dim']} with layers that render {rendered} px",
                     "output_dim = 4 × 2^(number of up-sampling layers)")
    return BigGANConfig.from_dict({**fields, "layers": [tuple(layer) for layer in layers]})


def _where(path: Path) -> str:
    """``DIR/config.json``: short enough for a one-line error, enough to tell which directory."""
    return f"{path.parent.name}/{path.name}"


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict, str)) else repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def parameter_count(config: Any) -> int:
    """Elements of ``BigGAN(config).state_dict()``, computed from the config — nothing is built.

    It mirrors pytorch_pretrained_biggan's classes (tests compare it with the real state dict for the
    tiny and the three released configurations): a spectral-norm layer stores ``weight_orig`` plus its
    vectors ``weight_u`` ``[out]`` and ``weight_v`` ``[in·k·k]``; a conditional batch norm stores
    ``n_stats`` means and variances and two spectral-norm linears from the conditioning vector.
    """
    def spectral(outputs: int, inputs: int, bias: bool = True) -> int:
        return outputs * inputs + outputs + inputs + (outputs if bias else 0)

    ch, condition, n_stats = config.channel_width, 2 * config.z_dim, config.n_stats

    def batch_norm(features: int) -> int:
        return 2 * n_stats * features + 2 * spectral(features, condition, bias=False)

    total = config.num_classes * config.z_dim + spectral(4 * 4 * 16 * ch, condition)  # embeddings, gen_z
    for index, (_, in_multiplier, out_multiplier) in enumerate(config.layers):
        inputs, outputs = ch * in_multiplier, ch * out_multiplier
        if index == config.attention_layer_position:
            total += 2 * spectral(inputs // 8, inputs, bias=False) + spectral(inputs // 2, inputs, bias=False)
            total += spectral(inputs, inputs // 2, bias=False) + 1  # o_conv, gamma
        middle = inputs // 4
        total += batch_norm(inputs) + 3 * batch_norm(middle)
        total += spectral(middle, inputs) + 2 * spectral(middle, middle * 9) + spectral(outputs, middle)
    return total + 2 * n_stats * ch + 2 * ch + spectral(ch, ch * 9)  # final batch norm, conv_to_rgb


def _check_size(config_path: Path, weights_path: Path, parameters: int) -> None:
    """Refuse a config whose model the weights file cannot hold (before the model or the weights are read)."""
    available = weights_path.stat().st_size
    fix = "Use the config.json that came with these weights"
    if parameters > MAX_PARAMETERS:
        raise invalid("generator", f"{_where(config_path)} describes {parameters} parameters",
                      f"at most {MAX_PARAMETERS} (biggan-deep-512 has 59 million)", fix, cls=WeightsMismatchError)
    if 2 * parameters > available:  # even half-precision weights need 2 bytes per parameter
        raise invalid("generator", f"{_where(config_path)} describes {parameters} parameters (at least {2 * parameters} "
                      f"bytes), but {weights_path.name} has {available} bytes",
                      "a config.json whose model its weights file can hold", fix, cls=WeightsMismatchError)


def _build_model(config_path: Path, weights_path: Path) -> nn.Module:
    """config.json validated, the model size it implies checked against the weights file, the weights
    scanned and loaded, the model allocated, and the weights checked key by key and shape by shape."""
    from pytorch_pretrained_biggan import BigGAN

    config = read_config(config_path)
    _check_size(config_path, weights_path, parameter_count(config))
    loaded = load_torch_weights(weights_path, param="generator")
    model = BigGAN(config)  # at most twice the weights file's size, checked above
    state = check_state_dict(loaded, model.state_dict(), param="generator", source=_where(weights_path),
                             what=f"the architecture in {config_path.name}",
                             fix=f"Use the {CONFIG_NAME} that came with these weights")
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_biggan(argument: str | None, *, device: str | torch.device = "auto") -> BigGANAdapter:
    """``biggan:biggan-deep-128`` (package cache, needs internet once) or ``biggan:/dir`` (offline)."""
    config_path, weights_path = _resolve_files(str(argument))
    return BigGANAdapter(_build_model(config_path, weights_path), spec=f"biggan:{argument}", device=device)


__all__ = ["BLOCKS_SPACE", "BigGANAdapter", "effective_weight", "load_biggan"]
