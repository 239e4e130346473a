"""Reconstruction losses and quality metrics for inversion.

Every loss compares generated and target images ``[N, C, H, W]`` in [−1, 1] and returns one value per
image, ``[N]`` (so a batch of inversions is a sum of independent problems), lower is better:

============== ======================================================================================
name           what
============== ======================================================================================
``mse``        pixel mean squared error (images in [−1, 1]: 0 … 4)
``multiscale`` blurred multi-scale MSE: the mean of the MSEs of a Gaussian pyramid (each level blurred
               with σ = 1 px and halved, down to 8 px), so coarse structure weighs as much as detail
``ms-ssim``    1 − MS-SSIM (pytorch-msssim; no weights to download), images mapped to [0, 1]
``lpips``      LPIPS (the ``lpips`` package, AlexNet backbone; optional extra ``latentdirs[lpips]``,
               its backbone weights must be on this machine)
============== ======================================================================================

A *loss spec* combines them with weights: ``"multiscale+ms-ssim"``, ``"mse+0.5*lpips"``
(:func:`parse_loss`). :data:`DEFAULT_LOSS` is the best combination measured without a download
(docs/inversion.md, "Measured").

Metrics (:func:`psnr`, :func:`ms_ssim`) report quality in the usual units; they are not losses.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from latentdirs.errors import MissingWeightsError, NotSupportedError, as_finite, invalid, unknown
from latentdirs.transforms import gaussian_blur

#: a per-image loss: (generated, target) both [N, C, H, W] → [N]
LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

LOSS_NAMES = ("mse", "multiscale", "ms-ssim", "lpips")
#: the default loss spec (measured on real photos and unseen seeds of dcgan-faces; docs/inversion.md)
DEFAULT_LOSS = "multiscale+ms-ssim"
#: the file torchvision's AlexNet weights have in the torch hub cache (what LPIPS's backbone loads)
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
#: the smallest pyramid level of the multi-scale MSE (pixels)
PYRAMID_MIN_SIDE = 8


# ---------------------------------------------------------------------------------------------- losses
def mse(generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel MSE per image, ``[N]``."""
    return (generated - target).square().flatten(1).mean(1)


def pyramid(images: torch.Tensor, *, min_side: int = PYRAMID_MIN_SIDE) -> list[torch.Tensor]:
    """Gaussian pyramid of ``[N, C, H, W]``: the images, then repeatedly blurred (σ = 1 px) and halved,
    while the smaller side stays ≥ ``min_side``; at least the images themselves."""
    levels = [images]
    while min(levels[-1].shape[-2:]) // 2 >= min_side:
        levels.append(F.avg_pool2d(gaussian_blur(levels[-1], 1.0), 2))
    return levels


