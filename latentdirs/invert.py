"""Real photos in: ``latentdirs.invert(generator, images, …) -> Latents``, with measured quality.

Images (files, directories, globs through :mod:`latentdirs.photos`, or a tensor ``[N, 3, R, R]`` in
[−1, 1]) are inverted in batches by the core of :mod:`latentdirs.inversion`:

1. **Start.** z spaces: the :data:`STARTS` best of :data:`START_CANDIDATES` prior samples by the loss
   (forward passes only; z = 0 is useless there: a DCGAN's ReLUs are all off near 0, zero gradient),
   searched together (2.); StyleGAN2 ``w``/``w+``: ``w_avg``; or an encoder's prediction
   (:class:`latentdirs.encoder.Encoder`; ``steps=0`` is encoder-only inversion).
2. **Search, and the class** (conditional generators, in spaces whose rendering takes a class). Where
   the class is a bias of an affine first layer (:attr:`SpaceModel.soft_classes
   <latentdirs.inversion.SpaceModel.soft_classes>`: dcgan-eyes) and every image has the same candidate
   classes, with ``class_search="soft"`` (the default is ``"race"``), a *soft class*: one row per candidate class and
   screened start, its class weights ``[K]`` leaning to that class (:data:`SOFT_LEAN`) and optimised
   with z; after the ``search`` each image keeps its best row; at :func:`_decision_step` the class is
   read from the weights (:func:`_read_classes`: the candidate nearest in what z cannot absorb of the
   first layer) and z is moved by least squares to keep the first layer's output, then the fit goes on
   under that class. Otherwise (the default; BigGAN, where the class enters through an embedding; an
   encoder's per-image candidates) *the best of the classes*: every
   candidate class (all classes, or those given; with a conditional encoder its
   :data:`ENCODER_CANDIDATES` most probable), each with its own screened starts, is optimised alongside
   for the first ``search`` of the steps; then each image keeps the best start of each of its
   :data:`FINALISTS` best classes (lowest loss), which race on to :func:`_decision_step` (the end, or
   where a feature offset joins), and there the finalist nearest the image by pixel MSE goes on alone
   (without classes: the best row after the search). Either way the class found is a real class: the
   photo re-renders under another class with the same content (LORD's class/content split); measured
   in docs/inversion.md, "Measured", "Classes".
3. **Optimisation.** Adam with a learning-rate ramp-up and cosine ramp-down, latent noise annealed to
   zero, an L2 activation penalty, ``‖z‖ ≤ √D`` in z spaces; StyleGAN2 ``w``/``w+`` also optimise the
   per-layer noise maps (renormalised, autocorrelation penalty); z of DCGANs also optimises a feature
   offset after the first (affine) layer over the last half of the steps, with an L2 penalty (on by
   default; the latents file holds it and every edit renders with it; z edits act on it exactly).
4. **Quality.** Per image: PSNR and MS-SSIM of the reconstruction *as the latents file re-renders it*
   (the generator's own noise, not optimised maps; with its feature offset), the latent's distance from the prior's mean
   against the prior's typical distance; :func:`editability` measures how directions act on the
   inverted latents compared with sampled ones.

Every option is checked before any work. Nothing here prints; ``progress(done, total)`` reports steps.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from latentdirs.errors import LatentDirsError, NotSupportedError, as_finite, check_count, check_positive, check_seed, invalid
from latentdirs.generators.base import GeneratorAdapter
from latentdirs.inversion import Inversion, Schedule, SpaceModel, space_model
from latentdirs.losses import DEFAULT_LOSS, ms_ssim, mse, parse_loss, psnr
from latentdirs.transforms import gaussian_blur

if TYPE_CHECKING:
    from latentdirs.directions import Directions
    from latentdirs.encoder import Encoder
    from latentdirs.latent_file import Latents
    from latentdirs.photos import PreparedPhotos

#: Adam steps per image (the optimiser's default)
STEPS = 500
#: peak learning rate
LR = 0.1
#: fractions of the steps: learning-rate ramp-up, cosine ramp-down, latent-noise annealing
RAMPUP, RAMPDOWN, NOISE_RAMP = 0.05, 0.25, 0.75
#: initial latent noise std per coordinate, in prior std, in z spaces: 0 — on dcgan-faces noise of 0.3
#: cost the photo 0.1–1.3 dB and did not help unseen seeds (docs/inversion.md, "Measured")
LATENT_NOISE_Z = 0.0
#: NVlabs' initial latent noise: 0.05 of the prior's typical distance from w_avg (all coordinates)
LATENT_NOISE_W_FRACTION = 0.05
#: weight of the L2 activation penalty (mean squared prior-standardised coordinate)
PENALTY = 0.0
#: weight of the noise maps' autocorrelation penalty (NVlabs' reg_noise_weight)
NOISE_PENALTY = 1e5
#: fraction of the steps for which all candidates (classes, starts) are optimised before each image keeps its best
SEARCH = 0.2
#: the most candidate classes searched without an explicit list
MAX_CLASS_CANDIDATES = 64
#: candidates taken from a conditional encoder's class probabilities
ENCODER_CANDIDATES = 3
#: conditional generators: the classes each image keeps after the search (each with its best start), raced
#: on until the class is decided (:func:`_decision_step`): after a fifth of a short run the loss ranked the
#: true class of 16 dcgan-eyes images first for 7, second for 3 (docs/inversion.md, "Measured")
FINALISTS = 2
#: True: for generators whose class is a bias of an affine first layer (:attr:`SpaceModel.soft_classes
#: <latentdirs.inversion.SpaceModel.soft_classes>`: dcgan-eyes), when every image has the same candidates,
#: a *soft class* instead of the race — class weights optimised with z, one row per image after the search,
#: until the decision, then the class read from them (:func:`_read_classes`). Off by default: on 16
#: dcgan-eyes images (60 steps) it found 15, 12, 13 true classes (inversion seeds 0–2) against the race's
#: 9, 8, 9 at 3/4 of its row-steps, but not the 15 of 16 asked of a default every time, and its
#: reconstructions were 1.5–3 dB lower (docs/inversion.md, "Classes"); so it is the option
#: ``class_search="soft"`` (``--class-search soft``), and the race is the default
CLASS_SEARCHES = ("race", "soft")
#: the soft class weights' peak learning rate (they start at 1/K and a class's weight should reach 1)
CLASS_LR = 0.05
#: the soft class's start weights: this much of the row's own candidate class, the rest equal over all the
#: candidates (0.5: 15, 12 and 13 of 16 true classes for inversion seeds 0–2; equal weights, one row per
#: start: 13, 10, 10 — docs/inversion.md, "Classes")
SOFT_LEAN = 0.5
#: images per batch
BATCH_SIZE = 32
#: z spaces: prior samples screened (forward passes only) for each image's starts
START_CANDIDATES = 64
#: z spaces: the best screened starts optimised together during the search, the best kept (a single
#: screened start stalled near 20 dB on 16 % of unseen dcgan-faces seeds; docs/inversion.md "Measured")
STARTS = 4
#: editability: SeFa directions measured (when no directions are given), sampled latents, strength
EDIT_DIRECTIONS, EDIT_SAMPLES, EDIT_STRENGTH = 5, 32, 3.0
#: feature offset (z of DCGANs, :attr:`GeneratorAdapter.feature_offset_shape`): on by default where the
#: generator supports it (docs/inversion.md, "Measured")
FEATURE_OFFSET = True
#: fraction of the steps after which the offset joins the optimised tensors (z alone before: the
#: latent explains what it can first, the offset only the rest)
OFFSET_FROM = 0.5
#: the offset's peak learning rate (feature units; the first layer's output has RMS ≈ 1–2 on dcgan-faces)
OFFSET_LR = 0.01
#: weight of the offset's L2 penalty, mean(r²) per image
OFFSET_PENALTY = 0.1


@dataclass(frozen=True)
class InversionOptions:
    """The inversion's settings (validated by :func:`inversion_options`); ``as_json()`` is what files record."""

    space: str
    steps: int = STEPS
    lr: float = LR
    loss: str = DEFAULT_LOSS
    latent_noise: float = LATENT_NOISE_Z
    penalty: float = PENALTY
    noise_maps: bool = False
    noise_penalty: float = NOISE_PENALTY
    search: float = SEARCH
    batch_size: int = BATCH_SIZE
    seed: int = 0
    start_candidates: int = START_CANDIDATES
    starts: int = STARTS
    rampup: float = RAMPUP
    rampdown: float = RAMPDOWN
    noise_ramp: float = NOISE_RAMP
    feature_offset: bool = False
    offset_penalty: float = OFFSET_PENALTY
    offset_from: float = OFFSET_FROM
    offset_lr: float = OFFSET_LR
    class_search: str = "race"

    def offset_start(self) -> int:
        """The step at which the feature offset joins (never inside the search)."""
        return max(round(self.offset_from * self.steps), round(self.search * self.steps) if self.steps else 0)

    def schedule(self) -> Schedule:
        return Schedule(self.steps, self.lr, self.rampup, self.rampdown, self.latent_noise, self.noise_ramp)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def default_latent_noise(model: SpaceModel) -> float:
    """z spaces: :data:`LATENT_NOISE_Z`; others: NVlabs' 0.05 of the prior's typical distance, per coordinate."""
    if model.project is not None:
        return LATENT_NOISE_Z
    return LATENT_NOISE_W_FRACTION * math.sqrt(math.prod(model.shape))


