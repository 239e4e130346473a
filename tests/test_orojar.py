"""OroJaR: the estimator against its exact expectation, known answers, repeatability, resume."""

from __future__ import annotations

import pytest
import torch

import latentdirs
from latentdirs.errors import InvalidValueError, LatentDirsError
from latentdirs.generators.module import ModuleAdapter
from latentdirs.methods.orojar import orthonormal_rows
from latentdirs.methods.orojar_penalty import orojar_penalty, rademacher
from tests.conftest import invoke


def _linear_generator() -> ModuleAdapter:
    """G(z) = W z with unit-norm rows (so SeFa's column normalisation is a no-op) and distinct spectrum."""
    generator = torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(48, 6, generator=generator))[0]
    weight = u * torch.tensor([3.0, 2.5, 2.0, 1.5, 1.0, 0.5])
    weight = weight / weight.norm(dim=1, keepdim=True)
    network = torch.nn.Sequential(torch.nn.Linear(6, 48, bias=False), torch.nn.Unflatten(1, (3, 4, 4)))
    with torch.no_grad():
        network[0].weight.copy_(weight)
    return ModuleAdapter(network, spec="module:linear-test", latent_dim=6, first_layer="0", device="cpu")


@pytest.mark.parametrize("mode, epsilon, tolerance", [("exact", 0.1, 0.05), ("finite", 1e-3, 0.06)])
def test_estimator_mean_equals_off_diagonal_energy(mode, epsilon, tolerance):
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 12)).double()
    point = torch.randn(1, 4, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda w: network(point + w), torch.zeros(1, 4, dtype=torch.float64))
    gram = jacobian.reshape(12, 4).T @ jacobian.reshape(12, 4)
    expected = 2 * (gram.square().sum() - gram.diagonal().square().sum())
    draws = 20_000  # independent probe pairs, one per batch row at the same point
    probes = rademacher((2, draws, 4), torch.Generator().manual_seed(1), torch.device("cpu")).double()
    estimate = orojar_penalty(lambda w: [network(point + w)], torch.zeros(draws, 4, dtype=torch.float64), probes,
                              mode=mode, epsilon=epsilon)
    assert abs(estimate.item() / expected.item() - 1) < tolerance, (estimate.item(), expected.item())


