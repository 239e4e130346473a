"""Calibrated directions: a monotone piecewise-linear map from a latent coordinate to a factor's amount.

A calibrated direction file stores, besides its unit direction ``v``, knots ``(x_j, y_j)`` of a
non-decreasing piecewise-linear ``g`` with ``amount ≈ g(⟨v, z⟩)`` up to a constant (tensors
``calibration.knots_x`` / ``calibration.knots_y``; header ``calibration`` = ``{"kind":
"monotone-piecewise-linear", "transform", "factor", "units", "range"}``). ``g`` is constant outside
its knots (saturated), so it never extrapolates.

A calibrated edit moves ``z`` by exactly ``δ`` of the factor: ``s = ⟨v, z⟩``, ``s* = g⁻¹(g(s) + δ)``,
``z' = z + (s* − s)·v`` (``v`` is unit). A request that would leave ``g``'s range is refused, or
clamped to the range with a warning — never extrapolated.
"""

from __future__ import annotations

import warnings

import torch

from latentdirs.errors import invalid

KIND = "monotone-piecewise-linear"


def interpolate(x: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear ``y(x)`` through knots ``xs`` (ascending) and ``ys``, constant outside."""
    x = x.clamp(xs[0], xs[-1])
    index = torch.searchsorted(xs, x.contiguous(), right=True).clamp(1, xs.numel() - 1)
    x0, x1, y0, y1 = xs[index - 1], xs[index], ys[index - 1], ys[index]
    weight = torch.where(x1 > x0, (x - x0) / (x1 - x0).clamp_min(1e-12), torch.zeros_like(x))
    return y0 + weight * (y1 - y0)


def calibrated_steps(latents: torch.Tensor, vector: torch.Tensor, knots_x: torch.Tensor, knots_y: torch.Tensor,
                     amounts: torch.Tensor, *, clamp: bool = False) -> torch.Tensor:
    """Strengths ``α [N]`` along unit ``vector [D]`` that change the factor by ``amounts [N]``.

    ``latents`` are ``[N, D]`` (for layered latents pass the rows the direction moves, e.g. one layer).
    """
    return calibrated_steps_and_clamps(latents, vector, knots_x, knots_y, amounts, clamp=clamp)[0]


def calibrated_steps_and_clamps(latents: torch.Tensor, vector: torch.Tensor, knots_x: torch.Tensor,
                                knots_y: torch.Tensor, amounts: torch.Tensor, *,
                                clamp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`calibrated_steps` and a bool ``[N]`` saying which requests were clamped to the range."""
    xs, ys = knots_x.to(latents), knots_y.to(latents)
    s = latents @ vector.to(latents)
    target = interpolate(s, xs, ys) + amounts.to(latents)
    low, high = ys[0], ys[-1]
    outside = (target < low - 1e-6) | (target > high + 1e-6)
    if outside.any():
        if not clamp:
            bad = amounts[outside].unique().tolist()
            raise invalid("amounts", bad, f"amounts that keep each seed inside the calibrated range "
                          f"[{float(low):.3g}, {float(high):.3g}] of the factor",
                          "Ask for smaller amounts, or allow clamping (--clamp-amounts / clamp=True)")
        warnings.warn(f"{int(outside.sum())} requested amounts leave the calibrated range; clamped", stacklevel=2)
        target = target.clamp(low, high)
    # g is non-decreasing: its inverse is the interpolation with the roles of x and y swapped
    # (flat segments map to their left end)
    s_star = interpolate(target, ys, xs)
    return s_star - s, outside


def fit_monotone(inputs_0: torch.Tensor, inputs_t: torch.Tensor, deltas: torch.Tensor, *, dim: int, knots: int = 101,
                 span: float = 5.0, epochs: int = 100, batch_size: int = 32, lr: float = 0.01, l2: float = 1e-3,
                 smoothness: float = 1e-2, seed: int = 0, init: torch.Tensor | None = None, slope: float = 1.0,
                 validation: float = 0.2, learn_vector: bool = True) -> dict[str, torch.Tensor | float]:
    """Fit ``δ = g(⟨v, z_T⟩) − g(⟨v, z_0⟩)`` with ``v ∈ R^dim`` and monotone piecewise-linear ``g``.

    ``g`` has ``knots`` equally spaced on [−span, span], slopes ``softplus(·) ≥ 0`` (initialised to ``slope``),
    saturated outside. Loss: MSE + ``l2``·‖v‖² + ``smoothness``·Σ (slope difference)². Adam, mini-batches.
    ``init`` and ``slope`` (g's initial slope everywhere) should start the fit near the data, with
    ``⟨init, z⟩`` spread over the knots. ``learn_vector=False`` keeps ``v = init`` and fits ``g`` alone.
    Returns ``vector`` (unit), ``knots_x`` / ``knots_y`` for the unit vector, ``train_mse`` and
    ``validation_mse`` (on a held-out fraction). ``g`` is made constant outside the coordinates the data
    covers (``min``/``max`` of ``⟨v, z_0⟩`` and ``⟨v, z_T⟩``): where no triplet constrains it, its slopes are
    only their initial guess, and a calibration must not promise amounts nobody measured.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(deltas.numel(), generator=generator)
    held = max(1, int(validation * deltas.numel())) if deltas.numel() > 4 else 0
    valid_idx, train_idx = order[:held], order[held:]
    xs = torch.linspace(-span, span, knots)
    width = xs[1] - xs[0]
    raw = torch.full((knots - 1,), float(torch.log(torch.expm1(torch.tensor(float(slope))))), requires_grad=True)
    v = (init.clone().float() if init is not None else torch.randn(dim, generator=generator) * 0.1)
    # Adam moves every coordinate by about lr per step whatever its gradient; v's entries are small
    # (‖v‖ ≈ 0.1 for a unit of δ), so v gets a tenth of g's rate, or it drifts into dimensions the data
    # does not constrain.
    groups = [{"params": [raw], "lr": lr}]
    if learn_vector:
        groups.append({"params": [v.requires_grad_(True)], "lr": lr * 0.1})
    optimiser = torch.optim.Adam(groups)

    def g(s: torch.Tensor) -> torch.Tensor:
        slopes = torch.nn.functional.softplus(raw) + 1e-4
        return (slopes * (s.unsqueeze(1) - xs[:-1]).clamp(0, float(width))).sum(dim=1)

    def loss_on(idx: torch.Tensor) -> torch.Tensor:
        predicted = g(inputs_t[idx] @ v) - g(inputs_0[idx] @ v)
        return ((predicted - deltas[idx]) ** 2).mean()

    for _ in range(epochs):
        shuffled = train_idx[torch.randperm(train_idx.numel(), generator=generator)]
        for start in range(0, shuffled.numel(), batch_size):
            idx = shuffled[start:start + batch_size]
            slopes = torch.nn.functional.softplus(raw)
            loss = loss_on(idx) + l2 * v.square().sum() + smoothness * (slopes[1:] - slopes[:-1]).square().sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        norm = v.norm()  # the file stores the unit direction: ⟨v, z⟩ = ‖v‖·⟨v̂, z⟩, so knots scale by 1/‖v‖
        covered = torch.cat([inputs_0[train_idx] @ v, inputs_t[train_idx] @ v])
        return {"vector": (v / norm).detach(), "knots_x": (xs / norm).detach(),
                "knots_y": g(xs.clamp(covered.min(), covered.max())).detach(),
                "train_mse": float(loss_on(train_idx)),
                "validation_mse": float(loss_on(valid_idx)) if held else float("nan")}