def inversion_options(generator: GeneratorAdapter, *, space: str | None = None, steps: int = STEPS, lr: float = LR,
                      loss: str = DEFAULT_LOSS, latent_noise: float | None = None, penalty: float = PENALTY,
                      noise_maps: bool | None = None, noise_penalty: float = NOISE_PENALTY,
                      search: float = SEARCH, batch_size: int = BATCH_SIZE,
                      seed: int = 0, start_candidates: int = START_CANDIDATES,
                      starts: int = STARTS, feature_offset: bool | None = None,
                      offset_penalty: float = OFFSET_PENALTY,
                      class_search: str = "race") -> tuple[InversionOptions, SpaceModel]:
    """Check every option against ``generator`` and fill the family defaults; see :func:`invert`."""
    chosen = generator.space(space).name
    steps, batch_size = check_count("steps", steps, 0), check_count("batch_size", batch_size)
    lr, penalty = check_positive("lr", lr), check_positive("penalty", penalty, zero=True)
    noise_penalty = check_positive("noise_penalty", noise_penalty, zero=True)
    search = as_finite(search)
    if search is None or not 0 < search <= 1:
        raise invalid("search", search, "a fraction of the steps in (0, 1]")
    if noise_maps is not None and not isinstance(noise_maps, bool):
        raise invalid("noise_maps", noise_maps, "True, False or None (StyleGAN2 w/w+: True)")
    spec = parse_loss(loss).spec
    wants_maps = noise_maps if noise_maps is not None else True
    model = space_model(generator, chosen, noise_maps=wants_maps)
    if noise_maps and not model.noise_resolutions:
        raise invalid("noise_maps", True, f"False for space {chosen!r} of {generator.spec!r}",
                      "Noise maps exist in StyleGAN2's w and w+ spaces of nets with noise inputs")
    noise = default_latent_noise(model) if latent_noise is None else check_positive("latent_noise", latent_noise,
                                                                                   zero=True)
    offset = _feature_offset(generator, model, feature_offset, steps)
    offset_penalty = check_positive("offset_penalty", offset_penalty, zero=True)
    if class_search not in CLASS_SEARCHES:
        raise invalid("class_search", class_search, " or ".join(map(repr, CLASS_SEARCHES)))
    if class_search == "soft" and not model.soft_classes:
        raise invalid("class_search", "soft", f"'race' for space {chosen!r} of {generator.spec!r}",
                      "The soft class needs a class that enters as a first-layer bias (dcgan-eyes in z); "
                      "drop --class-search")
    options = InversionOptions(space=chosen, steps=steps, lr=lr, loss=spec, latent_noise=noise, penalty=penalty,
                               noise_maps=bool(model.noise_resolutions), noise_penalty=noise_penalty,
                               search=search, batch_size=batch_size, seed=check_seed("seed", seed),
                               start_candidates=check_count("start_candidates", start_candidates, 1, 65536),
                               starts=check_count("starts", starts, 1, max(1, check_count("start_candidates",
                                                                                          start_candidates, 1))),
                               feature_offset=offset, offset_penalty=offset_penalty, class_search=class_search)
    return options, model


