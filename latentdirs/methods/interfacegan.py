"""InterFaceGAN — a linear boundary in the latent space that separates labelled samples.

Paper: Shen, Gu, Tang & Zhou, "Interpreting the Latent Space of GANs for Semantic Face Editing",
CVPR 2020 (arXiv 1907.10786). Reference code: github.com/genforce/interfacegan (MIT),
``utils/manipulator.py`` (``train_boundary``, ``project_boundary``).

Algorithm:

1. Labels for latents, from one of three sources: a file of seed → value or class that the user
   wrote (:mod:`latentdirs.labels`); a scorer the user names, ``scorer="module:pkg.mod:score"``
   (images ``[N, 3, H, W]`` in [-1, 1] → ``[N]`` scores; imported only because the user passed its
   name; nothing read from a file ever names one); or a built-in measurable attribute
   (:data:`ATTRIBUTES`: mean brightness, a transform's registration against the image of the mean
   latent, or ``factor:NAME`` read by the generator's own factor reader, ``read_factors``).
2. A continuous score is turned into two classes as the reference does: the top and bottom ``ratio``
   of the samples by score are positive and negative. Class labels are used as they are (a
   multi-class file picks one class against the rest with ``positive``).
3. A linear classifier (scikit-learn's ``LinearSVC`` or ``LogisticRegression``) is fitted on four
   fifths; its accuracy on the held-out fifth is the direction's score. The boundary's unit normal
   is the direction, pointing to the positive class (the higher score).
4. Conditional boundaries: the normal minus its projection onto the span of any number of other
   directions (``conditions``: direction files of the same generator and space), renormalised.
5. For a continuous score, the latent coordinate along the (projected) normal is calibrated against
   the score: a monotone piecewise-linear map (least squares with non-negative slopes, stored as the
   knots of the project's calibration), so ``latentdirs edit FILE --amounts 0.1`` asks for "+0.1 of the
   score" as for ``-m regression``.

Deviations from the reference:

* ``LinearSVC`` (liblinear, primal) instead of ``SVC(kernel="linear")`` (libsvm, whose cost grows with
  the square of the sample count), or logistic regression on request;
* default ``ratio`` 0.25 instead of 0.02: the reference picks 2 % of 500 000 samples; at the few
  thousand samples a CPU renders in a minute, 2 % leaves too few per side for a 100-d boundary;
* a held-out fifth (the issue's measure) instead of a 70/30 split of the chosen samples;
* any number of conditions, by an orthonormal (SVD) basis of their span (the reference handles at most two, by the
  closed form for two), and a refusal when the boundary lies (almost) inside their span;
* calibration of the distance to a continuous score (the reference edits by raw distance only).
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from latentdirs.calibration import KIND, interpolate
from latentdirs.directions import Directions
from latentdirs.errors import (NotSupportedError, PluginError, UnknownNameError, check_count, check_positive,
                               check_seed, describe_allowed, invalid)
from latentdirs.generators.base import GeneratorAdapter
from latentdirs.labels import Labels, LabelsError, labels_from_values, read_labels

#: built-in attributes (``factor:NAME`` besides, for generators that read their factors)
TRANSFORM_ATTRIBUTES = ("shift-x", "shift-y", "zoom", "rotation")
ATTRIBUTES = ("brightness", *TRANSFORM_ATTRIBUTES)
CLASSIFIERS = ("svm", "logistic")
#: knots of the stored calibration, spread evenly between the 1st and 99th percentile of the coordinate
#: (few: a smooth map; a per-sample isotonic fit made a staircase whose steps jolted single edits)
CALIBRATION_KNOTS = 9
_SPLIT_SEED_OFFSET = 7_919


def interfacegan(generator: GeneratorAdapter, *, attribute: str | None = None, labels: str | Path | None = None,
                 scorer: str | Callable[..., Any] | None = None, positive: str | None = None, samples: int = 2000,
                 ratio: float = 0.25, classifier: str = "svm", c: float = 1.0,
                 conditions: str | Sequence[str] | None = None, space: str | None = None,
                 class_id: int | str | None = None, batch_size: int = 64, seed: int = 0) -> Directions:
    """Discover the boundary direction of one attribute (InterFaceGAN).

    Args:
        attribute / labels / scorer: exactly one source of labels — a built-in attribute
            (``brightness``, ``shift-x``, ``shift-y``, ``zoom``, ``rotation``, ``factor:NAME``); a labels
            file (:mod:`latentdirs.labels`: seed → value or class); or a scorer ``"module:pkg.mod:fn"`` (a
            callable in Python) mapping images ``[N, 3, H, W]`` in [-1, 1] to scores ``[N]``.
        positive: the positive class of a labels file with more than two classes (or, with two, which of
            them the direction points to; default the second in sorted order).
        samples: latents rendered and scored for an attribute or scorer (≥ 10; a labels file brings its own).
        ratio: fraction of the samples taken from each end of a continuous score (0 < ratio ≤ 0.5).
        classifier: ``"svm"`` (linear SVM) or ``"logistic"``; ``c``: its inverse regularisation (> 0).
        conditions: direction files (of this generator and space) whose directions are projected out;
            ``"FILE#SPEC"`` takes rows ``SPEC`` (e.g. ``0-2``) of a file, plain ``FILE`` all its rows.
        space: a flat latent space of the generator (default its default space; ``w`` for StyleGAN).
        class_id: the class rendered by a conditional generator (default class 0).
        batch_size: images rendered at a time; seed: which latents (0 … 2**63 - 1) and the split.

    Returns:
        One direction; scores ``[held-out accuracy]`` (``score_kind="heldout_accuracy"``); a continuous
        score also gets a calibration (``--amounts`` in the score's units).
    """
    sources = [name for name, value in (("attribute", attribute), ("labels", labels), ("scorer", scorer))
               if value is not None]
    if len(sources) != 1:
        raise invalid("attribute / labels / scorer", sources or None, "exactly one source of labels: "
                      f"attribute={'|'.join(ATTRIBUTES)}|factor:NAME, labels=FILE or scorer=module:pkg.mod:fn")
    samples, batch_size = check_count("samples", samples, 10), check_count("batch_size", batch_size, 1)
    seed = check_seed("seed", seed)
    ratio = check_positive("ratio", ratio)
    if ratio > 0.5:
        raise invalid("ratio", ratio, "a fraction in (0, 0.5] taken from each end of the scores")
    c = check_positive("c", c)
    if classifier not in CLASSIFIERS:
        raise invalid("classifier", classifier, " or ".join(map(repr, CLASSIFIERS)))
    space_name = _check_space(generator, space)
    cls = generator.resolve_class(class_id)
    condition_vectors, condition_record = _load_conditions(generator, conditions, space_name)
    if labels is not None:
        labelled = read_labels(labels)
        score = _Score(f"labels {labelled.source}", "label value", lambda images: images)  # never called
        with torch.no_grad():
            latents = generator.sample_seeds(list(labelled.seeds), space=space_name, classes=cls)
    else:
        score = _resolve_source(generator, attribute=attribute, scorer=scorer)
        with torch.no_grad():
            latents = generator.sample(samples, seed=seed, space=space_name, classes=cls)
        labelled = labels_from_values(_score_all(generator, latents, space_name, cls, score, batch_size),
                                      source=score.name)
    latents = latents.detach().to("cpu", torch.float32)
    targets, chosen, positive_name = _binary_targets(labelled, positive, ratio)
    fit = fit_boundary(latents[chosen], targets, classifier=classifier, c=c, seed=seed)
    normal = project_out(fit["normal"], condition_vectors)
    options: dict[str, Any] = {
        "attribute": attribute, "labels": None if labels is None else str(labels),
        "scorer": scorer if isinstance(scorer, str) or scorer is None else getattr(scorer, "__name__", "callable"),
        "positive": positive_name, "samples": len(labelled.seeds), "ratio": ratio, "classifier": classifier,
        "c": c, "conditions": condition_record, "space": space_name, "class_id": cls, "batch_size": batch_size,
        "trained_on": fit["trained_on"], "heldout": fit["heldout"], "heldout_accuracy": fit["accuracy"]}
    calibration = calibration_meta = None
    if labelled.continuous:
        values = torch.tensor(labelled.values, dtype=torch.float64)
        normal, calibration, quality = calibrate(latents, values, normal, seed=seed)
        options["calibration_heldout_r2"] = quality
        calibration_meta = {"kind": KIND, "transform": score.name, "factor": score.name, "units": score.units,
                            "range": [float(calibration["knots_y"][0]), float(calibration["knots_y"][-1])]}
    directions = Directions.from_method(normal.unsqueeze(0).float(), torch.tensor([fit["accuracy"]]),
                                        generator=generator, method="interfacegan", options=options,
                                        space=space_name, seed=seed, score_kind="heldout_accuracy",
                                        calibration=calibration, calibration_meta=calibration_meta)
    directions.set_label(0, positive_name if not labelled.continuous else score.name)
    return directions


# ---------------------------------------------------------------------------------------------- fitting
def fit_boundary(latents: torch.Tensor, targets: torch.Tensor, *, classifier: str = "svm", c: float = 1.0,
                 seed: int = 0, heldout: float = 0.2) -> dict[str, Any]:
    """Fit a linear classifier to ``latents [N, D]`` and 0/1 ``targets [N]`` on a random ``1 − heldout``
    of them; returns ``normal`` (unit ``[D]`` float64, towards class 1), held-out ``accuracy`` (in
    [0, 1]) and the sizes ``trained_on`` / ``heldout``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    order = torch.randperm(targets.numel(), generator=torch.Generator().manual_seed(seed + _SPLIT_SEED_OFFSET))
    held = max(1, int(round(heldout * targets.numel())))
    test, train = order[:held], order[held:]
    if targets[train].unique().numel() < 2:
        raise invalid("labels", "one class in the training part", "samples of both classes", "Label more samples",
                      cls=LabelsError)
    x, y = latents.double().numpy(), targets.long().numpy()
    if classifier == "svm":
        model = LinearSVC(C=c, dual="auto", max_iter=20_000, random_state=seed % 2**32)
    else:
        model = LogisticRegression(C=c, max_iter=5_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # liblinear's convergence notes: the held-out accuracy says how it went
        model.fit(x[train.numpy()], y[train.numpy()])
    accuracy = float((model.predict(x[test.numpy()]) == y[test.numpy()]).mean())
    weights = torch.from_numpy(model.coef_.reshape(-1).copy()).double()
    if not torch.isfinite(weights).all() or weights.norm() == 0:
        raise invalid("labels", "a boundary with zero normal", "labels that a linear boundary can separate",
                      cls=LabelsError)
    return {"normal": weights / weights.norm(), "accuracy": accuracy, "trained_on": int(train.numel()),
            "heldout": int(test.numel())}


def project_out(normal: torch.Tensor, conditions: torch.Tensor | None) -> torch.Tensor:
    """``normal [D]`` minus its projection onto the span of the rows of ``conditions [M, D]``, unit length.

    Any number of conditions (the reference: at most two); dependent rows are fine (an SVD basis of their
    span is used). Refused when the normal lies within 1e-3 of that span.
    """
    if conditions is None or conditions.numel() == 0:
        return normal
    # an orthonormal basis of the span: left singular vectors of the non-zero singular values (a plain QR
    # would keep an arbitrary column for each dependent row)
    u, singular, _ = torch.linalg.svd(conditions.double().T, full_matrices=False)  # [D, M]
    basis = u[:, singular > 1e-6 * singular.max()]
    projected = normal.double() - basis @ (basis.T @ normal.double())
    if projected.norm() < 1e-3:
        raise invalid("conditions", f"{basis.shape[1]} independent directions",
                      "conditions that leave part of the boundary free",
                      "The boundary lies in their span; condition on fewer directions", cls=NotSupportedError)
    return projected / projected.norm()


def calibrate(latents: torch.Tensor, values: torch.Tensor, normal: torch.Tensor, *, seed: int = 0,
              knots: int = CALIBRATION_KNOTS) -> tuple[torch.Tensor, dict[str, torch.Tensor], float]:
    """A monotone piecewise-linear map from the coordinate ``⟨n, x⟩`` to the score, by least squares
    with non-negative slopes (``scipy.optimize.nnls``) on ``knots`` knots spread evenly between the 1st and
    99th percentile of the coordinate (constant outside them: no extrapolation).

    Fitted on four fifths of ``latents [N, D]`` / ``values [N]``. Returns the (possibly flipped, so that
    the score rises along it) unit ``normal``, the knots ``{"knots_x", "knots_y"}`` (float32 ``[knots]``;
    ``knots_y`` relative to the origin's score, so amounts are changes of the score) and the map's R² on
    the held-out fifth.
    """
    from scipy.optimize import nnls

    coordinate = latents.double() @ normal.double()
    centred = coordinate - coordinate.mean()
    if float((centred * (values - values.mean())).sum()) < 0:
        normal, coordinate = -normal, -coordinate
    low, high = torch.quantile(coordinate, torch.tensor([0.01, 0.99], dtype=torch.float64)).tolist()
    if not high > low:
        raise invalid("labels", "scores that do not vary along the boundary", "a score that changes with the latent",
                      cls=LabelsError)
    xs = torch.linspace(low, high, knots, dtype=torch.float64)
    order = torch.randperm(values.numel(), generator=torch.Generator().manual_seed(seed + _SPLIT_SEED_OFFSET))
    held = max(1, values.numel() // 5)
    test, train = order[:held], order[held:]
    ramps = _ramps(coordinate, xs)  # [N, J - 1]: g(s) = intercept + ramps · slopes, slopes ≥ 0
    design = torch.cat([ramps, torch.ones(len(ramps), 1, dtype=torch.float64),
                        -torch.ones(len(ramps), 1, dtype=torch.float64)], dim=1)  # a free intercept as c⁺ − c⁻
    solution, _ = nnls(design[train].numpy(), values[train].numpy(), maxiter=50 * design.shape[1])
    solution = torch.from_numpy(solution)
    predicted = design[test] @ solution
    spread = (values[test] - values[test].mean()).square().sum()
    quality = float(1 - (predicted - values[test]).square().sum() / spread) if spread > 0 else float("nan")
    ys = _ramps(xs, xs) @ solution[:-2]
    origin = interpolate(torch.zeros(1, dtype=torch.float64), xs, ys)[0]  # amounts are relative to the origin
    return normal, {"knots_x": xs.float(), "knots_y": (ys - origin).float()}, quality


def _ramps(s: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """``[N, J − 1]``: how far each ``s [N]`` lies into each knot interval of ``xs [J]`` (0 … its width)."""
    return (s.unsqueeze(1) - xs[:-1]).clamp(min=0).minimum(xs[1:] - xs[:-1])


def _binary_targets(labelled: Labels, positive: str | None, ratio: float) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(0/1 targets [M], indices of the samples they label [M], the positive side's name)``."""
    values = torch.tensor(labelled.values, dtype=torch.float64)
    if labelled.continuous:
        if positive is not None:
            raise invalid("positive", positive, "none for a continuous score (its higher end is positive)",
                          "Drop --opt positive")
        per_side = max(3, int(ratio * values.numel()))
        per_side = min(per_side, values.numel() // 2)
        order = torch.argsort(values, stable=True)
        chosen = torch.cat([order[:per_side], order[-per_side:]])
        targets = torch.cat([torch.zeros(per_side), torch.ones(per_side)])
        return targets, chosen, f"higher {labelled.source}"
    names = labelled.classes
    if positive is None:
        if len(names) > 2:
            raise invalid("positive", None, f"one of the classes {describe_allowed(names)} (the file has "
                          f"{len(names)}; the boundary separates one from the rest)", "Pass --opt positive=CLASS")
        positive = names[1]
    if str(positive) not in names:
        raise invalid("positive", positive, describe_allowed(names), cls=UnknownNameError)
    index = float(names.index(str(positive)))
    return (values == index).float(), torch.arange(values.numel()), str(positive)


# ---------------------------------------------------------------------------------------------- sources
class _Score:
    """``score(images [B, 3, H, W]) -> [B]`` with a ``name`` (recorded, and the calibration's transform)
    and ``units``; ``needs_reference``: the registration attributes compare against one image."""

    def __init__(self, name: str, units: str, function: Callable[..., torch.Tensor], needs_reference: bool = False):
        self.name, self.units, self.function, self.needs_reference = name, units, function, needs_reference


def _resolve_source(generator: GeneratorAdapter, *, attribute: str | None, scorer: Any) -> _Score:
    if scorer is not None:
        function, name = _load_scorer(scorer)
        return _Score(name, "score of the scorer", function)
    return _attribute(generator, attribute)


def _attribute(generator: GeneratorAdapter, attribute: str) -> _Score:
    from latentdirs.transforms import get_transform

    if attribute == "brightness":
        return _Score("brightness", get_transform("brightness").units, lambda images: images.mean(dim=(1, 2, 3)))
    if attribute in TRANSFORM_ATTRIBUTES:
        spec = get_transform(attribute)
        span = 1.5 * max(spec.default_amounts)

        def registered(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
            from latentdirs.measure import measure_amounts

            return measure_amounts(reference.expand_as(images), images, attribute, low=-span, high=span, steps=41)

        return _Score(attribute, spec.units, registered, needs_reference=True)
    if isinstance(attribute, str) and attribute.startswith("factor:"):
        name = attribute.split(":", 1)[1]
        with torch.no_grad():
            probe = generator.read_factors(generator.synthesize(generator.sample(2, seed=0)))
        readable = sorted(k for k, v in (probe or {}).items() if isinstance(v, torch.Tensor) and v.dim() == 1)
        if not readable:
            raise invalid("attribute", attribute, f"{describe_allowed(ATTRIBUTES)} ({generator.spec} has no factor "
                          "reader, so factor:NAME cannot be read)", cls=NotSupportedError)
        if name not in readable:
            raise invalid("attribute", attribute, describe_allowed([*ATTRIBUTES, *(f"factor:{k}" for k in readable)]),
                          cls=UnknownNameError)
        return _Score(attribute, "factor reader units (latentdirs.scenes)",
                      lambda images: generator.read_factors(images)[name])
    raise invalid("attribute", attribute, describe_allowed([*ATTRIBUTES, "factor:NAME"]), cls=UnknownNameError)


def _load_scorer(scorer: Any) -> tuple[Callable[..., Any], str]:
    """A callable from ``"module:pkg.mod:fn"`` (imported now, because the user named it), or the callable."""
    if callable(scorer):
        return scorer, f"scorer {getattr(scorer, '__name__', 'callable')}"
    text = scorer if isinstance(scorer, str) else ""
    prefix, _, target = text.partition(":")
    module_name, sep, function_name = target.rpartition(":")
    if prefix != "module" or not sep or not module_name or not function_name:
        raise invalid("scorer", scorer,
                      "module:PACKAGE.MODULE:FUNCTION (images [N, 3, H, W] in [-1, 1] → scores [N])",
                      cls=UnknownNameError)
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # ImportError, or the user's module failing as it imports
        raise invalid("scorer", scorer, "module:PACKAGE.MODULE:FUNCTION naming an importable module",
                      f"Python cannot import {module_name!r} ({type(error).__name__}: {str(error)[:160]}); check "
                      "the name and that it is on PYTHONPATH", cls=UnknownNameError) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise invalid("scorer", scorer, "module:PACKAGE.MODULE:FUNCTION naming a callable",
                      f"{module_name!r} has no callable {function_name!r}", cls=UnknownNameError)
    return function, f"scorer {text}"


def _score_all(generator: GeneratorAdapter, latents: torch.Tensor, space: str, cls: int | None, score: _Score,
               batch_size: int) -> list[float]:
    """Render ``latents`` in batches and score every image; a scorer's output is checked per batch."""
    values: list[float] = []
    with torch.no_grad():
        reference = None
        if score.needs_reference:  # the image of the mean latent: what the registration measures against
            reference = generator.synthesize(latents.mean(dim=0, keepdim=True), space=space, classes=cls)
        for start in range(0, latents.shape[0], batch_size):
            images = generator.synthesize(latents[start:start + batch_size], space=space, classes=cls)
            raw = score.function(images, reference) if reference is not None else _call(score, images)
            values += _as_scores(raw, images.shape[0], score.name).tolist()
    return values


def _call(score: _Score, images: torch.Tensor) -> Any:
    try:
        return score.function(images)
    except Exception as error:
        if not score.name.startswith("scorer"):
            raise
        raise invalid("scorer", score.name.split(" ", 1)[1], "a scorer that maps images [N, 3, H, W] to scores [N]",
                      f"it raised {type(error).__name__}: {str(error)[:160]}", cls=PluginError) from None


def _as_scores(raw: Any, count: int, name: str) -> torch.Tensor:
    try:
        scores = torch.as_tensor(raw.detach().cpu() if isinstance(raw, torch.Tensor) else raw, dtype=torch.float64)
    except Exception:
        raise invalid(name, type(raw).__name__, f"{count} numbers (a tensor, array or list [N])",
                      cls=PluginError) from None
    if scores.dim() == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if tuple(scores.shape) != (count,):
        raise invalid(name, f"scores of shape {tuple(scores.shape)}", f"one score per image: shape ({count},)",
                      cls=PluginError)
    return scores


# ---------------------------------------------------------------------------------------------- checks
def _check_space(generator: GeneratorAdapter, space: str | None) -> str:
    chosen = generator.space(space)
    if chosen.layered:
        flat = [name for name, s in generator.spaces.items() if not s.layered]
        raise invalid("space", space, f"a flat space: {describe_allowed(flat)}", cls=NotSupportedError)
    return chosen.name


def _load_conditions(generator: GeneratorAdapter, conditions: str | Sequence[str] | None,
                     space: str) -> tuple[torch.Tensor | None, list[dict[str, Any]]]:
    """Rows ``[M, D]`` of the condition files, each checked against the generator (fingerprint) and space."""
    from latentdirs.specs import parse_index_spec

    if conditions is None:
        return None, []
    entries = [conditions] if isinstance(conditions, str) else list(conditions)
    rows, record = [], []
    for entry in entries:
        if not isinstance(entry, str) or not entry:
            raise invalid("conditions", entry, "direction file paths, optionally FILE#ROWS (e.g. b.safetensors#0-2)")
        path, indices = entry, None
        if not Path(entry).exists() and "#" in entry:
            path, spec = entry.rsplit("#", 1)
            indices = parse_index_spec(spec, param="conditions")
        loaded = Directions.load(path, generator=generator)  # a file of other weights is refused here
        if loaded.space != space or loaded.latent_dim != generator.space(space).dim:
            raise invalid("conditions", entry, f"directions in {space!r} ({generator.space(space).dim}-d), the "
                          "boundary's space", f"it holds {loaded.latent_dim}-d directions in {loaded.space!r}")
        chosen = list(range(len(loaded))) if indices is None else [loaded.check_index(i, param="conditions")
                                                                   for i in indices]
        rows.append(loaded.vectors[chosen])
        record.append({"file": path, "rows": chosen, "method": loaded.method_name})
    return torch.cat(rows).double(), record


__all__ = ["ATTRIBUTES", "calibrate", "fit_boundary", "interfacegan", "project_out"]
