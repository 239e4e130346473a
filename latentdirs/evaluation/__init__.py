"""Evaluate and compare direction files: VP, ground truth, effect profiles, calibration accuracy.

``evaluate(paths, …)`` returns plain JSON-able results, grouped by generator: files made on different
generators are reported separately, never mixed, and a file that cannot be read is reported with its
error instead of stopping the others. :mod:`.report` turns the result into a self-contained HTML page.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch

from latentdirs.directions import Directions, read_header
from latentdirs.errors import LatentDirsError, invalid
from latentdirs.evaluation.factors import effect_matrix, reads_factors, require_factor_source
from latentdirs.evaluation.profile import effect_profile, ground_truth
from latentdirs.evaluation.sharing import check_units, on_main
from latentdirs.evaluation.vp import PAIR_BATCH, pair_batches, random_basis, variation_predictability
from latentdirs.generators.base import GeneratorAdapter
from latentdirs.transforms import list_transforms

if TYPE_CHECKING:
    from latentdirs.distributed import Ranks

log = logging.getLogger(__name__)
#: ``factors=`` of :func:`evaluate_directions`
FACTOR_MODES = ("auto", "yes", "no")


def evaluate_directions(generator: GeneratorAdapter, directions: Directions, *, top: int = 8, pairs: int = 2000, epochs: int = 4,
                        vp_seeds: int = 2, strength: float | tuple[float, float] = 3.0, seed: int = 0,
                        factors: str = "auto", factor_samples: int = 64, factor_step: float = 1.0,
                        class_id: int | str | None = None, ranks: Ranks | None = None) -> dict[str, Any]:
    """All metrics for the first ``top`` directions of one file on its generator.

    ``strength``: the VP pairs' |δ| range ``(low, high)``, or ``high`` for ``(high/2, high)``; the effect
    profile steps by ±high and ±high/2.
    ``factors``: the direction × factor matrix (:mod:`.factors`, ``factor_samples`` latents, steps of
    ±``factor_step``) — ``"auto"``: on generators that read their factors or know their directions;
    ``"yes"``: required (a generator with neither is refused); ``"no"``: skipped.
    ``class_id``: the class a conditional generator renders (default class 0).
    ``ranks`` (torchrun): every rank calls this alike; the ranks share the rendering and all return rank 0's
    result, the one-process result (docs/scale.md, "Evaluate")."""
    from latentdirs.specs import parse_strength_range

    strength = parse_strength_range(strength)
    if factors not in FACTOR_MODES:
        raise invalid("factors", factors, " or ".join(map(repr, FACTOR_MODES)))
    if factors == "yes":  # refused before the minutes of VP training, not after
        require_factor_source(generator)
    vectors = directions.vectors[:top].to(generator.device)
    common = {"space": directions.space, "layers": directions.layers,
              "class_id": generator.resolve_class(class_id)}
    runs, floors = [], []
    for k in range(vp_seeds if len(vectors) >= 2 else 0):  # VP needs two directions to tell apart
        floor = random_basis(len(vectors), vectors.shape[1], seed + 1000 + k).to(vectors)
        run, floor_run = variation_predictability(generator, [vectors, floor], pairs=pairs, epochs=epochs,
                                                  strength=strength, seed=seed + k, ranks=ranks, **common)
        runs.append(run)
        floors.append(floor_run)
    result: dict[str, Any] = {
        "directions": len(vectors),
        "vp": sum(r["accuracy"] for r in runs) / len(runs) if runs else None,
        "vp_random_floor": sum(r["accuracy"] for r in floors) / len(floors) if floors else None,
        "vp_chance": 1 / len(vectors),
        "seconds": {"render": sum(r["render_seconds"] for r in runs + floors),
                    "train": sum(r["train_seconds"] for r in runs + floors)},
        "profile": effect_profile(generator, vectors, strength=strength[1], seed=seed, ranks=ranks, **common),
    }
    truth = generator.true_directions
    if truth is not None:
        result["ground_truth"] = ground_truth(truth, directions.vectors)
    if factors == "yes" or (factors == "auto" and (truth is not None or reads_factors(generator))):
        result["factor_matrix"] = {"labels": [directions.label_of(i) for i in range(len(vectors))],
                                   **effect_matrix(generator, vectors, samples=factor_samples, step=factor_step,
                                                   seed=seed, ranks=ranks, **common)}
    calibration = directions.meta.get("calibration")
    if calibration and calibration.get("transform") in list_transforms():
        # a calibration against a registered transform can be re-measured here; one against a user's labels
        # file or scorer (InterFaceGAN) cannot, and the rest of the evaluation still runs
        from latentdirs.measure import measure_calibration, probe_amounts

        # requests within half the calibrated range, so the table shows the calibration's accuracy, not
        # what happens at the edge of what was measured
        amounts = probe_amounts(calibration)
        if amounts is not None:
            # under torchrun the ranks share its batches and its registration chunks (most of its time), and
            # every rank ends with the one-process rows
            rows = measure_calibration(generator, directions, seeds=list(range(16)), amounts=amounts, clamp=True,
                                       class_id=common["class_id"], ranks=ranks)
            result["calibration"] = [row.__dict__ for row in rows]
            result["calibration_units"] = calibration.get("units", "")
    return result


def evaluate(paths: Sequence[str | Path], *, generator_spec: str | None = None,
             generator_options: Mapping[str, Any] | None = None, device: str = "auto",
             content_style: bool = False, ranks: Ranks | None = None, **options: Any) -> dict[str, Any]:
    """Evaluate several files; returns ``{"generators": {spec: [file results]}, "errors": [...]}``.

    Each file's generator is reloaded from its header as it was loaded (spec and loader options), unless
    ``generator_spec`` / ``generator_options`` (the CLI's ``-g`` / ``--gen-opt``) say otherwise — by the
    rules of :func:`~latentdirs.registry.generator_request`; a spec read from a file never imports code.
    Each file result records the ``generator_options`` it was evaluated with. With ``content_style``,
    ``"content_style"`` holds per generator the figures of
    :func:`~latentdirs.evaluation.content_style.content_style_figures` (or the error that stopped them).
    Under ``ranks`` (torchrun; every rank calls this alike, each on ``ranks.device``) the rendering is shared
    and every rank returns the one-process result; more ranks than batches of VP pairs are refused first.
    """
    from latentdirs.registry import generator_request, load_generator

    if ranks is not None:  # refused before any file is read: every rank refuses alike, none waits
        check_units(pair_batches(options.get("pairs", evaluate_directions.__kwdefaults__["pairs"])), ranks,
                    what=f"batches of {PAIR_BATCH} VP pairs",
                    fix=f"Launch fewer processes, or pass --pairs {PAIR_BATCH * ranks.world_size} or more")
    target: str | torch.device = device if ranks is None else ranks.device  # each rank its own device
    loaded: dict[tuple[str, str], GeneratorAdapter] = {}
    grouped: dict[str, list[dict[str, Any]]] = {}
    errors = []
    for path in paths:
        try:
            header = read_header(path)
            spec, chosen = generator_request(header.get("generator"), spec=generator_spec,
                                             options=generator_options)
            key = (spec, json.dumps(chosen, sort_keys=True))  # same spec, other options: another generator
            if key not in loaded:
                loaded[key] = load_generator(spec, device=target, **chosen)
            generator = loaded[key]
            directions = Directions.load(path, generator=generator)
            with torch.random.fork_rng():
                metrics = evaluate_directions(generator, directions, ranks=ranks, **options)
            grouped.setdefault(spec, []).append({"file": str(path), "method": directions.method_name,
                                                 "labels": directions.meta.get("labels", {}),
                                                 "generator_options": dict(generator.load_options), **metrics})
        except (LatentDirsError, OSError) as error:
            log.warning("evaluate: %s: %s", path, error)
            errors.append({"file": str(path), "error": str(error)})
    results = {"generators": grouped, "errors": errors, "options": options}
    if content_style:  # opt-in: a split and two renders per generator
        results["content_style"] = {generator.spec: on_main(lambda g=generator: _content_style(g, options.get(
                                    "seed", 0)), ranks) for generator in loaded.values()}  # rank 0's, broadcast
    return results


def _content_style(generator: GeneratorAdapter, seed: int) -> dict[str, Any]:
    from latentdirs.evaluation.content_style import content_style_figures

    try:
        with torch.random.fork_rng():
            return content_style_figures(generator, seed=seed)
    except LatentDirsError as error:  # e.g. no usable split: reported, the direction figures stand
        log.warning("evaluate: content/style of %s: %s", generator.spec, error)
        return {"error": str(error)}