def _feature_offset(generator: GeneratorAdapter, model: SpaceModel, wanted: bool | None, steps: int) -> bool:
    """Whether the feature offset is optimised: by default (None) :data:`FEATURE_OFFSET` where the space
    has one and there are steps to optimise it (encoder-only inversion has none: it stays a v1 file)."""
    if wanted is None:
        return FEATURE_OFFSET and model.offset_shape is not None and steps > 0
    if not isinstance(wanted, bool):
        raise invalid("feature_offset", wanted, "True, False or None (default: on in z of DCGANs)")
    if wanted and model.offset_shape is None:
        raise invalid("feature_offset", True, f"False for space {model.name!r} of {generator.spec!r}",
                      "Feature offsets exist in z of DCGAN-family generators; drop --feature-offset")
    return wanted


# ---------------------------------------------------------------------------------------------- result
@dataclass
class InversionResult:
    """What :func:`invert_tensors` found, per image (CPU tensors).

    Attributes:
        latents: ``[N, D]`` or ``[N, L, D]`` in ``options.space``.
        classes: the class id per image (conditional spaces), else None.
        targets: ``[N, 3, R, R]`` in [−1, 1]: the images inverted.
        reconstructions: ``[N, 3, R, R]`` in [−1, 1]: the latents rendered as a latents file re-renders
            them (the generator's own noise).
        psnr, ms_ssim, error: ``[N]``: PSNR (dB), MS-SSIM of ``reconstructions``; final loss.
        distance: ``[N]``: the latent's distance from the prior's mean over the prior's typical distance
            (about 1 for a sampled latent; below 1: an "average" latent, above: off the prior).
        noise: the optimised noise maps ``[N, 1, R, R]`` per layer (StyleGAN2 w/w+), else None.
        psnr_with_noise: ``[N]`` PSNR rendered with the optimised noise maps, else None.
        offsets: the optimised feature offsets ``[N, *feature_offset_shape]`` (z of DCGANs with
            ``feature_offset``), else None; ``reconstructions``, ``psnr`` and ``ms_ssim`` include them.
        psnr_without_offset: ``[N]`` PSNR of the latents rendered without their offsets, else None.
        seconds: wall time of the optimisation (and encoder), all batches.
        start: where the optimisation started: ``"encoder"``, ``"given"``, ``"best of K prior samples"``
            (z spaces) or ``"prior mean"``.
        history: the mean per-image loss after each step, one list per batch.
    """

    latents: torch.Tensor
    classes: list[int] | None
    targets: torch.Tensor
    reconstructions: torch.Tensor
    psnr: torch.Tensor
    ms_ssim: torch.Tensor
    error: torch.Tensor
    distance: torch.Tensor
    options: InversionOptions
    noise: list[torch.Tensor] | None = None
    psnr_with_noise: torch.Tensor | None = None
    offsets: torch.Tensor | None = None
    psnr_without_offset: torch.Tensor | None = None
    seconds: float = 0.0
    history: list[list[float]] = field(default_factory=list)
    encoder: dict[str, Any] | None = None
    start: str = "prior mean"

    def __len__(self) -> int:
        return self.latents.shape[0]

    def row(self, k: int) -> dict[str, Any]:
        """Row ``k``'s metrics as JSON."""
        metrics = {"psnr": round(float(self.psnr[k]), 3), "ms_ssim": round(float(self.ms_ssim[k]), 4),
                   "loss": float(self.error[k]), "prior_distance": round(float(self.distance[k]), 4)}
        if self.psnr_with_noise is not None:
            metrics["psnr_with_noise_maps"] = round(float(self.psnr_with_noise[k]), 3)
        if self.offsets is not None:
            metrics["psnr_without_offset"] = round(float(self.psnr_without_offset[k]), 3)  # type: ignore[index]
            metrics["offset_rms"] = round(float(self.offsets[k].square().mean().sqrt()), 4)
        return metrics


# ---------------------------------------------------------------------------------------------- inversion
def _check_targets(generator: GeneratorAdapter, images: Any) -> torch.Tensor:
    size = generator.resolution
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != (3, size, size) \
            or images.shape[0] == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise invalid("images", shape, f"a tensor [N ≥ 1, 3, {size}, {size}] in [-1, 1], or image files",
                      "Prepare photos with latentdirs.photos.prepare_images")
    if not bool(torch.isfinite(images).all()):
        raise invalid("images", "a tensor with NaN or infinite values", "finite pixel values in [-1, 1]")
    return images.detach().to(generator.device, torch.float32)


def _candidates(generator: GeneratorAdapter, model: SpaceModel, classes: Any, count: int) -> list[list[int]] | None:
    """Per image, the class ids to search (one id: fixed); None when the space takes no class."""
    if not model.conditional:
        if classes is not None and not generator.conditional:
            generator.resolve_class(classes)  # the one-line refusal for a class on an unconditional net
        return None
    if classes is None:
        if generator.num_classes > MAX_CLASS_CANDIDATES:
            raise invalid("classes", None, f"candidate classes for {generator.spec!r} ({generator.num_classes} "
                          f"classes: more than the {MAX_CLASS_CANDIDATES} searched by default)",
                          "Give the classes to search (--class ID, repeatable)")
        return [list(range(generator.num_classes))] * count
    if isinstance(classes, torch.Tensor):
        classes = classes.tolist()
    values = list(classes) if isinstance(classes, (list, tuple)) else [classes]
    if not values:
        raise invalid("classes", [], "one class or more (names or ids)")
    ids = sorted({generator.resolve_class(v) for v in values})  # type: ignore[misc]
    return [ids] * count  # type: ignore[list-item]


