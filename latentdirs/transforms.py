"""Image transforms with validity masks, for calibrated discovery and measurement.

A transform maps images ``[N, C, H, W]`` in [-1, 1] and amounts ``[N]`` to transformed images and a
mask ``[N, 1, H, W]`` in [0, 1] of the pixels the transform leaves defined (a shifted image has no data
where it was shifted from). Geometric transforms sample with bilinear interpolation through one
affine grid, so they are differentiable and run batched.

Built in (amount → meaning):

=========== ================================================ ========
name        amount t                                         units
=========== ================================================ ========
shift-x     move right by t · width                          fraction of width
shift-y     move down by t · height                          fraction of height
zoom        scale about the centre by 1 + t                  relative scale − 1
brightness  add t (on the [-1, 1] scale: t = 0.1 ≈ +5 %)     intensity
rotation    rotate counter-clockwise by t degrees            degrees
=========== ================================================ ========

Register your own with :func:`register_transform`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from latentdirs.errors import invalid, unknown

#: images [N, C, H, W], amounts [N] → (transformed [N, C, H, W], mask [N, 1, H, W])
TransformFunction = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


@dataclass(frozen=True)
class Transform:
    """A named transform: ``apply``, its ``units``, and the amounts a discovery steps through by default."""

    name: str
    apply: TransformFunction
    units: str
    default_amounts: tuple[float, ...]
    factor: str


def _affine(images: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``images`` through inverse affine maps ``theta [N, 2, 3]`` (normalised coordinates)."""
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    ones = torch.ones_like(images[:, :1])
    mask = F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out, (mask > 0.999).to(images.dtype)


def _identity(n: int, like: torch.Tensor) -> torch.Tensor:
    theta = torch.zeros(n, 2, 3, dtype=like.dtype, device=like.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    return theta


def shift_x(images: torch.Tensor, amounts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    theta = _identity(images.shape[0], images)
    theta[:, 0, 2] = -2 * amounts  # normalised width is 2: moving content right samples from the left
    return _affine(images, theta)


def shift_y(images: torch.Tensor, amounts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    theta = _identity(images.shape[0], images)
    theta[:, 1, 2] = -2 * amounts
    return _affine(images, theta)


def zoom(images: torch.Tensor, amounts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = 1 + amounts
    if torch.any(scale <= 0):
        raise invalid("amounts", amounts.tolist(), "zoom amounts above -1 (scale 1 + t > 0)")
    theta = _identity(images.shape[0], images)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    return _affine(images, theta)


def rotation(images: torch.Tensor, amounts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    angle = amounts * math.pi / 180
    theta = _identity(images.shape[0], images)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle), -torch.sin(angle)
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle), torch.cos(angle)
    return _affine(images, theta)


def brightness(images: torch.Tensor, amounts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return images + amounts.view(-1, 1, 1, 1), torch.ones_like(images[:, :1])


_STEPS = (0.05, 0.1, 0.15, 0.2, 0.25)
_REGISTRY: dict[str, Transform] = {
    "shift-x": Transform("shift-x", shift_x, "fraction of width", _STEPS, "horizontal position"),
    "shift-y": Transform("shift-y", shift_y, "fraction of height", _STEPS, "vertical position"),
    "zoom": Transform("zoom", zoom, "relative scale - 1", _STEPS, "scale"),
    "brightness": Transform("brightness", brightness, "intensity on [-1, 1]", _STEPS, "brightness"),
    "rotation": Transform("rotation", rotation, "degrees", (5.0, 10.0, 15.0, 20.0, 25.0), "rotation"),
}


def register_transform(transform: Transform) -> None:
    """Add (or replace) a transform by name."""
    _REGISTRY[transform.name] = transform


def get_transform(name: str) -> Transform:
    """The transform registered as ``name``; an unknown name lists the known ones."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise unknown("transform", name, _REGISTRY, "Run 'latentdirs list transforms'")
    return _REGISTRY[name]


def list_transforms() -> list[str]:
    return list(_REGISTRY)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur ``[N, C, H, W]`` (reflect padding), σ in pixels; identity for σ ≤ 0."""
    if sigma <= 0:
        return images
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    blurred = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(blurred, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
