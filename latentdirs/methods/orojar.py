"""OroJaR — learn an orthogonal direction basis under the orthogonal-Jacobian penalty.

Paper: Wei et al., "Orthogonal Jacobian Regularization for Unsupervised Disentanglement in Image
Generation", ICCV 2021. Reference implementation: github.com/csyxwei/OroJaR.

Discovery in a pretrained, frozen generator: a free matrix ``A [m, m]`` over the searched subspace
(all of the latent, a coordinate slice, or the latent of chosen W+/block layers) is made orthonormal
every step, ``Q = orth(A)``; the generator renders ``x + w·Q`` (``x`` fresh latents each step) and the
penalty (:mod:`latentdirs.methods.orojar_penalty`) is taken with respect to the coefficients ``w`` at
``w = 0``, so the effective Jacobian is ``J_x·Qᵀ``. Adam on ``A``. For a linear generator the optimum
is the eigenvectors of ``WᵀW`` — SeFa's closed form — which the tests check.

Orthonormalisation: ``Q`` is the sign-fixed QR factor of ``Aᵀ`` (Householder QR). In exact arithmetic
that is the reference's Gram–Schmidt, row for row, but numerically stable and one library call, and
autograd differentiates through it. (A matrix exponential of a skew-symmetric matrix would keep
``Q`` orthogonal without a projection, but cannot express reflections and costs an ``expm`` per step.)

Deviations from the reference:

* the unperturbed pass runs without autograd (it does not depend on ``A``): fewer recorded ops;
* ``mode="exact"`` gets ``J·v`` by forward-mode differentiation instead of a finite difference;
* warm start from SeFa's eigenvectors on the same subspace (``warm_start="auto"``: when the generator
  exposes projection weights), Kaiming-normal otherwise as in the reference;
* rows are stored ordered by effect size, mean ``‖J·q‖`` over fresh samples (``score_kind
  "mean_jacobian_norm"``), with canonical signs; the stored basis is ``Q``, never the raw ``A``;
* the optimisation is always square over the searched subspace (the reference's choice too): with
  fewer directions than dimensions the penalty could be cut by choosing near-null directions, so
  ``num_directions`` only chooses how many of the ordered rows are *stored*. To learn fewer
  directions, search a smaller subspace.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from latentdirs.atomic import atomic_path, check_writable_directory
from latentdirs.directions import Directions, canonical_signs
from latentdirs.distributed import Ranks, data_parallel, equal_share, mean_over_ranks
from latentdirs.errors import (NotSupportedError, UnknownNameError, check_count, check_positive, check_seed,
                               describe_allowed, invalid)
from latentdirs.generators.base import GeneratorAdapter
from latentdirs.latents import along_layers
from latentdirs.methods.orojar_penalty import check_penalty_choices, orojar_penalty, rademacher, squared_norms
from latentdirs.methods.sefa import sefa_factorize
from latentdirs.specs import parse_index_spec

log = logging.getLogger(__name__)

#: progress(step, total_steps, penalty) after each step
Progress = Callable[[int, int, float], None]
WARM_STARTS = ("auto", "sefa", "random")
CHECKPOINT_FORMAT = "latentdirs.orojar-checkpoint/1"


def orthonormal_rows(matrix: torch.Tensor) -> torch.Tensor:
    """Gram–Schmidt of the rows of ``matrix`` ``[m, m]`` via sign-fixed QR: orthonormal rows, differentiable."""
    q, r = torch.linalg.qr(matrix.T)
    signs = torch.sign(torch.diagonal(r))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return (q * signs).T


class _Tapper:
    """Collects outputs of named submodules of the generator's network during one forward pass."""

    def __init__(self, network: torch.nn.Module, names: Sequence[str]) -> None:
        modules = dict(network.named_modules())
        missing = [n for n in names if n not in modules or not n]
        if missing:
            raise invalid("taps", missing, "'output' or named layers of the network: "
                          f"{describe_allowed(n for n in modules if n)}", cls=UnknownNameError)
        self.captured: list[torch.Tensor] = []
        self._handles = [modules[n].register_forward_hook(self._keep) for n in names]

    def _keep(self, module: torch.nn.Module, inputs: Any, output: Any) -> None:
        self.captured.append(output if isinstance(output, torch.Tensor) else output[0])

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def _subspace_basis(space_dim: int, subspace: str | Sequence[int] | None) -> torch.Tensor:
    """Coordinate axes ``[m, D]`` spanning the searched subspace of one latent layer."""
    indices = list(range(space_dim)) if subspace is None else parse_index_spec(subspace, param="subspace", upper=space_dim)
    if len(indices) < 2:
        raise invalid("subspace", subspace, "at least two latent coordinates (a variance needs two directions)")
    return torch.eye(space_dim)[indices]