def invert_tensors(generator: GeneratorAdapter, images: torch.Tensor, *, space: str | None = None,
                   steps: int = STEPS, lr: float = LR, loss: str = DEFAULT_LOSS, classes: Any = None,
                   encoder: "Encoder | str | os.PathLike[str] | None" = None, latent_noise: float | None = None,
                   penalty: float = PENALTY, noise_maps: bool | None = None, noise_penalty: float = NOISE_PENALTY,
                   search: float = SEARCH, batch_size: int = BATCH_SIZE, seed: int = 0,
                   start_candidates: int = START_CANDIDATES, starts: int = STARTS,
                   feature_offset: bool | None = None, offset_penalty: float = OFFSET_PENALTY,
                   class_search: str = "race", init: torch.Tensor | None = None,
                   progress: Callable[[int, int], None] | None = None) -> InversionResult:
    """Invert ``images [N, 3, R, R]`` (in [−1, 1]) into ``space``; see :func:`invert` for the options.

    ``init`` (``[N, …]`` in ``space``) replaces the start (the prior's mean or the encoder's prediction).
    """
    options, model = inversion_options(generator, space=space, steps=steps, lr=lr, loss=loss,
                                       latent_noise=latent_noise, penalty=penalty, noise_maps=noise_maps,
                                       noise_penalty=noise_penalty, search=search,
                                       batch_size=batch_size, seed=seed, start_candidates=start_candidates,
                                       starts=starts, feature_offset=feature_offset, offset_penalty=offset_penalty,
                                       class_search=class_search)
    targets = _check_targets(generator, images)
    count = targets.shape[0]
    if init is not None and (not isinstance(init, torch.Tensor) or tuple(init.shape) != (count, *model.shape)):
        raise invalid("init", tuple(init.shape) if isinstance(init, torch.Tensor) else type(init).__name__,
                      f"a tensor {(count, *model.shape)}: one start latent per image in {model.name!r}")
    encoder_model = _encoder(generator, encoder, model)
    candidates = _candidates(generator, model, classes, count)
    loss_function = parse_loss(options.loss).prepare()
    started = time.perf_counter()
    starts, encoder_info = _starts(model, targets, encoder_model, init)
    if encoder_model is not None and encoder_model.conditional and classes is None and candidates is not None:
        candidates = _encoder_candidates(encoder_model, targets)
    several = options.starts if starts is None and model.screened and options.steps else 1
    soft = _soft_ids(model, candidates, options)
    total = _total_steps(options, count, candidates, several, soft=soft is not None)
    done = 0

    def advance(steps_taken: int) -> None:
        nonlocal done
        done += steps_taken
        if progress is not None:
            progress(done, total)

    parts: list[dict[str, Any]] = []
    for first in range(0, count, options.batch_size):
        rows = slice(first, first + options.batch_size)
        parts.append(_invert_batch(model, targets[rows], None if starts is None else starts[rows],
                                   None if candidates is None else candidates[rows],
                                   loss_function, options, seed=options.seed + first, progress=advance))
    seconds = time.perf_counter() - started
    result = _result(model, targets, parts, options, seconds, encoder_info)
    result.start = ("given" if init is not None else "encoder" if encoder_model is not None else
                    f"best of {options.start_candidates} prior samples" if model.screened else "prior mean")
    return result


def _encoder(generator: GeneratorAdapter, encoder: Any, model: SpaceModel) -> "Encoder | None":
    if encoder is None:
        return None
    from latentdirs.encoder import Encoder

    loaded = encoder if isinstance(encoder, Encoder) else Encoder.load(encoder, generator=generator)
    if loaded.space.name != model.name:
        raise invalid("encoder", f"an encoder of space {loaded.space.name!r}", f"one of space {model.name!r} "
                      "(the inversion's)", f"Invert with --space {loaded.space.name}, or train an encoder for "
                      f"{model.name!r} (latentdirs train-encoder --space {model.name})")
    return loaded


def _starts(model: SpaceModel, targets: torch.Tensor, encoder: "Encoder | None",
            init: torch.Tensor | None) -> tuple[torch.Tensor | None, dict[str, Any] | None]:
    """The given or predicted starts (None: screened per batch, or the prior's mean), and the encoder's record."""
    info = None
    if init is not None:
        starts = init.detach().to(targets.device, torch.float32).clone()
    elif encoder is not None:
        began = time.perf_counter()
        starts = encoder(targets).detach().clone()
        info = {"seconds": round(time.perf_counter() - began, 4), "space": encoder.space.name,
                "fingerprint_checked": True, "training": encoder.meta.get("training")}
    elif model.screened:
        return None, None
    else:
        starts = model.start(targets.shape[0])
    if model.project is not None:
        model.project(starts)  # the optimiser keeps to the ball: so does its start
    return starts, info


def _encoder_candidates(encoder: "Encoder", targets: torch.Tensor) -> list[list[int]]:
    probabilities = encoder.class_probabilities(targets)
    top = probabilities.topk(min(ENCODER_CANDIDATES, probabilities.shape[1]), dim=1).indices
    return [sorted(int(c) for c in row) for row in top.cpu()]


def _search_steps(options: InversionOptions) -> int:
    return max(1, round(options.search * options.steps)) if options.steps else 0


def _decision_step(options: InversionOptions) -> int:
    """The step at which each image's finalist classes are compared: the end of the schedule (converged,
    the learning rate annealed: the true class is then clearly ahead), or, with a feature offset, the
    step it joins — an offset on the first layer's output could take over the class's own contribution
    there (the class enters that layer as a bias), so the class is decided by the latent alone."""
    decide = options.offset_start() if options.feature_offset else options.steps
    return max(decide, _search_steps(options))


def _total_steps(options: InversionOptions, count: int, candidates: list[list[int]] | None, several: int, *,
                 soft: bool = False) -> int:
    """Row-steps of the whole run (during the search, each candidate class and start counts; then each
    image's finalist classes until the decision). With the soft class, one row after the search."""
    search, decide = _search_steps(options), _decision_step(options)
    total = 0
    for ids in candidates if candidates is not None else [[0]] * count:
        width, racing = len(ids) * several, 1 if soft else min(FINALISTS, len(ids))
        total += options.steps if width == 1 else width * search + racing * (decide - search) + options.steps - decide
    return total


