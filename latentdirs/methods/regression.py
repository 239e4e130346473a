"""Calibrated directions by inversion of transformed images and monotone regression.

Paper: Plumerault, Le Borgne & Hudelot, "Controlling generative models with continuous factors of
variations", ICLR 2020 (arXiv 2001.10238). Reference code: the authors' TensorFlow release.

1. Trajectory data (:mod:`latentdirs.inversion`): for ``samples`` latents z0 (norm ≤ √d) and both
   signs, invert ``T(G(z0), ±t)`` for each amount t, warm-started, blurred masked MSE, worst decile
   dropped. By default the amount each inversion *achieved* (registration, :mod:`latentdirs.measure`)
   replaces the requested t: a generator that cannot render the transform then gets a narrow
   calibrated range, and larger requests are refused instead of silently missed.
2. Regression (:func:`latentdirs.calibration.fit_monotone`): a direction v and a monotone piecewise-
   linear g with ``δt = g(⟨v, zT⟩) − g(⟨v, z0⟩)``, an L2 term on v, a smoothness term on g's slopes;
   validation error on a held-out fifth.
3. Closed-loop recalibration (``recalibrate`` fresh latents): edit along v, measure what the edits
   achieve by registration, refit g to that with v fixed, so the stored range is what edits do.
4. The direction file stores the unit v and g's knots (``calibration.knots_x/knots_y``), so
   ``latentdirs edit FILE --amounts -0.2:0.2:5`` moves each seed by the requested amount.

Deviations from the reference: v starts along the least-squares displacement per unit δt (scaled so
⟨v, z⟩ spreads over g's knots) and g as the best straight line; v learns at a tenth of g's rate (Adam
would otherwise let it drift into dimensions the data leaves free); default amounts 0.05 … 0.25
(the reference's 0.1 … 0.5 asks for shifts of half the image); the calibration is recalibrated on
measured edits, kept and used (the reference code discarded it); batch size for the inversion is a
measured choice for this CPU (see benchmarks/bench_regression.py).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Sequence

import torch

from latentdirs.atomic import check_writable_directory
from latentdirs.calibration import KIND, fit_monotone
from latentdirs.directions import Directions
from latentdirs.errors import check_count, check_positive, check_seed, invalid
from latentdirs.generators.base import GeneratorAdapter
from latentdirs.inversion import TrajectoryData, check_amounts, invert_trajectories
from latentdirs.latents import clamp_to_ball
from latentdirs.specs import parse_alphas
from latentdirs.transforms import get_transform

#: what the regression fits: the amount each inversion achieved, or the amount it asked for
TARGETS = ("measured", "requested")


def regression(generator: GeneratorAdapter, *, transform: str = "shift-x", samples: int = 32,
               amounts: str | Sequence[float] | None = None,
               iterations: int = 50, lr: float = 0.01, sigma: float | None = None, batch_size: int = 16,
               epochs: int = 100, class_id: int | str | None = None, target: str = "measured",
               recalibrate: int = 32, dataset: str | Path | None = None,
               save_dataset: str | Path | None = None, seed: int = 0,
               progress: Callable[[int, int, float], None] | None = None) -> Directions:
    """Discover one calibrated direction for ``transform`` (``shift-x``, ``shift-y``, ``zoom``, …).

    Args:
        samples: number of z0, ≥ 2 (each gives 2 · len(amounts) triplets before the worst decile is dropped).
        amounts: increasing positive amounts (default: the transform's ``default_amounts``: 0.05, 0.1, …,
            0.25 for shift-x, shift-y, zoom and brightness; 5, 10, …, 25 degrees for rotation).
        iterations, lr, sigma, batch_size: the inversion (Adam steps per amount ≥ 1, learning rate > 0,
            blur σ ≥ 0 in pixels, latents per generator pass ≥ 2).
        epochs: the regression's passes over the triplets (≥ 1).
        target: what the regression fits — ``"measured"`` (default): the amount each inversion actually
            achieved, found by registration of G(zT) against G(z0); ``"requested"``: the amount asked
            for (the reference's choice, which credits failed inversions with shifts that never happened).
        recalibrate: closed loop — on this many fresh latents, edit along the fitted v, measure what the
            edits achieve (registration) and refit g to that, v fixed; 0 keeps g as fitted to the
            inversions.
        dataset / save_dataset: reuse or keep the trajectory data (safetensors).
        seed: makes the run repeatable (0 … 2**63 - 1).
        progress: ``progress(done, total, 0.0)`` during the inversion.

    Every option is checked (type and range) before the inversion starts.
    """
    # every option is checked before any work: the inversion alone takes minutes
    spec = get_transform(transform)
    steps = check_amounts(list(spec.default_amounts) if amounts is None else parse_alphas(amounts, param="amounts"))
    if generator.default_space != "z":
        raise invalid("generator", generator.spec, "a generator sampled in z (the inversion optimises z)")
    samples, batch_size = check_count("samples", samples, 2), check_count("batch_size", batch_size, 2)
    iterations, epochs = check_count("iterations", iterations), check_count("epochs", epochs)
    recalibrate = check_count("recalibrate", recalibrate, 0)
    lr, seed = check_positive("lr", lr), check_seed("seed", seed)
    sigma = None if sigma is None else check_positive("sigma", sigma, zero=True)
    if target not in TARGETS:
        raise invalid("target", target, " or ".join(map(repr, TARGETS)))
    cls = generator.resolve_class(class_id)
    if save_dataset is not None:  # the trajectories must not be lost to an unwritable path after the inversion
        check_writable_directory(Path(save_dataset).parent, param="save_dataset")
    if dataset is not None:
        data = TrajectoryData.load(dataset)
        if data.transform != transform:
            raise invalid("dataset", str(dataset), f"trajectories of {transform!r}", f"it holds {data.transform!r}")
        if data.z0.shape[1] != generator.space("z").dim:
            raise invalid("dataset", str(dataset), f"trajectories of {generator.space('z').dim}-d latents "
                          f"(those of {generator.spec})", f"it holds {data.z0.shape[1]}-d latents")
    else:
        z0 = clamp_to_ball(generator.sample(samples, seed=seed))
        report = (lambda done, total: progress(done, total, 0.0)) if progress else None
        data = invert_trajectories(generator, z0, transform, steps, iterations=iterations, lr=lr, sigma=sigma,
                                   class_id=cls, batch_size=batch_size, progress=report)
        if save_dataset is not None:
            data.save(save_dataset)
    deltas = _achieved(generator, data, cls, max(abs(a) for a in steps)) if target == "measured" else data.delta
    displacement = data.zt - data.z0
    per_unit = (displacement * deltas.unsqueeze(1)).sum(0) / deltas.square().sum()  # Δz per unit δ
    init = 2 * per_unit / per_unit.norm()  # ⟨v, z⟩ then has std ≈ 2 under the prior: spread over g's knots
    moved = displacement @ init
    slope = float((deltas * moved).sum() / moved.square().sum())  # g starts as the best straight line
    fit = fit_monotone(data.z0, data.zt, deltas, dim=data.z0.shape[1], epochs=epochs, seed=seed, init=init,
                       slope=slope)
    fitted_mse = fit["validation_mse"]
    reach = float(((data.zt - data.z0) @ fit["vector"]).abs().max())  # how far inversions went along v
    recalibrated = None
    if recalibrate and reach > 0:
        recalibrated = _recalibrate(generator, fit["vector"], transform, cls, count=recalibrate, reach=reach,
                                    largest=max(abs(a) for a in steps), seed=seed, epochs=epochs)
    if recalibrate and recalibrated is None:
        warnings.warn("regression: no edit along the fitted direction could be measured; the calibration is "
                      "the inversions' fit, not recalibrated", stacklevel=2)
    fit = recalibrated or fit
    knots_y = fit["knots_y"] - fit["knots_y"][len(fit["knots_y"]) // 2]  # g(0) = 0: amounts relative to the origin
    options = {"transform": transform, "samples": samples, "amounts": steps, "iterations": iterations, "lr": lr,
               "sigma": sigma, "batch_size": batch_size, "epochs": epochs, "class_id": cls, "target": target,
               "achieved_per_requested": float((deltas * data.delta).sum() / data.delta.square().sum()),
               "dataset": None if dataset is None else str(dataset), "triplets": int(data.delta.numel()),
               "recalibrate": recalibrate, "recalibrated": recalibrated is not None,
               "inversion_fit_validation_mse": fitted_mse,
               "train_mse": fit["train_mse"], "validation_mse": fit["validation_mse"],
               "inversion_error_median": float(data.error.median())}
    calibration = {"kind": KIND, "transform": transform, "factor": spec.factor, "units": spec.units,
                   "range": [float(knots_y[0]), float(knots_y[-1])]}
    return Directions.from_method(fit["vector"].unsqueeze(0), None, generator=generator, method="regression",
                                  options=options, space="z", seed=seed,
                                  calibration={"knots_x": fit["knots_x"], "knots_y": knots_y},
                                  calibration_meta=calibration)


def _recalibrate(generator, vector: torch.Tensor, transform: str, cls: int | None, *, count: int, reach: float,
                 largest: float, seed: int, epochs: int, offsets: int = 8) -> dict[str, torch.Tensor | float] | None:
    """Refit g on measured edits: ``count`` fresh latents moved by ``offsets`` strengths in ±1.5·reach
    along the unit ``vector``, the achieved amount of each found by registration; v stays fixed.
    None when fewer than 4 edits could be measured."""
    from latentdirs.measure import measure_amounts

    z = generator.sample(count, seed=seed + 104_729, classes=cls)  # disjoint from the inversion's seeds
    z = clamp_to_ball(z)
    steps = torch.linspace(-1.5 * reach, 1.5 * reach, offsets + 1)
    steps = steps[steps.abs() > 1e-9]  # the zero offset measures nothing
    vector = vector.to(z)
    z0 = z.repeat_interleave(len(steps), dim=0)
    zt = z0 + steps.repeat(count).unsqueeze(1).to(z) * vector
    span = 1.5 * largest
    achieved = []
    with torch.no_grad():
        for k in range(count):  # one latent and its edits per call: the source is rendered once
            sources = generator.synthesize(z[k:k + 1].to(generator.device), classes=cls)
            edited = generator.synthesize(zt[k * len(steps):(k + 1) * len(steps)].to(generator.device), classes=cls)
            achieved.append(measure_amounts(sources.expand_as(edited), edited, transform, low=-span, high=span,
                                            steps=31).cpu())
    deltas = torch.cat(achieved)
    # a registration at the edge of its search range says "at least this much", not how much
    measured = deltas.abs() < 0.97 * span
    z0, zt, deltas = z0[measured], zt[measured], deltas[measured]
    if deltas.numel() < 4:
        return None
    covered = float(torch.cat([z0 @ vector, zt @ vector]).abs().max())
    init = vector * (4.5 / covered)  # g's knots (±5 in ⟨init, z⟩) then cover every measured coordinate
    moved = (zt - z0) @ init
    slope = float((deltas * moved).sum() / moved.square().sum().clamp_min(1e-12))
    return fit_monotone(z0, zt, deltas, dim=z.shape[1], epochs=epochs, seed=seed, init=init,
                        slope=max(slope, 1e-3), learn_vector=False)


def _achieved(generator, data: TrajectoryData, cls: int | None, largest: float, chunk: int = 16) -> torch.Tensor:
    """The amount each inversion achieved: registration of G(zT) against G(z0), ``[M]``."""
    from latentdirs.measure import measure_amounts

    span = 1.5 * largest
    found = []
    with torch.no_grad():
        for start in range(0, data.delta.numel(), chunk):
            part = slice(start, start + chunk)
            sources = generator.synthesize(data.z0[part].to(generator.device), classes=cls)
            edited = generator.synthesize(data.zt[part].to(generator.device), classes=cls)
            found.append(measure_amounts(sources, edited, data.transform, low=-span, high=span, steps=31).cpu())
    return torch.cat(found)
