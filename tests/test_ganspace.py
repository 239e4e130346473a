"""GANSpace (-m ganspace): PCA against NumPy's exact PCA, incremental against one-shot, the known answer
on ``synthetic``, StyleGAN w with layer-range edits, dcgan-faces, and every bad input as one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import latentdirs
from latentdirs.directions import Directions
from latentdirs.errors import LatentDirsError, NotSupportedError, OutOfRangeError, UnknownNameError
from latentdirs.methods.ganspace import (SAMPLE_BLOCK, CovarianceAccumulator, IncrementalAccumulator, fit_pca,
                                         runnable_layers)
from tests.conftest import invoke


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread here: on this shared 2-core machine, two threads wait on each other in every
    small op (the tests ran 20× slower in wall time); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _data(n: int = 600, features: int = 12, seed: int = 0) -> torch.Tensor:
    """Correlated rows with distinct variances and a large mean (a test of the shifted sums)."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(features, features, generator=generator, dtype=torch.float64)
    scales = torch.linspace(3.0, 0.2, features, dtype=torch.float64)
    return (torch.randn(n, features, generator=generator, dtype=torch.float64) * scales) @ mixing + 50.0


def _numpy_pca(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    values, vectors = np.linalg.eigh(np.cov(x.numpy(), rowvar=False))
    return values[::-1].copy(), vectors[:, ::-1].T.copy()


@pytest.mark.parametrize("method", ["covariance", "ipca"])
def test_pca_matches_numpy_exact_pca(method):
    x = _data()
    values, vectors = _numpy_pca(x)
    result = fit_pca(iter(x.float().split(50)), x.shape[1], x.shape[1], method=method)
    np.testing.assert_allclose(result.variances.numpy(), values, rtol=1e-4)
    cosines = np.abs((result.components.numpy() * vectors).sum(axis=1))
    np.testing.assert_allclose(cosines, 1.0, atol=1e-4)
    np.testing.assert_allclose(result.mean.numpy(), x.mean(0).numpy(), rtol=1e-5)
    assert result.total_variance == pytest.approx(values.sum(), rel=1e-4)


def test_incremental_paths_equal_the_one_shot_path():
    x = _data(n=400)
    one_shot = fit_pca(iter([x]), x.shape[1], x.shape[1], method="covariance")
    batched = fit_pca(iter(x.split(7)), x.shape[1], x.shape[1], method="covariance")
    torch.testing.assert_close(batched.variances, one_shot.variances, rtol=1e-10, atol=0)
    torch.testing.assert_close(batched.components.abs(), one_shot.components.abs(), rtol=0, atol=1e-9)
    incremental = IncrementalAccumulator(x.shape[1], x.shape[1], chunk=16)  # 24 updates of 16 rows
    for rows in x.split(5):
        incremental.update(rows)
    result = incremental.finish(x.shape[1])
    assert incremental.count == 400
    torch.testing.assert_close(result.variances, one_shot.variances, rtol=1e-8, atol=0)
    cosines = (result.components * one_shot.components).sum(1).abs()
    torch.testing.assert_close(cosines, torch.ones_like(cosines), rtol=0, atol=1e-8)


def test_truncated_incremental_pca_keeps_the_leading_components():
    x = _data(n=3000, features=40, seed=1)
    values, vectors = _numpy_pca(x)
    result = fit_pca(iter(x.float().split(100)), 40, 10, method="ipca")  # K = 10 of 40, chunks of 300
    np.testing.assert_allclose(result.variances.numpy()[:5], values[:5], rtol=2e-2)
    assert np.abs((result.components.numpy()[:5] * vectors[:5]).sum(axis=1)).min() > 0.99


def test_covariance_accumulator_refuses_a_single_sample():
    accumulator = CovarianceAccumulator(3)
    accumulator.update(torch.ones(1, 3))
    with pytest.raises(LatentDirsError, match="samples"):
        accumulator.finish(3)


def test_the_method_pca_is_numpy_pca_of_the_same_activations(synthetic):
    """The scores are the exact PCA of the `code` activations of the latents the method draws:
    block b of SAMPLE_BLOCK latents from seed + b, whatever the batch size."""
    samples, seed = SAMPLE_BLOCK + 500, 11
    directions = latentdirs.discover(synthetic, "ganspace", samples=samples, regression_samples=500, seed=seed,
                                     batch_size=77)
    z = torch.cat([synthetic.sample(SAMPLE_BLOCK, seed=seed), synthetic.sample(500, seed=seed + 1)])
    activations = synthetic.network.code(z).double()
    values, _ = _numpy_pca(activations)
    np.testing.assert_allclose(directions.scores.numpy(), values[:5], rtol=1e-4)
    other_batches = latentdirs.discover(synthetic, "ganspace", samples=samples, regression_samples=500, seed=seed,
                                        batch_size=250)
    torch.testing.assert_close(other_batches.vectors, directions.vectors, rtol=0, atol=1e-6)


def test_recovers_the_true_factors_of_synthetic_in_order(synthetic):
    directions = latentdirs.discover(synthetic, "ganspace", samples=20_000, regression_samples=20_000)
    assert len(directions) == 5  # the code layer has rank 5: the other components are null
    assert directions.space == "z" and directions.meta["score_kind"] == "explained_variance"
    truth = torch.stack(list(synthetic.true_directions.values()))
    cosines = (directions.vectors @ truth.T).abs()
    assert cosines.diagonal().min() > 0.995, cosines  # x, y, size, hue, value: the order of their variance
    ratio = directions.meta["method"]["options"]["explained_variance_ratio"]
    assert sum(ratio) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(LatentDirsError, match="num_directions: got 6; allowed: 1-5"):
        latentdirs.discover(synthetic, "ganspace", samples=500, num_directions=6)


def test_dcgan_faces_default_layer_and_ipca(faces):
    layers = runnable_layers(faces)
    assert next(iter(layers)) == "main.2" and layers["main.2"] == (512, 4, 4)
    directions = latentdirs.discover(faces, "ganspace", samples=300, regression_samples=300, num_directions=4,
                                     solver="auto")
    options = directions.meta["method"]["options"]
    assert options["layer"] == "main.2" and options["solver"] == "ipca" and options["features"] == 8192
    assert len(directions) == 4 and directions.latent_dim == 100
    assert torch.all(directions.scores[:-1] >= directions.scores[1:])
    directions.check_generator(faces)


@pytest.fixture(scope="module")
def stylegan(tmp_path_factory):
    from tests.stylegan2_fixtures import random_network, tiny_config, write_nvlabs_pickle

    path = write_nvlabs_pickle(random_network(tiny_config()), tmp_path_factory.mktemp("sg") / "net.pkl")
    return latentdirs.load_generator(f"stylegan2:{path}", device="cpu")


def test_stylegan_w_pca_with_layer_range_edits(stylegan):
    directions = latentdirs.discover(stylegan, "ganspace", samples=1200, layers="0-2", seed=4)
    assert directions.space == "w+" and directions.layers == [0, 1, 2]
    assert directions.meta["method"]["options"]["layer"] == "w" and len(directions) == 16
    w = torch.cat([stylegan.sample(SAMPLE_BLOCK, seed=4, space="w"), stylegan.sample(200, seed=5, space="w")])
    values, vectors = _numpy_pca(w.double())
    np.testing.assert_allclose(directions.scores.numpy(), values, rtol=1e-4)
    cosines = np.abs((directions.vectors.double().numpy()[:3] * vectors[:3]).sum(axis=1))
    np.testing.assert_allclose(cosines, 1.0, atol=1e-4)
    flat = latentdirs.discover(stylegan, "ganspace", samples=1200, seed=4)
    assert flat.space == "w" and flat.layers is None
    with pytest.raises(OutOfRangeError, match="layers: got \\[9\\]"):
        latentdirs.discover(stylegan, "ganspace", samples=100, layers="9")


def test_stylegan_activation_layer_is_regressed_to_w(stylegan):
    layers = runnable_layers(stylegan, None, "w")
    assert layers and not any(name.startswith("mapping") for name in layers)  # w is sampled before the hooks
    layer = next(name for name in layers if name.endswith("torgb.affine"))
    directions = latentdirs.discover(stylegan, "ganspace", samples=300, regression_samples=300, layer=layer,
                                     num_directions=3)
    assert directions.space == "w" and directions.meta["method"]["options"]["layer"] == layer
    assert len(directions) == 3 and directions.latent_dim == 16


def test_layers_need_a_w_plus_space(synthetic):
    with pytest.raises(NotSupportedError, match="layers: got '0-1'"):
        latentdirs.discover(synthetic, "ganspace", samples=100, layers="0-1")


def test_unknown_layer_lists_the_layers_that_run(faces):
    with pytest.raises(UnknownNameError) as caught:
        latentdirs.discover(faces, "ganspace", samples=100, layer="main.99")
    message = str(caught.value)
    assert message.startswith("layer: got 'main.99'; allowed: main.2, main.5") and "\n" not in message


@pytest.mark.parametrize("option, value, fragment", [
    ("samples", 1, "samples: got 1"),
    ("solver", "svd", "solver: got 'svd'"),
    ("batch_size", 0, "batch_size: got 0"),
    ("regression_samples", 1, "regression_samples: got 1"),
    ("num_directions", 0, "num_directions: got 0"),
])
def test_bad_options_are_refused_before_work(synthetic, option, value, fragment):
    with pytest.raises(LatentDirsError, match=fragment):
        latentdirs.discover(synthetic, "ganspace", **{option: value})


def test_cli_writes_a_file(cli_runner, tmp_path, synthetic):
    out = tmp_path / "g.safetensors"
    result = invoke(cli_runner, "discover", "synthetic", "-m", "ganspace", "--opt", "samples=800",
                    "--opt", "regression_samples=800", "-k", "3", "--device", "cpu", "-o", out)
    assert result.exit_code == 0, result.output
    assert "explained_variance" in result.output
    loaded = Directions.load(out, generator=synthetic)
    assert len(loaded) == 3 and loaded.method_name == "ganspace"


@pytest.mark.parametrize("args, fragments", [
    (["--opt", "layer=main.99"], ["layer: got 'main.99'", "main.2", "main.5"]),
    (["--opt", "solver=svd"], ["solver: got 'svd'"]),
    (["--layers", "0-2"], ["layers: got [0, 1, 2]", "W+ space"]),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(cli_runner, tmp_path, args, fragments):
    out = tmp_path / "bad.safetensors"
    result = invoke(cli_runner, "discover", "dcgan-faces", "-m", "ganspace", "--opt", "samples=100", *args,
                    "--device", "cpu", "-o", out)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and not out.exists()
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1
    for fragment in fragments:
        assert fragment in error_lines[0], (fragment, result.output)