def multiscale_mse(generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the Gaussian pyramid (:func:`pyramid`) of each level's pixel MSE, ``[N]``."""
    pairs = zip(pyramid(generated), pyramid(target))
    return torch.stack([mse(g, t) for g, t in pairs]).mean(0)


def ssim_window(side: int) -> int:
    """The Gaussian window MS-SSIM uses on images whose smaller side is ``side``: 11 (the standard) when
    the image allows it; else the largest odd size pytorch-msssim accepts (it needs side > 16·(win − 1))."""
    window = min(11, (side - 1) // 16 + 1)
    return window if window % 2 else window - 1


def ms_ssim(generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MS-SSIM per image, ``[N]`` in [0, 1] (1 = identical), on images in [−1, 1].

    pytorch-msssim with the standard five scales and weights, σ = 1.5, the window of
    :func:`ssim_window`; images smaller than 33 px are first enlarged (nearest) so the five scales exist.
    """
    from pytorch_msssim import ms_ssim as package_ms_ssim

    x, y = (generated + 1) / 2, (target + 1) / 2
    side = min(x.shape[-2:])
    if side < 33:
        factor = math.ceil(33 / side)
        x, y = (F.interpolate(v, scale_factor=factor, mode="nearest") for v in (x, y))
        side *= factor
    return package_ms_ssim(x, y, data_range=1.0, size_average=False, win_size=ssim_window(side))


def ms_ssim_loss(generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 − MS-SSIM`` per image, ``[N]``."""
    return 1.0 - ms_ssim(generated, target)


def check_lpips_weights() -> str:
    """The path of LPIPS's AlexNet backbone weights in the torch hub cache; a one-line error when absent.

    Checked before ``lpips`` is asked for them: offline, its download would fail deep inside torchvision.
    """
    hub = torch.hub.get_dir()
    path = os.path.join(hub, "checkpoints", ALEXNET_FILE)
    if not os.path.isfile(path):
        raise MissingWeightsError(
            f"loss: 'lpips' needs torchvision's AlexNet weights, which are not on this machine and cannot be "
            f"downloaded here; copy {ALEXNET_FILE} (from a machine with internet: torchvision.models.alexnet("
            f"weights='IMAGENET1K_V1')) to {path} (or set TORCH_HOME), or use a loss without download: "
            f"{DEFAULT_LOSS}")
    return path


_LPIPS: dict[str, torch.nn.Module] = {}


def lpips_loss(generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """LPIPS (AlexNet) per image, ``[N]``; needs the ``lpips`` package and its backbone weights."""
    key = str(generated.device)
    if key not in _LPIPS:
        _LPIPS[key] = _load_lpips().to(generated.device)
    return _LPIPS[key](generated, target, normalize=False).flatten()


def _load_lpips() -> torch.nn.Module:
    try:
        import lpips  # the optional extra
    except ImportError:
        raise NotSupportedError("loss: 'lpips' needs the optional package lpips: pip install 'latentdirs[lpips]' "
                                f"(or use a loss without download: {DEFAULT_LOSS})") from None
    check_lpips_weights()
    model = lpips.LPIPS(net="alex", pretrained=True, verbose=False)
    return model.eval().requires_grad_(False)


_LOSSES: dict[str, LossFunction] = {"mse": mse, "multiscale": multiscale_mse, "ms-ssim": ms_ssim_loss,
                                    "lpips": lpips_loss}


@dataclass(frozen=True)
class Loss:
    """A weighted sum of named losses, callable as a :data:`LossFunction`; ``spec`` is its canonical text."""

    terms: tuple[tuple[float, str], ...]

    @property
    def spec(self) -> str:
        return "+".join(name if weight == 1 else f"{weight:g}*{name}" for weight, name in self.terms)

    @property
    def needs_download(self) -> bool:
        return any(name == "lpips" for _, name in self.terms)

    def prepare(self) -> "Loss":
        """Load what the terms need (LPIPS) now, so a missing package or weight fails before any work."""
        if self.needs_download:
            _load_lpips()
        return self

    def __call__(self, generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = None
        for weight, name in self.terms:
            value = weight * _LOSSES[name](generated, target)
            total = value if total is None else total + value
        return total  # type: ignore[return-value]


def parse_loss(spec: str | Loss) -> Loss:
    """``"multiscale+ms-ssim"``, ``"mse+0.5*lpips"`` … → :class:`Loss` (weights > 0, names of :data:`LOSS_NAMES`)."""
    if isinstance(spec, Loss):
        return spec
    allowed = f"names {', '.join(LOSS_NAMES)} joined by '+', each optionally weighted, e.g. 'multiscale+0.5*ms-ssim'"
    if not isinstance(spec, str) or not spec.strip():
        raise invalid("loss", spec, allowed)
    terms: list[tuple[float, str]] = []
    for token in spec.replace(" ", "").lower().split("+"):
        weight_text, star, name = token.rpartition("*")
        if name not in LOSS_NAMES:
            raise unknown("loss", token or spec, LOSS_NAMES, f"Write {allowed}")
        try:
            weight = as_finite(float(weight_text)) if star else 1.0
        except ValueError:
            weight = None
        if weight is None or weight <= 0:
            raise invalid("loss", token, f"a weight > 0 before '*', as in '0.5*{name}'")
        if any(name == known for _, known in terms):
            raise invalid("loss", spec, f"each name once: {name!r} repeats")
        terms.append((weight, name))
    return Loss(tuple(terms))


# ---------------------------------------------------------------------------------------------- metrics
def psnr(generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB, ``[N]``, for images in [−1, 1] (peak-to-peak 2);
    generated images are clipped to [−1, 1] first, as a saved image would be. At most 106 dB (MSE floor 1e-10)."""
    error = mse(generated.clamp(-1, 1), target).clamp_min(1e-10)
    return 10 * torch.log10(4.0 / error)


__all__ = ["ALEXNET_FILE", "DEFAULT_LOSS", "LOSS_NAMES", "Loss", "LossFunction", "check_lpips_weights", "lpips_loss",
           "ms_ssim", "ms_ssim_loss", "mse", "multiscale_mse", "parse_loss", "psnr", "pyramid", "ssim_window"]
