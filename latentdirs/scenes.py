"""A scene renderer with known, independent factors: one object on a plain background, 64 px RGB.

It is the data set the ``shapes-*`` generators were trained on and the source of *real* images with a
known answer (every image comes with its factor values). Each scene is drawn from seven independent
factors, each uniform over its range (:data:`FACTOR_RANGES`):

============ ================================================================ ===================
factor       meaning                                                          range
============ ================================================================ ===================
x            object centre, fraction of the width from the image centre,      −0.35 … 0.35
             positive to the right (pixel column ``(0.5 + x)·64 − 0.5``)
y            same, fraction of the height, positive *down* (image rows)       −0.35 … 0.35
scale        radius of the disc of the object's area, fraction of the width   0.08 … 0.16
rotation     angle in radians, clockwise on screen (y points down)            0 … 2π
hue          object hue in turns (HSV, saturation 0.85, value 0.95)           0 … 1
background   grey level of the background, 0 black … 1 white                 0.0 … 0.5
shape        0 square, 1 disc, 2 triangle, 3 heart (:data:`SHAPES`)           0 … 3 (integers)
============ ================================================================ ===================

All shapes have the same area at the same ``scale`` (``π·scale²`` of the width squared), so scale
means the same thing for each. Rotation is invisible on the disc and periodic with ``2π/k`` for a
shape of ``k``-fold symmetry (:data:`SYMMETRY`: square 4, triangle 3, heart 1). The object's centre is
the centroid of its area for the square, disc and triangle and within 2 % of the size for the heart, so
the centroid of the object mask follows ``(x, y)``. At the extreme positions a large rotated triangle
or square reaches up to ~6 px past the border and is cut there; the factor values are those of the
whole object.

Edges are anti-aliased from a signed distance: a pixel's object coverage is ``clamp(0.5 − d, 0, 1)``
with ``d`` the signed distance of its centre to the outline in pixels (a one-pixel ramp), so every
measurement on the images is a continuous function of the factors.

Speed (measured on the shared 2-core CPU of this project, one torch thread, batches of 1 000): 12 700
scenes per second at best, 5 600 when the machine was busy with other jobs (docs/testbed.md).

See also :func:`latentdirs.factor_reader.load_factor_reader`, a small CNN trained on these scenes that
reads the factors back from any 64 px image (for generated images, where no factor values are known).
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

from latentdirs.errors import check_count, invalid

RESOLUTION = 64
SHAPES: tuple[str, ...] = ("square", "disc", "triangle", "heart")
#: order of rotational symmetry per shape (0: the disc, whose rotation cannot be seen)
SYMMETRY: tuple[int, ...] = (4, 0, 3, 1)
#: (low, high) of the uniform distribution of each continuous factor; shape is uniform over SHAPES
FACTOR_RANGES: dict[str, tuple[float, float]] = {
    "x": (-0.35, 0.35),
    "y": (-0.35, 0.35),
    "scale": (0.08, 0.16),
    "rotation": (0.0, 2 * math.pi),
    "hue": (0.0, 1.0),
    "background": (0.0, 0.5),
}
FACTORS: tuple[str, ...] = (*FACTOR_RANGES, "shape")
SATURATION = 0.85
VALUE = 0.95

# Unit shapes of area π (that of the unit disc), so ``scale`` is the equal-area radius for each.
_SQUARE_HALF = math.sqrt(math.pi) / 2                          # side² = π
_TRIANGLE_INRADIUS = math.sqrt(math.pi / (3 * math.sqrt(3)))   # area = 3·√3·r² for inradius r
_SQRT_HALF = math.sqrt(0.5)


def sample_factors(n: int, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """``n`` independent draws of every factor, uniform over :data:`FACTOR_RANGES` and :data:`SHAPES`.

    Returns ``{name: [n]}``: float32 for the continuous factors, int64 for ``shape``. The same
    ``(n, seed)`` gives the same values on every machine (a seeded CPU ``torch.Generator``), and the
    first ``m`` draws of a larger ``n`` are not guaranteed to equal the draws of ``n = m``.
    """
    n = check_count("n", n)
    generator = torch.Generator().manual_seed(int(seed))
    factors = {}
    for name, (low, high) in FACTOR_RANGES.items():
        factors[name] = low + (high - low) * torch.rand(n, generator=generator)
    factors["shape"] = torch.randint(len(SHAPES), (n,), generator=generator)
    return factors


def render_scenes(n: int, *, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Render ``n`` random scenes: images ``[n, 3, 64, 64]`` float32 in [-1, 1] and their factors.

    Deterministic in ``(n, seed)``; factors as :func:`sample_factors` returns them.
    """
    factors = sample_factors(n, seed=seed)
    return render_factors(factors), factors


