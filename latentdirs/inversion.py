"""Trajectories by GAN inversion of transformed images (Plumerault et al., ICLR 2020).

For latents ``z0``: render ``x0 = G(z0)``; for each sign and each amount ``t`` (increasing), invert
the target ``T(x0, ±t)`` — always transformed from the original image, by the cumulative amount —
warm-starting from the previous optimum with a fresh Adam, keeping ‖z‖ ≤ √d, minimising the mean
squared error between Gaussian-blurred generated and target images over the pixels the transform
defines. A low-pass loss: a low-dimensional latent cannot match fine texture, and plain MSE inverts
badly. All latents and both signs advance together, ``batch_size`` rows per generator pass.

The result is a :class:`TrajectoryData` of (z0, zT, δt, error) triplets, worst decile dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from latentdirs.atomic import atomic_path
from latentdirs.errors import DirectionFileError, as_finite, check_count, check_positive, invalid
from latentdirs.generators.base import GeneratorAdapter
from latentdirs.latents import clamp_to_ball_
from latentdirs.transforms import gaussian_blur, get_transform


@dataclass
class TrajectoryData:
    """``z0 [M, D]``, ``zt [M, D]``, ``delta [M]`` (signed amounts), ``error [M]`` (final blurred MSE)."""

    z0: torch.Tensor
    zt: torch.Tensor
    delta: torch.Tensor
    error: torch.Tensor
    transform: str

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        with atomic_path(path) as temporary:
            save_file({"z0": self.z0, "zt": self.zt, "delta": self.delta, "error": self.error}, str(temporary),
                      metadata={"latentdirs": "trajectories/1", "transform": self.transform})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "TrajectoryData":
        """Read a file :meth:`save` wrote; anything else is a :class:`DirectionFileError` naming ``dataset``."""
        from safetensors import safe_open

        allowed = "a trajectory file written by regression's save_dataset (safetensors, latentdirs trajectories/1)"
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                if meta.get("latentdirs") != "trajectories/1":
                    raise invalid("dataset", str(path), allowed, cls=DirectionFileError)
                tensors = {k: handle.get_tensor(k) for k in ("z0", "zt", "delta", "error")}
        except DirectionFileError:
            raise
        except Exception as error:  # safetensors raises its own kinds for missing, truncated or foreign files
            raise invalid("dataset", str(path), allowed, f"It cannot be read: {error}",
                          cls=DirectionFileError) from None
        rows = tensors["delta"].shape
        if (tensors["z0"].dim() != 2 or tensors["zt"].shape != tensors["z0"].shape or len(rows) != 1
                or tensors["error"].shape != rows or tensors["z0"].shape[0] != rows[0]):
            raise invalid("dataset", str(path), allowed + " with z0, zt [M, D] and delta, error [M]",
                          f"It holds {', '.join(f'{k} {tuple(v.shape)}' for k, v in tensors.items())}",
                          cls=DirectionFileError)
        return cls(transform=str(meta.get("transform", "?")), **{k: v.float() for k, v in tensors.items()})


def check_amounts(amounts: Sequence[float]) -> list[float]:
    """``amounts`` as a list of floats if they are finite, positive and increasing; else an error."""
    values = [as_finite(a) for a in amounts] if isinstance(amounts, (list, tuple)) else [None]
    if not values or any(v is None or v <= 0 for v in values) or values != sorted(values):
        raise invalid("amounts", amounts, "increasing positive amounts, e.g. 0.1,0.2,0.3")
    return values  # type: ignore[return-value]


def invert_trajectories(generator: GeneratorAdapter, z0: torch.Tensor, transform: str, amounts: Sequence[float], *,
                        iterations: int = 50, lr: float = 0.01, sigma: float | None = None,
                        class_id: int | None = None, batch_size: int = 16, drop_worst: float = 0.1,
                        progress: Callable[[int, int], None] | None = None) -> TrajectoryData:
    """Invert ``T(G(z0), ±t)`` for every ``t`` in ``amounts``; see the module docstring.

    ``z0 [N, D]`` in the generator's ``z`` space; ``sigma`` is the blur in pixels (default: 3 px at
    128 px, scaled to the resolution); ``progress(done, total)`` counts (amount, chunk) steps.
    """
    amounts = check_amounts(amounts)
    iterations, lr = check_count("iterations", iterations), check_positive("lr", lr)
    batch_size = check_count("batch_size", batch_size, 2)
    apply = get_transform(transform).apply
    sigma = 3.0 * generator.resolution / 128 if sigma is None else sigma
    z0 = z0.to(generator.device)
    rows = torch.cat([z0, z0])                       # both signs
    signs = torch.cat([torch.ones(len(z0)), -torch.ones(len(z0))]).to(generator.device)
    with torch.no_grad():
        originals = torch.cat([generator.synthesize(c, classes=class_id) for c in z0.split(batch_size)])
    originals = torch.cat([originals, originals])
    current = rows.clone()
    results_z, results_delta, results_error = [], [], []
    total, done = len(amounts) * math.ceil(len(rows) / batch_size), 0
    for amount in amounts:
        errors = []
        for start in range(0, len(rows), batch_size):
            part = slice(start, start + batch_size)
            with torch.no_grad():
                target, mask = apply(originals[part], signs[part] * amount)
                target = gaussian_blur(target, sigma)
            z, error = invert_images(generator, target, mask, current[part], iterations=iterations, lr=lr,
                                     sigma=sigma, class_id=class_id, blurred_target=True)
            current[part] = z
            errors.append(error)
            done += 1
            if progress is not None:
                progress(done, total)
        results_z.append(current.clone())
        results_delta.append(signs * amount)
        results_error.append(torch.cat(errors))
    zt, delta, error = torch.cat(results_z), torch.cat(results_delta), torch.cat(results_error)
    starts = rows.repeat(len(amounts), 1)
    keep = error <= torch.quantile(error, 1 - drop_worst) if drop_worst > 0 else torch.ones_like(error, dtype=torch.bool)
    return TrajectoryData(starts[keep].cpu(), zt[keep].cpu(), delta[keep].cpu(), error[keep].cpu(), transform)


def invert_images(generator: GeneratorAdapter, targets: torch.Tensor, masks: torch.Tensor, init: torch.Tensor, *,
                  iterations: int = 50, lr: float = 0.01, sigma: float | None = None, class_id: int | None = None,
                  blurred_target: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents ``[N, D]`` whose images match ``targets`` ``[N, C, H, W]`` on ``masks`` ``[N, 1, H, W]``.

    Adam (fresh) from ``init`` on the blurred masked MSE, ‖z‖ kept ≤ √D. Returns (latents, final error [N]).
    """
    sigma = 3.0 * generator.resolution / 128 if sigma is None else sigma
    target = targets if blurred_target else gaussian_blur(targets, sigma)
    z = init.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=lr)
    for _ in range(iterations):
        per_sample = _masked_error(gaussian_blur(generator.synthesize(z, classes=class_id), sigma), target, masks)
        optimiser.zero_grad()
        per_sample.sum().backward()
        optimiser.step()
        with torch.no_grad():  # stay in the ball where the prior's mass is
            clamp_to_ball_(z)
    with torch.no_grad():
        error = _masked_error(gaussian_blur(generator.synthesize(z, classes=class_id), sigma), target, masks)
    return z.detach(), error


def _masked_error(generated: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.expand_as(generated)
    return (((generated - target) ** 2) * weights).flatten(1).sum(1) / weights.flatten(1).sum(1).clamp_min(1)
