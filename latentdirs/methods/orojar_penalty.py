"""The OroJaR penalty: an estimate of how far a Jacobian's columns are from orthogonal.

For outputs ``G(w)`` of latent coefficients ``w ∈ R^m`` and Rademacher vectors ``v_1 … v_k``:
``s_i = ‖J v_i‖²`` summed over the whole flattened output, and the penalty per sample is the unbiased
variance of ``s_1 … s_k``. Its expectation is ``2 · Σ_{i≠j} ((JᵀJ)_ij)²`` (for Rademacher ``v`` the
diagonal terms of ``vᵀ JᵀJ v`` are constant), so it vanishes exactly when the output changes caused
by different coordinates are orthogonal. Several taps (outputs of layers) are summed unweighted;
the batch is reduced by mean (discovery) or max (as a regulariser).

``J v`` comes either from a finite difference ``(G(w + ε v) − G(w)) / ε`` (the reference) or exactly
by forward-mode differentiation (``mode="exact"``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.autograd.forward_ad as forward_ad

from latentdirs.errors import invalid

#: renders latent coefficients ``[R·B, m]`` into a list of tap tensors, each ``[R·B, …]``; row r belongs
#: to sample r mod B (R > 1 only when ``batched``)
Render = Callable[[torch.Tensor], Sequence[torch.Tensor]]

MODES = ("finite", "exact")
REDUCTIONS = ("mean", "max")


def rademacher(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """±1 entries with equal probability, drawn on the CPU from ``generator`` (same on every device)."""
    return (torch.randint(0, 2, shape, generator=generator) * 2 - 1).to(device, torch.float32)


def squared_norms(directional: Sequence[torch.Tensor]) -> torch.Tensor:
    """``Σ_taps ‖d‖²`` per sample for tap tensors ``[B, …]`` → ``[B]``."""
    return sum(d.flatten(1).square().sum(dim=1) for d in directional)  # type: ignore[return-value]


def jacobian_products(render: Render, base: torch.Tensor, probes: torch.Tensor, *, mode: str, epsilon: float,
                      batched: bool = False, base_outputs: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """``‖J v_i‖²`` per sample and probe: ``[k, B]``, differentiable with respect to what ``render`` closes over.

    Args:
        render: coefficients ``[B, m]`` → tap tensors.
        base: the point ``w`` ``[B, m]`` (zeros in discovery).
        probes: Rademacher vectors ``[k, B, m]``.
        mode: ``"finite"`` (reference) or ``"exact"`` (forward-mode JVP).
        epsilon: finite-difference step.
        batched: finite mode only — render the base and all k perturbed points in one forward pass.
        base_outputs: finite mode — ``render(base)`` when already computed (it needs no gradient).
    """
    if mode == "exact":
        values = []
        for probe in probes:
            with forward_ad.dual_level():
                outputs = render(forward_ad.make_dual(base, probe))
                tangents = [forward_ad.unpack_dual(o).tangent for o in outputs]
            values.append(squared_norms(tangents))
        return values
    k, batch = probes.shape[:2]
    if batched:
        points = torch.cat([base.unsqueeze(0), base + epsilon * probes]).reshape(-1, base.shape[1])
        outputs = [o.reshape(k + 1, batch, *o.shape[1:]) for o in render(points)]
        return [squared_norms([(o[i + 1] - o[0]) / epsilon for o in outputs]) for i in range(k)]
    if base_outputs is None:
        with torch.no_grad():  # the unperturbed pass carries no gradient with respect to the directions
            base_outputs = [o.detach() for o in render(base)]
    return [squared_norms([(o - b) / epsilon for o, b in zip(render(base + epsilon * probe), base_outputs)])
            for probe in probes]


def check_penalty_choices(mode: str, reduction: str) -> None:
    """Refuse a ``mode`` not in :data:`MODES` or a ``reduction`` not in :data:`REDUCTIONS`."""
    if mode not in MODES:
        raise invalid("mode", mode, ", ".join(MODES))
    if reduction not in REDUCTIONS:
        raise invalid("reduction", reduction, ", ".join(REDUCTIONS))


def orojar_penalty(render: Render, base: torch.Tensor, probes: torch.Tensor, *, mode: str = "finite",
                   epsilon: float = 0.1, reduction: str = "mean", batched: bool = False) -> torch.Tensor:
    """The OroJaR penalty (a scalar) at ``base`` ``[B, m]`` for Rademacher ``probes`` ``[k, B, m]``, k ≥ 2."""
    check_penalty_choices(mode, reduction)
    if probes.shape[0] < 2:
        raise invalid("k", probes.shape[0], "an integer ≥ 2 (a variance needs two draws)")
    norms = torch.stack(jacobian_products(render, base, probes, mode=mode, epsilon=epsilon, batched=batched))
    per_sample = norms.var(dim=0, unbiased=True)
    return per_sample.mean() if reduction == "mean" else per_sample.max()
