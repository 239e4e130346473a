"""GANSpace — principal components of sampled activations (or of sampled w), as latent directions.

Paper: Härkönen, Hertzmann, Lehtinen & Paris, "GANSpace: Discovering Interpretable GAN Controls",
NeurIPS 2020 (arXiv 2004.02546). Reference code: github.com/harskish/ganspace (Apache-2.0),
``decomposition.py``.

Algorithm:

1. Sample latents and record a layer's activations ``y = G_layer(z)`` ``[N, F]`` (``layer=NAME``), or,
   for a StyleGAN, the sampled ``w`` themselves (the reference's ``use_w``; the default there).
2. PCA of the samples: components ``u_k`` ``[K, F]``, explained variances ``λ_k`` (the scores).
3. Activation components are mapped back to the latent by linear regression, as the reference does
   for BigGAN: on fresh samples, regress ``z`` on the scaled PCA coordinates
   ``a_k = ⟨u_k, y − μ⟩ / √λ_k`` (least squares ``z ≈ Mᵀ a``); row ``k`` of ``M`` is direction ``k``.
   Components of ``w`` are directions in ``w`` already.
4. For a StyleGAN the directions are applied to W+ slots: ``layers="0-4"`` edits those slots only
   (the paper's layer-range edits), as SeFa's ``layers`` do.

Deviations from the reference:

* memory is flat in the sample count: latents are drawn in fixed blocks from seeds derived from
  ``seed`` and never stored (the reference keeps all N latents in memory), and the regression solves
  the normal equations ``AᵀA M = AᵀZ`` accumulated batch by batch (the reference stores A and Z and
  calls ``scipy.linalg.lstsq``);
* PCA solver: activations of at most :data:`COVARIANCE_LIMIT` features use an exact batched covariance
  (float64, shifted sums) and a symmetric eigendecomposition; wider layers use incremental PCA — the
  update of scikit-learn's ``IncrementalPCA`` (Ross et al.), written here in torch with the SVD taken
  from a small Gram matrix (scikit-learn's ``partial_fit`` took 28 s per 500 × 8192 chunk on this
  machine), in chunks of ``max(3K, 300)`` samples (the reference: ``max(2000, 3K)`` on a GPU; see
  docs/ganspace.md for the accuracy of the smaller chunk);
* the PCA and the regression always use every usable component (at most the latent dimension, and only
  components with non-zero variance — a rank-deficient layer's null components are noise), and
  ``num_directions`` keeps the first K: the first directions do not depend on K;
* the regression's sample count defaults to ``max(10_000, samples)`` as in the reference, but its
  latents are fresh draws (the reference draws them from the same global seed stream);
* canonical signs (largest-magnitude entry positive) instead of the solver's arbitrary signs.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Sequence

import torch

from latentdirs.directions import Directions, canonical_signs
from latentdirs.errors import (NotSupportedError, OutOfRangeError, UnknownNameError, check_count,
                               check_seed, describe_allowed, invalid)
from latentdirs.generators.base import GeneratorAdapter
from latentdirs.specs import parse_index_spec

#: latents are drawn in blocks of this many, each from its own derived seed, so neither the batch size
#: nor the sample count changes which latent sample ``i`` is
SAMPLE_BLOCK = 1000
#: widest activation (features per sample) whose covariance is accumulated exactly; wider ones use IPCA
COVARIANCE_LIMIT = 4096
#: components whose variance is below this fraction of the largest are treated as zero (null space)
RELATIVE_VARIANCE_FLOOR = 1e-7
SOLVERS = ("auto", "covariance", "ipca")
#: the pseudo-layer name of a StyleGAN's mapping output: PCA of sampled w
W_LAYER = "w"
_REGRESSION_SEED_OFFSET = 1_000_003  # the regression's latents are disjoint from the PCA's


def ganspace(generator: GeneratorAdapter, *, num_directions: int | None = None, samples: int = 20_000,
             layer: str | None = None, layers: str | Sequence[int] | None = None,
             regression_samples: int | None = None, solver: str = "auto", batch_size: int = 250,
             class_id: int | str | None = None, seed: int = 0,
             progress: Callable[[int, int, float], None] | None = None) -> Directions:
    """Discover directions of ``generator`` by GANSpace (PCA of sampled activations or of w).

    Args:
        num_directions: K, directions kept (1 … the usable components: at most the latent dimension and
            only components with non-zero variance; default all of them).
        samples: latents whose activations the PCA sees (≥ 2, and ≥ K for the incremental solver).
        layer: where to take activations: a module name of the generator's network that runs when it
            renders (an unknown name is refused with the list of those that do), or ``"w"`` on a
            StyleGAN. Default: ``"w"`` for a generator with a w space, else the first module that runs.
        layers: W+ slots the directions edit (``"0-4"``; StyleGAN only); default all slots.
        regression_samples: fresh latents for the regression back to the latent (activation layers
            only; default ``max(10_000, samples)``, as the reference).
        solver: ``"covariance"`` (exact), ``"ipca"`` (incremental PCA) or ``"auto"``
            (covariance up to :data:`COVARIANCE_LIMIT` features).
        batch_size: latents rendered per forward pass (memory, not results).
        class_id: the class rendered by a conditional generator (default class 0).
        seed: which latents are drawn (0 … 2**63 - 1).
        progress: ``progress(done, total, 0.0)`` over the forward passes.

    Returns:
        :class:`~latentdirs.directions.Directions` in ``z`` (activation layers), ``w`` or ``w+`` (with
        ``layers``), scores = explained variance of each component (``score_kind="explained_variance"``).
    """
    samples = check_count("samples", samples, 2)
    batch_size = check_count("batch_size", batch_size, 1)
    seed = check_seed("seed", seed)
    if solver not in SOLVERS:
        raise invalid("solver", solver, " or ".join(map(repr, SOLVERS)))
    if regression_samples is not None:
        regression_samples = check_count("regression_samples", regression_samples, 2)
    cls = generator.resolve_class(class_id)
    slots = _check_slots(generator, layers)
    layer_name, sample_space = _choose_layer(generator, layer, cls)
    latent_dim = generator.space(sample_space).dim
    reader = _ActivationReader(generator, layer_name, cls, sample_space)
    features = reader.features
    if num_directions is not None:
        check_count("num_directions", num_directions, 1, min(latent_dim, features))
    usable = min(latent_dim, features)
    method = _pick_solver(solver, features)
    if method == "ipca" and samples < usable:
        raise invalid("samples", samples, f"at least {usable} for the incremental solver (one per component)",
                      "Pass more samples, or --opt solver=covariance")
    regressing = layer_name != W_LAYER
    count = max(10_000, samples) if regression_samples is None else regression_samples
    total = _passes(samples, batch_size) + (_passes(count, batch_size) if regressing else 0)
    tick = _Ticker(progress, total)
    batches = (reader(z) for z in _latent_batches(generator, samples, seed, sample_space, batch_size, tick))
    pca = fit_pca(batches, features, usable, method=method)
    kept = int((pca.variances > RELATIVE_VARIANCE_FLOOR * pca.variances[0].clamp_min(1e-30)).sum())
    if kept == 0:
        raise invalid("layer", layer_name, "a layer whose activations vary with the latent",
                      "Every sampled activation is the same; choose another --opt layer=NAME", cls=NotSupportedError)
    if num_directions is not None and int(num_directions) > kept:
        raise invalid("num_directions", num_directions,
                      f"1-{kept} (the components with non-zero variance at layer {layer_name!r})")
    components, variances, mean = pca.components[:kept], pca.variances[:kept], pca.mean
    if regressing:
        regression_batches = _latent_batches(generator, count, seed + _REGRESSION_SEED_OFFSET, sample_space,
                                             batch_size, tick)
        vectors = regress_to_latent(((z, reader(z)) for z in regression_batches), components, variances, mean)
    else:
        vectors = components.double()
    vectors = canonical_signs(vectors / vectors.norm(dim=1, keepdim=True)).float()
    keep = kept if num_directions is None else int(num_directions)
    vectors, variances = vectors[:keep], variances[:keep].float()
    space = sample_space if slots is None else "w+"
    ratio = (variances / pca.total_variance).tolist() if pca.total_variance > 0 else []
    options: dict[str, Any] = {"num_directions": num_directions, "samples": samples, "layer": layer_name,
                               "layers": slots, "regression_samples": count if regressing else None,
                               "solver": method, "batch_size": batch_size, "class_id": cls, "features": features,
                               "explained_variance_ratio": ratio}
    return Directions.from_method(vectors, variances, generator=generator, method="ganspace", options=options,
                                  space=space, layers=slots, score_kind="explained_variance", seed=seed)


# ---------------------------------------------------------------------------------------------- PCA
class PCAResult:
    """``components [K, F]`` (unit rows, float64), ``variances [K]`` (descending), ``mean [F]`` and the
    total variance of the samples (the sum over all F features, for explained-variance ratios)."""

    def __init__(self, components: torch.Tensor, variances: torch.Tensor, mean: torch.Tensor,
                 total_variance: float) -> None:
        self.components, self.variances, self.mean = components, variances, mean
        self.total_variance = total_variance


class CovarianceAccumulator:
    """Exact mean and covariance of rows fed in batches; memory ``F²`` float64, flat in the row count.

    Sums are taken about a shift (the first batch's mean), so that large means do not cancel the
    variance in floating point.
    """

    def __init__(self, features: int) -> None:
        self.count = 0
        self.shift: torch.Tensor | None = None
        self.total = torch.zeros(features, dtype=torch.float64)
        self.outer = torch.zeros(features, features, dtype=torch.float64)

    def update(self, rows: torch.Tensor) -> None:
        """Add rows ``[B, F]``."""
        x = rows.detach().to("cpu", torch.float64)
        if self.shift is None:
            self.shift = x.mean(dim=0)
        x = x - self.shift
        self.count += x.shape[0]
        self.total += x.sum(dim=0)
        self.outer += x.T @ x

    def finish(self, keep: int) -> PCAResult:
        """Top ``keep`` principal components (eigenvectors of the unbiased covariance), descending."""
        if self.count < 2 or self.shift is None:
            raise invalid("samples", self.count, "at least 2 samples")
        centred = self.total / self.count
        covariance = (self.outer - self.count * torch.outer(centred, centred)) / (self.count - 1)
        variances, vectors = torch.linalg.eigh((covariance + covariance.T) / 2)
        order = torch.argsort(variances, descending=True)[:keep]
        return PCAResult(vectors[:, order].T.contiguous(), variances[order].clamp_min(0), self.shift + centred,
                         float(torch.diagonal(covariance).sum()))


class IncrementalAccumulator:
    """Incremental PCA (Ross et al. 2008, the update scikit-learn's ``IncrementalPCA`` makes) of rows fed
    in chunks of ``chunk`` rows; memory ``O((K + chunk) · F)``, flat in the row count.

    Each update takes the SVD of ``[diag(S)·V; X − x̄; √(n·b/(n+b))·(x̄ − μ)]`` and keeps the top K. The
    SVD is computed from that matrix's smaller Gram matrix in float64 (``(K + chunk)²`` entries for a wide
    layer, not ``F²``):
    several times faster on a CPU than a LAPACK SVD of the wide matrix, and exact to float64 round-off
    for the components that matter (small singular values lose relative precision, squared).
    """

    def __init__(self, features: int, keep: int, chunk: int | None = None) -> None:
        self.keep = keep
        self.chunk = chunk or max(3 * keep, 300)
        self.count = 0
        self.mean = torch.zeros(features, dtype=torch.float64)
        self.components = torch.zeros(0, features, dtype=torch.float64)
        self.singular = torch.zeros(0, dtype=torch.float64)
        self.pending: list[torch.Tensor] = []
        self.pending_rows = 0
        self.total_variance = CovarianceTrace(features)

    def update(self, rows: torch.Tensor) -> None:
        rows = rows.detach().to("cpu", torch.float64)
        self.total_variance.update(rows)
        self.pending.append(rows)
        self.pending_rows += rows.shape[0]
        while self.pending_rows >= 2 * self.chunk:  # keep a chunk back: the last update must hold ≥ K rows
            self._flush(self.chunk)

    def _flush(self, rows: int | None = None) -> None:
        stacked = torch.cat(self.pending)
        part, rest = (stacked, stacked[:0]) if rows is None else (stacked[:rows], stacked[rows:])
        self._partial_fit(part)
        self.pending, self.pending_rows = ([rest] if rest.shape[0] else []), rest.shape[0]

    def _partial_fit(self, x: torch.Tensor) -> None:
        b, n = x.shape[0], self.count
        batch_mean = x.mean(dim=0)
        blocks = [self.singular.unsqueeze(1) * self.components, x - batch_mean]
        if n:
            blocks.append((math.sqrt(n * b / (n + b)) * (batch_mean - self.mean)).unsqueeze(0))
        stacked = torch.cat(blocks)
        if stacked.shape[1] <= stacked.shape[0]:  # narrow: the F × F Gram matrix gives V directly
            eigenvalues, right = torch.linalg.eigh(stacked.T @ stacked)
            order = torch.argsort(eigenvalues, descending=True)[:self.keep]
            self.components = right[:, order].T.contiguous()
        else:  # wide: the m × m Gram matrix gives U, and V = Uᵀ Y / s
            eigenvalues, left = torch.linalg.eigh(stacked @ stacked.T)
            order = torch.argsort(eigenvalues, descending=True)[:self.keep]
            directions = left[:, order].T @ stacked  # rows = singular value · right singular vector
            norms = directions.norm(dim=1, keepdim=True)
            self.components = directions / torch.where(norms > 0, norms, torch.ones_like(norms))
        self.singular = eigenvalues[order].clamp_min(0).sqrt()
        self.mean = (n * self.mean + b * batch_mean) / (n + b)
        self.count = n + b

    def finish(self, keep: int) -> PCAResult:
        if self.pending_rows:
            self._flush()
        if self.count < 2:
            raise invalid("samples", self.count, "at least 2 samples")
        variances = self.singular.square() / (self.count - 1)
        return PCAResult(self.components[:keep], variances[:keep], self.mean, self.total_variance.value())


class CovarianceTrace:
    """The total variance (trace of the covariance) of rows fed in batches, memory ``O(F)``."""

    def __init__(self, features: int) -> None:
        self.count, self.shift = 0, None
        self.total = torch.zeros(features, dtype=torch.float64)
        self.squares = torch.zeros(features, dtype=torch.float64)

    def update(self, rows: torch.Tensor) -> None:
        x = rows.to(torch.float64)
        if self.shift is None:
            self.shift = x.mean(dim=0)
        x = x - self.shift
        self.count += x.shape[0]
        self.total += x.sum(dim=0)
        self.squares += x.square().sum(dim=0)

    def value(self) -> float:
        if self.count < 2:
            return 0.0
        return float(((self.squares - self.total.square() / self.count) / (self.count - 1)).sum())


def fit_pca(batches: Iterator[torch.Tensor], features: int, keep: int, *, method: str = "covariance") -> PCAResult:
    """PCA of rows arriving in batches ``[B, F]``: top ``keep`` components, by ``"covariance"`` (exact)
    or ``"ipca"`` (incremental PCA, :class:`IncrementalAccumulator`). Memory is flat in the number of rows."""
    accumulator = CovarianceAccumulator(features) if method == "covariance" else IncrementalAccumulator(features, keep)
    for rows in batches:
        accumulator.update(rows)
    return accumulator.finish(keep)


def regress_to_latent(pairs: Iterator[tuple[torch.Tensor, torch.Tensor]], components: torch.Tensor,
                      variances: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Latent directions ``[K, D]`` (float64, not normalised) for activation components ``[K, F]``.

    ``pairs`` yields ``(z [B, D], activations [B, F])``. Solves ``min_M Σ ‖Mᵀ a − z‖²`` with scaled PCA
    coordinates ``a = U (y − μ) / √λ`` by the normal equations, accumulated per batch (memory flat).
    """
    u = components.double()
    scale = variances.double().sqrt().clamp_min(1e-30)
    gram = torch.zeros(u.shape[0], u.shape[0], dtype=torch.float64)
    cross: torch.Tensor | None = None
    for z, activations in pairs:
        coords = ((activations.to("cpu", torch.float64) - mean) @ u.T) / scale  # [B, K]
        gram += coords.T @ coords
        product = coords.T @ z.to("cpu", torch.float64).reshape(z.shape[0], -1)
        cross = product if cross is None else cross + product
    if cross is None:
        raise invalid("regression_samples", 0, "at least 2 samples")
    return torch.linalg.solve(gram + 1e-12 * torch.eye(gram.shape[0], dtype=gram.dtype), cross)


# ---------------------------------------------------------------------------------------------- sampling
def _latent_batches(generator: GeneratorAdapter, count: int, seed: int, space: str, batch_size: int,
                    tick: "_Ticker") -> Iterator[torch.Tensor]:
    """``count`` latents of ``space`` in batches of at most ``batch_size``; block ``b`` of
    :data:`SAMPLE_BLOCK` latents is drawn from seed ``seed + b`` (mod 2**64, torch's seed range)."""
    for block, start in enumerate(range(0, count, SAMPLE_BLOCK)):
        size = min(SAMPLE_BLOCK, count - start)
        with torch.no_grad():
            latents = generator.sample(size, seed=(seed + block) % 2**64, space=space)
        for offset in range(0, size, batch_size):
            yield latents[offset:offset + batch_size]
            tick()


def _passes(count: int, batch_size: int) -> int:
    blocks, last = divmod(count, SAMPLE_BLOCK)
    return blocks * math.ceil(SAMPLE_BLOCK / batch_size) + math.ceil(last / batch_size)


class _Ticker:
    def __init__(self, progress: Callable[[int, int, float], None] | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def __call__(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total, 0.0)


# ---------------------------------------------------------------------------------------------- layers
class _Captured(Exception):
    """Raised by the capture hook: the forward pass stops at the chosen layer (a partial forward)."""


def runnable_layers(generator: GeneratorAdapter, class_id: int | None = None,
                    space: str | None = None) -> dict[str, tuple[int, ...]]:
    """Modules of ``generator.network`` that run when it renders, in call order: name → output shape
    per sample. Found by rendering two latents with a hook on every module; modules whose output is not
    a tensor are left out. (An adapter may render through a copy of some modules — DCGAN folds its
    batch norms — and then only the shared modules run.)"""
    named = [(name, module) for name, module in generator.network.named_modules() if name]
    seen: dict[str, tuple[int, ...]] = {}
    handles = []

    def record(name: str):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor) and name not in seen:
                seen[name] = tuple(output.shape[1:])
        return hook

    with torch.no_grad():
        latents = generator.sample(2, seed=0, space=space)  # before the hooks: sampling w runs the mapping
    for name, module in named:
        handles.append(module.register_forward_hook(record(name)))
    try:
        with torch.no_grad():
            generator.synthesize(latents, space=space, classes=class_id)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _choose_layer(generator: GeneratorAdapter, layer: str | None, cls: int | None) -> tuple[str, str]:
    """``(layer name, the space latents are sampled in)`` for the ``layer`` option."""
    has_w = "w" in generator.spaces
    if layer is None and has_w:
        return W_LAYER, "w"
    if layer == W_LAYER and has_w:
        return W_LAYER, "w"
    space = "w" if has_w else generator.default_space
    if generator.space(space).layered:
        raise invalid("generator", generator.spec, "a generator sampled in a flat latent space",
                      cls=NotSupportedError)
    found = runnable_layers(generator, cls, space)
    if layer is None:
        if not found:
            raise invalid("layer", None, "a module of the network that runs when it renders",
                          f"{generator.spec} renders without running any module of its network",
                          cls=NotSupportedError)
        return next(iter(found)), space
    if not isinstance(layer, str) or layer not in found:
        names = ([W_LAYER] if has_w else []) + list(found)
        raise invalid("layer", layer, f"{describe_allowed(names)} (the modules of {generator.spec} that run "
                      "when it renders)", cls=UnknownNameError)
    return layer, space


def _check_slots(generator: GeneratorAdapter, layers: str | Sequence[int] | None) -> list[int] | None:
    """W+ slots for layer-range edits; only for generators with a ``w+`` space."""
    if layers is None:
        return None
    if "w+" not in generator.spaces:
        raise invalid("layers", layers, "none: layer-range edits need a W+ space (StyleGAN)",
                      "Drop --layers", cls=NotSupportedError)
    slots = parse_index_spec(layers, param="layers")
    count = generator.space("w+").num_layers
    bad = [i for i in slots if not 0 <= i < count]
    if bad or not slots:
        raise invalid("layers", slots, f"W+ slots 0-{count - 1}", cls=OutOfRangeError)
    return list(slots)


def _pick_solver(solver: str, features: int) -> str:
    if solver == "auto":
        return "covariance" if features <= COVARIANCE_LIMIT else "ipca"
    return solver


class _ActivationReader:
    """``reader(latents [B, D]) -> activations [B, F]`` (float32, CPU) at one layer, by a partial forward;
    for the ``"w"`` pseudo-layer the latents themselves."""

    def __init__(self, generator: GeneratorAdapter, layer: str, class_id: int | None, space: str) -> None:
        self.generator, self.layer, self.class_id, self.space = generator, layer, class_id, space
        if layer == W_LAYER:
            self.module = None
            self.features = generator.space(space).dim
        else:
            self.module = dict(generator.network.named_modules())[layer]
            probe = generator.sample(1, seed=0, space=space)
            self.features = self(probe).shape[1]

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        if self.module is None:
            return latents.detach().to("cpu", torch.float32).reshape(latents.shape[0], -1)
        captured: list[torch.Tensor] = []

        def hook(module, inputs, output):
            captured.append(output.detach().reshape(output.shape[0], -1).to("cpu", torch.float32, copy=True))
            raise _Captured

        handle = self.module.register_forward_hook(hook)
        try:
            with torch.no_grad():
                self.generator.synthesize(latents, space=self.space, classes=self.class_id)
        except _Captured:
            pass
        finally:
            handle.remove()
        if not captured:
            raise invalid("layer", self.layer, "a module that runs when the generator renders", cls=NotSupportedError)
        return captured[0]


__all__ = ["CovarianceAccumulator", "IncrementalAccumulator", "fit_pca", "ganspace", "regress_to_latent",
           "runnable_layers"]
