"""SeFa against known answers: the synthetic generator's true factors and an independent SVD."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import latentdirs
from latentdirs.errors import InvalidValueError, NotSupportedError, OutOfRangeError
from latentdirs.methods.sefa import sefa_factorize


def test_synthetic_recovers_every_true_factor(synthetic, synthetic_sefa):
    truth = torch.stack(list(synthetic.true_directions.values()))  # [5, 16] in order x, y, size, hue, value
    cosines = (synthetic_sefa.vectors[:5] @ truth.T).abs()
    assert torch.all(cosines.diagonal() >= 0.99), cosines.diagonal()
    # the eigenvalues are the population-code sizes, separated by 2
    expected = torch.tensor([float(count) for _, count in latentdirs.generators.synthetic.FACTORS])
    torch.testing.assert_close(synthetic_sefa.scores[:5], expected, atol=1e-4, rtol=0)
    assert synthetic_sefa.scores[5:].abs().max() < 1e-4  # inert dimensions


def test_synthetic_true_directions_change_only_their_factor(synthetic):
    z = synthetic.sample(4, seed=0)
    before = synthetic.factor_properties(z)
    for name, direction in synthetic.true_directions.items():
        after = synthetic.factor_properties(z + 1.5 * direction)
        for other, value in after.items():
            changed = (value - before[other]).abs().max()
            assert (changed > 1e-3) if other == name else (changed < 1e-5), (name, other, changed)


def test_faces_agrees_with_independent_svd(faces):
    directions = latentdirs.discover(faces, "sefa")
    weight = faces.network.main[0].weight.detach().double().numpy()  # [100, 512, 4, 4]
    matrix = weight.reshape(100, -1)
    matrix = matrix / np.linalg.norm(matrix, axis=0, keepdims=True)
    u, singular, _ = np.linalg.svd(matrix, full_matrices=False)
    np.testing.assert_allclose(directions.scores.numpy(), singular ** 2, rtol=1e-4, atol=1e-3)
    distinct = np.diff(singular ** 2) < -1e-3 * singular[0] ** 2  # compare where eigenvalues are separated
    keep = np.flatnonzero(np.concatenate([[True], distinct]) & np.concatenate([distinct, [True]]))
    cos = np.abs(np.sum(directions.vectors.double().numpy()[keep] * u.T[keep], axis=1))
    assert np.all(cos > 0.999), cos.min()
    assert directions.scores.sum().item() == pytest.approx(512 * 16, rel=1e-5)  # one per output unit


def test_rows_sorted_unit_and_canonical(faces):
    directions = latentdirs.discover(faces, "sefa", num_directions=12)
    assert len(directions) == 12
    assert torch.all(directions.scores[:-1] >= directions.scores[1:])
    torch.testing.assert_close(directions.vectors.norm(dim=1), torch.ones(12))
    peaks = directions.vectors.gather(1, directions.vectors.abs().argmax(1, keepdim=True))
    assert torch.all(peaks > 0)


def _normalised_spectrum(weight: np.ndarray) -> np.ndarray:
    """Eigenvalues of A·Aᵀ for A = ``weight`` [rows, …] flattened and column-normalised, by an SVD."""
    matrix = weight.reshape(weight.shape[0], -1)
    norms = np.linalg.norm(matrix, axis=0)
    return np.linalg.svd(matrix / np.where(norms > 0, norms, 1), compute_uv=False) ** 2


def test_conditional_uses_latent_rows_only(eyes):
    directions = latentdirs.discover(eyes, "sefa")
    assert directions.latent_dim == 100
    weight = eyes.network.main[0].weight.detach().double().numpy()  # [100 latent + 8 class rows, 1024, 4, 4]
    latent_rows = weight[:100].reshape(100, -1)
    # the trace of A·Aᵀ of a column-normalised A: one per output unit whose latent weights are not all zero
    live_units = int((np.linalg.norm(latent_rows, axis=0) > 0).sum())
    assert directions.scores.double().sum().item() == pytest.approx(live_units, rel=1e-4)
    np.testing.assert_allclose(directions.scores[:3].numpy(), _normalised_spectrum(weight[:100])[:3], rtol=1e-4)
    with_class_rows = _normalised_spectrum(weight)[:3]  # what factorising the class rows too would give
    assert np.all(np.abs(directions.scores[:3].numpy() / with_class_rows - 1) > 0.1)


def test_factorize_ignores_dead_units():
    weights = [torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])]
    vectors, values = sefa_factorize(weights)
    torch.testing.assert_close(values, torch.tensor([1.0, 1.0]))
    assert torch.isfinite(vectors).all()


def test_bad_options(faces, synthetic):
    with pytest.raises(InvalidValueError, match="num_directions: got 0; allowed: 1-100"):
        latentdirs.discover(faces, "sefa", num_directions=0)
    with pytest.raises(OutOfRangeError, match="layers: got"):
        latentdirs.discover(faces, "sefa", layers="3")
    with pytest.raises(LookupError, match="sefa option: got 'steps'; allowed: num_directions, layers, space"):
        latentdirs.discover(synthetic, "sefa", steps=3)


def test_module_without_first_layer_says_what_works():
    from latentdirs.generators.module import ModuleAdapter

    network = torch.nn.Sequential(torch.nn.Linear(4, 3 * 8 * 8), torch.nn.Tanh(), torch.nn.Unflatten(1, (3, 8, 8)))
    adapter = ModuleAdapter(network, spec="module:test", latent_dim=4, device="cpu")
    with pytest.raises(NotSupportedError, match="first_layer"):
        latentdirs.discover(adapter, "sefa")
    adapter = ModuleAdapter(network, spec="module:test", latent_dim=4, first_layer="0", device="cpu")
    directions = latentdirs.discover(adapter, "sefa")
    expected, _ = sefa_factorize([network[0].weight.detach().T])
    torch.testing.assert_close(directions.vectors, expected)