def _warm_start(generator, choice: str, axes: torch.Tensor, layers: list[int] | None,
                init: torch.Generator) -> tuple[torch.Tensor, str]:
    """Initial ``A [m, m]``: SeFa's eigenvectors restricted to the subspace, or Kaiming-normal."""
    m = axes.shape[0]
    if choice != "random":
        try:
            weights = generator.projection_weights(layers)
        except NotSupportedError:
            if choice == "sefa":
                raise
        else:
            vectors, _ = sefa_factorize([axes @ w for w in weights])  # [m, m] in subspace coordinates
            return vectors, "sefa"
    return torch.randn(m, m, generator=init) * (2.0 / m) ** 0.5, "random"


def orojar(generator: GeneratorAdapter, *, num_directions: int | None = None, steps: int = 400, batch_size: int = 16,
           lr: float = 0.01, k: int = 2, epsilon: float = 0.1, mode: str = "finite", reduction: str = "mean",
           taps: Sequence[str] | str = ("output",), warm_start: str = "auto", subspace: str | Sequence[int] | None = None,
           layers: str | Sequence[int] | None = None, space: str | None = None, class_id: int | str | None = None,
           batched: bool = False, compile: bool = False, seed: int = 0, checkpoint: str | Path | None = None, checkpoint_every: int = 100,
           resume: bool = False, progress: Progress | None = None, ranks: Ranks | None = None) -> Directions:
    """Learn an orthonormal direction basis of ``generator`` by minimising the OroJaR penalty.

    Args:
        num_directions: how many of the learned, ordered rows to store (default all m).
        steps, batch_size, lr: Adam steps on ``A``, fresh latents per step.
        k, epsilon, mode, reduction: the penalty's probes, finite step, ``"finite"``/``"exact"``, ``"mean"``/``"max"``.
        taps: ``"output"`` and/or dotted names of submodules of ``generator.network`` whose outputs
            enter the penalty (summed unweighted).
        warm_start: ``"auto"`` (SeFa where the generator exposes projection weights, else random),
            ``"sefa"``, or ``"random"`` (Kaiming-normal, as the reference).
        subspace: latent coordinates searched, e.g. ``"0-39"`` (default all).
        layers: for layered spaces (``w+``, BigGAN ``blocks``), the layers the directions move.
        space: latent space (default the generator's default space).
        class_id: the fixed class of a conditional generator (default class 0).
        batched: render the 1 + k passes in one forward (faster on GPUs, not on this CPU).
        compile: ``torch.compile`` the generator's rendering (about 1.13× per step on dcgan-faces here,
            after a warm-up of about 25 s: worth it for runs of thousands of steps).
        seed: makes the run repeatable (init, latents, probes all derive from it and the step).
        checkpoint, checkpoint_every, resume: write a checkpoint atomically every N steps; with
            ``resume`` continue from it to the same result an uninterrupted run gives (``steps`` may
            be raised to train on; every other option and the seed must match).
        progress: called as ``progress(step, steps, penalty)`` after every step.
        ranks: a launched run (``torchrun … discover -m orojar``): data-parallel — every rank draws the
            step's whole batch of latents and probes, computes the penalty on its equal share and the
            basis's gradients are averaged (DistributedDataParallel); ``reduction="mean"`` only (a max
            over the batch does not split into shares). Rank 0 alone writes checkpoints.

    Returns:
        :class:`~latentdirs.directions.Directions` ``[K, D]``, ordered by mean ‖J·q‖.
    """
    # every option is checked before any work (the warm start, the first render)
    steps, batch_size, k = check_count("steps", steps), check_count("batch_size", batch_size), check_count("k", k, 2)
    checkpoint_every, seed = check_count("checkpoint_every", checkpoint_every), check_seed("seed", seed)
    lr, epsilon = check_positive("lr", lr), check_positive("epsilon", epsilon)
    if num_directions is not None:
        num_directions = check_count("num_directions", num_directions)
    check_penalty_choices(mode, reduction)
    if ranks is not None and reduction != "mean":
        raise invalid("reduction", reduction, "'mean' under torchrun (a maximum over the batch does not split "
                      "into the ranks' shares)", "Use --opt reduction=mean, or run without torchrun")
    rows = equal_share(batch_size, ranks)
    share = len(range(batch_size)[rows])
    if warm_start not in WARM_STARTS:
        raise invalid("warm_start", warm_start, ", ".join(WARM_STARTS))
    tap_names = [taps] if isinstance(taps, str) else list(taps) if isinstance(taps, (list, tuple)) else []
    if not tap_names or not all(isinstance(name, str) for name in tap_names):
        raise invalid("taps", taps, "'output' and/or names of layers of the network")
    target = generator.space(space)
    layer_list = None
    if layers is not None:
        if not target.layered:
            raise invalid("layers", layers, f"none: space {target.name!r} has a single layer")
        layer_list = parse_index_spec(layers, param="layers", upper=target.num_layers)
    axes = _subspace_basis(target.dim, subspace).to(generator.device)  # [m, D]
    m = axes.shape[0]
    if num_directions is not None and num_directions > m:
        raise invalid("num_directions", num_directions, f"1-{m} (the searched subspace's dimension; "
                      "the basis is always learned square, see the method's docs)")
    cls = generator.resolve_class(class_id)
    writes = ranks is None or ranks.is_main  # the checkpoint is rank 0's
    if checkpoint is not None and writes:  # a checkpoint that cannot be written fails now, not later
        check_writable_directory(Path(checkpoint).parent, param="checkpoint")
    options = {"num_directions": num_directions, "steps": steps, "batch_size": batch_size, "lr": lr, "k": k,
               "epsilon": epsilon, "mode": mode, "reduction": reduction, "taps": tap_names,
               "warm_start": warm_start, "subspace": subspace if subspace is None else axes.argmax(1).tolist(),
               "layers": layer_list, "space": target.name, "class_id": cls, "batched": batched, "compile": compile}

    matrix, started_from = _warm_start(generator, warm_start, axes.cpu(), layer_list if target.layered else None,
                                       torch.Generator().manual_seed(seed))
    basis = _Basis(matrix.to(generator.device))
    matrix = basis.matrix  # the one tensor Adam trains and checkpoints hold
    rows_of = basis if ranks is None else data_parallel(basis, ranks)  # → orthonormal rows [m, m]
    optimiser = torch.optim.Adam([matrix], lr=lr)
    history: list[float] = []
    first_step = 0
    if resume:
        first_step, history = _load_checkpoint(checkpoint, matrix, optimiser, options, seed)

    render, close = _renderer(generator, target, layer_list, cls, tap_names, compile)
    try:
        for step in range(first_step, steps):
            step_seed = _derived_seed(seed, step)  # latents and probes of a step depend on (seed, step) only
            # the whole batch is drawn on every rank, so a rank's share is what one process has at those rows
            latents = generator.sample(batch_size, seed=step_seed, space=target.name, classes=cls)[rows]
            probes = rademacher((k, batch_size, m), torch.Generator().manual_seed(step_seed), generator.device)
            probes = probes[:, rows]
            directions = rows_of() @ axes  # [m, D]
            penalty = orojar_penalty(lambda w: render(latents, w @ directions),
                                     torch.zeros(share, m, device=generator.device),
                                     probes, mode=mode, epsilon=epsilon, reduction=reduction, batched=batched)
            optimiser.zero_grad(set_to_none=True)
            penalty.backward()  # under DDP: the ranks' gradients averaged = the whole batch's mean penalty's
            optimiser.step()
            history.append(penalty.item() if ranks is None else mean_over_ranks(penalty))
            if progress is not None:
                progress(step + 1, steps, history[-1])
            if writes and checkpoint is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
                _save_checkpoint(checkpoint, matrix, optimiser, options, seed, step + 1, history)
        if ranks is not None:
            ranks.barrier()  # rank 0's last checkpoint is written before any rank moves on
        with torch.no_grad():
            directions = orthonormal_rows(matrix) @ axes
            scores = _effect_sizes(render, generator, target, cls, directions, epsilon, seed)
    finally:
        close()
    order = torch.argsort(scores, descending=True)
    vectors = canonical_signs(directions[order].detach().cpu())
    keep = m if num_directions is None else num_directions
    options.update(warm_start_used=started_from, final_penalty=history[-1] if history else None)
    log.info("orojar: %d steps, final penalty %s", steps, history[-1] if history else "n/a")
    return Directions.from_method(vectors[:keep], scores[order][:keep].cpu(), generator=generator, method="orojar",
                                  options=options, space=target.name, layers=layer_list,
                                  score_kind="mean_jacobian_norm", seed=seed)


