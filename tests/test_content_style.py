"""The content/style split (issue 15, part 1): measured on real generators, saved, loaded, refused."""

from __future__ import annotations

import json
import math

import pytest
import torch

import latentdirs
from latentdirs.content_style import ContentStyleSplit, content_style_split, is_split_file
from latentdirs.content_style.split_file import HEADER_KEY, MAX_HEADER_BYTES, ContentStyleFileError
from latentdirs.errors import (FingerprintMismatchError, InvalidValueError, LatentDirsError, NotSupportedError,
                               OutOfRangeError)
from tests.conftest import invoke
from tests.stylegan2_fixtures import random_network, tiny_config, write_nvlabs_pickle


@pytest.fixture(scope="module")
def synthetic_split(synthetic):
    return content_style_split(synthetic, samples=8, seed=0)


@pytest.fixture(scope="module")
def stylegan(tmp_path_factory):
    path = write_nvlabs_pickle(random_network(tiny_config()), tmp_path_factory.mktemp("sg2") / "network.pkl")
    return latentdirs.load_generator(f"stylegan2:{path}", device="cpu")


@pytest.fixture(scope="module")
def shapes_stylegan2():
    return latentdirs.load_generator("shapes-stylegan2", device="cpu")


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and isinstance(error.value, LatentDirsError)
    return message


# ---------------------------------------------------------------------------------------------- flat: synthetic
def test_synthetic_style_subspace_is_hue_and_value(synthetic, synthetic_split):
    """The known answer: principal angles between the style subspace and span(hue, value) below 10°."""
    split = synthetic_split
    assert (split.kind, split.space, split.style_dims, split.style_layers) == ("flat", "z", 2, ())
    truth = torch.stack([synthetic.true_directions["hue"], synthetic.true_directions["value"]]).double()
    cosines = torch.linalg.svdvals(split.style_basis.double() @ truth.T).clamp(max=1.0)
    angles = torch.rad2deg(torch.arccos(cosines))
    assert float(angles.max()) < 10.0
    assert float(angles.max()) < 0.5  # measured: about 0.01°


def test_synthetic_mix_keeps_content_factors_and_takes_style_factors(synthetic, synthetic_split):
    content = synthetic.sample(16, seed=3)
    style = synthetic.sample(16, seed=4)
    mixed = synthetic_split.mix(content, style)
    coordinate = {name: vector for name, vector in synthetic.true_directions.items()}
    for name in ("x", "y", "size"):  # a_f · z unchanged to rounding
        torch.testing.assert_close(mixed @ coordinate[name], content @ coordinate[name], atol=1e-4, rtol=0)
    for name in ("hue", "value"):  # and the style's hue and value are taken over
        torch.testing.assert_close(mixed @ coordinate[name], style @ coordinate[name], atol=1e-4, rtol=0)
    # one style latent for every content latent
    single = synthetic_split.mix(content, style[:1])
    torch.testing.assert_close(single @ coordinate["hue"], (style[:1] @ coordinate["hue"]).expand(16), atol=1e-4,
                               rtol=0)


def test_synthetic_measurements_record_the_spectrum(synthetic_split):
    figures = synthetic_split.measurements
    fractions = figures["fractions"]
    assert len(fractions) == 16 and fractions == sorted(fractions, reverse=True)
    assert all(0.0 <= v <= 1.0 for v in fractions)
    assert fractions[0] > 0.99 and fractions[1] > 0.99  # hue and value: wholly a colour change
    assert fractions[2] < figures["threshold"]  # size: its outline change is only partly one
    assert figures["threshold"] == 0.5 and 0 < figures["baseline"] < 1
    assert figures["layer"] == "image" and figures["projection"] == "colour-affine"
    assert figures["chosen_by"] == "threshold" and figures["widest_gap"]["after"] == 2
    json.dumps(figures, allow_nan=False)


def test_style_dims_overrides_the_threshold(synthetic):
    split = content_style_split(synthetic, samples=4, style_dims=3)
    assert split.style_dims == 3 and split.measurements["chosen_by"] == "style_dims"
    gram = split.style_basis.double() @ split.style_basis.double().T
    torch.testing.assert_close(gram, torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)


@pytest.mark.parametrize("value", [0, 16, -1, 2.5, True])
def test_style_dims_outside_one_to_d_minus_one_is_one_line(synthetic, value):
    with pytest.raises(InvalidValueError) as error:
        content_style_split(synthetic, samples=2, style_dims=value)
    assert _one_line(error).startswith("style_dims: got")


def test_content_layers_on_a_flat_generator_is_one_line(synthetic):
    with pytest.raises(NotSupportedError) as error:
        content_style_split(synthetic, content_layers=[0])
    assert "no layered space" in _one_line(error)