def _finalists(owner: torch.Tensor, classes: torch.Tensor | None, errors: torch.Tensor, count: int) -> torch.Tensor:
    """Rows kept after the search, image by image: the best row (lowest ``errors``) of each of the image's
    :data:`FINALISTS` best classes — its one best row when the rows have no class."""
    kept: list[int] = []
    for k in range(count):
        rows = torch.nonzero(owner == k).flatten()
        seen: list[int | None] = []
        for row in rows[errors[rows].argsort(stable=True)].tolist():
            label = None if classes is None else int(classes[row])
            if label not in seen:
                seen.append(label)
                kept.append(row)
            if len(seen) == FINALISTS or classes is None:
                break
    return torch.tensor(kept)


def _closest(owner: torch.Tensor, inversion: Inversion, count: int) -> torch.Tensor:
    """Per image, its row whose reconstruction is nearest the target by pixel MSE — the class decision:
    colour counts in it as much as structure (the classes of dcgan-eyes are iris colours)."""
    with torch.no_grad():
        errors = mse(inversion.images(), inversion.targets).cpu()
    rows = [torch.nonzero(owner == k).flatten() for k in range(count)]
    return torch.tensor([int(r[errors[r].argmin()]) for r in rows])


def _invert_batch(model: SpaceModel, targets: torch.Tensor, starts: torch.Tensor | None,
                  candidates: list[list[int]] | None,
                  loss: Callable, options: InversionOptions, *, seed: int,
                  progress: Callable[[int], None]) -> dict[str, Any]:
    """One batch: the class search (when there are several candidates: the soft class where
    :func:`_soft_ids` allows it, else the race), then the rest of the schedule."""
    count = targets.shape[0]
    owner = torch.arange(count)
    class_ids = None
    soft = _soft_ids(model, candidates, options)
    render = model.render
    if soft is not None:  # one row per (image, candidate class): weights leaning to it, screened under them
        mask = torch.zeros(model.generator.num_classes, device=targets.device)
        mask[soft] = 1.0
        lean = torch.eye(len(mask), device=targets.device)[soft]
        owner = torch.arange(count).repeat_interleave(len(soft))
        class_ids = (SOFT_LEAN * lean + (1 - SOFT_LEAN) * mask / len(soft)).repeat(count, 1)
        render = _masked_render(model, mask)
    elif candidates is not None:  # one row per (image, candidate class)
        owner = torch.tensor([k for k, ids in enumerate(candidates) for _ in ids])
        class_ids = torch.tensor([c for ids in candidates for c in ids], device=targets.device)
    rows = targets[owner.to(targets.device)]
    if starts is None:  # z spaces: each (image, class) row's best prior samples under its class
        several = options.starts if options.steps else 1
        begin = model.screen(rows, loss, candidates=options.start_candidates, seed=seed, classes=class_ids,
                             keep=several)
        several = begin.shape[1]
        begin = begin.flatten(0, 1)
        owner = owner.repeat_interleave(several)
        rows = rows.repeat_interleave(several, 0)
        class_ids = None if class_ids is None else class_ids.repeat_interleave(several, dim=0)
    else:
        begin = starts[owner.to(starts.device)]
        class_ids = None if class_ids is None or soft is None else class_ids[owner.to(class_ids.device)]
    noise = model.start_noise(len(owner), seed) if options.noise_maps else None
    offsets = (torch.zeros(len(owner), *model.offset_shape, device=rows.device)  # type: ignore[misc]
               if options.feature_offset else None)
    inversion = Inversion(render, begin, rows, loss,
                          options.schedule(), classes=None if soft else class_ids, project=model.project,
                          centre=model.centre, scale=model.scale, penalty=options.penalty, noise=noise,
                          noise_penalty=options.noise_penalty, offsets=offsets, offset_from=options.offset_start(),
                          offset_lr=options.offset_lr, offset_penalty=options.offset_penalty,
                          class_weights=class_ids if soft else None, class_lr=CLASS_LR, seed=seed)
    width = len(owner)
    if len(owner) > count and options.steps:
        inversion.run(_search_steps(options), progress=lambda _: progress(width))
    if len(owner) > count:  # each image keeps its best start of each of its best classes
        kept = _finalists(owner, inversion.classes, inversion.errors().cpu(), count)
        inversion.keep(kept)
        owner = owner[kept]
    racing = len(owner)
    if racing > count:  # the finalist classes race on, then each image keeps the closest
        inversion.run(_decision_step(options), progress=lambda _: progress(racing))
        inversion.keep(_closest(owner, inversion, count))
    if soft is not None:  # the soft class goes on to the decision, then becomes the class read from it
        inversion.run(_decision_step(options), progress=lambda _: progress(count))
        decided, latents = _read_classes(model, inversion.latents.detach(), inversion.class_weights.detach(), soft)
        inversion.harden(decided, latents)
    inversion.run(progress=lambda _: progress(count))
    return {"inversion": inversion, "history": inversion.history}


def _soft_ids(model: SpaceModel, candidates: list[list[int]] | None, options: InversionOptions) -> list[int] | None:
    """The candidate classes shared by every image when the soft class decides (``class_search="soft"``, a
    space with :attr:`SpaceModel.soft_classes`, steps to take, two candidates or more), else None."""
    if not (options.class_search == "soft" and candidates and model.soft_classes and options.steps):
        return None
    shared = candidates[0]
    return list(shared) if len(shared) > 1 and all(ids == shared for ids in candidates) else None


def _masked_render(model: SpaceModel, mask: torch.Tensor) -> Callable[..., torch.Tensor]:
    """``model.render`` with soft class weights ``[N, K]`` multiplied by ``mask [K]`` (1 for a candidate
    class): the weights of the other classes stay out of the image and get no gradient."""
    if bool(mask.all()):
        return model.render

    def render(latents: torch.Tensor, noise: Any, classes: torch.Tensor | None,
               offsets: torch.Tensor | None = None) -> torch.Tensor:
        if classes is not None and classes.is_floating_point():
            classes = classes * mask
        return model.render(latents, noise, classes, offsets)

    return render


