"""Ground truth on generators with known factors: a direction × factor effect matrix and its scores.

For a learned generator of renderer scenes (``shapes-dcgan``, ``shapes-stylegan2``) nobody knows the
factor directions, but :meth:`~latentdirs.generators.base.GeneratorAdapter.read_factors` reads the factors
off any image. For each direction ``v`` of a file, ``samples`` latents ``z`` are moved by ``±step·v``,
both images are read, and the change of each factor per unit step is the central difference

    Δ_f(z) = (f(G(z + h·v)) − f(G(z − h·v))) / (2h),      h = ``step``.

The matrix entry is ``E[v, f] = mean_z |Δ_f(z)| / σ_f``: how many of the factor's *data* spreads one unit
step moves it (σ_f = the standard deviation of the factor over the renderer's distribution, so factors
of different units compare). Circular factors are differenced on their circle: hue in turns, rotation
as a fraction of the read shape's symmetry period ``2π/k``, taken only on pairs where both images are
read as the same non-round shape. Shape is categorical: ``Δ`` is the total-variation distance between
the two read shape distributions per unit step, and σ = 0.75, the expected distance between two
independent data draws (1 − Σ p², four equally likely shapes).

On ``synthetic`` (no reader, but :attr:`true_directions`) the factors are exactly linear in z with unit
spread, ``s_f = a_f·z``, so ``E[v, f] = |a_f · v|`` — the known answer: its true directions give the
identity matrix.

Scores (in the spirit of DCI, Eastwood & Williams 2018, with the measured effect matrix in place of a
regressor's importance matrix, and of MIG, Chen et al. 2018):

* ``purity`` of direction ``v`` = 1 − H(p_v)/log F, ``p_v = E[v, :]/Σ_f E[v, f]`` (1 = moves one factor
  only, 0 = all F factors equally); ``mass`` = Σ_f E[v, f]. Directions with mass below
  :data:`INERT_MASS` are inert: no purity, no weight.
* ``modularity`` (DCI disentanglement) = Σ_v mass_v · purity_v / Σ_v mass_v.
* ``completeness`` of factor ``f`` = 1 − H(q_f)/log K, ``q_f = E[:, f]/Σ_v E[v, f]`` (1 = one direction
  holds the factor); overall = its mean over factors weighted by column mass. Needs K ≥ 2.
* ``gap`` of factor ``f`` = (E₁ − E₂)/E₁ with E₁ ≥ E₂ the largest two entries of its column (MIG-like,
  relative to the top direction instead of the factor's entropy); ``mig`` = the mean gap over factors.
  Needs K ≥ 2; a factor no direction moves (E₁ < :data:`INERT_MASS`) has gap 0.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import torch

from latentdirs import scenes
from latentdirs.errors import NotSupportedError, invalid
from latentdirs.evaluation.sharing import share
from latentdirs.generators.base import GeneratorAdapter
from latentdirs.latents import along_layers

if TYPE_CHECKING:
    from latentdirs.distributed import Ranks

#: effect (data spreads per unit step) below which a direction moves nothing / a factor is not moved
INERT_MASS = 1e-4
#: the factors of the scene renderer the matrix reports, in this order (those a reader returns)
SCENE_FACTORS: tuple[str, ...] = ("x", "y", "scale", "rotation", "hue", "background", "shape")
#: expected total-variation distance between the shapes of two independent renderer scenes
SHAPE_SPREAD = 1 - 1 / len(scenes.SHAPES)

Reader = Callable[[torch.Tensor], "dict[str, torch.Tensor] | None"]


def factor_spread(name: str) -> float:
    """σ_f: the factor's standard deviation over the renderer's data, in the units :func:`factor_changes`
    returns (rotation and hue as fractions of their period, so 1/√12; shape: :data:`SHAPE_SPREAD`)."""
    if name == "shape":
        return SHAPE_SPREAD
    if name in ("rotation", "hue"):
        return 1 / math.sqrt(12)
    low, high = scenes.FACTOR_RANGES[name]
    return (high - low) / math.sqrt(12)


def _wrap(difference: torch.Tensor) -> torch.Tensor:
    """A difference of fractions of a period, wrapped into [−0.5, 0.5)."""
    return (difference + 0.5).remainder(1.0) - 0.5


def factor_changes(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Change of each scene factor from ``before`` to ``after`` (two reads of ``[N]`` images), ``[N]`` each.

    x, y, scale, background: signed differences in the renderer's units; hue: wrapped, in turns; rotation:
    wrapped, in fractions of the symmetry period, NaN unless both are read as the same non-round shape;
    shape: total-variation distance of the read shape distributions (≥ 0)."""
    changes = {}
    for name in ("x", "y", "scale", "background"):
        if name in before:
            changes[name] = after[name] - before[name]
    if "hue" in before:
        changes["hue"] = _wrap(after["hue"] - before["hue"])
    if "rotation" in before and "shape" in before:
        order = torch.tensor([float(k) for k in scenes.SYMMETRY])[before["shape"]]  # k of the read shape
        same = (before["shape"] == after["shape"]) & (order > 0)
        turns = _wrap((after["rotation"] - before["rotation"]) * order / (2 * math.pi))
        changes["rotation"] = torch.where(same, turns, torch.full_like(turns, float("nan")))
    if "shape_probability" in before:
        changes["shape"] = 0.5 * (after["shape_probability"] - before["shape_probability"]).abs().sum(dim=1)
    return changes


