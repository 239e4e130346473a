"""The flat split: a style subspace of z, measured as the AdaIN-explained fraction of each direction's effect.

MUNIT injects style by AdaIN: a per-channel scale and shift of a feature map. A latent direction ``d``
acts like a style code when the change it makes to a feature map ``F`` ``[C, H, W]`` is mostly such a
per-channel affine change. Linearise ``F`` at a sampled ``z``: the change is ``J d`` (``J`` the
Jacobian ``[C·H·W, D]``). Per channel, the part a scale and a shift explain is the projection ``P_c``
onto ``span{F_c, 1}``. Averaged over samples, the explained fraction of ``d`` is the Rayleigh quotient

    fraction(d) = dᵀ A d / dᵀ B d,   A = E[Jᵀ P J],  B = E[Jᵀ J]   (0 ≤ fraction ≤ 1, as P is a projector)

so the directions ranked by fraction are the generalised eigenvectors of ``(A, B)``, and the eigenvalues
are their fractions. The style subspace is spanned by the eigenvectors above a threshold (or the top
``style_dims``); the content subspace is its orthogonal complement. Where the network has no spatial
feature map (``synthetic``) the image is measured, with the projection onto the span of all colour
channels and 1 — an affine colour transform (see :func:`accumulate` for why).

``J`` is computed exactly by forward-mode AD (one tangent per basis direction, batched), falling back to
central differences for networks forward-mode AD cannot pass through. ``B`` is regularised by a tiny
ridge (:data:`RIDGE` of its mean eigenvalue) so directions with no effect at all — the inert dimensions
of ``synthetic`` — get a fraction of about 0 instead of an undefined 0/0: a direction that changes
nothing is no style.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from latentdirs.errors import NotSupportedError, UnknownNameError, describe_allowed, invalid
from latentdirs.generators.base import GeneratorAdapter

#: the fraction from which a direction counts as style: more than half of its effect (the energy of the
#: change it makes to the feature map) is an affine change — the plain reading of "mostly explained".
#: Measured alternatives, and why not (docs/content-style.md): the widest gap of the spectrum (dcgan-faces:
#: after 2, leaving out the lighting and colour directions 3 and 4); a bar relative to the baseline
#: (``(1 + baseline) / 2``: dcgan-faces' baseline is 0.49 because its strongest directions are the
#: affine ones, so the bar would rise to 0.75 exactly because the generator *has* style directions)
THRESHOLD = 0.5
#: ridge added to B, relative to B's mean eigenvalue (directions with less effect count as inert)
RIDGE = 1e-6
#: pseudo-layer name: the image itself, for networks without an intermediate feature map
IMAGE_LAYER = "image"
#: rows per forward pass when computing Jacobians (samples × basis directions)
JACOBIAN_ROWS = 256
#: the smallest spatial size a feature map needs: per-channel affine on a 1×1 map explains everything
MIN_SIDE = 4


@dataclass(frozen=True)
class FlatMeasurement:
    """The result of :func:`measure_flat`.

    Attributes:
        fractions: float64 ``[D]``, descending: the AdaIN-explained fraction of each eigen-direction.
        effects: float64 ``[D]``: each eigen-direction's (unit vector's) effect energy ``dᵀBd``, relative
            to the mean over the basis directions (``trace(B)/D``); ~0 for inert directions.
        directions: float64 ``[D, D]``: row ``i`` is the unit eigen-direction of ``fractions[i]``.
        layer: the feature map measured (a module name, or ``"image"``).
        feature_shape: ``(C, H, W)`` of that feature map.
        baseline: ``trace(A) / trace(B)``: the effect-weighted mean fraction over any orthonormal basis,
            about the fraction of an isotropic random direction (context for the spectrum).
    """

    fractions: torch.Tensor
    effects: torch.Tensor
    directions: torch.Tensor
    layer: str
    feature_shape: tuple[int, ...]
    baseline: float


# ---------------------------------------------------------------------------------------------- features
def feature_layers(generator: GeneratorAdapter, space: str) -> dict[str, tuple[int, ...]]:
    """Modules of the network that run when it renders and output a spatial map ``[C, H, W]`` (H, W ≥
    :data:`MIN_SIDE`), in call order, the last (the image itself, if a module outputs it) excluded."""
    from latentdirs.methods.ganspace import runnable_layers

    found = runnable_layers(generator, None if not generator.conditional else 0, space)
    image_shape = (3, generator.resolution, generator.resolution)
    return {name: shape for name, shape in found.items()
            if len(shape) == 3 and min(shape[1:]) >= MIN_SIDE and tuple(shape) != image_shape}


def default_layer(layers: dict[str, tuple[int, ...]]) -> str:
    """The last spatial feature map before the image (dcgan-faces: ``main.11``, 64 × 32 × 32), or
    ``"image"`` when there is none. Why the last: like StyleGAN's late layers, it is where colour and
    texture are set, and measured on dcgan-faces it is the map whose spectrum of fractions separates
    best (docs/content-style.md, 64 samples: five fractions 0.77…0.55, then 0.46 and down to 0.01; at
    the 8 × 8 map they fall smoothly from 0.56, 0.54, 0.51, 0.50, 0.49, with nothing to choose by)."""
    if not layers:
        return IMAGE_LAYER
    return list(layers)[-1]


class _Stop(Exception):
    """Raised by the capture hook: rendering stops once the measured layer has run."""


def feature_function(generator: GeneratorAdapter, layer: str, space: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``f(latents [N, D]) -> features [N, C, H, W]`` at ``layer`` (a module name or ``"image"``),
    differentiable (also in forward mode); a partial forward for modules."""
    classes = 0 if generator.conditional else None
    if layer == IMAGE_LAYER:
        return lambda z: generator.synthesize(z, space=space, classes=classes)
    module = dict(generator.network.named_modules())[layer]

    def features(z: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []

        def hook(_module, _inputs, output):
            captured.append(output)
            raise _Stop

        handle = module.register_forward_hook(hook)
        try:
            generator.synthesize(z, space=space, classes=classes)
        except _Stop:
            pass
        finally:
            handle.remove()
        return captured[0]

    return features


def choose_layer(generator: GeneratorAdapter, layer: str | None, space: str) -> tuple[str, tuple[int, ...]]:
    """``(layer name, its [C, H, W])`` for the ``layer`` option (None: :func:`default_layer`)."""
    layers = feature_layers(generator, space)
    if layer is None:
        layer = default_layer(layers)
    elif layer != IMAGE_LAYER and layer not in layers:
        raise invalid("layer", layer, f"{describe_allowed([IMAGE_LAYER, *layers])} (feature maps of "
                      f"{generator.spec} at least {MIN_SIDE}×{MIN_SIDE})", cls=UnknownNameError)
    if layer == IMAGE_LAYER:
        return layer, (3, generator.resolution, generator.resolution)
    return layer, tuple(layers[layer])


# ---------------------------------------------------------------------------------------------- Jacobian
def jacobian(features: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(F [C, H·W], J [D, C, H·W])`` of ``features`` at one latent ``z [D]``: the map and its
    derivative along each basis direction (forward-mode AD; central differences where it fails)."""
    dim = z.shape[0]
    tangents = torch.eye(dim, device=z.device, dtype=z.dtype)
    rows = []
    try:
        import torch.autograd.forward_ad as fwad

        with torch.no_grad():
            base = features(z[None])[0]
        for chunk in tangents.split(JACOBIAN_ROWS):
            with fwad.dual_level():
                dual = fwad.make_dual(z.expand(chunk.shape[0], dim).contiguous(), chunk)
                rows.append(fwad.unpack_dual(features(dual)).tangent.detach())
    except (RuntimeError, NotImplementedError):  # an op without a forward-mode formula
        rows = []
        step = 1e-3
        with torch.no_grad():
            base = features(z[None])[0]
            for chunk in tangents.split(JACOBIAN_ROWS // 2):
                plus = features(z + step * chunk)
                minus = features(z - step * chunk)
                rows.append((plus - minus) / (2 * step))
    channels = base.shape[0]
    return base.reshape(channels, -1), torch.cat(rows).reshape(dim, channels, -1)


def accumulate(f: torch.Tensor, j: torch.Tensor, *, colour: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample's ``(Jᵀ P J, Jᵀ J)`` ``[D, D]`` (float64) from ``F [C, P]`` and ``J [D, C, P]``.

    Feature maps (``colour=False``, the AdaIN view): ``P_c`` projects channel ``c`` onto
    ``span{1, F_c}``; with the orthonormal basis ``u1 = 1/√P``, ``u2 = (F_c − mean)/‖F_c − mean‖``
    (dropped for a constant channel), ``J_cᵀ P_c J_c = (J_cᵀu1)(u1ᵀJ_c) + (J_cᵀu2)(u2ᵀJ_c)`` — two
    ``[D, C]`` products, never ``[P, P]``.

    The image (``colour=True``): every channel's change is projected onto ``span{1, F_1, …, F_C}``, the
    changes an affine *colour* transform (a 3×3 matrix and a shift, the colour-transfer view of style)
    explains. Why not per channel at the image: a style change of the feature maps reaches the image
    through the generator's last convolution, which mixes channels into colours; and on ``synthetic``
    only the colour transform can tell the disc's colour (hue, value) from its outline (position, size).
    """
    f, j = f.double(), j.double()
    pixels = f.shape[1]
    flat = j.reshape(j.shape[0], -1)
    total = flat @ flat.T
    if colour:
        basis = _orthonormal_span(torch.cat([torch.ones(1, pixels, dtype=f.dtype, device=f.device), f]))
        projected = torch.einsum("dcp,kp->dck", j, basis).reshape(j.shape[0], -1)
        return projected @ projected.T, total
    centred = f - f.mean(dim=1, keepdim=True)
    norms = centred.norm(dim=1, keepdim=True)
    u2 = torch.where(norms > 1e-8 * math.sqrt(pixels), centred / norms.clamp_min(1e-300), torch.zeros_like(centred))
    shift = j.sum(dim=2) / math.sqrt(pixels)  # [D, C]
    scale = torch.einsum("dcp,cp->dc", j, u2)  # [D, C]
    return shift @ shift.T + scale @ scale.T, total


def _orthonormal_span(rows: torch.Tensor) -> torch.Tensor:
    """Orthonormal rows ``[K, P]`` spanning ``rows [M, P]`` (K ≤ M: dependent rows, e.g. a grey image's
    equal channels, are dropped by the singular values)."""
    u, s, vh = torch.linalg.svd(rows, full_matrices=False)
    keep = s > s[0] * 1e-9 if s.numel() else s > 0
    return vh[keep]


def solve(explained: torch.Tensor, total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generalised eigenproblem ``A d = μ (B + ridge) d``: ``(fractions [D] descending, unit directions
    [D, D] as rows, effects [D])``, all float64."""
    dim = total.shape[0]
    mean = float(torch.trace(total)) / dim
    if not math.isfinite(mean) or mean <= 0:
        zeros = torch.zeros(dim, dtype=torch.float64)
        return zeros, torch.eye(dim, dtype=torch.float64), zeros.clone()
    symmetric = lambda m: (m + m.T) / 2  # noqa: E731 - accumulated sums are symmetric up to rounding
    lower = torch.linalg.cholesky(symmetric(total) + RIDGE * mean * torch.eye(dim, dtype=torch.float64))
    inverse = torch.linalg.inv(lower)
    values, vectors = torch.linalg.eigh(symmetric(inverse @ symmetric(explained) @ inverse.T))
    directions = (inverse.T @ vectors).T  # d = L⁻ᵀ y, one per row
    directions = directions / directions.norm(dim=1, keepdim=True)
    order = torch.argsort(values, descending=True)
    directions = directions[order]
    effects = torch.einsum("kd,de,ke->k", directions, symmetric(total), directions) / mean
    return values[order].clamp(0.0, 1.0), directions, effects


def measure_flat(generator: GeneratorAdapter, *, space: str, layer: str | None, samples: int,
                 seed: int) -> FlatMeasurement:
    """Sample ``samples`` latents of ``space`` (seeded), accumulate ``A`` and ``B`` at ``layer`` and solve."""
    name, shape = choose_layer(generator, layer, space)
    features = feature_function(generator, name, space)
    latents = generator.sample(samples, seed=seed, space=space)
    dim = latents.shape[1]
    explained = torch.zeros(dim, dim, dtype=torch.float64)
    total = torch.zeros(dim, dim, dtype=torch.float64)
    for z in latents:
        f, j = jacobian(features, z)
        a, b = accumulate(f, j, colour=name == IMAGE_LAYER)
        explained += a.cpu()
        total += b.cpu()
    if not bool(torch.isfinite(total).all() and torch.isfinite(explained).all()):
        raise invalid("generator", generator.spec, "a generator whose feature map at "
                      f"{name!r} has finite derivatives", "Choose another layer", cls=NotSupportedError)
    fractions, directions, effects = solve(explained / samples, total / samples)
    baseline = float(torch.trace(explained) / torch.trace(total)) if float(torch.trace(total)) > 0 else 0.0
    return FlatMeasurement(fractions, effects, directions, name, shape, baseline)


def style_basis(measurement: FlatMeasurement, count: int) -> torch.Tensor:
    """Orthonormal rows ``[count, D]`` (float32) spanning the top ``count`` eigen-directions (QR keeps the
    span and the order: row ``i`` lies in the span of directions ``0…i``)."""
    q, r = torch.linalg.qr(measurement.directions[:count].T)
    q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(1, dtype=q.dtype))
    return q.T.float().contiguous()


__all__ = ["FlatMeasurement", "IMAGE_LAYER", "THRESHOLD", "choose_layer", "feature_layers", "measure_flat",
           "style_basis"]