def test_batched_and_exact_forms_give_the_same_penalty(faces):
    latents = faces.sample(4, seed=0)
    directions = orthonormal_rows(torch.randn(100, 100, generator=torch.Generator().manual_seed(0)))
    probes = rademacher((2, 4, 100), torch.Generator().manual_seed(1), torch.device("cpu"))

    def render(w):
        return [faces.synthesize(latents.repeat(w.shape[0] // 4, 1) + w @ directions)]

    plain = orojar_penalty(render, torch.zeros(4, 100), probes, epsilon=1e-2)
    batched = orojar_penalty(render, torch.zeros(4, 100), probes, epsilon=1e-2, batched=True)
    exact = orojar_penalty(render, torch.zeros(4, 100), probes, mode="exact")
    torch.testing.assert_close(batched, plain, rtol=1e-4, atol=0)
    torch.testing.assert_close(exact, plain, rtol=0.05, atol=0)  # ε = 0.01 vs the exact derivative


def test_linear_generator_recovers_sefa_eigenvectors():
    generator = _linear_generator()
    sefa = latentdirs.discover(generator, "sefa")
    assert torch.all(sefa.scores[:-1] - sefa.scores[1:] > 0.3), "eigenvalues must be distinct for the test"
    learned = latentdirs.discover(generator, "orojar", warm_start="random", steps=300, lr=0.05, k=4, batch_size=8)
    cosines = (learned.vectors @ sefa.vectors.T).abs()
    assert torch.all(cosines.diagonal() >= 0.99), cosines  # same order: effect size follows the eigenvalue


def test_synthetic_aligns_with_true_factors(synthetic):
    directions = latentdirs.discover(synthetic, "orojar", steps=60, batch_size=16)
    truth = torch.stack(list(synthetic.true_directions.values()))
    best = (directions.vectors @ truth.T).abs().max(dim=0).values
    assert torch.all(best >= 0.95), best  # measured 0.98-1.00 per factor (x, y, size, hue, value)
    assert directions.meta["method"]["options"]["warm_start_used"] == "sefa"


def test_rows_orthonormal_repeatable_and_ordered(synthetic):
    first = latentdirs.discover(synthetic, "orojar", steps=8, batch_size=4, warm_start="random", seed=3)
    again = latentdirs.discover(synthetic, "orojar", steps=8, batch_size=4, warm_start="random", seed=3)
    other = latentdirs.discover(synthetic, "orojar", steps=8, batch_size=4, warm_start="random", seed=4)
    gram = first.vectors @ first.vectors.T
    assert (gram - torch.eye(16)).abs().max() < 1e-5
    assert torch.equal(first.vectors, again.vectors) and torch.equal(first.scores, again.scores)
    assert not torch.equal(first.vectors, other.vectors)
    assert torch.all(first.scores[:-1] >= first.scores[1:])
    assert first.meta["method"]["seed"] == 3 and first.meta["score_kind"] == "mean_jacobian_norm"


def test_resume_equals_uninterrupted(synthetic, tmp_path):
    options = dict(steps=12, batch_size=4, warm_start="random", seed=1, checkpoint_every=5)
    whole = latentdirs.discover(synthetic, "orojar", checkpoint=tmp_path / "whole.ckpt", **options)

    def interrupt(step, total, penalty):
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        latentdirs.discover(synthetic, "orojar", checkpoint=tmp_path / "run.ckpt", progress=interrupt, **options)
    assert (tmp_path / "run.ckpt").is_file() and not list(tmp_path.glob("*.tmp"))
    resumed = latentdirs.discover(synthetic, "orojar", checkpoint=tmp_path / "run.ckpt", resume=True, **options)
    assert torch.equal(resumed.vectors, whole.vectors)
    longer = latentdirs.discover(synthetic, "orojar", checkpoint=tmp_path / "run.ckpt", resume=True,
                                 **dict(options, steps=14))
    assert longer.meta["method"]["options"]["steps"] == 14
    with pytest.raises(InvalidValueError, match="These differ: \\['lr'\\]"):
        latentdirs.discover(synthetic, "orojar", checkpoint=tmp_path / "run.ckpt", resume=True, **dict(options, lr=0.5))


def test_exact_mode_taps_subspace_and_conditional(faces, eyes):
    subspace = latentdirs.discover(faces, "orojar", steps=2, batch_size=2, subspace="0-9", mode="exact",
                                   taps=["output", "main.3"], num_directions=4)
    assert subspace.vectors.shape == (4, 100)
    assert subspace.vectors[:, 10:].abs().max() == 0, "directions stay in the searched coordinates"
    conditional = latentdirs.discover(eyes, "orojar", steps=1, batch_size=2, subspace="0-3", class_id="blue")
    assert conditional.meta["method"]["options"]["class_id"] == 1


def test_bad_options(synthetic, tmp_path):
    with pytest.raises(InvalidValueError, match="num_directions: got 20; allowed: 1-16"):
        latentdirs.discover(synthetic, "orojar", num_directions=20, steps=1)
    with pytest.raises(InvalidValueError, match="k: got 1; allowed: an integer ≥ 2"):
        latentdirs.discover(synthetic, "orojar", k=1, steps=1)
    with pytest.raises(LatentDirsError, match="taps: got \\['nope'\\]; allowed: 'output' or named layers"):
        latentdirs.discover(synthetic, "orojar", taps=["nope"], steps=1)
    with pytest.raises(InvalidValueError, match="resume together with checkpoint"):
        latentdirs.discover(synthetic, "orojar", resume=True, steps=1)
    with pytest.raises(InvalidValueError, match="an existing checkpoint file"):
        latentdirs.discover(synthetic, "orojar", resume=True, checkpoint=tmp_path / "none.ckpt", steps=1)
    with pytest.raises(InvalidValueError, match="subspace: got '3'; allowed: at least two"):
        latentdirs.discover(synthetic, "orojar", subspace="3", steps=1)


def test_orthonormal_rows_is_gram_schmidt():
    matrix = torch.randn(5, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    rows = []
    for vector in matrix:  # classical Gram–Schmidt, the reference's recipe
        for done in rows:
            vector = vector - (vector @ done) * done
        rows.append(vector / vector.norm())
    torch.testing.assert_close(orthonormal_rows(matrix), torch.stack(rows))


def test_cli_checkpoint_and_resume(cli_runner, tmp_path):
    out, ckpt = tmp_path / "oj.safetensors", tmp_path / "oj.ckpt"
    args = ["discover", "synthetic", "-m", "orojar", "--opt", "steps=4", "--opt", "batch_size=2",
            "--opt", f"checkpoint={ckpt}", "--device", "cpu", "-o", out]
    assert invoke(cli_runner, *args).exit_code == 0
    first = latentdirs.Directions.load(out)
    result = invoke(cli_runner, *args, "--resume")
    assert result.exit_code == 0, result.output
    assert torch.equal(latentdirs.Directions.load(out).vectors, first.vectors)