def render_factors(factors: Mapping[str, torch.Tensor | float | int]) -> torch.Tensor:
    """Render the scenes with the given factor values: ``[N, 3, 64, 64]`` float32 in [-1, 1].

    ``factors`` holds every name of :data:`FACTORS`, each a tensor ``[N]`` or a number (broadcast to
    the others' ``N``). Values may lie outside the sampling ranges (e.g. to shift an object further
    than the data ever does), but must be finite, with ``scale > 0``, ``background`` in [0, 1] and
    ``shape`` an integer index into :data:`SHAPES`; hue wraps around (turns), rotation is in radians.
    """
    values = _check_factors(factors)
    n = values["x"].shape[0]
    coverage = torch.empty(n, RESOLUTION, RESOLUTION)
    pixels = (torch.arange(RESOLUTION, dtype=torch.float32) + 0.5) / RESOLUTION - 0.5  # pixel centres
    for index in range(len(SHAPES)):
        members = torch.nonzero(values["shape"] == index).flatten()
        if members.numel():
            coverage[members] = _coverage(index, {k: v[members] for k, v in values.items()}, pixels)
    colour = object_colour(values["hue"])                                   # [N, 3]
    background = values["background"][:, None, None, None]
    alpha = coverage[:, None]
    rgb = background + alpha * (colour[:, :, None, None] - background)
    return rgb * 2 - 1