class _Basis(torch.nn.Module):
    """The trained matrix ``A`` ``[m, m]`` as a module (so DistributedDataParallel can average its gradient);
    calling it gives the orthonormal rows the directions are made of."""

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        self.matrix = torch.nn.Parameter(matrix.detach().clone())

    def forward(self) -> torch.Tensor:
        return orthonormal_rows(self.matrix)


def _renderer(generator, target, layers: list[int] | None, cls: int | None, tap_names: list[str],
              compile: bool = False):
    """``render(latents, delta [B, D]) -> taps`` for the space, plus a function that removes the hooks."""
    names = [n for n in tap_names if n != "output"]
    tapper = _Tapper(generator.network, names) if names else None
    def synthesize(latents: torch.Tensor) -> torch.Tensor:
        return generator.synthesize(latents, space=target.name, classes=cls)

    if compile:
        synthesize = torch.compile(synthesize)  # type: ignore[assignment]

    def render(latents: torch.Tensor, delta: torch.Tensor) -> list[torch.Tensor]:
        if delta.shape[0] != latents.shape[0]:  # batched probes: row r moves latent r mod B
            latents = latents.repeat(delta.shape[0] // latents.shape[0], *([1] * (latents.dim() - 1)))
        moved = latents + along_layers(delta, latents, layers)
        if tapper is not None:
            tapper.captured.clear()
        image = synthesize(moved)
        outputs = list(tapper.captured) if tapper is not None else []
        return ([image] if "output" in tap_names else []) + outputs

    return render, (tapper.remove if tapper is not None else (lambda: None))


def _derived_seed(seed: int, offset: int) -> int:
    """``seed · 1 000 003 + offset``, folded into the 64 bits torch seeds with when it grows past them.

    Every seed up to about 1.8·10¹³ maps as it always did; larger ones (up to 2⁶³ − 1) stay valid."""
    value = seed * 1_000_003 + offset
    return value if value < 2**64 else value % 2**64


def _effect_sizes(render, generator, target, cls: int | None, directions: torch.Tensor, epsilon: float, seed: int,
                  samples: int = 32) -> torch.Tensor:
    """Mean over fresh samples of ‖J·q‖ (finite difference, all taps) for every row q of ``directions`` ``[m, D]``."""
    latents = generator.sample(samples, seed=_derived_seed(seed, -1), space=target.name, classes=cls)
    base = render(latents, torch.zeros(samples, target.dim, device=generator.device))
    sizes = []
    for row in directions:
        moved = render(latents, (epsilon * row).expand(samples, -1))
        sizes.append(squared_norms([(o - b) / epsilon for o, b in zip(moved, base)]).sqrt().mean())
    return torch.stack(sizes)


def _save_checkpoint(path: str | Path, matrix: torch.Tensor, optimiser: torch.optim.Optimizer,
                     options: dict[str, Any], seed: int, step: int, history: list[float]) -> None:
    state = {"format": CHECKPOINT_FORMAT, "matrix": matrix.detach().cpu(), "optimiser": optimiser.state_dict(),
             "options": json.dumps(options, sort_keys=True), "seed": seed, "step": step,
             "history": torch.tensor(history, dtype=torch.float64)}
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def _load_checkpoint(path: str | Path | None, matrix: torch.Tensor, optimiser: torch.optim.Optimizer,
                     options: dict[str, Any], seed: int) -> tuple[int, list[float]]:
    """Restore ``matrix`` and ``optimiser`` from an OroJaR checkpoint; returns (next step, penalty history).

    The file is read through :func:`latentdirs.weights.load_torch_weights` (declared sizes checked,
    tensors only) and every entry is checked — types, the matrix's shape, finite values, the Adam
    state's shapes, the options and seed of this run — before anything is restored.
    """
    from latentdirs.weights import load_torch_weights

    if path is None:
        raise invalid("resume", True, "resume together with checkpoint=PATH", "Pass --opt checkpoint=FILE")
    if not Path(path).is_file():
        raise invalid("checkpoint", str(path), "an existing checkpoint file to resume from",
                      "Run without --resume first")
    name = Path(path).name
    fix = "Give the file this run's checkpoint= option wrote, or start again without --resume"
    state = load_torch_weights(path, param="checkpoint")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = f"format {state.get('format')!r}" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise invalid("checkpoint", f"{name}: {found}", f"an OroJaR checkpoint ({CHECKPOINT_FORMAT})", fix)
    kinds = {"matrix": torch.Tensor, "optimiser": dict, "options": str, "seed": int, "step": int, "history": torch.Tensor}
    wrong = [key for key, kind in kinds.items() if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool)]
    if wrong:
        raise invalid("checkpoint", f"{name}: entries {', '.join(wrong)} missing or of another type",
                      "format, matrix (tensor), optimiser (dict), options (JSON text), seed, step (integers), "
                      "history (tensor)", fix)
    saved_matrix, history, step = state["matrix"], state["history"], state["step"]
    if (tuple(saved_matrix.shape) != tuple(matrix.shape) or not saved_matrix.dtype.is_floating_point
            or not bool(torch.isfinite(saved_matrix).all()) or history.dim() != 1 or not 0 <= step <= 2**62):
        raise invalid("checkpoint", f"{name}: matrix {tuple(saved_matrix.shape)} {saved_matrix.dtype}, history "
                      f"{tuple(history.shape)}, step {step}",
                      f"a finite floating-point matrix {tuple(matrix.shape)}, a 1-d history and a step ≥ 0", fix)
    try:
        saved = json.loads(state["options"])
    except (ValueError, RecursionError):
        saved = None
    if not isinstance(saved, dict):
        raise invalid("checkpoint", f"{name}: options that are not a JSON object", "the options JSON this method writes",
                      fix)
    _check_adam_state(state["optimiser"], matrix, name, fix)
    # steps may grow (continue training) and num_directions only selects stored rows; all else must match
    free = {"steps", "num_directions"}
    saved = {k: v for k, v in saved.items() if k not in free}
    current = {k: v for k, v in json.loads(json.dumps(options, sort_keys=True)).items() if k not in free}
    if saved != current or state["seed"] != seed:
        changed = sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))
        raise invalid("resume", str(path), "the same options and seed as the interrupted run",
                      f"These differ: {changed or ['seed']}")
    with torch.no_grad():
        matrix.copy_(saved_matrix.to(matrix.device, matrix.dtype))
    try:
        optimiser.load_state_dict(state["optimiser"])
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as error:
        raise invalid("checkpoint", f"{name}: an optimiser state Adam cannot take ({type(error).__name__})",
                      "the Adam state this method writes", fix) from None
    return int(step), [float(v) for v in history.tolist()]


def _check_adam_state(saved: dict[str, Any], matrix: torch.Tensor, name: str, fix: str) -> None:
    """An Adam state for the one parameter ``matrix``: per-parameter tensors 0-d (step) or of its shape."""
    groups, per_parameter = saved.get("param_groups"), saved.get("state")
    entries = list(per_parameter.values()) if isinstance(per_parameter, dict) else None
    if (not isinstance(groups, list) or len(groups) != 1 or not isinstance(groups[0], dict) or entries is None
            or len(entries) > 1 or not all(isinstance(entry, dict) for entry in entries)
            or any(isinstance(value, torch.Tensor) and value.dim() > 0 and tuple(value.shape) != tuple(matrix.shape)
                   for entry in entries for value in entry.values())):
        raise invalid("checkpoint", f"{name}: an optimiser state of another layout",
                      f"one Adam parameter group over a {tuple(matrix.shape)} matrix", fix)
