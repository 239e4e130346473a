"""StyleGAN2: safe loading of the three formats, spaces, truncation, layer-wise SeFa, and the edit path."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

import latentdirs
from latentdirs.errors import NotSupportedError, WeightsMismatchError
from latentdirs.generators.stylegan2.network import fir, upsample2d
from latentdirs.generators.stylegan2.unpickle import restricted_load
from tests.conftest import invoke
from tests.contract import AdapterContract
from tests.stylegan2_fixtures import (random_network, rosinality_state, tiny_config, write_nvlabs_pickle,
                                      write_rosinality, write_tensorflow_pickle)


@pytest.fixture(scope="module")
def network():
    return random_network(tiny_config())


@pytest.fixture(scope="module")
def files(network, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stylegan2")
    return {"nvlabs": write_nvlabs_pickle(network, folder / "network.pkl"),
            "tensorflow": write_tensorflow_pickle(network, folder / "tf.pkl"),
            "rosinality": write_rosinality(network, folder / "g.pt"),
            "rosinality-training": write_rosinality(network, folder / "train.pt", training=True)}


@pytest.fixture(scope="module")
def stylegan(files):
    return latentdirs.load_generator(f"stylegan2:{files['nvlabs']}", device="cpu")


class TestStyleGAN2Contract(AdapterContract):
    @pytest.fixture
    def generator(self, stylegan):
        return stylegan


def test_unpickler_rebuilds_every_tensor_bit_for_bit(files, network):
    loaded = restricted_load(files["nvlabs"].read_bytes())
    from latentdirs.generators.stylegan2.loaders import _flatten_record

    rebuilt = _flatten_record(loaded["G_ema"])
    expected = network.state_dict()
    assert set(rebuilt) == set(expected)
    for name, value in expected.items():
        assert torch.equal(rebuilt[name], value), name
    assert loaded["G_ema"].meta["module_src"].startswith("raise SystemExit"), "source kept as text, never run"


def test_three_formats_give_identical_images(files):
    images = {}
    for name, path in files.items():
        if name == "rosinality-training":  # no latent_avg: tested in the next test
            continue
        generator = latentdirs.load_generator(f"stylegan2:{path}", device="cpu")
        with torch.no_grad():
            images[name] = generator.synthesize(generator.sample(3, seed=5, truncation=0.7), truncation=0.7)
    reference = images.pop("nvlabs")
    assert set(images) == {"tensorflow", "rosinality"}
    for name, image in images.items():
        assert torch.equal(image, reference), name


def test_training_checkpoint_estimates_w_avg(files, network):
    with pytest.warns(UserWarning, match="no average w"):
        generator = latentdirs.load_generator(f"stylegan2:{files['rosinality-training']}", device="cpu")
    assert torch.isfinite(generator.network.mapping.w_avg).all()
    assert generator.describe()["source_format"] == "rosinality-pt"


def test_forbidden_global_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Evil()}))
    with pytest.raises(WeightsMismatchError, match=r"global (posix|os|nt)\.system, which is not on the allow-list"):
        latentdirs.load_generator(f"stylegan2:{path}")
    assert not marker.exists()


def test_w_plus_with_equal_rows_equals_w(stylegan):
    w = stylegan.sample(2, seed=3, space="w", truncation=0.8)
    assert torch.equal(stylegan.sample(2, seed=3, space="w+", truncation=0.8)[:, 4], w)
    with torch.no_grad():
        assert torch.equal(stylegan.synthesize(w, space="w"),
                           stylegan.synthesize(stylegan.to_space(w, "w", "w+"), space="w+"))
        z = stylegan.sample(2, seed=3)
        assert torch.equal(stylegan.synthesize(z, truncation=0.8), stylegan.synthesize(w, space="w"))


def test_truncation_moves_towards_w_avg(stylegan):
    w1 = stylegan.sample(4, seed=1, space="w")
    w_half = stylegan.sample(4, seed=1, space="w", truncation=0.5)
    w_avg = stylegan.network.mapping.w_avg
    torch.testing.assert_close(w_half, w_avg + 0.5 * (w1 - w_avg))


def _naive_fir_upsample(x: torch.Tensor) -> torch.Tensor:
    """upfirdn2d by definition: insert zeros, pad (2, 1), correlate with the 4×4 filter × 4 — pixel loops."""
    taps = np.array([1.0, 3.0, 3.0, 1.0])
    kernel = np.outer(taps, taps) / 64 * 4
    data = x.double().numpy()
    n, c, h, w = data.shape
    up = np.zeros((n, c, 2 * h, 2 * w))
    up[:, :, ::2, ::2] = data
    padded = np.pad(up, ((0, 0), (0, 0), (2, 1), (2, 1)))
    out = np.zeros((n, c, 2 * h, 2 * w))
    for i in range(2 * h):
        for j in range(2 * w):
            out[:, :, i, j] = (padded[:, :, i:i + 4, j:j + 4] * kernel[::-1, ::-1]).sum(axis=(2, 3))
    return torch.from_numpy(out)


def test_fir_as_convolution_matches_definition():
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(upsample2d(x).double(), _naive_fir_upsample(x), atol=1e-5, rtol=0)
    assert fir(torch.ones(1, 1, 6, 6), (1, 1, 1, 1), gain=4.0)[0, 0, 1:-1, 1:-1].allclose(torch.full((3, 3), 4.0))


def test_sefa_on_layers_matches_independent_computation(stylegan, network):
    directions = latentdirs.discover(stylegan, "sefa", layers="0-3", num_directions=5)
    assert directions.space == "w+" and directions.layers == [0, 1, 2, 3]
    affines = [network.synthesis.b4.conv1, network.synthesis.b8.conv0, network.synthesis.b8.conv1,
               network.synthesis.b16.conv0]
    matrix = np.concatenate([a.affine.weight.detach().double().numpy().T for a in affines], axis=1)
    matrix /= np.linalg.norm(matrix, axis=0, keepdims=True)
    u, singular, _ = np.linalg.svd(matrix, full_matrices=False)
    np.testing.assert_allclose(directions.scores.numpy(), singular[:5] ** 2, rtol=1e-4)
    np.testing.assert_allclose(np.abs(np.sum(directions.vectors.double().numpy() * u.T[:5], axis=1)), 1, atol=1e-4)
    everything = latentdirs.discover(stylegan, "sefa")
    assert everything.layers is None and len(stylegan.projection_layers) == 8  # num_ws at 32 px
    assert stylegan.projection_layers[-1] == "b32.torgb"


def test_layer_edit_changes_only_chosen_slots(stylegan):
    directions = latentdirs.discover(stylegan, "sefa", layers="6-7", num_directions=1)
    ws = stylegan.sample(1, seed=0, space="w+")
    moved = latentdirs.shift(ws, directions, index=0, alpha=3.0)
    changed = (moved - ws).abs().sum(dim=2)[0]
    assert changed[:6].eq(0).all() and changed[6:].gt(0).all()


def test_stylegan3_and_foreign_files_refused(tmp_path, network):
    from tests.stylegan2_fixtures import write_nvlabs_pickle as write

    sg3 = random_network(tiny_config())
    sg3.synthesis.input = torch.nn.Module()  # StyleGAN3's SynthesisInput holds 'freqs', 'phases', …
    sg3.synthesis.input.register_buffer("freqs", torch.zeros(4, 2))
    path = write(sg3, tmp_path / "sg3.pkl")
    with pytest.raises(NotSupportedError, match="StyleGAN3 .* not supported yet"):
        latentdirs.load_generator(f"stylegan2:{path}")
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"weights": [1, 2]}))
    with pytest.raises(WeightsMismatchError, match="neither an NVlabs network pickle"):
        latentdirs.load_generator(f"stylegan2:{tmp_path / 'plain.pkl'}")
    torch.save({"model": rosinality_state(network)}, tmp_path / "other.pt")
    with pytest.raises(WeightsMismatchError, match="without 'g_ema'"):
        latentdirs.load_generator(f"stylegan2:{tmp_path / 'other.pt'}")
    (tmp_path / "cut.pkl").write_bytes(path.read_bytes()[:500])
    with pytest.raises(WeightsMismatchError, match="not a readable network pickle"):
        latentdirs.load_generator(f"stylegan2:{tmp_path / 'cut.pkl'}")


def test_resnet_conditional_clamped_net(tmp_path):
    config = tiny_config(architecture="resnet", c_dim=3, conv_clamp=0.5)
    network = random_network(config)
    generator = latentdirs.load_generator(f"stylegan2:{write_nvlabs_pickle(network, tmp_path / 'r.pkl')}",
                                          device="cpu")
    assert generator.conditional and generator.config.conv_clamp == 0.5 and generator.config.architecture == "resnet"
    z = generator.sample(2, seed=0)
    with torch.no_grad():
        a, b = generator.synthesize(z, classes=0), generator.synthesize(z, classes=2)
    assert (a - b).abs().max() > 0 and a.abs().max() <= 0.5 * 1.0001 * 2  # clamp bounds every layer


def test_cli_discover_layers_then_edit(files, tmp_path, cli_runner):
    out = tmp_path / "sg.safetensors"
    result = invoke(cli_runner, "discover", f"stylegan2:{files['nvlabs']}", "-m", "sefa", "--layers", "0-3",
                    "--device", "cpu", "-o", out)
    assert result.exit_code == 0, result.output
    result = invoke(cli_runner, "edit", out, "--indices", "0", "--seeds", "0-1", "--alphas", "-3,0,3",
                    "--truncation", "0.7", "--device", "cpu", "-o", tmp_path / "e")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert manifest["directions"]["space"] == "w+" and manifest["directions"]["layers"] == [0, 1, 2, 3]
    assert manifest["truncation"] == 0.7