def test_no_usable_split_is_one_line():
    """A random linear map into an 8×8 image: no direction's effect is mostly a colour transform."""
    generator = latentdirs.load_generator("module:tests.linear_generator:make", device="cpu")
    with pytest.raises(NotSupportedError) as error:
        content_style_split(generator, samples=4)
    message = _one_line(error)
    assert message.startswith("generator: got") and "style_dims" in message


def test_dcgan_faces_split_at_a_feature_map(faces):
    split = content_style_split(faces, samples=2, layer="main.8")
    figures = split.measurements
    assert split.kind == "flat" and figures["layer"] == "main.8" and figures["feature_shape"] == [128, 16, 16]
    assert figures["projection"] == "per-channel-affine" and 1 <= split.style_dims < 100
    assert split.style_dims == sum(v >= figures["threshold"] for v in figures["fractions"])
    with pytest.raises(LatentDirsError) as error:
        content_style_split(faces, samples=2, layer="main.99")
    assert "main.11" in _one_line(error)


# ---------------------------------------------------------------------------------------------- files
def test_save_load_round_trip_and_inspect(tmp_path, synthetic, synthetic_split, cli_runner):
    path = synthetic_split.save(tmp_path / "split.safetensors")
    assert is_split_file(path)
    loaded = ContentStyleSplit.load(path, generator=synthetic)
    assert torch.equal(loaded.style_basis, synthetic_split.style_basis)
    assert loaded.measurements == json.loads(json.dumps(synthetic_split.measurements))
    assert loaded.generator["fingerprint"] == synthetic.fingerprint()
    content, style = synthetic.sample(3, seed=1), synthetic.sample(3, seed=2)
    assert torch.equal(loaded.mix(content, style), synthetic_split.mix(content, style))
    result = invoke(cli_runner, "inspect", path)
    assert result.exit_code == 0, result.output
    assert "flat split in 'z' (1 × 16)" in result.output and "2 of 16 dims" in result.output
    threshold = f"{synthetic_split.measurements['threshold']:.3f}"
    assert f"threshold (fraction ≥ {threshold} at layer 'image', colour-affine; baseline 0.3" in result.output
    result = invoke(cli_runner, "inspect", path, "--json")
    assert json.loads(result.output)["schema"] == "latentdirs.content-style"


def test_split_of_other_weights_is_refused(tmp_path, faces, synthetic_split):
    path = synthetic_split.save(tmp_path / "split.safetensors")
    with pytest.raises(FingerprintMismatchError) as error:
        ContentStyleSplit.load(path, generator=faces)
    assert "other weights" in _one_line(error)


def _write(path, tensors, meta):
    from safetensors.torch import save

    path.write_bytes(save(tensors, metadata={HEADER_KEY: json.dumps(meta)}))
    return path


def _hostile(split: ContentStyleSplit):
    """(name, tensors, header) of files that must each be refused with one line."""
    meta, basis = split.meta, split.style_basis
    return [
        ("wrong shape", {"style_basis": basis[:, :8].contiguous()}, meta),
        ("K = D", {"style_basis": torch.eye(16)}, meta),
        ("not orthonormal", {"style_basis": basis * 1.1}, meta),
        ("NaN", {"style_basis": torch.full_like(basis, math.nan)}, meta),
        ("float64 basis ok only if orthonormal", {"style_basis": (basis * 2).double()}, meta),
        ("missing tensor", {}, meta),
        ("extra tensor", {"style_basis": basis, "more": torch.zeros(2)}, meta),
        ("other schema", {"style_basis": basis}, {**meta, "schema": "latentdirs.directions"}),
        ("newer version", {"style_basis": basis}, {**meta, "schema_version": 2}),
        ("bad kind", {"style_basis": basis}, {**meta, "kind": "swirl"}),
        ("bad generator", {"style_basis": basis}, {**meta, "generator": ["x"]}),
        ("layered rows outside", {}, {**meta, "kind": "layered", "num_layers": 4, "style_layers": [2, 9]}),
        ("layered all rows", {}, {**meta, "kind": "layered", "num_layers": 2, "style_layers": [0, 1]}),
        ("measurements not an object", {"style_basis": basis}, {**meta, "measurements": [1]}),
    ]


@pytest.mark.parametrize("case", range(14))
def test_hostile_split_files_are_one_line(tmp_path, synthetic, synthetic_split, case):
    name, tensors, meta = _hostile(synthetic_split)[case]
    path = _write(tmp_path / "hostile.safetensors", tensors, meta)
    with pytest.raises(LatentDirsError) as error:
        ContentStyleSplit.load(path, generator=synthetic)
    message = _one_line(error)
    assert "hostile.safetensors" in message or "content-style" in message, (name, message)


def test_oversize_header_and_garbage_are_one_line(tmp_path):
    big = tmp_path / "big.safetensors"
    big.write_bytes((MAX_HEADER_BYTES + 1).to_bytes(8, "little") + b"{" * 64)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    for path in (big, garbage, tmp_path / "absent.safetensors"):
        with pytest.raises(ContentStyleFileError) as error:
            ContentStyleSplit.load(path)
        _one_line(error)
    assert not is_split_file(big) and not is_split_file(garbage)


