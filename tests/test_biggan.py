"""BigGAN-deep through the real pytorch_pretrained_biggan classes, on tiny random directories."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import latentdirs
from latentdirs.errors import InvalidValueError, MissingWeightsError, UnknownNameError, WeightsMismatchError
from tests.biggan_tiny import TINY, write_biggan_dir
from tests.conftest import invoke


@pytest.fixture(scope="module")
def biggan_dir(tmp_path_factory):
    return write_biggan_dir(tmp_path_factory.mktemp("biggan"))


@pytest.fixture(scope="module")
def biggan(biggan_dir):
    return latentdirs.load_generator(f"biggan:{biggan_dir}", device="cpu")


# the adapter contract runs on BigGAN with every other family (tests/test_adapters.py, tests/contract.py)


def _package_forward(generator, z, classes, psi):
    one_hot = torch.nn.functional.one_hot(torch.tensor(classes), generator.num_classes).float()
    with torch.no_grad():
        return generator.network(z, one_hot, psi)


@pytest.mark.parametrize("psi", [1.0, 0.4, 0.14, 0.58])
def test_equals_package_forward_exactly(biggan, psi):
    z = biggan.sample(3, seed=11, truncation=psi)
    with torch.no_grad():
        ours = biggan.synthesize(z, classes=[0, 4, 9], truncation=psi)
        blocks = biggan.synthesize(biggan.to_space(z, "z", "blocks"), space="blocks", classes=[0, 4, 9],
                                   truncation=psi)
    expected = _package_forward(biggan, z, [0, 4, 9], psi)
    assert torch.equal(ours, expected)
    assert torch.equal(blocks, expected)


def test_sampling_matches_package_recipe(biggan):
    z = biggan.sample(4000, seed=0, truncation=0.5)
    assert z.abs().max() <= 1.0 + 1e-6  # ψ · truncnorm(−2, 2)
    assert abs(z.std().item() - 0.5 * 0.8796) < 0.01  # std of truncnorm(−2, 2) is 0.8796


def test_block_edit_acts_on_chosen_blocks_only(biggan):
    z = biggan.sample(2, seed=1)
    blocks = biggan.to_space(z, "z", "blocks")
    direction = torch.zeros(1, biggan.z_dim)
    direction[0, 0] = 1.0
    late = latentdirs.shift(blocks, direction, index=0, alpha=3.0, layers=[5, 6])
    everywhere = latentdirs.shift(blocks, direction, index=0, alpha=3.0)
    with torch.no_grad():
        base = biggan.synthesize(blocks, space="blocks", classes=1)
        late_image = biggan.synthesize(late, space="blocks", classes=1)
        all_image = biggan.synthesize(everywhere, space="blocks", classes=1)
        z_image = biggan.synthesize(z + 3.0 * direction, classes=1)
    assert torch.equal(all_image, z_image)
    assert (late_image - base).abs().mean() > 0
    assert (late_image - all_image).abs().mean() > 1e-4


def _independent_sefa(matrices):
    stacked = np.concatenate(matrices, axis=1)
    stacked = stacked / np.linalg.norm(stacked, axis=0, keepdims=True)
    u, singular, _ = np.linalg.svd(stacked, full_matrices=False)
    return u.T, singular ** 2


def _sn_weight(module):
    weight = module.weight_orig.detach().double()
    return (weight / torch.linalg.matrix_norm(weight.reshape(weight.shape[0], -1), ord=2)).numpy()


def test_sefa_matches_independent_computation(biggan):
    z_dim = biggan.z_dim
    default = latentdirs.discover(biggan, "sefa")
    vectors, values = _independent_sefa([_sn_weight(biggan.network.generator.gen_z)[:, :z_dim].T])
    np.testing.assert_allclose(default.scores.numpy(), values, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.abs(np.sum(default.vectors.double().numpy() * vectors, axis=1)), 1, atol=1e-3)
    assert default.space == "z" and default.layers is None

    chosen = latentdirs.discover(biggan, "sefa", layers="2-3", num_directions=4)
    blocks = [biggan.blocks[1], biggan.blocks[2]]
    matrices = [_sn_weight(getattr(getattr(b, f"bn_{k}"), part))[:, :z_dim].T
                for b in blocks for k in range(4) for part in ("scale", "offset")]
    vectors, values = _independent_sefa(matrices)
    np.testing.assert_allclose(chosen.scores.numpy(), values[:4], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.abs(np.sum(chosen.vectors.double().numpy() * vectors[:4], axis=1)), 1, atol=1e-3)
    assert chosen.space == "blocks" and chosen.layers == [2, 3]


def test_truncation_rules(biggan):
    for bad in (0, 1.5):
        with pytest.raises(InvalidValueError, match=f"truncation: got {bad!r}"):
            biggan.sample(1, seed=0, truncation=bad)
    with pytest.raises(InvalidValueError, match="no statistics below 0.02"):
        biggan.check_truncation(0.005)
    with pytest.warns(UserWarning, match="truncation 0.437 is off BigGAN's statistics grid.*using 0.44"):
        assert biggan.check_truncation(0.437) == pytest.approx(0.44)


def test_classes_are_ids(biggan):
    assert biggan.resolve_class("7") == 7
    with pytest.raises(UnknownNameError, match="class: got 'goldfish'; allowed: integer ImageNet ids 0-9"):
        biggan.resolve_class("goldfish")


def test_bad_directories(tmp_path, biggan_dir):
    with pytest.raises(MissingWeightsError, match="lacks config.json and pytorch_model.bin"):
        latentdirs.load_generator(f"biggan:{tmp_path}")
    wrong = write_biggan_dir(tmp_path / "wrong", dict(TINY, channel_width=8))
    (wrong / "config.json").write_text((biggan_dir / "config.json").read_text())
    with pytest.raises(WeightsMismatchError, match=r"pytorch_model.bin with \d+ wrongly shaped'; allowed: exactly the "
                                                  r"parameters and shapes of the architecture in config.json\. First "
                                                  r"differences — wrong shapes: generator.gen_z.bias \(2048,\) \(expected \(1024,\)\)"):
        latentdirs.load_generator(f"biggan:{wrong}")
    (wrong / "config.json").write_text("{ not json")
    with pytest.raises(WeightsMismatchError, match="wrong/config.json: not JSON .*allowed: a usable BigGAN config"):
        latentdirs.load_generator(f"biggan:{wrong}")
    with pytest.raises(MissingWeightsError, match="biggan:NAME with NAME in biggan-deep-128"):
        latentdirs.load_generator(f"biggan:{tmp_path / 'absent'}")


def test_hub_name_offline_says_which_files(monkeypatch):
    from pytorch_pretrained_biggan import file_utils

    def offline(url, cache_dir=None):
        raise OSError("no network")

    monkeypatch.setattr(file_utils, "cached_path", offline)
    with pytest.raises(MissingWeightsError, match="put config.json .* and pytorch_model.bin .* into one directory"):
        latentdirs.load_generator("biggan:biggan-deep-128")


def test_cli_discover_and_edit_with_classes_and_truncation(biggan_dir, tmp_path, cli_runner):
    path = tmp_path / "bg.safetensors"
    result = invoke(cli_runner, "discover", f"biggan:{biggan_dir}", "-m", "sefa", "--layers", "1-2", "-k", "3",
                    "--device", "cpu", "-o", path)
    assert result.exit_code == 0, result.output
    result = invoke(cli_runner, "edit", path, "--indices", "0", "--seeds", "0-1", "--alphas", "-2,0,2",
                    "--class", "3", "--class", "7", "--truncation", "0.5", "--device", "cpu", "-o", tmp_path / "e")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert manifest["truncation"] == 0.5 and manifest["classes"] == [3, 7]
    assert manifest["directions"]["space"] == "blocks" and manifest["directions"]["layers"] == [1, 2]
    assert [(r["class"], r["seed"]) for r in manifest["images"][0]["rows"]] == [(3, 0), (3, 1), (7, 0), (7, 1)]
    assert (tmp_path / "e" / "strips" / "d000_seed1_c7.png").is_file()


@pytest.mark.parametrize("config", ["tiny", 128, 256, 512, "attention-first"])
def test_parameter_count_matches_the_package_model(config):
    """The size check before any allocation counts exactly what the package's BigGAN would hold."""
    from pytorch_pretrained_biggan import BigGAN, BigGANConfig

    from latentdirs.generators.biggan import parameter_count
    from tests.biggan_tiny import released_config

    values = {"tiny": TINY, "attention-first": dict(TINY, attention_layer_position=0)}.get(config)
    values = values or released_config(config)
    with torch.device("meta"):  # shapes only: the released models would take 200 MB each
        model = BigGAN(BigGANConfig(**values))
    assert parameter_count(BigGANConfig(**values)) == sum(v.numel() for v in model.state_dict().values())


def test_config_describing_more_than_the_weights_hold_is_refused_unread(biggan_dir, tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    config = json.loads((biggan_dir / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, channel_width=64)))
    (folder / "pytorch_model.bin").write_bytes(b"\0")  # never read: the size check comes first
    with pytest.raises(WeightsMismatchError, match=r"describes \d+ parameters \(at least \d+ bytes\), but "
                                                   r"pytorch_model.bin has 1 bytes"):
        latentdirs.load_generator(f"biggan:{folder}", device="cpu")
    (folder / "config.json").write_text(json.dumps(dict(config, channel_width=2048)))
    with pytest.raises(WeightsMismatchError, match="parameters'; allowed: at most 2147483648"):
        latentdirs.load_generator(f"biggan:{folder}", device="cpu")
    (folder / "config.json").write_text(json.dumps(dict(config, layers=[[True, 1, 1]] * 2)))
    with pytest.raises(WeightsMismatchError, match=r"output_dim = 32 with layers that render 16 px"):
        latentdirs.load_generator(f"biggan:{folder}", device="cpu")