def reads_factors(generator: GeneratorAdapter) -> bool:
    """Whether ``generator``'s :meth:`read_factors` reads anything (probes one rendered image)."""
    with torch.no_grad():
        image = generator.synthesize(generator.sample(1, seed=0))
    return generator.read_factors(image) is not None


def effect_matrix(generator: GeneratorAdapter, vectors: torch.Tensor, *, samples: int = 64, step: float = 1.0,
                  seed: int = 0, space: str = "z", layers: list[int] | None = None, class_id: int | None = None,
                  batch: int = 64, ranks: Ranks | None = None) -> dict[str, Any]:
    """The effect matrix of ``vectors`` ``[K, D]`` (rows of a direction file, in ``space``) on ``generator``.
    Under ``ranks`` (torchrun) the rendered rows are shared by the ranks; every rank returns the matrix.

    Uses :meth:`read_factors` when the generator reads factors, else :attr:`true_directions` (exact, no
    rendering; ``samples`` and ``step`` unused); refuses generators with neither. Returns
    ``{"source": "read_factors" | "true_directions", "factors": [F names], "matrix": [K][F] floats,
    "samples", "step"}`` plus the scores of :func:`disentanglement`.
    """
    if not step > 0 or not math.isfinite(step):
        raise invalid("step", step, "a finite number > 0 (latent units)")
    if samples < 2:
        raise invalid("samples", samples, "at least 2 latents")
    if reads_factors(generator):
        matrix, names = _read_matrix(generator, vectors, samples=samples, step=step, seed=seed, space=space,
                                     layers=layers, class_id=class_id, batch=batch, ranks=ranks)
        source = "read_factors"
    elif generator.true_directions is not None:
        truth = generator.true_directions
        if vectors.shape[-1] != next(iter(truth.values())).numel() or space != generator.default_space:
            raise invalid("directions", f"{tuple(vectors.shape)} in {space!r}",
                          f"directions in {generator.default_space!r}, where {generator.spec}'s true directions are")
        names = list(truth)
        matrix = (vectors.float().cpu() @ torch.stack([truth[n] for n in names]).T.float()).abs()
        source = "true_directions"
    else:
        raise invalid("generator", generator.spec, "a generator that reads its images' factors (read_factors: "
                      "shapes-dcgan, shapes-stylegan2) or knows its factor directions (synthetic)",
                      "evaluate those generators' files for a direction x factor matrix", cls=NotSupportedError)
    return {"source": source, "factors": names, "matrix": matrix.tolist(), "samples": samples, "step": step,
            **disentanglement(matrix)}


