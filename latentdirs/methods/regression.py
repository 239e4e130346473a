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
3. Closed-loop recalibration (``recalibrate`` fresh latents): edit along v by strengths from
   reach/16 to 1.5·reach (geometric, both signs; :func:`recalibration_offsets`), measure what the
   edits achieve by registration, drop readings at the search edge or of the wrong sign
   (:func:`consistent`), refit g to the rest with v fixed, so the stored range is what edits do.
4. The direction file stores the unit v and g's knots (``calibration.knots_x/knots_y``), so
   ``latentdirs edit FILE --amounts -0.2:0.2:5`` moves each seed by the requested amount.

Deviations from the reference: v starts along the least-squares displacement per unit δt (scaled so
⟨v, z⟩ spreads over g's knots) and g as the best straight line; v learns at a tenth of g's rate (Adam
would otherwise let it drift into dimensions the data leaves free); default amounts 0.05 … 0.25
(the reference's 0.1 … 0.5 asks for shifts of half the image); the calibration is recalibrated on
measured edits, kept and used (the reference code discarded it); batch size for the inversion is a
measured choice for this CPU (see benchmarks/bench_regression.py); ``space="w"`` inverts in StyleGAN2's
w (the reference inverts BigGAN's z only), starting from the mapped w of sampled z, and fits v and g in
prior units of w (centred on w_avg, scaled by its std) so that g's knots mean the same as in z.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from latentdirs.atomic import check_writable_directory
from latentdirs.calibration import KIND, fit_monotone
from latentdirs.directions import Directions
from latentdirs.errors import check_count, check_positive, check_seed, invalid
from latentdirs.generators.base import GeneratorAdapter
from latentdirs.inversion import TrajectoryData, check_amounts, invert_trajectories, space_model
from latentdirs.latents import clamp_to_ball
from latentdirs.specs import parse_alphas
from latentdirs.transforms import get_transform

#: what the regression fits: the amount each inversion achieved, or the amount it asked for
TARGETS = ("measured", "requested")
#: the spaces the inversion can optimise: z, or the one flat intermediate space w (StyleGAN2's). Not w+:
#: a calibration is one direction of one flat space (``latentdirs edit --amounts`` refuses layered files)
SPACES = ("z", "w")
#: the closed loop measures edits at this many strengths per sign, geometrically spaced from
#: RECAL_SMALLEST·reach to 1.5·reach: small offsets are where registration of small objects is reliable
RECAL_OFFSETS, RECAL_SMALLEST = 5, 1 / 16


def regression(generator: GeneratorAdapter, *, transform: str = "shift-x", samples: int = 32,
               amounts: str | Sequence[float] | None = None,
               iterations: int = 50, lr: float = 0.01, sigma: float | None = None, batch_size: int = 16,
               epochs: int = 100, class_id: int | str | None = None, target: str = "measured",
               recalibrate: int = 32, space: str = "z", dataset: str | Path | None = None,
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
        space: where the inversion optimises and the direction lives — ``"z"`` (default), or ``"w"`` for
            generators with a flat w space (StyleGAN2): the starting latents are then the w of sampled z
            (the generator's own mapping), unconstrained, and the file edits in w. ``w+`` is not offered.
        dataset / save_dataset: reuse or keep the trajectory data (safetensors).
        seed: makes the run repeatable (0 … 2**63 - 1).
        progress: ``progress(done, total, 0.0)`` during the inversion.

    Every option is checked (type and range) before the inversion starts.
    """
    # every option is checked before any work: the inversion alone takes minutes
    spec = get_transform(transform)
    steps = check_amounts(list(spec.default_amounts) if amounts is None else parse_alphas(amounts, param="amounts"))
    space = _check_space(generator, space)
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
        if data.space != space:
            raise invalid("dataset", str(dataset), f"trajectories in {space!r} (the space asked for)",
                          f"it holds latents of {data.space!r}: pass space={data.space!r} or invert afresh")
        if data.z0.shape[1] != generator.space(space).dim:
            raise invalid("dataset", str(dataset), f"trajectories of {generator.space(space).dim}-d latents "
                          f"(those of {space!r} of {generator.spec})", f"it holds {data.z0.shape[1]}-d latents")
    else:
        z0 = _starts(generator, generator.sample(samples, seed=seed), space, cls)
        report = (lambda done, total: progress(done, total, 0.0)) if progress else None
        data = invert_trajectories(generator, z0, transform, steps, iterations=iterations, lr=lr, sigma=sigma,
                                   class_id=cls, batch_size=batch_size, progress=report, space=space)
        if save_dataset is not None:
            data.save(save_dataset)
    frame = _Frame.of(generator, space)
    deltas = _achieved(generator, data, cls, max(abs(a) for a in steps)) if target == "measured" else data.delta
    u0, ut = frame.inward(data.z0), frame.inward(data.zt)  # the fit runs in prior units, centred
    displacement = ut - u0
    per_unit = (displacement * deltas.unsqueeze(1)).sum(0) / deltas.square().sum()  # Δu per unit δ
    init = 2 * per_unit / per_unit.norm()  # ⟨v, u⟩ then has std ≈ 2 under the prior: spread over g's knots
    moved = displacement @ init
    slope = float((deltas * moved).sum() / moved.square().sum())  # g starts as the best straight line
    fit = fit_monotone(u0, ut, deltas, dim=u0.shape[1], epochs=epochs, seed=seed, init=init, slope=slope)
    fitted_mse = fit["validation_mse"]
    reach = float((displacement @ fit["vector"]).abs().max())  # how far inversions went along v (prior units)
    recalibrated = None
    if recalibrate and reach > 0:
        recalibrated = _recalibrate(generator, fit["vector"], transform, cls, count=recalibrate, reach=reach,
                                    largest=max(abs(a) for a in steps), seed=seed, epochs=epochs, frame=frame)
    if recalibrate and recalibrated is None:
        warnings.warn("regression: no edit along the fitted direction could be measured; the calibration is "
                      "the inversions' fit, not recalibrated", stacklevel=2)
    fit = recalibrated or fit
    # g(0) = 0: amounts relative to the prior's centre (z = 0, w = w_avg), g's middle knot
    knots_y = fit["knots_y"] - fit["knots_y"][len(fit["knots_y"]) // 2]
    options = {"transform": transform, "samples": samples, "amounts": steps, "iterations": iterations, "lr": lr,
               "sigma": sigma, "batch_size": batch_size, "epochs": epochs, "class_id": cls, "target": target,
               "achieved_per_requested": float((deltas * data.delta).sum() / data.delta.square().sum()),
               "dataset": None if dataset is None else str(dataset), "triplets": int(data.delta.numel()),
               "recalibrate": recalibrate, "recalibrated": recalibrated is not None, "space": space,
               "inversion_fit_validation_mse": fitted_mse,
               "train_mse": fit["train_mse"], "validation_mse": fit["validation_mse"],
               "inversion_error_median": float(data.error.median())}
    calibration = {"kind": KIND, "transform": transform, "factor": spec.factor, "units": spec.units,
                   "range": [float(knots_y[0]), float(knots_y[-1])]}
    return Directions.from_method(fit["vector"].unsqueeze(0), None, generator=generator, method="regression",
                                  options=options, space=space, seed=seed,
                                  calibration={"knots_x": frame.outward_knots(fit["knots_x"], fit["vector"]),
                                               "knots_y": knots_y},
                                  calibration_meta=calibration)


def _check_space(generator: GeneratorAdapter, space: object) -> str:
    """``space`` if the regression can invert in it on ``generator``, else a one-line refusal."""
    if space not in SPACES:
        raise invalid("space", space, "'z' or 'w' (w+ is not offered: a calibration moves one flat direction)",
                      "Use --opt space=z, or space=w on a StyleGAN2")
    if space not in generator.spaces or generator.space(space).layered:
        raise invalid("space", space, f"a flat space of {generator.spec} ({', '.join(generator.spaces)})",
                      "Use space=z; w exists on StyleGAN2-family generators")
    if space == "z" and generator.default_space != "z":
        raise invalid("generator", generator.spec, "a generator sampled in z (the inversion optimises z)")
    return space


def _starts(generator: GeneratorAdapter, z: torch.Tensor, space: str, cls: int | None) -> torch.Tensor:
    """Starting latents ``[N, D]`` of ``space`` from prior samples ``z [N, z_dim]``: in the ball ‖z‖ ≤ √d,
    then (for w) through the generator's own mapping."""
    z = clamp_to_ball(z)
    return z if space == "z" else generator.to_space(z, "z", space, classes=cls).detach().cpu()


@dataclass(frozen=True)
class _Frame:
    """Prior units of a space: ``u = (x − centre) / scale`` (identity in z). The regression and the closed
    loop work in u, so g's fixed knots (±5) and the init's spread mean the same in z and in w, whose
    centre is w_avg, not 0; the file then stores v (unchanged: the map is a scaled translation) and g's
    knots moved back to coordinates ⟨v, x⟩ of the space's own latents, which ``edit`` uses."""

    space: str
    centre: torch.Tensor
    scale: float

    @classmethod
    def of(cls, generator: GeneratorAdapter, space: str) -> "_Frame":
        if space == "z":
            return cls("z", torch.zeros(generator.space("z").dim), 1.0)
        model = space_model(generator, space)
        return cls(space, model.centre.detach().float().cpu(), float(model.scale))

    def inward(self, latents: torch.Tensor) -> torch.Tensor:
        """``[N, D]`` latents of the space → prior units."""
        return (latents.float().cpu() - self.centre) / self.scale

    def outward(self, units: torch.Tensor) -> torch.Tensor:
        """``[N, D]`` prior units → latents of the space."""
        return units * self.scale + self.centre

    def outward_knots(self, knots_x: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        """g's knots in ⟨v, u⟩ → in ⟨v, x⟩ (unit ``v``): ⟨v, x⟩ = scale·⟨v, u⟩ + ⟨v, centre⟩."""
        return knots_x * self.scale + float(vector.float().cpu() @ self.centre)


def recalibration_offsets(reach: float, per_sign: int = RECAL_OFFSETS,
                          smallest: float = RECAL_SMALLEST) -> torch.Tensor:
    """Strengths ``[2·per_sign]`` along v the closed loop measures: ``per_sign`` geometrically spaced
    magnitudes from ``smallest``·reach to 1.5·reach, both signs, ascending.

    Why geometric: far offsets alone (the former 8 evenly spaced in ±1.5·reach, none nearer than
    0.375·reach) moved small objects so far that registration failed or read the wrong sign
    (shapes-stylegan2), and a monotone g fitted to those alone went flat."""
    magnitudes = torch.logspace(math.log10(smallest * reach), math.log10(1.5 * reach), per_sign)
    return torch.cat([-magnitudes.flip(0), magnitudes])


def consistent(steps: torch.Tensor, deltas: torch.Tensor, span: float) -> torch.Tensor:
    """Which registrations ``deltas [M]`` of edits by ``steps [M]`` along v to keep (bool ``[M]``).

    Dropped: readings at the edge of the search range ±``span`` (they say "at least this much", not how
    much), and readings of the wrong sign beyond noise (2 % of the span): g is non-decreasing along v,
    so an edit by +s cannot achieve a clearly negative amount — a registration that says so has locked
    onto something else (a colour change, another object), and a least-squares refit would flatten g
    to split the difference."""
    inside = deltas.abs() < 0.97 * span
    agrees = deltas * steps.sign() > -0.02 * span
    return inside & agrees


def _recalibrate(generator, vector: torch.Tensor, transform: str, cls: int | None, *, count: int, reach: float,
                 largest: float, seed: int, epochs: int,
                 frame: "_Frame | None" = None) -> dict[str, torch.Tensor | float] | None:
    """Refit g on measured edits: ``count`` fresh latents moved by the strengths of
    :func:`recalibration_offsets` (prior units) along the unit ``vector``, the achieved amount of each
    found by registration, inconsistent readings dropped (:func:`consistent`); v stays fixed.
    Latents are in prior units of ``frame`` (z when None); returns the fit in those units, or None
    when fewer than 4 edits could be measured."""
    from latentdirs.measure import measure_amounts

    frame = frame or _Frame.of(generator, "z")
    space = frame.space
    z = generator.sample(count, seed=seed + 104_729, classes=cls)  # disjoint from the inversion's seeds
    z = frame.inward(_starts(generator, z, space, cls))
    steps = recalibration_offsets(reach)
    vector = vector.to(z)
    z0 = z.repeat_interleave(len(steps), dim=0)
    offsets = steps.repeat(count).to(z)
    zt = z0 + offsets.unsqueeze(1) * vector
    span = 1.5 * largest
    achieved = []
    with torch.no_grad():
        for k in range(count):  # one latent and its edits per call: the source is rendered once
            sources = generator.synthesize(frame.outward(z[k:k + 1]).to(generator.device), space=space, classes=cls)
            edited = generator.synthesize(frame.outward(zt[k * len(steps):(k + 1) * len(steps)]).to(generator.device),
                                          space=space, classes=cls)
            achieved.append(measure_amounts(sources.expand_as(edited), edited, transform, low=-span, high=span,
                                            steps=31).cpu())
    deltas = torch.cat(achieved)
    measured = consistent(offsets, deltas, span)
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
            sources = generator.synthesize(data.z0[part].to(generator.device), space=data.space, classes=cls)
            edited = generator.synthesize(data.zt[part].to(generator.device), space=data.space, classes=cls)
            found.append(measure_amounts(sources, edited, data.transform, low=-span, high=span, steps=31).cpu())
    return torch.cat(found)