def _read_classes(model: SpaceModel, latents: torch.Tensor, weights: torch.Tensor,
                  ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The class of each soft-class fit (z ``latents [N, D]``, ``weights [N, K]``), and its latent under it.

    The first layer's pre-activation is ``h = A·z + Bᵀw + b`` (:meth:`class_rows
    <latentdirs.generators.dcgan.DCGANAdapter.class_rows>`: ``A [D, F]``, ``B [K, F]``). For each
    candidate class ``c`` (``ids``) the hard class keeps ``h`` best when ``z`` moves by the least-squares
    ``δ`` with ``Aᵀδ ≈ Bᵀ(w − e_c)``; the class is the one whose residual, the part of ``Bᵀ(w − e_c)``
    outside the span of ``A``'s rows, is smallest — what z cannot absorb of the difference (one QR of
    ``Aᵀ`` for all). The latents returned are ``z + δ`` of the class chosen, kept in the ball.
    Returns ``(classes [N], latents [N, D])``.
    """
    rows_z, rows_c = model.generator.class_rows()  # type: ignore[attr-defined]
    basis, upper = torch.linalg.qr(rows_z.T)      # [F, D], [D, D]
    candidates = torch.tensor(list(ids), device=weights.device)
    one_hot = torch.eye(weights.shape[1], device=weights.device)[candidates]            # [C, K]
    change = (weights[:, None, :] - one_hot[None]) @ rows_c                            # [N, C, F]
    along = change @ basis                                                             # [N, C, D]
    residual = (change - along @ basis.T).square().sum(-1)                             # [N, C]
    best = residual.argmin(1)
    step = torch.linalg.solve_triangular(upper, along[torch.arange(len(best)), best].T, upper=True).T  # [N, D]
    moved = latents + step
    if model.project is not None:
        model.project(moved)
    return candidates[best], moved


def _result(model: SpaceModel, targets: torch.Tensor, parts: list[dict[str, Any]], options: InversionOptions,
            seconds: float, encoder_info: dict[str, Any] | None) -> InversionResult:
    runs: list[Inversion] = [p["inversion"] for p in parts]
    latents = torch.cat([r.latents.detach() for r in runs])
    class_ids = None if runs[0].classes is None else torch.cat([r.classes for r in runs])  # type: ignore[misc]
    offsets = (torch.cat([r.offsets.detach() for r in runs])  # type: ignore[union-attr]
               if options.feature_offset else None)
    with torch.no_grad():  # as the file re-renders: with the offsets it holds, without noise maps
        plain = torch.cat([model.render(r.latents.detach(), None, r.classes,
                                        None if r.offsets is None else r.offsets.detach()) for r in runs]).clamp(-1, 1)
        without_offset = (psnr(torch.cat([model.render(r.latents.detach(), None, r.classes) for r in runs])
                               .clamp(-1, 1), targets) if offsets is not None else None)
        errors = torch.cat([r.errors() for r in runs])
        noise = [torch.cat(maps) for maps in zip(*[r.noise for r in runs])] if options.noise_maps else None
        with_noise = torch.cat([psnr(r.images(), r.targets) for r in runs]) if noise else None
        quality_psnr, quality_ssim = psnr(plain, targets), ms_ssim(plain, targets)
    typical = math.sqrt(math.prod(model.shape))
    return InversionResult(
        latents=latents.cpu(), classes=None if class_ids is None else [int(c) for c in class_ids.tolist()],
        targets=targets.cpu(), reconstructions=plain.cpu(), psnr=quality_psnr.cpu(), ms_ssim=quality_ssim.cpu(), error=errors.cpu(),
        distance=(model.distance(latents) / typical).cpu(), options=options,
        noise=None if noise is None else [m.detach().cpu() for m in noise],
        psnr_with_noise=None if with_noise is None else with_noise.cpu(), seconds=seconds,
        offsets=None if offsets is None else offsets.cpu(),
        psnr_without_offset=None if without_offset is None else without_offset.cpu(),
        history=[p["history"] for p in parts], encoder=encoder_info)


# ---------------------------------------------------------------------------------------------- public API
def invert(generator: GeneratorAdapter, images: "torch.Tensor | str | os.PathLike[str] | Sequence[str | os.PathLike[str]]",
           *, space: str | None = None, steps: int = STEPS, lr: float = LR, loss: str = DEFAULT_LOSS,
           classes: Any = None, encoder: "Encoder | str | os.PathLike[str] | None" = None,
           latent_noise: float | None = None, penalty: float = PENALTY, noise_maps: bool | None = None,
           noise_penalty: float = NOISE_PENALTY, search: float = SEARCH, batch_size: int = BATCH_SIZE,
           seed: int = 0, start_candidates: int = START_CANDIDATES, starts: int = STARTS,
           feature_offset: bool | None = None, offset_penalty: float = OFFSET_PENALTY, class_search: str = "race",
           crop: str | None = None, allow_upscale: bool = False,
           directions: "Directions | str | os.PathLike[str] | None | bool" = None,
           progress: Callable[[int, int], None] | None = None) -> "Latents":
    """Invert photos (or images) into ``generator``'s latent space; returns a :class:`~latentdirs.latent_file.Latents`.

    Args:
        images: image files, directories and globs (prepared by :func:`latentdirs.photos.prepare_images`
            with ``crop`` and ``allow_upscale``; inputs that fail are skipped and listed in
            ``latents.meta["inversion"]["failed"]``), or a tensor ``[N, 3, R, R]`` in [−1, 1].
        space: ``z`` (DCGAN, BigGAN, module, StyleGAN2), ``w`` / ``w+`` (StyleGAN2); default: the
            generator's default space.
        steps: Adam steps per image (≥ 0; 0 with an ``encoder``: encoder-only inversion).
        lr: peak learning rate (ramped up over the first 5 % of the steps, cosine down over the last 25 %).
        loss: loss spec (:func:`latentdirs.losses.parse_loss`), default :data:`~latentdirs.losses.DEFAULT_LOSS`.
        classes: conditional generators: the class (or classes) to search; default: all of them.
        encoder: an :class:`~latentdirs.encoder.Encoder` or its file: the optimisation starts from its
            prediction (and, for a conditional one, searches its most probable classes).
        latent_noise: initial std of the Gaussian noise on the latent, per coordinate in prior std,
            annealed to 0 over the first 75 % of the steps (default: 0 in z, as measured; NVlabs' 0.05·√D in w).
        penalty: weight of the L2 activation penalty on the prior-standardised latent (default 0).
        noise_maps: StyleGAN2 w/w+: optimise the per-layer noise maps too (default True there).
        noise_penalty: weight of their autocorrelation penalty.
        search: fraction of the steps all candidates (classes; in z spaces the ``starts`` best of
            ``start_candidates`` screened prior samples) are optimised together before each image keeps its best.
        start_candidates, starts: z spaces: prior samples screened, and how many of the best are searched.
        feature_offset: z of DCGANs: also optimise a feature offset ``[C, 4, 4]`` per image, added after
            the generator's first (affine) layer, over the last half of the steps (default: on where the
            generator has one, :data:`FEATURE_OFFSET`). z edits act on it exactly; the latents file holds it.
        offset_penalty: weight of the offset's L2 penalty ``mean(r²)`` (default :data:`OFFSET_PENALTY`).
        class_search: conditional generators: ``"race"`` (default: the two best classes after the search
            race on) or ``"soft"`` (class weights optimised with z, the class read from them; generators
            whose class is a first-layer bias, dcgan-eyes: more often right, a little less sharp on short
            runs — docs/inversion.md, "Classes").
        batch_size: images optimised together. seed: the latent noise and the noise maps' start.
        directions: for the editability measure (:func:`editability`): a direction file or
            :class:`Directions`; None: SeFa's first :data:`EDIT_DIRECTIONS` where the generator allows
            it; False: not measured.
        progress: ``progress(done, total)`` in image-steps.
    """
    options, _ = inversion_options(generator, space=space, steps=steps, lr=lr, loss=loss, latent_noise=latent_noise,
                                   penalty=penalty, noise_maps=noise_maps, noise_penalty=noise_penalty,
                                   search=search, batch_size=batch_size, seed=seed,
                                   start_candidates=start_candidates, starts=starts,
                                   feature_offset=feature_offset, offset_penalty=offset_penalty,
                                   class_search=class_search)
    if options.steps == 0 and encoder is None:
        raise invalid("steps", 0, "≥ 1, or 0 together with an encoder (encoder-only inversion)",
                      "Give --encoder FILE, or --steps N")
    photos = _photos(generator, images, crop=crop, allow_upscale=allow_upscale)
    targets = photos.images if photos is not None else images
    result = invert_tensors(generator, targets, space=options.space, steps=options.steps, lr=options.lr,  # type: ignore[arg-type]
                            loss=options.loss, classes=classes, encoder=encoder, latent_noise=options.latent_noise,
                            penalty=options.penalty, noise_maps=options.noise_maps,
                            noise_penalty=options.noise_penalty, search=options.search,
                            batch_size=options.batch_size, seed=options.seed,
                            start_candidates=options.start_candidates, starts=options.starts,
                            feature_offset=options.feature_offset, offset_penalty=options.offset_penalty,
                            class_search=options.class_search, progress=progress)
    measured = None
    if directions is not False:
        measured = editability(generator, result.latents, space=options.space, classes=result.classes,
                               directions=directions or None, offsets=result.offsets)
    return latents_of(generator, result, photos=photos, editability_report=measured)


def _photos(generator: GeneratorAdapter, images: Any, *, crop: str | None, allow_upscale: bool) -> "PreparedPhotos | None":
    if isinstance(images, torch.Tensor):
        if crop is not None or allow_upscale:
            raise invalid("crop", crop, "None for a tensor of images (crop and allow_upscale prepare image files)")
        return None
    from latentdirs.photos import prepare_images

    return prepare_images(images, generator.resolution, crop=crop, allow_upscale=allow_upscale)


def latents_of(generator: GeneratorAdapter, result: InversionResult, *, photos: "PreparedPhotos | None" = None,
               editability_report: dict[str, Any] | None = None) -> "Latents":
    """The :class:`~latentdirs.latent_file.Latents` of a result, with per-row provenance and the settings."""
    from latentdirs.latent_file import Latents

    count = len(result)
    labels = photos.labels if photos is not None else [f"image {k}" for k in range(count)]
    rows = []
    for k in range(count):
        row: dict[str, Any] = {"metrics": result.row(k), "steps": result.options.steps}
        if photos is not None:
            row["source"] = photos.records[k].to_json()
        if editability_report is not None:
            row["editability"] = editability_report["rows"][k]
        rows.append(row)
    settings: dict[str, Any] = {"optimiser": "adam", **result.options.as_json(), "seconds": round(result.seconds, 3),
                                "start": result.start,
                                "class_selection": "best of the classes" if result.classes is not None else None,
                                "encoder": result.encoder,
                                "summary": summary(result)}
    if editability_report is not None:
        settings["editability"] = {k: v for k, v in editability_report.items() if k != "rows"}
    if photos is not None:
        settings["failed"] = [{"path": f.path, "error": f.message} for f in photos.failures]
    return Latents.create(result.latents, generator=generator, space=result.options.space, labels=labels, rows=rows,
                          classes=result.classes, inversion=settings, offsets=result.offsets)


def summary(result: InversionResult) -> dict[str, Any]:
    """Median, min and max PSNR and MS-SSIM of a result, and images per second."""
    def spread(values: torch.Tensor, digits: int) -> dict[str, float]:
        return {"median": round(float(values.median()), digits), "min": round(float(values.min()), digits),
                "max": round(float(values.max()), digits)}

    return {"images": len(result), "psnr": spread(result.psnr, 3), "ms_ssim": spread(result.ms_ssim, 4),
            "prior_distance": spread(result.distance, 4),
            "images_per_second": round(len(result) / result.seconds, 4) if result.seconds > 0 else None}


# ---------------------------------------------------------------------------------------------- editability
def editability(generator: GeneratorAdapter, latents: torch.Tensor, *, space: str, classes: Sequence[int] | None = None,
                directions: "Directions | str | os.PathLike[str] | None" = None, samples: int = EDIT_SAMPLES,
                strength: float = EDIT_STRENGTH, seed: int = 1_000_003,
                offsets: torch.Tensor | None = None) -> dict[str, Any] | None:
    """How directions act on ``latents`` (inverted) compared with latents sampled from the prior.

    For each direction ``v`` and latent ``ℓ``, the *edit* is the blurred image change
    ``Δ(ℓ) = blur(G(ℓ + s·v)) − blur(G(ℓ))`` (σ = 1.5 px at 64 px, scaled; ``s`` = ``strength``). Its
    reference is the mean edit ``Δ̄`` of ``samples`` sampled latents. Reported, per inverted latent
    and for the sampled ones (each against the mean of the others):

    * ``correlation``: the Pearson correlation of ``Δ(ℓ)`` with ``Δ̄``, mean over directions — does
      the direction do the same thing (turn the head, relight) on this latent as on samples?
    * ``magnitude``: ``‖Δ(ℓ)‖`` over the sampled latents' mean ``‖Δ‖`` — does it do as much?
    * ``prior_distance``: ``‖ℓ − centre‖ / scale`` over the sampled latents' mean.

    ``directions``: a :class:`Directions`, a direction file, or None for SeFa's first
    :data:`EDIT_DIRECTIONS`. ``offsets``: the inverted latents' feature offsets ``[N, C, H, W]`` (they
    render with them, edited and not; the sampled latents have none). Returns None (nothing measured)
    where no directions exist or the latents cannot be mapped to the directions' space.
    """
    chosen = _edit_directions(generator, directions)
    if chosen is None:
        return None
    found, source = chosen
    edit_space = found.space
    try:
        from latentdirs.latent_file import check_mapping

        check_mapping(generator, space, edit_space)
    except LatentDirsError:  # an unmappable pair of spaces: editability is not measured, the inversion stands
        return None
    if offsets is not None and edit_space != space:  # an offset has no counterpart in another space
        return None
    model = space_model(generator, space)
    ids = None if classes is None else torch.tensor(list(classes), device=generator.device)
    sample_ids = None if not generator.conditional else (
        torch.tensor([ids[k % len(ids)] for k in range(samples)]) if ids is not None else None)
    with torch.no_grad():
        inverted = latents.to(generator.device)
        sampled = generator.sample(samples, seed=seed, space=space, classes=sample_ids)
        own = _edits(generator, inverted, space, found, ids, strength,
                     offsets=None if offsets is None else offsets.to(generator.device))
        others = _edits(generator, sampled, space, found, sample_ids, strength)
        reference = others.mean(0)  # [K, P]
        count = others.shape[0]
        leave_one_out = (reference.unsqueeze(0) * count - others) / max(1, count - 1)
        corr_inverted = _pearson(own, reference.unsqueeze(0).expand_as(own)).mean(1)       # [N]
        corr_sampled = _pearson(others, leave_one_out).mean(1)                             # [S]
        size_sampled = others.norm(dim=2).mean(0)                                          # [K]
        magnitude_inverted = (own.norm(dim=2) / size_sampled).mean(1)
        magnitude_sampled = (others.norm(dim=2) / size_sampled).mean(1)
        distance_sampled = model.distance(sampled).mean()
        distance_inverted = model.distance(inverted) / distance_sampled
    rows = [{"correlation": round(float(c), 4), "magnitude": round(float(m), 4), "prior_distance": round(float(d), 4)}
            for c, m, d in zip(corr_inverted, magnitude_inverted, distance_inverted)]
    return {"directions": source, "count": min(EDIT_DIRECTIONS, len(found)), "strength": strength, "samples": samples,
            "space": edit_space,
            "inverted": {"correlation": round(float(corr_inverted.mean()), 4),
                         "magnitude": round(float(magnitude_inverted.mean()), 4),
                         "prior_distance": round(float(distance_inverted.mean()), 4)},
            "sampled": {"correlation": round(float(corr_sampled.mean()), 4),
                        "magnitude": round(float(magnitude_sampled.mean()), 4), "prior_distance": 1.0},
            "rows": rows}


def _edit_directions(generator: GeneratorAdapter, directions: Any) -> "tuple[Directions, str] | None":
    """The directions measured (at most :data:`EDIT_DIRECTIONS`) and where they came from, or None."""
    from latentdirs.directions import Directions

    if directions is None:
        from latentdirs.api import discover

        try:
            return discover(generator, "sefa", num_directions=EDIT_DIRECTIONS), f"sefa (first {EDIT_DIRECTIONS})"
        except NotSupportedError:
            return None
    if isinstance(directions, Directions):
        return directions, "given"
    return Directions.load(directions, generator=generator), str(directions)


def _edits(generator: GeneratorAdapter, latents: torch.Tensor, space: str, directions: "Directions",
           classes: torch.Tensor | None, strength: float, chunk: int = 32,
           offsets: torch.Tensor | None = None) -> torch.Tensor:
    """Blurred image changes ``[N, K, P]`` of ``latents`` moved by ``strength`` along each direction
    (the first :data:`EDIT_DIRECTIONS`; the file's layers, as an edit moves them), each rendered with
    its row's feature offset when ``offsets [N, C, H, W]`` are given."""
    from latentdirs.edit import shift

    sigma = 1.5 * generator.resolution / 64
    edit_space = directions.space
    mapped = generator.to_space(latents, space, edit_space, classes=classes) if space != edit_space else latents
    out = []
    for first in range(0, mapped.shape[0], chunk):
        part = mapped[first:first + chunk]
        ids = None if classes is None else classes[first:first + chunk]
        offset = None if offsets is None else offsets[first:first + chunk]
        base = gaussian_blur(generator.synthesize(part, space=edit_space, classes=ids, offsets=offset),
                             sigma).flatten(1)
        changes = []
        for index in range(min(EDIT_DIRECTIONS, len(directions))):
            moved = generator.synthesize(shift(part, directions, index=index, alpha=strength), space=edit_space,
                                         classes=ids, offsets=offset)
            changes.append(gaussian_blur(moved, sigma).flatten(1) - base)
        out.append(torch.stack(changes, dim=1))
    return torch.cat(out)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation over the last axis."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-12)


__all__ = ["InversionOptions", "InversionResult", "editability", "invert", "invert_tensors", "inversion_options",
           "latents_of", "summary"]