def _coverage(shape: int, values: Mapping[str, torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
    """Object coverage ``[M, 64, 64]`` in [0, 1] of ``M`` scenes that all have the given shape."""
    scale = values["scale"][:, None, None]
    dx = pixels[None, None, :] - values["x"][:, None, None]
    dy = pixels[None, :, None] - values["y"][:, None, None]
    cos, sin = torch.cos(values["rotation"])[:, None, None], torch.sin(values["rotation"])[:, None, None]
    # rotate the pixel offsets by −rotation, into the object's own frame, and divide out the scale
    u = (cos * dx + sin * dy) / scale
    v = (cos * dy - sin * dx) / scale
    distance = _SIGNED_DISTANCE[shape](u, v) * scale * RESOLUTION         # in pixels
    return (0.5 - distance).clamp_(0.0, 1.0)


def _square(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Chebyshev distance: exact along the edges, where the anti-aliasing ramp lies
    return torch.maximum(u.abs(), v.abs()) - _SQUARE_HALF


def _disc(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(u * u + v * v) - 1.0


def _triangle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # equilateral, centroid at the origin, apex up (−v): the largest of the three edge distances
    bottom = v
    right = 0.8660254037844386 * u - 0.5 * v
    left = -0.8660254037844386 * u - 0.5 * v
    return torch.maximum(torch.maximum(bottom, right), left) - _TRIANGLE_INRADIUS


# The heart is a square turned 45° (its lower half) with two discs on its two upper edges, built in
# units of the square's half-side; _HEART_UNIT and _HEART_SHIFT rescale it to area π and put its
# centroid at the origin (computed numerically once, see _heart_constants).
def _heart_raw(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    diamond = (u.abs() + v.abs()) * _SQRT_HALF - 1.0      # square of half-side 1 turned 45°
    lobe_x, lobe_y = _SQRT_HALF, -_SQRT_HALF               # midpoints of the upper edges (v points down)
    left = torch.sqrt((u + lobe_x) ** 2 + (v - lobe_y) ** 2) - 1.0
    right = torch.sqrt((u - lobe_x) ** 2 + (v - lobe_y) ** 2) - 1.0
    return torch.minimum(diamond, torch.minimum(left, right))


def _heart_constants() -> tuple[float, float]:
    """(unit, shift): the raw heart's length per unit of area-π size, and its centroid's v."""
    grid = torch.linspace(-3, 3, 1201)
    step = float(grid[1] - grid[0])
    inside = (_heart_raw(grid[None, :], grid[:, None]) <= 0).double()
    area = float(inside.sum()) * step * step
    centroid_v = float((inside * grid[:, None].double()).sum()) * step * step / area
    return math.sqrt(area / math.pi), centroid_v


_HEART_UNIT, _HEART_SHIFT = _heart_constants()


def _heart(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _heart_raw(u * _HEART_UNIT, v * _HEART_UNIT + _HEART_SHIFT) / _HEART_UNIT


_SIGNED_DISTANCE = (_square, _disc, _triangle, _heart)


def object_colour(hue: torch.Tensor) -> torch.Tensor:
    """The object's colour: ``[N]`` hue in turns → ``[N, 3]`` RGB in [0, 1] (HSV at :data:`SATURATION`,
    :data:`VALUE`); the image shows it as ``2·rgb − 1``."""
    k = (torch.tensor([5.0, 3.0, 1.0])[None, :] + hue.remainder(1.0)[:, None] * 6).remainder(6)
    ramp = torch.minimum(torch.minimum(k, 4 - k), torch.ones_like(k)).clamp(min=0)
    return VALUE - VALUE * SATURATION * ramp


def _check_factors(factors: Mapping[str, torch.Tensor | float | int]) -> dict[str, torch.Tensor]:
    """Validate ``factors`` and return them as flat CPU tensors of one length (shape as int64)."""
    if not isinstance(factors, Mapping):
        raise invalid("factors", type(factors).__name__, f"a mapping with the keys {', '.join(FACTORS)}")
    missing = [name for name in FACTORS if name not in factors]
    extra = [name for name in factors if name not in FACTORS]
    if missing or extra:
        raise invalid("factors", sorted(map(str, factors)), f"exactly the keys {', '.join(FACTORS)}",
                      f"add {missing}" if missing else f"remove {extra}")
    tensors = {name: torch.as_tensor(factors[name]).detach().cpu().reshape(-1) for name in FACTORS}
    lengths = {t.shape[0] for t in tensors.values() if t.shape[0] != 1}
    if len(lengths) > 1 or 0 in lengths:
        raise invalid("factors", {k: t.shape[0] for k, t in tensors.items()},
                      "tensors of one length N ≥ 1 (or single numbers)")
    n = lengths.pop() if lengths else 1
    values = {name: t.float().expand(n).contiguous() for name, t in tensors.items() if name != "shape"}
    for name, value in values.items():
        if not bool(torch.isfinite(value).all()):
            raise invalid(f"factors[{name!r}]", value.tolist()[:4], "finite numbers")
    if bool((values["scale"] <= 0).any()):
        raise invalid("factors['scale']", float(values["scale"].min()), "numbers > 0 (fraction of the width)")
    if bool(((values["background"] < 0) | (values["background"] > 1)).any()):
        raise invalid("factors['background']", values["background"].tolist()[:4], "grey levels in [0, 1]")
    shape = tensors["shape"]
    if shape.is_floating_point() and not bool((shape == shape.round()).all()):
        raise invalid("factors['shape']", shape.tolist()[:4], f"integers 0 … {len(SHAPES) - 1} ({', '.join(SHAPES)})")
    shape = shape.long().expand(n).contiguous()
    if bool(((shape < 0) | (shape >= len(SHAPES))).any()):
        raise invalid("factors['shape']", shape.tolist()[:4], f"integers 0 … {len(SHAPES) - 1} ({', '.join(SHAPES)})")
    values["shape"] = shape
    return values
