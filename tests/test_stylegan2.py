"""StyleGAN2: safe loading of the three formats, the maths against a straightforward reference, spaces,
truncation, noise, layer-wise SeFa, and the CLI path."""

from __future__ import annotations

import json
import math
import os
import pickle

import numpy as np
import pytest
import torch

import latentdirs
from latentdirs.errors import InvalidValueError, NotSupportedError, WeightsMismatchError
from latentdirs.generators.stylegan2.network import upsample2d
from latentdirs.generators.stylegan2.unpickle import restricted_load
from tests.conftest import invoke
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


# the adapter contract runs on StyleGAN2 with every other family (tests/test_adapters.py, tests/contract.py)


# ---------------------------------------------------------------------- an independent reference forward
# Written from the description of the original computation (docs/checkpoints.md), in float64, the
# slow obvious way: FIR filtering and zero insertion by definition with pixel loops, the modulated
# convolution with the weight modulated and demodulated per sample in a Python loop, and the
# transposed convolution as zero insertion followed by an ordinary convolution with the flipped kernel.

def _naive_upfirdn(x: np.ndarray, up: int, pad: tuple[int, int], gain: float) -> np.ndarray:
    """Insert ``up - 1`` zeros after every pixel, pad (before, after), correlate with [1,3,3,1]²/64 × gain."""
    taps = np.array([1.0, 3.0, 3.0, 1.0])
    kernel = np.outer(taps, taps) / 64 * gain
    n, c, h, w = x.shape
    inserted = np.zeros((n, c, h * up, w * up))
    inserted[:, :, ::up, ::up] = x
    padded = np.pad(inserted, ((0, 0), (0, 0), pad, pad))
    size = padded.shape[-1] - 3
    out = np.zeros((n, c, size, size))
    for i in range(size):
        for j in range(size):
            out[:, :, i, j] = (padded[:, :, i:i + 4, j:j + 4] * kernel[::-1, ::-1]).sum(axis=(2, 3))
    return out


def _lrelu(x: torch.Tensor, gain: float = 1.0, clamp: float | None = None) -> torch.Tensor:
    x = torch.where(x >= 0, x, 0.2 * x) * math.sqrt(2) * gain
    return x if clamp is None else x.clamp(-clamp * gain, clamp * gain)


def _fc(s: dict, name: str, x: torch.Tensor, lr: float = 1.0) -> torch.Tensor:
    weight = s[f"{name}.weight"]
    return x @ (weight * lr / math.sqrt(weight.shape[1])).T + s[f"{name}.bias"] * lr


