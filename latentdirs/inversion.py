"""The inversion core: batched latent optimisation shared by every caller (``latentdirs invert`` and the
regression method), and the regression method's trajectories.

**The core** (:class:`Inversion`): latents of a batch of images advance together under one Adam, the
loss a sum of per-image losses — Adam's update is per element, so a row's trajectory is the one it
would have alone, and a batch of N costs one generator pass instead of N. On top of plain Adam, the
practices of the best projectors (NVlabs' StyleGAN2 projector) and LORD's regularisation, each an
option (:class:`Schedule`, :class:`Inversion`):

* learning rate with a linear ramp-up and a cosine ramp-down;
* Gaussian noise on the latent, annealed to zero (LORD; NVlabs' latent noise);
* an L2 activation penalty on the latent's distance from the prior's mean, in prior units (LORD);
* a constraint after each step: ``‖z‖ ≤ √D`` (:func:`latentdirs.latents.clamp_to_ball_`) in the
  Gaussian ``z`` spaces, where the prior's mass is;
* StyleGAN2: per-layer noise maps optimised alongside (:meth:`StyleGAN2Adapter.synthesize_with_noise
  <latentdirs.generators.stylegan2.StyleGAN2Adapter.synthesize_with_noise>`), renormalised to mean 0,
  std 1 after every step, with a multi-scale autocorrelation penalty (:func:`noise_regularisation`)
  so they stay noise and do not take over the image;
* a feature offset (z of DCGANs, :attr:`GeneratorAdapter.feature_offset_shape
  <latentdirs.generators.base.GeneratorAdapter.feature_offset_shape>`): ``[N, C, H, W]`` added after
  the generator's affine first layer, joining the optimised tensors at a given step, with an L2
  penalty — a richer space whose z edits stay exact;
* rows can be dropped mid-run with their Adam state (:meth:`Inversion.keep`): the class search of
  conditional generators (:mod:`latentdirs.invert`) keeps each image's best class that way.

:func:`space_model` says, for a generator and a space, how latents of that space are rendered,
constrained, started (the prior's mean: z = 0, w = w_avg) and scaled.

**The regression method's trajectories** (Plumerault et al., ICLR 2020; :func:`invert_trajectories`):
for latents ``z0``, render ``x0 = G(z0)``; for each sign and each amount ``t`` (increasing), invert the
target ``T(x0, ±t)`` — always transformed from the original image, by the cumulative amount —
warm-starting from the previous optimum with a fresh Adam at a constant learning rate, keeping
‖z‖ ≤ √d, minimising the mean squared error between Gaussian-blurred generated and target images over
the pixels the transform defines (:func:`invert_images`, a caller of the core). A low-pass loss: a
low-dimensional latent cannot match fine texture, and plain MSE inverts badly. All latents and both
signs advance together, ``batch_size`` rows per generator pass. The result is a :class:`TrajectoryData`
of (z0, zT, δt, error) triplets, worst decile dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from latentdirs.atomic import atomic_path
from latentdirs.errors import DirectionFileError, as_finite, check_count, check_positive, invalid
from latentdirs.generators.base import GeneratorAdapter
from latentdirs.latents import clamp_to_ball_
from latentdirs.transforms import gaussian_blur, get_transform

#: render(latents [N, …], noise maps or None, class ids [N] or None) → images [N, C, H, W] in [−1, 1];
#: an :class:`Inversion` with feature offsets passes them as a fourth argument ``[N, C, H, W]``
Render = Callable[..., torch.Tensor]
#: per-image loss: (generated, target) → [N]
PerImageLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: samples of a space drawn to estimate its mean and scale where the prior is not known in closed form
SPACE_SAMPLES = 4096
#: the smallest noise map the autocorrelation penalty looks at (pixels)
NOISE_MIN_SIDE = 8


# ================================================================================================ core
@dataclass(frozen=True)
class Schedule:
    """Learning rate and latent noise over ``steps`` Adam steps (the shape of NVlabs' projector).

    At step ``t`` (0-based) of ``T``, with ``u = t / T``:

    * learning rate ``lr · min(1, (t + 1) / (rampup · T)) · (½ − ½ cos(π · min(1, (1 − u) / rampdown)))``
      — a linear ramp-up over the first ``rampup`` of the steps, a cosine ramp-down over the last
      ``rampdown``; a factor is 1 when its fraction is 0 (``Schedule(T, lr)`` is plain constant Adam);
    * latent noise std ``noise · max(0, 1 − u / noise_ramp)²``, in units of the prior's std per
      coordinate, so the last ``1 − noise_ramp`` of the steps fit the noise-free latent.
    """

    steps: int
    lr: float
    rampup: float = 0.0
    rampdown: float = 0.0
    noise: float = 0.0
    noise_ramp: float = 0.75

    def lr_at(self, step: int) -> float:
        u = step / max(1, self.steps)
        warm = min(1.0, (step + 1) / (self.rampup * self.steps)) if self.rampup > 0 else 1.0
        cool = 0.5 - 0.5 * math.cos(math.pi * min(1.0, (1.0 - u) / self.rampdown)) if self.rampdown > 0 else 1.0
        return self.lr * warm * cool

    def noise_at(self, step: int) -> float:
        if self.noise <= 0:
            return 0.0
        u = step / max(1, self.steps)
        return self.noise * max(0.0, 1.0 - u / self.noise_ramp) ** 2 if self.noise_ramp > 0 else 0.0


def noise_regularisation(maps: Sequence[torch.Tensor], *, min_side: int = NOISE_MIN_SIDE) -> torch.Tensor:
    """Multi-scale autocorrelation penalty of noise maps ``[N, 1, R, R]`` → ``[N]``.

    For each map and each scale (the map, then 2×2-averaged and rescaled to keep white noise at unit
    std, while the side is ≥ ``min_side``): the squared lag-1 autocorrelation along x plus along y. Zero
    in expectation for white noise; large when a map has grown structure (an image hidden in the noise).
    """
    total = None
    for noise in maps:
        current = noise
        while True:
            across = (current * current.roll(1, dims=3)).mean(dim=(1, 2, 3)).square()
            down = (current * current.roll(1, dims=2)).mean(dim=(1, 2, 3)).square()
            total = across + down if total is None else total + across + down
            if min(current.shape[-2:]) // 2 < min_side:
                break
            current = F.avg_pool2d(current, 2) * 2.0
    if total is None:
        raise ValueError("noise_regularisation needs at least one map")
    return total


def normalise_noise_(maps: Sequence[torch.Tensor]) -> None:
    """Each map ``[N, 1, R, R]`` in place to mean 0, std 1 per row (under ``no_grad``)."""
    for noise in maps:
        noise.sub_(noise.mean(dim=(1, 2, 3), keepdim=True))
        noise.div_(noise.square().mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-8))


class Inversion:
    """A batch of inversions advancing together (see the module docstring).

    Args:
        render: ``render(latents, noise, classes) → images [N, C, H, W]`` (:data:`Render`), differentiable.
        init: start latents ``[N, …]`` (copied).
        targets: images ``[N, C, H, W]`` to match.
        loss: per-image loss ``(generated, target) → [N]``.
        schedule: learning rate and latent noise (:class:`Schedule`).
        classes: class ids ``[N]`` passed to ``render`` (conditional generators), or None.
        project: in-place constraint applied to the latents after every step (e.g. the ball), or None.
        centre, scale: the prior's mean (broadcastable to the latents) and std per coordinate; the
            latent noise and the activation penalty are in these units.
        penalty: weight of the L2 activation penalty ``mean(((latents − centre) / scale)²)`` per image.
        noise: start noise maps ``[N, 1, R, R]`` to optimise (copied, then kept normalised), or None.
        noise_penalty: weight of :func:`noise_regularisation` of the maps.
        offsets: start feature offsets ``[N, *feature_offset_shape]`` (usually zeros; copied), or None.
            From step ``offset_from`` on they are optimised with the latents (the same loss, the same
            Adam, learning rate ``offset_lr`` under the schedule's ramps) and ``render`` gets them as a
            fourth argument; before, they enter the render as constants.
        offset_from: the step at which the offsets join the optimised tensors.
        offset_lr: their peak learning rate (default: the schedule's ``lr``).
        offset_penalty: weight of their L2 penalty ``mean(r²)`` per image (LORD's activation penalty,
            on the feature offset): what the latent can explain, the offset should not.
        class_weights: start *soft class* weights ``[N, K]`` (conditional generators with the hook
            ``synthesize_class_weights``; copied), or None. Optimised with the latents (learning rate
            ``class_lr`` under the schedule's ramps) and passed to ``render`` in place of ``classes``
            until :meth:`harden` replaces them by class ids.
        class_lr: their peak learning rate (default: the schedule's ``lr``).
        seed: seeds the latent noise.
    """

    def __init__(self, render: Render, init: torch.Tensor, targets: torch.Tensor, loss: PerImageLoss,
                 schedule: Schedule, *, classes: torch.Tensor | None = None,
                 project: Callable[[torch.Tensor], object] | None = None, centre: torch.Tensor | float = 0.0,
                 scale: float = 1.0, penalty: float = 0.0, noise: Sequence[torch.Tensor] | None = None,
                 noise_penalty: float = 0.0, offsets: torch.Tensor | None = None, offset_from: int = 0,
                 offset_lr: float | None = None, offset_penalty: float = 0.0,
                 class_weights: torch.Tensor | None = None, class_lr: float | None = None, seed: int = 0) -> None:
        if init.shape[0] != targets.shape[0] or (classes is not None and classes.shape[0] != init.shape[0]):
            raise ValueError(f"Inversion: {init.shape[0]} latents for {targets.shape[0]} targets")
        self.render, self.loss, self.schedule, self.project = render, loss, schedule, project
        self.centre, self.scale, self.penalty, self.noise_penalty = centre, float(scale), float(penalty), float(noise_penalty)
        self.latents = init.detach().clone().requires_grad_(True)
        self.noise = [m.detach().clone().requires_grad_(True) for m in (noise or [])]
        #: the feature offsets ``[N, C, H, W]`` (optimised from ``offset_from``), or None
        self.offsets = None if offsets is None else offsets.detach().clone().requires_grad_(True)
        if self.offsets is not None and self.offsets.shape[0] != init.shape[0]:
            raise ValueError(f"Inversion: {self.offsets.shape[0]} offsets for {init.shape[0]} latents")
        self.offset_from, self.offset_penalty = int(offset_from), float(offset_penalty)
        self.offset_lr = float(schedule.lr if offset_lr is None else offset_lr)
        self.targets = targets.detach()
        self.classes = classes
        #: the soft class weights ``[N, K]`` (optimised until :meth:`harden`), or None
        self.class_weights = None if class_weights is None else class_weights.detach().clone().requires_grad_(True)
        if self.class_weights is not None and self.class_weights.shape[0] != init.shape[0]:
            raise ValueError(f"Inversion: {self.class_weights.shape[0]} class weights for {init.shape[0]} latents")
        self.class_lr = float(schedule.lr if class_lr is None else class_lr)
        self.step = 0
        #: mean per-image loss (of the noisy latents) at each step taken
        self.history: list[float] = []
        self._random = torch.Generator().manual_seed(int(seed))
        self._adam = self._optimiser()
        if self.noise:
            with torch.no_grad():
                normalise_noise_(self.noise)

    def _optimiser(self) -> torch.optim.Adam:
        """One Adam over the latents and noise maps (group 0) and the offsets (group 1, own peak lr)."""
        groups: list[dict[str, Any]] = [{"params": [self.latents, *self.noise], "scale": 1.0}]
        if self.offsets is not None:
            groups.append({"params": [self.offsets], "scale": self.offset_lr / self.schedule.lr})
        if self.class_weights is not None:
            groups.append({"params": [self.class_weights], "scale": self.class_lr / self.schedule.lr})
        return torch.optim.Adam(groups, lr=self.schedule.lr)

    def _parameters(self) -> list[torch.Tensor]:
        return [self.latents, *self.noise, *([] if self.offsets is None else [self.offsets]),
                *([] if self.class_weights is None else [self.class_weights])]

    def _render(self, latents: torch.Tensor, *, train: bool = False) -> torch.Tensor:
        """``render`` of ``latents`` with the current noise maps, offsets and class (the soft class weights
        while there are any; constants unless ``train``, the offsets also until they have joined)."""
        noise = (self.noise if train else [m.detach() for m in self.noise]) or None
        classes = self.classes
        if self.class_weights is not None:
            classes = self.class_weights if train else self.class_weights.detach()
        if self.offsets is None:
            return self.render(latents, noise, classes)
        joined = train and self.step >= self.offset_from
        offsets = self.offsets if joined else self.offsets.detach()
        return self.render(latents, noise, classes, offsets)

    def __len__(self) -> int:
        return self.latents.shape[0]

    def run(self, until: int | None = None, progress: Callable[[int], None] | None = None) -> "Inversion":
        """Take the schedule's steps up to ``until`` (default: all); ``progress(1)`` after each."""
        end = self.schedule.steps if until is None else min(int(until), self.schedule.steps)
        while self.step < end:
            self._advance()
            self.step += 1
            if progress is not None:
                progress(1)
        return self

    def _advance(self) -> None:
        for group in self._adam.param_groups:
            group["lr"] = self.schedule.lr_at(self.step) * group["scale"]
        latents = self.latents
        sigma = self.schedule.noise_at(self.step) * self.scale
        if sigma > 0:  # LORD / NVlabs: the loss of a neighbourhood, not of a point, early on
            latents = latents + sigma * torch.randn(latents.shape, generator=self._random).to(latents)
        per_image = self.loss(self._render(latents, train=True), self.targets)
        total = per_image + self.penalty * self.activation() if self.penalty else per_image
        if self.noise and self.noise_penalty:
            total = total + self.noise_penalty * noise_regularisation(self.noise)
        if self.offsets is not None and self.offset_penalty and self.step >= self.offset_from:
            total = total + self.offset_penalty * self.offsets.square().flatten(1).mean(1)
        self._adam.zero_grad(set_to_none=True)
        total.sum().backward()
        self._adam.step()
        with torch.no_grad():
            if self.project is not None:
                self.project(self.latents)
            if self.noise:
                normalise_noise_(self.noise)
        self.history.append(float(per_image.detach().mean()))

    def activation(self) -> torch.Tensor:
        """The activation penalty's value per image, ``[N]``: mean squared distance from the prior's mean,
        in prior units (about 1 for a latent drawn from a Gaussian prior)."""
        return ((self.latents - self.centre) / self.scale).square().flatten(1).mean(1)

    def images(self) -> torch.Tensor:
        """The current reconstructions (noise-free latents, with the noise maps and offsets),
        ``[N, C, H, W]``, without gradients."""
        with torch.no_grad():
            return self._render(self.latents.detach())

    def errors(self) -> torch.Tensor:
        """The current per-image loss of the noise-free latents, ``[N]``, without gradients."""
        with torch.no_grad():
            return self.loss(self.images(), self.targets)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (indices into the batch, in the order given) — latents, noise maps, offsets,
        class weights, targets, classes and their Adam moments — and go on from the same step."""
        rows = rows.to(self.latents.device)
        old = self._parameters()
        fresh = [p.detach()[rows].clone().requires_grad_(True) for p in old]
        self.latents, self.noise = fresh[0], fresh[1:1 + len(self.noise)]
        rest = fresh[1 + len(self.noise):]
        self.offsets = None if self.offsets is None else rest.pop(0)
        self.class_weights = None if self.class_weights is None else rest.pop(0)
        self._carry_adam(old, fresh, rows)
        self.targets = self.targets[rows]
        self.classes = None if self.classes is None else self.classes[rows.to(self.classes.device)]

    def harden(self, classes: torch.Tensor, latents: torch.Tensor | None = None) -> None:
        """End the soft class: render from now on with class ids ``classes [N]`` (and the latents set to
        ``latents [N, …]`` where given — e.g. corrected for the class's part the weights did not hold),
        the class weights dropped, every other tensor's Adam moments kept."""
        if self.class_weights is None:
            raise ValueError("Inversion.harden: there are no class weights")
        old = self._parameters()
        if latents is not None:
            with torch.no_grad():
                self.latents.copy_(latents.to(self.latents))
        self.class_weights = None
        self.classes = classes
        self._carry_adam(old[:-1], old[:-1], None)

    def _carry_adam(self, old: list[torch.Tensor], fresh: list[torch.Tensor], rows: torch.Tensor | None) -> None:
        """A new Adam over the current tensors, each ``fresh`` tensor with the moments of its ``old``
        one (their ``rows``, or all)."""
        adam = self._optimiser()
        for before, after in zip(old, fresh):
            state = self._adam.state.get(before)
            if state:
                adam.state[after] = {k: v.clone() if k == "step" or rows is None else v[rows].clone()
                                     for k, v in state.items()}
        self._adam = adam


# ================================================================================================ spaces
@dataclass
class SpaceModel:
    """How inversion treats latents of one space of one generator.

    Attributes:
        name: the space (``z``, ``w``, ``w+``, ``blocks`` …); ``shape`` its per-row shape.
        centre: the prior's mean, ``shape`` (z: 0; StyleGAN2 w/w+: w_avg; others: the mean of samples).
        scale: the prior's std per coordinate (z: 1; others: RMS std of samples).
        project: the in-place constraint after each step (z spaces: the ball ``‖z‖ ≤ √D``), or None.
        conditional: whether rendering this space depends on the class (False for StyleGAN2 w/w+:
            the class entered through the mapping, which these latents skip).
        noise_resolutions: the sides of the noise maps that can be optimised (StyleGAN2 w/w+), else [].
    """

    generator: GeneratorAdapter
    name: str
    shape: tuple[int, ...]
    centre: torch.Tensor
    scale: float
    project: Callable[[torch.Tensor], object] | None
    conditional: bool
    noise_resolutions: list[int] = field(default_factory=list)

    @property
    def screened(self) -> bool:
        """Whether the start is screened from prior samples (:meth:`screen`) rather than the mean: the
        Gaussian z spaces, where G is flat at z = 0 (a DCGAN's ReLUs are all off there: zero gradient)."""
        return self.project is not None

    def start(self, count: int) -> torch.Tensor:
        """``count`` copies of the prior's mean, ``[count, *shape]`` on the generator's device."""
        return self.centre.expand(count, *self.shape).clone()

    def screen(self, targets: torch.Tensor, loss: PerImageLoss, *, candidates: int, seed: int,
               classes: torch.Tensor | None = None, keep: int = 1, chunk: int = 64) -> torch.Tensor:
        """For each target ``[N, C, H, W]``, the ``keep`` best of ``candidates`` prior samples (seeded,
        inside the constraint) by ``loss`` under that row's class (ids ``[N]``, or soft class weights
        ``[N, K]``), best first — forward passes only; ``[N, keep, *shape]``. Each candidate is rendered
        once per distinct class (or weights row) present.
        """
        with torch.no_grad():
            pool = self.generator.sample(candidates, seed=seed, space=self.name)
            if self.project is not None:
                self.project(pool)
            scores = torch.empty(targets.shape[0], candidates, device=targets.device)
            every = torch.arange(targets.shape[0], device=targets.device)
            if classes is None or not self.conditional:
                groups: list[tuple[torch.Tensor | None, torch.Tensor]] = [(None, every)]
            else:  # rows grouped by class (or by weights row)
                distinct, which = torch.unique(classes, dim=0, return_inverse=True)
                groups = [(value, every[which.to(targets.device) == g]) for g, value in enumerate(distinct)]
            for class_id, rows in groups:
                for first in range(0, candidates, chunk):
                    part = pool[first:first + chunk]
                    label = None if class_id is None else class_id.to(pool.device).expand(len(part), *class_id.shape)
                    images = self.render(part, None, label)
                    for k in range(len(part)):
                        scores[rows, first + k] = loss(images[k:k + 1].expand(len(rows), -1, -1, -1), targets[rows])
            chosen = scores.topk(min(keep, candidates), dim=1, largest=False).indices  # [N, keep]
            return pool[chosen.to(pool.device)].clone()

    def render(self, latents: torch.Tensor, noise: list[torch.Tensor] | None,
               classes: torch.Tensor | None, offsets: torch.Tensor | None = None) -> torch.Tensor:
        """Images ``[N, C, H, W]`` of ``latents`` with the noise maps or the feature ``offsets`` (or neither),
        under ``classes``: ids ``[N]``, or soft class weights ``[N, K]`` (floating point; generators with
        ``synthesize_class_weights``, see :attr:`soft_classes`)."""
        if noise:
            return self.generator.synthesize_with_noise(latents, space=self.name, noise=noise)  # type: ignore[attr-defined]
        classes = classes if self.conditional else None
        if classes is not None and classes.is_floating_point():
            return self.generator.synthesize_class_weights(latents, classes, offsets)  # type: ignore[attr-defined]
        if offsets is None:
            return self.generator.synthesize(latents, space=self.name, classes=classes)
        return self.generator.synthesize(latents, space=self.name, classes=classes, offsets=offsets)

    @property
    def soft_classes(self) -> bool:
        """Whether this space can render soft class weights (the class a bias of an affine first layer:
        z of conditional DCGANs, ``synthesize_class_weights``); BigGAN's class enters through an embedding."""
        return self.conditional and self.name == "z" and hasattr(self.generator, "synthesize_class_weights")

    @property
    def offset_shape(self) -> tuple[int, ...] | None:
        """The per-row feature-offset shape inversion can optimise in this space, or None (z of DCGANs only)."""
        return self.generator.feature_offset_shape if self.name == "z" else None

    def start_noise(self, count: int, seed: int) -> list[torch.Tensor]:
        """White noise maps ``[count, 1, R, R]`` per noise layer (seeded), on the device."""
        random = torch.Generator().manual_seed(int(seed) + 7_919)
        device = self.generator.device
        return [torch.randn(count, 1, r, r, generator=random).to(device) for r in self.noise_resolutions]

    def distance(self, latents: torch.Tensor) -> torch.Tensor:
        """‖latents − centre‖ / scale per row, ``[N]`` (about √(#coordinates) under the prior)."""
        return ((latents.to(self.centre) - self.centre) / self.scale).flatten(1).norm(dim=1)


def _ball_per_layer_(latents: torch.Tensor) -> torch.Tensor:
    """:func:`clamp_to_ball_` on every row of ``[N, D]`` or every layer of ``[N, L, D]``, in place."""
    clamp_to_ball_(latents.view(-1, latents.shape[-1]))
    return latents


def space_model(generator: GeneratorAdapter, space: str | None = None, *, noise_maps: bool = False) -> SpaceModel:
    """The :class:`SpaceModel` of ``space`` (default: the generator's default space).

    Gaussian prior spaces — ``z`` of every family and BigGAN's per-block ``blocks`` (z per block) — start
    at 0 with scale 1 and stay in the ball ``‖z‖ ≤ √D`` (per block). StyleGAN2's ``w`` and ``w+`` start at
    ``w_avg``, scaled by the RMS std of mapped samples, unconstrained; with ``noise_maps`` (and a net
    with noise inputs) they optimise the per-layer noise maps too. Any other space is estimated from
    :data:`SPACE_SAMPLES` samples drawn in it, unconstrained.
    """
    chosen = generator.space(space)
    shape = chosen.shape(1)[1:]
    device = generator.device
    gaussian = chosen.name == "z" or (generator.family == "biggan" and chosen.name != "z")
    if gaussian:
        return SpaceModel(generator, chosen.name, shape, torch.zeros(shape, device=device), 1.0, _ball_per_layer_,
                          generator.conditional)
    with torch.no_grad():
        samples = generator.sample(SPACE_SAMPLES, seed=0, space=chosen.name)
        if generator.family == "stylegan2" and chosen.name in ("w", "w+"):
            centre = generator.network.mapping.w_avg.to(device).expand(*shape).clone()  # type: ignore[attr-defined]
        else:
            centre = samples.mean(0)
        scale = float((samples - centre).square().mean().sqrt().clamp_min(1e-8))
    stylegan = generator.family == "stylegan2" and chosen.name in ("w", "w+")
    resolutions = list(generator.noise_resolutions()) if stylegan and noise_maps else []  # type: ignore[attr-defined]
    return SpaceModel(generator, chosen.name, shape, centre, scale, None,
                      generator.conditional and not stylegan, resolutions)


# ================================================================================================ regression's trajectories
@dataclass
class TrajectoryData:
    """``z0 [M, D]``, ``zt [M, D]``, ``delta [M]`` (signed amounts), ``error [M]`` (final blurred MSE).

    ``z0``/``zt`` are latents of ``space`` (``z``, or StyleGAN2's ``w``); files written before the space
    was recorded hold z.
    """

    z0: torch.Tensor
    zt: torch.Tensor
    delta: torch.Tensor
    error: torch.Tensor
    transform: str
    space: str = "z"

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        with atomic_path(path) as temporary:
            save_file({"z0": self.z0, "zt": self.zt, "delta": self.delta, "error": self.error}, str(temporary),
                      metadata={"latentdirs": "trajectories/1", "transform": self.transform, "space": self.space})
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
                or tensors["error"].shape != rows or tensors["z0"].shape[0] != rows[0] or 0 in tensors["z0"].shape):
            raise invalid("dataset", str(path), allowed + " with z0, zt [M, D] and delta, error [M], M, D ≥ 1",
                          f"It holds {', '.join(f'{k} {tuple(v.shape)}' for k, v in tensors.items())}",
                          cls=DirectionFileError)
        if not all(v.dtype.is_floating_point and bool(torch.isfinite(v).all()) for v in tensors.values()):
            raise invalid("dataset", str(path), allowed + " of finite floating-point values",
                          f"It holds {', '.join(f'{k} {v.dtype}' for k, v in tensors.items())}, or non-finite "
                          "values", cls=DirectionFileError)
        return cls(transform=str(meta.get("transform", "?")), space=str(meta.get("space", "z")),
                   **{k: v.float() for k, v in tensors.items()})


def check_amounts(amounts: Sequence[float]) -> list[float]:
    """``amounts`` as a list of floats if they are finite, positive and increasing; else an error."""
    values = [as_finite(a) for a in amounts] if isinstance(amounts, (list, tuple)) else [None]
    if not values or any(v is None or v <= 0 for v in values) or values != sorted(values):
        raise invalid("amounts", amounts, "increasing positive amounts, e.g. 0.1,0.2,0.3")
    return values  # type: ignore[return-value]


def invert_trajectories(generator: GeneratorAdapter, z0: torch.Tensor, transform: str, amounts: Sequence[float], *,
                        iterations: int = 50, lr: float = 0.01, sigma: float | None = None,
                        class_id: int | None = None, batch_size: int = 16, drop_worst: float = 0.1,
                        progress: Callable[[int, int], None] | None = None, space: str = "z") -> TrajectoryData:
    """Invert ``T(G(z0), ±t)`` for every ``t`` in ``amounts``; see the module docstring.

    ``z0 [N, D]`` are latents of ``space`` (``z``, or a flat space such as StyleGAN2's ``w``), which the
    inversion optimises (:func:`invert_images`); ``sigma`` is the blur in pixels (default: 3 px at
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
        originals = torch.cat([generator.synthesize(c, space=space, classes=class_id) for c in z0.split(batch_size)])
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
                                     sigma=sigma, class_id=class_id, blurred_target=True, space=space)
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
    return TrajectoryData(starts[keep].cpu(), zt[keep].cpu(), delta[keep].cpu(), error[keep].cpu(), transform,
                          generator.space(space).name)


def invert_images(generator: GeneratorAdapter, targets: torch.Tensor, masks: torch.Tensor, init: torch.Tensor, *,
                  iterations: int = 50, lr: float = 0.01, sigma: float | None = None, class_id: int | None = None,
                  blurred_target: bool = False, space: str = "z") -> tuple[torch.Tensor, torch.Tensor]:
    """Latents ``[N, D]`` of ``space`` whose images match ``targets`` ``[N, C, H, W]`` on ``masks`` ``[N, 1, H, W]``.

    The core's :class:`Inversion` from ``init`` ``[N, D]`` (latents of ``space``): fresh Adam at a constant
    ``lr`` (no ramps, no latent noise), the blurred masked MSE. In ``z`` ‖z‖ is kept ≤ √D; other spaces
    (StyleGAN2's ``w``) are unconstrained, and ``lr`` is in units of the space's prior std
    (:attr:`SpaceModel.scale`; 1 in z), so one ``lr`` moves latents alike in either space.
    Returns (latents ``[N, D]``, final error ``[N]``).
    """
    sigma = 3.0 * generator.resolution / 128 if sigma is None else sigma
    target = targets if blurred_target else gaussian_blur(targets, sigma)
    model = space_model(generator, space)
    lr = lr * model.scale  # Adam moves each coordinate by about lr: scaled, lr means the same share of the prior
    classes = generator.class_tensor(class_id, init.shape[0])

    def loss(generated: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
        return _masked_error(gaussian_blur(generated, sigma), wanted, masks)

    inversion = Inversion(model.render, init.to(generator.device), target, loss, Schedule(iterations, lr),
                          classes=classes, project=model.project)
    inversion.run()
    return inversion.latents.detach(), inversion.errors()


def _masked_error(generated: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.expand_as(generated)
    return (((generated - target) ** 2) * weights).flatten(1).sum(1) / weights.flatten(1).sum(1).clamp_min(1)