def test_a_split_built_in_python_is_checked(synthetic_split):
    with pytest.raises(InvalidValueError):
        ContentStyleSplit(generator=synthetic_split.generator, kind="flat", space="z",
                          style_basis=synthetic_split.style_basis * 3, style_layers=(), measurements={})
    with pytest.raises(InvalidValueError) as error:
        synthetic_split.mix(torch.zeros(4, 16), torch.zeros(3, 16))
    assert _one_line(error).startswith("style: got '3 latents'")
    with pytest.raises(InvalidValueError):
        synthetic_split.mix(torch.zeros(4, 15), torch.zeros(1, 16))


# ---------------------------------------------------------------------------------------------- layered
def test_tiny_stylegan2_split_by_content_layers(tmp_path, stylegan):
    rows = stylegan.space("w+").num_layers
    split = content_style_split(stylegan, samples=4, content_layers=[0, 1, 2])
    assert (split.kind, split.space, split.style_basis) == ("layered", "w+", None)
    assert split.content_layers == (0, 1, 2) and split.style_layers == tuple(range(3, rows))
    figures = split.measurements
    assert figures["chosen_by"] == "content_layers" and len(figures["rows"]) == rows
    assert len(figures["suffixes"]) == rows and figures["suffixes"][0]["from_row"] == 0
    content, style = stylegan.sample(2, seed=0, space="w+"), stylegan.sample(1, seed=9, space="w+")
    mixed = split.mix(content, style)
    assert torch.equal(mixed[:, :3], content[:, :3]) and torch.equal(mixed[:, 3:], style[:, 3:].expand(2, -1, -1))
    loaded = ContentStyleSplit.load(split.save(tmp_path / "sg2.safetensors"), generator=stylegan)
    assert loaded.style_layers == split.style_layers and torch.equal(loaded.mix(content, style), mixed)


@pytest.mark.parametrize("layers, cls", [([0, 99], OutOfRangeError), ([], OutOfRangeError), ([-1], OutOfRangeError),
                                         ("all", InvalidValueError)])
def test_content_layers_outside_the_rows_is_one_line(stylegan, layers, cls):
    rows = stylegan.space("w+").num_layers
    with pytest.raises(cls) as error:
        content_style_split(stylegan, samples=2, content_layers=list(range(rows)) if layers == "all" else layers)
    assert _one_line(error).startswith("content_layers: got")


def test_random_stylegan2_has_no_usable_split(stylegan):
    """Random weights: resampling later rows changes structure as much as colour (measured margin 0.09)."""
    with pytest.raises(NotSupportedError) as error:
        content_style_split(stylegan, samples=8)
    message = _one_line(error)
    assert "margin ≥ 0.25" in message and "--content-layers" in message


def test_style_dims_on_a_layered_generator_is_one_line(stylegan):
    with pytest.raises(NotSupportedError) as error:
        content_style_split(stylegan, style_dims=2)
    assert "content_layers" in _one_line(error)


def test_shapes_stylegan2_boundary_is_measured(shapes_stylegan2):
    """The test bed: the measured style rows keep position (factor reader) and move background and hue."""
    split = content_style_split(shapes_stylegan2, samples=32, seed=0)
    figures = split.measurements
    rows = shapes_stylegan2.space("w+").num_layers
    assert figures["chosen_by"] == "boundary" and 0 in split.content_layers and split.style_layers[-1] == rows - 1
    boundary = figures["boundary"]
    assert split.style_layers == tuple(range(boundary, rows))
    everything, kept = figures["suffixes"][0], figures["suffixes"][boundary]
    assert kept["margin"] == max(suffix["margin"] for suffix in figures["suffixes"][1:]) and kept["margin"] >= 0.5
    assert kept["structure"] <= 0.3 * everything["structure"]  # measured: 0.22 (32 samples), 0.25 (64)
    for factor in ("factor.x", "factor.y"):  # position: within 0.05 of the width, under 1/4 of a full resample
        assert kept[factor] <= 0.05 and kept[factor] <= 0.25 * everything[factor]
    for factor in ("factor.background", "factor.hue"):
        assert kept[factor] >= 0.5 * everything[factor]


def test_biggan_blocks_split(tmp_path):
    pytest.importorskip("pytorch_pretrained_biggan")
    from tests.biggan_tiny import write_biggan_dir

    generator = latentdirs.load_generator(f"biggan:{write_biggan_dir(tmp_path / 'biggan')}", device="cpu")
    split = content_style_split(generator, samples=2, content_layers=[0, 1, 2])
    blocks = generator.space("blocks").num_layers
    assert split.space == "blocks" and split.style_layers == tuple(range(3, blocks))
    latents = generator.sample(2, seed=0, space="blocks")
    assert split.mix(latents, latents.flip(0)).shape == latents.shape