def _modulated(s: dict, name: str, x: torch.Tensor, w: torch.Tensor, *, demodulate: bool, up: bool) -> torch.Tensor:
    weight = s[f"{name}.weight"]
    styles = _fc(s, f"{name}.affine", w)
    if not demodulate:
        styles = styles / math.sqrt(weight.shape[1])
    outputs = []
    for n in range(x.shape[0]):  # one sample at a time, its own weight
        wn = weight * styles[n].reshape(1, -1, 1, 1)
        if demodulate:
            wn = wn / (wn.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        xn = x[n:n + 1]
        if up:  # transposed conv = zero insertion, pad k-1, correlation with the flipped kernel
            h = xn.shape[-1]
            inserted = xn.new_zeros(1, xn.shape[1], 2 * h - 1, 2 * h - 1)
            inserted[:, :, ::2, ::2] = xn
            y = torch.nn.functional.conv2d(inserted, wn.flip(2, 3), padding=2)
            y = torch.from_numpy(_naive_upfirdn(y.numpy(), 1, (1, 1), 4.0))
        else:
            y = torch.nn.functional.conv2d(xn, wn, padding=wn.shape[-1] // 2)
        outputs.append(y)
    return torch.cat(outputs)


def _reference_images(state: dict, config, z: torch.Tensor, classes: list[int] | None, psi: float,
                      cutoff: int | None, noise: bool) -> torch.Tensor:
    s = {k: v.double() for k, v in state.items()}
    x = z.double()
    x = x / (x.square().mean(dim=1, keepdim=True) + 1e-8).sqrt()
    if config.c_dim:
        y = _fc(s, "mapping.embed", torch.eye(config.c_dim, dtype=torch.float64)[classes])
        x = torch.cat([x, y / (y.square().mean(dim=1, keepdim=True) + 1e-8).sqrt()], dim=1)
    for i in range(config.mapping_layers):
        x = _lrelu(_fc(s, f"mapping.fc{i}", x, lr=0.01))
    ws = [x.clone() for _ in range(config.num_ws)]
    for i in range(config.num_ws if cutoff is None else cutoff):
        ws[i] = s["mapping.w_avg"] + psi * (ws[i] - s["mapping.w_avg"])

    def layer(name: str, x: torch.Tensor, w: torch.Tensor, up: bool, gain: float = 1.0) -> torch.Tensor:
        x = _modulated(s, name, x, w, demodulate=True, up=up)
        if noise:
            x = x + s[f"{name}.noise_const"] * s[f"{name}.noise_strength"]
        return _lrelu(x + s[f"{name}.bias"].reshape(1, -1, 1, 1), gain, config.conv_clamp)

    def torgb(name: str, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = _modulated(s, name, x, w, demodulate=False, up=False) + s[f"{name}.bias"].reshape(1, -1, 1, 1)
        return x if config.conv_clamp is None else x.clamp(-config.conv_clamp, config.conv_clamp)

    x = s["synthesis.b4.const"].expand(z.shape[0], -1, -1, -1)
    x = layer("synthesis.b4.conv1", x, ws[0], up=False)
    image = torgb("synthesis.b4.torgb", x, ws[1]) if config.architecture == "skip" else None
    for k, r in enumerate(config.resolutions[1:], start=1):
        b = f"synthesis.b{r}"
        if config.architecture == "resnet":
            up = torch.from_numpy(_naive_upfirdn(x.numpy(), 2, (2, 1), 4.0))
            weight = s[f"{b}.skip.weight"] / math.sqrt(x.shape[1])
            shortcut = torch.nn.functional.conv2d(up, weight) * math.sqrt(0.5)
            x = layer(f"{b}.conv0", x, ws[2 * k - 1], up=True)
            x = shortcut + layer(f"{b}.conv1", x, ws[2 * k], up=False, gain=math.sqrt(0.5))
        else:
            x = layer(f"{b}.conv0", x, ws[2 * k - 1], up=True)
            x = layer(f"{b}.conv1", x, ws[2 * k], up=False)
        if f"{b}.torgb.weight" in s:
            rgb = torgb(f"{b}.torgb", x, ws[2 * k + 1])
            image = rgb if image is None else torch.from_numpy(_naive_upfirdn(image.numpy(), 2, (2, 1), 4.0)) + rgb
    return image


REFERENCE_CASES = {
    "skip": dict(),
    "resnet-conditional-clamped": dict(architecture="resnet", c_dim=3, conv_clamp=0.4, embed_features=8,
                                       mapping_features=24, mapping_layers=3),
    "skip-grayscale-no-noise": dict(img_channels=1, use_noise=False, img_resolution=16,
                                    channels={4: 16, 8: 12, 16: 8}),
}


@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_matches_straightforward_reference(case, tmp_path):
    config = tiny_config(**REFERENCE_CASES[case])
    network = random_network(config, seed=3)
    generator = latentdirs.load_generator(f"stylegan2:{write_nvlabs_pickle(network, tmp_path / 'n.pkl')}",
                                          device="cpu", truncation_cutoff=3)
    z = generator.sample(3, seed=1)
    classes = [0, 2, 1] if config.c_dim else None
    with torch.no_grad():
        images = generator.synthesize(z, classes=classes, truncation=0.6)
    expected = _reference_images(network.state_dict(), config, z, classes, 0.6, 3, noise=config.use_noise)
    if config.img_channels == 1:
        expected = expected.expand(-1, 3, -1, -1)
    assert expected.abs().max() > 0.1 and (expected - expected.mean()).abs().max() > 0.1
    assert (images.double() - expected).abs().max() < 1e-4  # the brief's bound for "reproduces"
    if config.conv_clamp is not None:
        assert expected.abs().max() <= config.conv_clamp + 1e-9 and images.abs().max() <= config.conv_clamp + 1e-6


@pytest.mark.parametrize("changes", [{}, {"architecture": "resnet", "c_dim": 4, "conv_clamp": 0.5,
                                        "mapping_features": 20, "use_noise": False},
                                     {"mapping_layers": 1, "c_dim": 3, "embed_features": 8, "img_channels": 1}])
def test_parameter_count_matches_the_network(changes):
    """The implied-size check counts exactly what StyleGAN2Generator(config) holds, without building it."""
    from latentdirs.generators.stylegan2.network import StyleGAN2Generator, parameter_count

    config = tiny_config(**changes)
    assert parameter_count(config) == sum(v.numel() for v in StyleGAN2Generator(config).state_dict().values())


def test_shapes_implying_a_far_larger_network_are_refused_before_building_it(tmp_path, network):
    state = rosinality_state(network)
    state["conv1.conv.weight"] = torch.zeros(1, 4096, 1, 3, 3)  # implies a [4096, 4096, 3, 3] convolution
    torch.save({"g_ema": state, "latent_avg": network.mapping.w_avg}, tmp_path / "wide.pt")
    with pytest.raises(WeightsMismatchError, match=r"tensor shapes describing a network of \d+ values, with \d+ "
                                                   r"stored'; allowed: a file holding every weight"):
        latentdirs.load_generator(f"stylegan2:{tmp_path / 'wide.pt'}", device="cpu")


def test_tensorflow_pickle_with_a_block_cut_short_is_refused(tmp_path, network):
    path = write_tensorflow_pickle(network, tmp_path / "tf.pkl")
    data = path.read_bytes().replace(b"16x16/Conv1/weight", b"16x16/Conv1/wEIGHT")  # the block's conv vanishes
    (tmp_path / "cut.pkl").write_bytes(data)
    with pytest.raises(WeightsMismatchError, match=r"synthesis variables 16x16/Conv0_up/bias, .* \(32 in all\) that no "
                                                   r"layer of the network read"):
        latentdirs.load_generator(f"stylegan2:{tmp_path / 'cut.pkl'}", device="cpu")


def test_fir_upsampling_matches_definition():
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    expected = torch.from_numpy(_naive_upfirdn(x.double().numpy(), 2, (2, 1), 4.0))
    torch.testing.assert_close(upsample2d(x).double(), expected, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------- loading
def test_unpickler_rebuilds_every_tensor_bit_for_bit(files, network):
    loaded = restricted_load(files["nvlabs"].read_bytes())
    from latentdirs.generators.stylegan2.loaders import _flatten_record

    rebuilt = _flatten_record(loaded["G_ema"])
    expected = network.state_dict()
    assert set(rebuilt) == set(expected)
    for name, value in expected.items():
        assert torch.equal(rebuilt[name], value), name
    assert loaded["G_ema"].meta["module_src"].startswith("raise SystemExit"), "source kept as text, never run"


def test_protocol_2_pickle_loads_the_same_weights(tmp_path, network, stylegan):
    path = write_nvlabs_pickle(network, tmp_path / "p2.pkl", protocol=2)
    assert b"_codecs" in path.read_bytes() and b"__builtin__" in path.read_bytes()
    assert latentdirs.load_generator(f"stylegan2:{path}", device="cpu").fingerprint() == stylegan.fingerprint()


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


def test_tensorflow_conditional_resnet_equals_nvlabs(tmp_path):
    config = tiny_config(architecture="resnet", c_dim=4, conv_clamp=0.5, mapping_features=20, use_noise=False)
    network = random_network(config, seed=4)
    nvlabs = latentdirs.load_generator(f"stylegan2:{write_nvlabs_pickle(network, tmp_path / 'n.pkl')}", device="cpu")
    tf = latentdirs.load_generator(f"stylegan2:{write_tensorflow_pickle(network, tmp_path / 't.pkl')}", device="cpu")
    assert tf.config == nvlabs.config and tf.fingerprint() == nvlabs.fingerprint()
    z = nvlabs.sample(4, seed=2)
    with torch.no_grad():
        assert torch.equal(tf.synthesize(z, classes=[0, 1, 2, 3]), nvlabs.synthesize(z, classes=[0, 1, 2, 3]))


def test_training_checkpoint_estimates_w_avg(files, network):
    with pytest.warns(UserWarning, match="no average w"):
        generator = latentdirs.load_generator(f"stylegan2:{files['rosinality-training']}", device="cpu")
    assert torch.isfinite(generator.network.mapping.w_avg).all()
    assert generator.describe()["source_format"] == "rosinality-pt"


def test_forbidden_global_is_refused_and_nothing_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a short command, so the whole call fits in a pickle's first bytes
    marker = tmp_path / "p"

    class Evil:
        def __reduce__(self):
            return os.system, ("touch p",)

    path = tmp_path / "evil.pkl"
    for protocol in (0, 2, 4):  # protocols 0-2 have no frames: the global comes within the first bytes
        path.write_bytes(pickle.dumps({"G_ema": Evil()}, protocol=protocol))
        with pytest.raises(WeightsMismatchError, match=r"references the global (posix|os|nt)\.system.*Nothing from the file was run"):
            latentdirs.load_generator(f"stylegan2:{path}")
        assert not marker.exists(), f"protocol {protocol}: the file's code ran"


def test_stylegan3_and_foreign_files_refused(tmp_path, network):
    sg3 = random_network(tiny_config())
    sg3.synthesis.input = torch.nn.Module()  # StyleGAN3's SynthesisInput holds 'freqs', 'phases', …
    sg3.synthesis.input.register_buffer("freqs", torch.zeros(4, 2))
    path = write_nvlabs_pickle(sg3, tmp_path / "sg3.pkl")
    with pytest.raises(NotSupportedError, match="StyleGAN3 .*load it as stylegan3:PATH"):
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


def test_unsupported_variants_refused_clearly(tmp_path, network):
    write_tensorflow_pickle(network, tmp_path / "blur.pkl", kwargs={"resample_kernel": [1, 2, 1]})
    with pytest.raises(NotSupportedError, match=r"resample_kernel=\[1, 2, 1\]"):
        latentdirs.load_generator(f"stylegan2:{tmp_path / 'blur.pkl'}")
    write_tensorflow_pickle(network, tmp_path / "old.pkl", version=3)
    with pytest.raises(NotSupportedError, match="version 3"):
        latentdirs.load_generator(f"stylegan2:{tmp_path / 'old.pkl'}")
    state = rosinality_state(network)
    state["convs.0.conv.modulation.weight"] = state["convs.0.conv.modulation.weight"][:, :8]
    torch.save({"g_ema": state, "latent_avg": network.mapping.w_avg}, tmp_path / "cut.pt")
    with pytest.raises(WeightsMismatchError, match=r"cut.pt with 1 wrongly shaped'.*wrong shapes: synthesis.b8.conv0.affine.weight \(16, 8\)"):
        latentdirs.load_generator(f"stylegan2:{tmp_path / 'cut.pt'}")
    with pytest.raises(InvalidValueError, match="noise_mode: got 'fresh'"):
        latentdirs.load_generator(f"stylegan2:{tmp_path / 'cut.pt'}", noise_mode="fresh")


# ---------------------------------------------------------------------- spaces, truncation, noise
def test_w_plus_with_equal_rows_equals_w(stylegan):
    w = stylegan.sample(2, seed=3, space="w", truncation=0.8)
    assert torch.equal(stylegan.sample(2, seed=3, space="w+", truncation=0.8)[:, 4], w)
    with torch.no_grad():
        assert torch.equal(stylegan.synthesize(w, space="w"),
                           stylegan.synthesize(stylegan.to_space(w, "w", "w+"), space="w+"))
        z = stylegan.sample(2, seed=3)
        assert torch.equal(stylegan.synthesize(z, truncation=0.8), stylegan.synthesize(w, space="w"))


def test_truncation_moves_towards_w_avg_up_to_the_cutoff(files):
    full = latentdirs.load_generator(f"stylegan2:{files['nvlabs']}", device="cpu")
    cut = latentdirs.load_generator(f"stylegan2:{files['nvlabs']}", device="cpu", truncation_cutoff=2)
    w1 = full.sample(4, seed=1, space="w+")
    w_half = cut.sample(4, seed=1, space="w+", truncation=0.5)
    w_avg = full.network.mapping.w_avg
    torch.testing.assert_close(w_half[:, :2], w_avg + 0.5 * (w1[:, :2] - w_avg))
    assert torch.equal(w_half[:, 2:], w1[:, 2:])
    assert torch.equal(full.sample(4, seed=1, truncation=0.5), full.sample(4, seed=1)), "z is never scaled"
    assert cut.describe()["truncation_cutoff"] == 2
    with pytest.raises(InvalidValueError, match="truncation_cutoff: got 9"):
        latentdirs.load_generator(f"stylegan2:{files['nvlabs']}", truncation_cutoff=9)


def test_noise_modes(files):
    generators = {mode: latentdirs.load_generator(f"stylegan2:{files['nvlabs']}", device="cpu", noise_mode=mode)
                  for mode in ("const", "random", "none")}
    z = generators["const"].sample(2, seed=0)
    with torch.no_grad():
        images = {mode: g.synthesize(z) for mode, g in generators.items()}
        again = {mode: g.synthesize(z) for mode, g in generators.items()}
    assert torch.equal(images["const"], again["const"]) and torch.equal(images["none"], again["none"])
    assert not torch.equal(images["random"], again["random"])
    assert not torch.equal(images["const"], images["none"]) and not torch.equal(images["random"], images["none"])


# ---------------------------------------------------------------------- SeFa and edits
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


def test_cli_conditional_edit_by_class(tmp_path, cli_runner):
    network = random_network(tiny_config(c_dim=3))
    path = write_nvlabs_pickle(network, tmp_path / "c.pkl")
    result = invoke(cli_runner, "discover", f"stylegan2:{path}", "-m", "sefa", "--layers", "2-5", "-k", "2",
                    "--device", "cpu", "-o", tmp_path / "c.safetensors")
    assert result.exit_code == 0, result.output
    result = invoke(cli_runner, "edit", tmp_path / "c.safetensors", "--indices", "0", "--seeds", "0",
                    "--alphas", "0", "--class", "2", "--device", "cpu", "-o", tmp_path / "e")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert manifest["classes"] == [2] and manifest["generator"]["classes"] == ["0", "1", "2"]