def _read_matrix(generator: GeneratorAdapter, vectors: torch.Tensor, *, samples: int, step: float, seed: int,
                 space: str, layers: list[int] | None, class_id: int | None,
                 batch: int, ranks: Ranks | None = None) -> tuple[torch.Tensor, list[str]]:
    """``[K, F]`` mean |Δ_f| / σ_f per unit step, by central differences read by the generator's reader.
    Under ``ranks`` the directions' rows are dealt to the ranks (each row rendered in the one-process batches)."""
    latents = generator.sample(samples, seed=seed + 4243, space=space, classes=class_id)

    def read_row(index: int) -> tuple[list[float], list[str]]:
        vector = vectors[index]
        with torch.no_grad():
            totals: dict[str, list[torch.Tensor]] = {}
            for start in range(0, samples, batch):
                base = latents[start:start + batch]
                offset = along_layers(step * vector.to(base), base, layers)
                ahead = generator.read_factors(generator.synthesize(base + offset, space=space, classes=class_id))
                behind = generator.read_factors(generator.synthesize(base - offset, space=space, classes=class_id))
                for name, change in factor_changes(behind, ahead).items():
                    totals.setdefault(name, []).append(change.float().cpu())
            names = [name for name in SCENE_FACTORS if name in totals]
            row = []
            for name in names:
                change = torch.cat(totals[name]).abs() / (2 * step)
                change = change[~torch.isnan(change)]  # rotation: only pairs read as one non-round shape
                row.append(float(change.mean()) / factor_spread(name) if change.numel() else 0.0)
        return row, names

    read = share(len(vectors), read_row, ranks)
    rows = [row for row, _ in read]
    names = read[-1][1] if read else []  # every row reads the same factors; as before, the last row's names
    return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), -1), names


def _normalised_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Entropy of each row of non-negative ``weights [R, C]`` as a distribution, divided by log C."""
    p = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-30)
    entropy = -(p * p.clamp_min(1e-30).log()).sum(dim=1)
    return entropy / math.log(weights.shape[1]) if weights.shape[1] > 1 else torch.zeros(weights.shape[0])


def disentanglement(matrix: torch.Tensor) -> dict[str, Any]:
    """Scores of an effect matrix ``[K, F]`` ≥ 0 (formulas in the module docstring).

    Returns ``mass`` and ``purity`` per direction (purity None where inert), ``modularity``, and with
    K ≥ 2 ``completeness`` and ``gap`` per factor, ``best`` (top direction per factor), overall
    ``completeness_mean`` and ``mig``; these are None for a single direction."""
    matrix = torch.as_tensor(matrix, dtype=torch.float64).clamp_min(0)
    mass = matrix.sum(dim=1)
    active = mass >= INERT_MASS
    purity = 1 - _normalised_entropy(matrix)
    total = float(mass[active].sum())
    scores: dict[str, Any] = {
        "mass": mass.tolist(),
        "purity": [float(p) if a else None for p, a in zip(purity, active)],
        "modularity": float((mass * purity)[active].sum() / total) if total > 0 else None,
        "completeness": None, "completeness_mean": None, "gap": None, "best": None, "mig": None,
    }
    if matrix.shape[0] >= 2 and matrix.shape[1]:
        column_mass = matrix.sum(dim=0)
        completeness = 1 - _normalised_entropy(matrix.T)
        top = matrix.topk(2, dim=0)
        first, second = top.values[0], top.values[1]
        gap = torch.where(first >= INERT_MASS, (first - second) / first.clamp_min(1e-30), torch.zeros_like(first))
        scores.update({
            "completeness": completeness.tolist(),
            "completeness_mean": float((completeness * column_mass).sum() / column_mass.sum())
            if float(column_mass.sum()) > 0 else None,
            "gap": gap.tolist(), "best": top.indices[0].tolist(), "mig": float(gap.mean()),
        })
    return scores


def require_factor_source(generator: GeneratorAdapter) -> None:
    """Refuse, in one line, a generator that can give no effect matrix (neither reader nor true directions)."""
    if generator.true_directions is None and not reads_factors(generator):
        raise invalid("generator", generator.spec, "a generator that reads its images' factors (read_factors: "
                      "shapes-dcgan, shapes-stylegan2) or knows its factor directions (synthetic)",
                      "drop --factors yes, or evaluate on such a generator", cls=NotSupportedError)
