"""DCGAN adapters: the embedded ``dcgan-faces`` (64 px) and ``dcgan-eyes`` (128 px, 8 classes).

Both networks are the PyTorch DCGAN-tutorial stack (ConvTranspose2d → BatchNorm → ReLU …, Tanh). The
architecture is rebuilt from the state dict's own keys and shapes, so no code of the weight packages
is imported (one of them crashes at import on CPU machines).

The conditional eyes net takes ``[z, one_hot(class)]`` as a ``[N, 108, 1, 1]`` input; its first
ConvTranspose2d weight is ``[108, 1024, 4, 4]`` with the latent rows first.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from latentdirs.catalogue import entry
from latentdirs.errors import WeightsMismatchError, invalid
from latentdirs.generators.base import GeneratorAdapter, LatentSpace
from latentdirs.weights import load_torch_weights, package_file, verify_sha256

EYE_CLASSES = ("amber", "blue", "brown", "gray", "grayscale", "green", "hazel", "red")


def build_dcgan(state: Mapping[str, torch.Tensor]) -> "DCGANNetwork":
    """Rebuild a tutorial-style DCGAN (``main`` Sequential) from its state dict and load it strictly.

    Layer kinds follow from the keys: a 4-d ``main.i.weight`` is a ConvTranspose2d (stride 1 for the
    first, 2 after), a ``running_mean`` marks BatchNorm2d, the slot after a BatchNorm is ReLU, and any
    further slot before the next conv is Dropout (identity in eval). The last conv is followed by Tanh.
    """
    prefix = "main."
    indices = sorted({int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)})
    if not indices or any(not k.startswith(prefix) for k in state):
        raise WeightsMismatchError("weights: not a DCGAN state dict (expected keys 'main.<i>.…')")
    layers: list[nn.Module] = []
    convs = 0
    for i in range(indices[-1] + 1):
        weight = state.get(f"{prefix}{i}.weight")
        if weight is not None and weight.dim() == 4:
            stride, padding = (1, 0) if convs == 0 else (2, 1)
            layers.append(nn.ConvTranspose2d(weight.shape[0], weight.shape[1], weight.shape[2],
                                             stride, padding, bias=f"{prefix}{i}.bias" in state))
            convs += 1
        elif f"{prefix}{i}.running_mean" in state:
            layers.append(nn.BatchNorm2d(state[f"{prefix}{i}.running_mean"].shape[0]))
        elif layers and isinstance(layers[-1], nn.BatchNorm2d):
            layers.append(nn.ReLU(inplace=True))
        else:
            layers.append(nn.Dropout(0.2))
    layers.append(nn.Tanh())
    network = DCGANNetwork(nn.Sequential(*layers))
    try:
        network.load_state_dict(dict(state), strict=True)
    except RuntimeError as error:
        raise WeightsMismatchError(f"weights: DCGAN state dict does not load: {error}") from None
    return network


class DCGANNetwork(nn.Module):
    """Holds the Sequential as ``main`` so state-dict keys match the original files."""

    def __init__(self, main: nn.Sequential) -> None:
        super().__init__()
        self.main = main


def fold_batchnorm(main: nn.Sequential) -> nn.Sequential:
    """An inference copy of ``main`` with each eval-mode BatchNorm folded into the ConvTranspose2d before it.

    ``BN(conv(x)) = conv'(x)`` with weight ``W·s`` (per output channel) and bias ``β − μ·s``,
    ``s = γ / √(σ² + ε)``; Dropout (identity in eval) is dropped. Same images up to float rounding
    (about 4e-6 here), and no batch-norm pass forward or backward: OroJaR steps run faster.
    """
    layers: list[nn.Module] = []
    modules = list(main)
    for i, module in enumerate(modules):
        if isinstance(module, nn.BatchNorm2d):
            continue
        if isinstance(module, nn.Dropout):
            continue
        following = modules[i + 1] if i + 1 < len(modules) else None
        if isinstance(module, nn.ConvTranspose2d) and isinstance(following, nn.BatchNorm2d):
            scale = following.weight / torch.sqrt(following.running_var + following.eps)
            fused = nn.ConvTranspose2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                                       module.padding, bias=True)
            with torch.no_grad():
                fused.weight.copy_(module.weight * scale.view(1, -1, 1, 1))
                bias = module.bias if module.bias is not None else torch.zeros_like(scale)
                fused.bias.copy_((bias - following.running_mean) * scale + following.bias)
            module = fused
        layers.append(module)
    return nn.Sequential(*layers).eval().requires_grad_(False)


class DCGANAdapter(GeneratorAdapter):
    """A (conditional) DCGAN with a flat ``z`` space; classes enter as a one-hot after z."""

    family = "dcgan"

    def __init__(self, *, spec: str, state: Mapping[str, torch.Tensor], class_names: Sequence[str] = (),
                 device: str | torch.device = "auto") -> None:
        network = build_dcgan(state)
        main = network.main
        first: nn.ConvTranspose2d = main[0]  # type: ignore[assignment]
        z_dim = first.in_channels - len(class_names)
        if z_dim <= 0:
            raise WeightsMismatchError(f"weights: first layer has {first.in_channels} input channels, "
                                       f"fewer than the {len(class_names)} classes")
        convs = sum(isinstance(m, nn.ConvTranspose2d) for m in main)
        super().__init__(spec=spec, network=network, spaces=[LatentSpace("z", z_dim)],
                         resolution=4 * 2 ** (convs - 1), class_names=class_names, device=device)
        self._inference = fold_batchnorm(self.network.main)  # the weights are frozen after loading

    def _synthesize(self, latents: torch.Tensor, space: str, classes: torch.Tensor | None,
                    truncation: float | None) -> torch.Tensor:
        return self._inference(self._input(latents, classes))

    def _input(self, latents: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
        """The network's input ``[N, D (+ classes), 1, 1]``: z, then the class one-hot (conditional nets)."""
        if classes is not None:
            one_hot = nn.functional.one_hot(classes, self.num_classes).to(latents.dtype)
            latents = torch.cat([latents, one_hot], dim=1)
        return latents[:, :, None, None]

    @property
    def feature_offset_shape(self) -> tuple[int, int, int]:
        """``(C, k, k)`` of the first ConvTranspose2d's output (a 1×1 input, stride 1, no padding: k × k):
        ``(512, 4, 4)`` for dcgan-faces, ``(1024, 4, 4)`` for dcgan-eyes. Its BatchNorm is folded in, so the
        layer is affine in ``[z, one_hot(class)]`` and an offset added after it commutes with z edits."""
        first: nn.ConvTranspose2d = self._inference[0]  # type: ignore[assignment]
        return (first.out_channels, *first.kernel_size)

    def _synthesize_with_offsets(self, latents: torch.Tensor, classes: torch.Tensor | None,
                                 truncation: float | None, offsets: torch.Tensor) -> torch.Tensor:
        # the offset enters before the first ReLU: rest(first([z, class]) + r)
        features = self._inference[0](self._input(latents, classes)) + offsets
        return self._inference[1:](features)

    # ------------------------------------------------------------------ soft classes (inversion's class hook)
    def synthesize_class_weights(self, latents: torch.Tensor, weights: torch.Tensor,
                                 offsets: torch.Tensor | None = None) -> torch.Tensor:
        """Render z ``latents [N, D]`` under class *weights* ``[N, K]`` in place of the one-hot (any real
        values; a one-hot row renders that class exactly), with optional feature ``offsets``; images
        ``[N, 3, R, R]`` in [−1, 1], differentiable in all three. The first layer is affine in its input,
        so the weights mix the classes' first-layer biases: ``h = A·z + Σ_k w_k·b_k + b``.
        Conditional nets only; inversion reads the class from the weights (docs/inversion.md, "Classes")."""
        if not self.conditional or weights.dim() != 2 or tuple(weights.shape) != (latents.shape[0], self.num_classes):
            raise invalid("weights", f"shape {tuple(weights.shape)}",
                          f"shape ({latents.shape[0]}, {self.num_classes}): one weight per class and latent"
                          if self.conditional else "none: this generator is unconditional")
        features = self._inference[0](torch.cat([latents, weights.to(latents)], dim=1)[:, :, None, None])
        return self._inference[1:](features if offsets is None else features + offsets)

    def class_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The folded first layer's rows: latent ``[D, F]`` and class ``[K, F]`` (``F = C·k·k``, the
        pre-activation features), on the device; ``h = z·latent + one_hot·class + bias``."""
        weight = self._inference[0].weight.detach().flatten(1)  # type: ignore[union-attr]
        return weight[: self.z_dim], weight[self.z_dim:]

    def projection_weights(self, layers: Sequence[int] | None = None) -> list[torch.Tensor]:
        """The first ConvTranspose2d, latent rows only: ``[z_dim, C·k·k]`` (SeFa's DCGAN choice)."""
        self.check_layers(layers)
        weight = self.network.main[0].weight.detach()[: self.z_dim]
        return [weight.reshape(self.z_dim, -1).float().cpu()]


def _load_embedded(name: str, state_key: str | None) -> dict[str, torch.Tensor]:
    item = entry(name)
    assert item.package and item.file and item.pip and item.sha256  # catalogue invariant, not user input
    path = package_file(item.package, item.file, pip_requirement=item.pip)
    verify_sha256(path, item.sha256, fix=f"Reinstall with: pip install --no-deps --force-reinstall {item.pip}")
    loaded = load_torch_weights(path)
    return loaded[state_key] if state_key else loaded


def load_faces(argument: str | None = None, *, device: str | torch.device = "auto") -> DCGANAdapter:
    """``dcgan-faces``: 64 px faces from the gan-face-generate wheel."""
    return DCGANAdapter(spec="dcgan-faces", state=_load_embedded("dcgan-faces", "netG_state_dict"), device=device)


def load_eyes(argument: str | None = None, *, device: str | torch.device = "auto") -> DCGANAdapter:
    """``dcgan-eyes``: 128 px eyes in 8 iris colours from the omniart-eye-generator wheel."""
    return DCGANAdapter(spec="dcgan-eyes", state=_load_embedded("dcgan-eyes", None),
                        class_names=EYE_CLASSES, device=device)
