"""StyleGAN3 (config-T/R): agreement with NVIDIA's outputs, spaces, SeFa, geometric edits, bad files.

The reference cases (tests/stylegan3_fixtures) hold NVIDIA's own outputs on tiny networks, computed
once from NVlabs/stylegan3; the pickles here are written in NVIDIA's layout by that package's writer.
"""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest
import torch

import latentdirs
from latentdirs.errors import LatentDirsError, NotSupportedError, WeightsMismatchError
from latentdirs.generators.stylegan3 import StyleGAN3Adapter, user_transform
from latentdirs.generators.stylegan3.network import StyleGAN3Generator, parameter_count
from tests.contract import AdapterContract
from tests.conftest import invoke
from tests.stylegan3_fixtures import CASES, REFERENCE_DIR, load_reference, write_foreign_pickle, write_stylegan3_pickle

AVAILABLE = [case for case in CASES if (REFERENCE_DIR / f"{case}.safetensors").is_file()]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def pickles(tmp_path_factory):
    """case → a pickle of that case in NVIDIA's layout (numpy ≥ 2 spelling), written once."""
    folder = tmp_path_factory.mktemp("stylegan3")
    return {case: write_stylegan3_pickle(load_reference(case), folder / f"{case}.pkl") for case in AVAILABLE}


@pytest.fixture(scope="module")
def t32(pickles):
    return latentdirs.load_generator(f"stylegan3:{pickles['t32']}", device="cpu")


def _classes(reference):
    c = reference.inputs["c"]
    return None if c is None else c.argmax(dim=1)


# ---------------------------------------------------------------------- agreement with NVIDIA
@pytest.mark.parametrize("case", AVAILABLE)
def test_matches_nvidia(case, pickles):
    reference = load_reference(case)
    z, classes, outputs = reference.inputs["z"], _classes(reference), reference.outputs
    g = latentdirs.load_generator(f"stylegan3:{pickles[case]}", device="cpu", truncation_cutoff=reference.inputs["cutoff"])
    with torch.no_grad():
        ws = g.to_space(z, "z", "w+", classes=classes)
        assert (ws - outputs["ws"]).abs().max() < TOLERANCE
        assert (g.synthesize(z, classes=classes) - outputs["images"]).abs().max() < TOLERANCE
        if "images_psi" in outputs:
            psi = reference.inputs["psi"]
            assert (g.to_space(z, "z", "w+", classes=classes, truncation=psi) - outputs["ws_psi"]).abs().max() < TOLERANCE
            assert (g.synthesize(z, classes=classes, truncation=psi) - outputs["images_psi"]).abs().max() < TOLERANCE
        if "images_transformed" in outputs:
            view = g.with_input_transform(translate=reference.inputs["translate"], rotate=reference.inputs["rotate"])
            assert torch.allclose(view.input_transform, reference.inputs["transform"], atol=1e-6)
            moved = view.synthesize(z, classes=classes)
            assert (moved - outputs["images_transformed"]).abs().max() < TOLERANCE


def test_describes_config_and_counts_parameters(pickles):
    for case in AVAILABLE:
        g = latentdirs.load_generator(f"stylegan3:{pickles[case]}", device="cpu")
        described = g.describe()
        assert described["family"] == "stylegan3"
        assert described["config"] == ("stylegan3-r" if case.startswith("r") else "stylegan3-t")
        assert described["conv_clamp"] == (256 if "fp16" in case else None)
        assert bool(described["fp16_layers"]) == ("fp16" in case)
        assert parameter_count(g.config) == sum(t.numel() for t in g.network.state_dict().values())
        assert set(g.network.state_dict()) == set(load_reference(case).weights)


def test_both_numpy_eras_load_the_same_weights(tmp_path, t32):
    reference = load_reference("t32")
    old = write_stylegan3_pickle(reference, tmp_path / "era1.pkl", numpy_era="1", protocol=2)
    assert b"numpy.core.multiarray" in old.read_bytes() and b"numpy._core.multiarray" not in old.read_bytes()
    assert b"numpy._core.multiarray" in write_stylegan3_pickle(reference, tmp_path / "era2.pkl").read_bytes()
    g = latentdirs.load_generator(f"stylegan3:{old}", device="cpu")
    assert g.fingerprint() == t32.fingerprint()


# ---------------------------------------------------------------------- spaces, truncation, classes
def test_spaces_and_w_plus_rows(t32):
    assert t32.spaces["w+"].num_layers == t32.config.num_ws == len(t32.config.layers) + 1
    w = t32.sample(2, seed=3, space="w")
    with torch.no_grad():
        assert torch.equal(t32.synthesize(w, space="w"), t32.synthesize(t32.to_space(w, "w", "w+"), space="w+"))
        z = t32.sample(2, seed=3)
        assert torch.allclose(t32.synthesize(z), t32.synthesize(w, space="w"), atol=1e-6)


def test_truncation_towards_w_avg(t32):
    z = t32.sample(3, seed=5)
    w_avg = t32.network.mapping.w_avg
    full, half = t32.to_space(z, "z", "w"), t32.to_space(z, "z", "w", truncation=0.5)
    assert torch.allclose(half, w_avg + 0.5 * (full - w_avg), atol=1e-5)
    with torch.no_grad():
        truncated = t32.synthesize(t32.sample(3, seed=5, truncation=0.5), truncation=0.5)
        assert torch.allclose(truncated, t32.synthesize(half, space="w"), atol=1e-5)


def test_truncation_cutoff_keeps_later_rows(pickles):
    g = latentdirs.load_generator(f"stylegan3:{pickles['t32']}", device="cpu", truncation_cutoff=3)
    ws = g.to_space(g.sample(2, seed=1), "z", "w+", truncation=0.5)
    full = g.to_space(g.sample(2, seed=1), "z", "w+")
    assert torch.equal(ws[:, 3:], full[:, 3:]) and not torch.allclose(ws[:, :3], full[:, :3])
    with pytest.raises(LatentDirsError, match="truncation_cutoff"):
        latentdirs.load_generator(f"stylegan3:{pickles['t32']}", device="cpu", truncation_cutoff=99)


@pytest.mark.skipif("t32-cond" not in AVAILABLE, reason="conditional reference case not written yet")
def test_conditional_classes(pickles):
    g = latentdirs.load_generator(f"stylegan3:{pickles['t32-cond']}", device="cpu")
    assert g.conditional and g.class_names == ("0", "1", "2")
    z = g.sample(1, seed=0)
    with torch.no_grad():
        assert not torch.allclose(g.synthesize(z, classes=0), g.synthesize(z, classes=2))
    with pytest.raises(LatentDirsError, match="class"):
        g.synthesize(z, classes=3)


@pytest.mark.skipif("t32-cond" not in AVAILABLE, reason="conditional reference case not written yet")
def test_conditional_edit_through_the_cli(cli_runner, pickles, tmp_path):
    spec = f"stylegan3:{pickles['t32-cond']}"
    path = tmp_path / "sg3.safetensors"
    result = invoke(cli_runner, "discover", spec, "-m", "sefa", "-k", "2", "--device", "cpu", "-o", path)
    assert result.exit_code == 0, result.output
    result = invoke(cli_runner, "edit", path, "-g", spec, "--indices", "0", "--seeds", "0", "--alphas", "-2,2",
                    "--class", "1", "--class", "2", "--no-strips", "--device", "cpu", "-o", tmp_path / "e")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert [(r["class"], r["seed"]) for r in manifest["images"][0]["rows"]] == [(1, 0), (2, 0)]


# ---------------------------------------------------------------------- SeFa
def test_sefa_on_w_plus_slots(t32):
    assert t32.projection_layers[0] == "input" and len(t32.projection_layers) == t32.config.num_ws
    weights = t32.projection_weights()
    assert weights[0].shape == (t32.config.w_dim, 4)
    assert [w.shape[1] for w in weights[1:]] == [layer.in_channels for layer in t32.config.layers]
    directions = latentdirs.discover(t32, "sefa", num_directions=4)
    assert directions.meta["space"] == "w+" and tuple(directions.vectors.shape) == (4, t32.config.w_dim)
    chosen = latentdirs.discover(t32, "sefa", num_directions=3, layers="1-3")
    assert chosen.layers == [1, 2, 3]
    w = t32.sample(1, seed=0, space="w+")
    moved = latentdirs.shift(w, chosen, index=0, alpha=3.0)
    assert torch.equal(moved[:, 0], w[:, 0]) and torch.equal(moved[:, 4:], w[:, 4:])


# ---------------------------------------------------------------------- geometric edits
def _phase_correlation_shift(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Sub-pixel (dx, dy) such that ``b`` ≈ ``a`` moved by (dx, dy) pixels (Hann-windowed, parabolic peak)."""
    size = a.shape[-1]
    window = torch.outer(torch.hann_window(size, periodic=False, dtype=torch.float64),
                         torch.hann_window(size, periodic=False, dtype=torch.float64))
    fa, fb = (torch.fft.fft2((x.double() - x.double().mean()) * window) for x in (a, b))
    cross = fb * fa.conj()
    surface = torch.fft.ifft2(cross / (cross.abs() + 1e-12)).real
    peak = int(surface.argmax())
    py, px = divmod(peak, size)

    def refine(minus: float, centre: float, plus: float) -> float:
        denominator = minus - 2 * centre + plus
        return 0.0 if denominator == 0 else 0.5 * (minus - plus) / denominator

    dx = px + refine(surface[py, (px - 1) % size], surface[py, px], surface[py, (px + 1) % size])
    dy = py + refine(surface[(py - 1) % size, px], surface[py, px], surface[(py + 1) % size, px])
    wrap = lambda d: d - size if d > size / 2 else d  # noqa: E731
    return wrap(float(dx)), wrap(float(dy))


@pytest.mark.parametrize("translate", [(0.1, 0.0), (0.0, -0.08)])
def test_translate_moves_the_picture_by_that_fraction_of_its_width(pickles, translate):
    case = "t256" if "t256" in AVAILABLE else "t32"
    g = latentdirs.load_generator(f"stylegan3:{pickles[case]}", device="cpu")
    w = g.sample(1, seed=4, space="w")
    with torch.no_grad():
        plain = g.synthesize(w, space="w")[0].mean(dim=0)
        moved = g.with_input_transform(translate=translate).synthesize(w, space="w")[0].mean(dim=0)
    assert plain.std() > 0.01, "the network's output needs structure to register"
    dx, dy = _phase_correlation_shift(plain, moved)
    assert abs(dx - translate[0] * g.resolution) < 0.5 and abs(dy - translate[1] * g.resolution) < 0.5, (dx, dy)


def test_rotation_turns_counter_clockwise_and_views_share_the_network(t32):
    view = t32.with_input_transform(rotate=90)
    assert view.network is t32.network and view.fingerprint() == t32.fingerprint()
    assert view.describe()["input_transform"] == {"translate": [0.0, 0.0], "rotate": 90.0}
    assert t32.describe()["input_transform"] is None
    # the motion the buffer inverts: a point on the right (1, 0) goes up (0, -1) in y-down image coordinates
    motion = torch.linalg.inv(user_transform(0.0, 0.0, 90.0).double())
    assert torch.allclose(motion[:2] @ torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64),
                          torch.tensor([0.0, -1.0], dtype=torch.float64), atol=1e-7)
    full = t32.with_input_transform(rotate=360)
    w = t32.sample(1, seed=2, space="w")
    with torch.no_grad():
        assert torch.allclose(full.synthesize(w, space="w"), t32.synthesize(w, space="w"), atol=1e-5)


@pytest.mark.parametrize("options", [dict(translate=(1.5, 0)), dict(translate=(0.1,)), dict(translate="0.1,0"),
                                     dict(translate=(float("nan"), 0)), dict(rotate="15"), dict(rotate=float("inf")),
                                     dict(rotate=True)])
def test_bad_transforms_are_refused(t32, options):
    with pytest.raises(LatentDirsError) as error:
        t32.with_input_transform(**options)
    message = str(error.value)
    assert "\n" not in message and next(iter(options)) in message


def test_transform_options_reload_from_the_description(pickles):
    from latentdirs.registry import generator_from_record

    g = latentdirs.load_generator(f"stylegan3:{pickles['t32']}", device="cpu", translate=[0.1, 0.0], rotate=10)
    again = generator_from_record(g.describe(), device="cpu")
    assert torch.equal(again.input_transform, g.input_transform)


# ---------------------------------------------------------------------- the adapter contract
@pytest.fixture(scope="module")
def generator(pickles):
    """The contract's generator: the t32 reference net, loaded through the registry (with a cutoff option)."""
    return latentdirs.load_generator(f"stylegan3:{pickles['t32']}", device="cpu", truncation_cutoff=4)


class TestStyleGAN3Contract(AdapterContract):
    batch = 2


# ---------------------------------------------------------------------- refusals, one line each
def _one_line(error: pytest.ExceptionInfo, *needles: str) -> None:
    message = str(error.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message


@pytest.mark.parametrize("kind, named", [("stylegan-xl", "StyleGAN-XL"), ("stylegan-t", "StyleGAN-T")])
def test_foreign_pickles_are_named(tmp_path, kind, named):
    for variant, options in (("full", {}), ("bare", {"with_embedding": False})):
        if kind == "stylegan-t" and options:
            continue
        path = write_foreign_pickle(kind, tmp_path / f"{kind}-{variant}.pkl", **options)
        with pytest.raises(NotSupportedError) as error:
            latentdirs.load_generator(f"stylegan3:{path}", device="cpu")
        _one_line(error, named, "StyleGAN3")


def test_missing_layer_is_refused(tmp_path):
    path = write_stylegan3_pickle(load_reference("t32"), tmp_path / "drop.pkl", drop="L3")
    with pytest.raises(WeightsMismatchError) as error:
        latentdirs.load_generator(f"stylegan3:{path}", device="cpu")
    _one_line(error, "L3_", "misses")


def test_truncated_pickle_is_refused(tmp_path, pickles):
    data = pickles["t32"].read_bytes()
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsMismatchError) as error:
        latentdirs.load_generator(f"stylegan3:{path}", device="cpu")
    _one_line(error, "cut.pkl")


def _with_layer_attribute(reference, layer_prefix: str, key: str, change):
    """``reference`` whose layer ``L{n}_…`` has state attribute ``key`` replaced by ``change(encoded)``."""
    layout = json.loads(json.dumps(reference.layout))
    for module in layout["modules"]:
        if module["name"].startswith(f"synthesis.{layer_prefix}_") and module["name"].count(".") == 1:
            module["state"] = [[k, change(v) if k == key else v] for k, v in module["state"]]
    return dataclasses.replace(reference, layout=layout)


@pytest.mark.parametrize("key, change", [
    ("padding", lambda v: {"t": "list", "v": [{"t": "int", "v": 1}] * 4}),
    ("up_factor", lambda v: {"t": "int", "v": 10 ** 9}),
    ("in_size", lambda v: {**v, "v": [10 ** 9, 10 ** 9]}),
    ("out_channels", lambda v: {"t": "int", "v": 50_000}),
    ("conv_kernel", lambda v: {"t": "str", "v": "3"}),
])
def test_inconsistent_layers_are_refused_before_building(tmp_path, key, change):
    reference = _with_layer_attribute(load_reference("t32"), "L2", key, change)
    path = write_stylegan3_pickle(reference, tmp_path / "bad.pkl")
    with pytest.raises(WeightsMismatchError) as error:
        latentdirs.load_generator(f"stylegan3:{path}", device="cpu")
    _one_line(error, "L2_")


def test_each_family_points_to_the_other(tmp_path, pickles):
    from tests.stylegan2_fixtures import random_network, tiny_config, write_nvlabs_pickle

    with pytest.raises(NotSupportedError) as error:
        latentdirs.load_generator(f"stylegan2:{pickles['t32']}", device="cpu")
    _one_line(error, "stylegan3:PATH")
    stylegan2 = write_nvlabs_pickle(random_network(tiny_config()), tmp_path / "sg2.pkl")
    with pytest.raises(NotSupportedError) as error:
        latentdirs.load_generator(f"stylegan3:{stylegan2}", device="cpu")
    _one_line(error, "stylegan2:PATH")


def test_other_files_are_refused_with_what_they_are(tmp_path):
    from safetensors.torch import save_file

    save_file({"mapping.fc0.weight": torch.zeros(2, 2)}, str(tmp_path / "sg2.safetensors"))
    with pytest.raises(NotSupportedError) as error:
        latentdirs.load_generator(f"stylegan3:{tmp_path / 'sg2.safetensors'}", device="cpu")
    _one_line(error, "safetensors", "stylegan2:PATH")
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"G": 1}))
    with pytest.raises(WeightsMismatchError) as error:
        latentdirs.load_generator(f"stylegan3:{tmp_path / 'plain.pkl'}", device="cpu")
    _one_line(error, "without G_ema")


def test_missing_file(tmp_path):
    with pytest.raises(LatentDirsError) as error:
        latentdirs.load_generator(f"stylegan3:{tmp_path / 'none.pkl'}", device="cpu")
    _one_line(error, "none.pkl")


def test_network_builds_from_config_alone(t32):
    network = StyleGAN3Generator(t32.config)
    assert {k: tuple(v.shape) for k, v in network.state_dict().items()} == {
        k: tuple(v.shape) for k, v in t32.network.state_dict().items()}
    assert isinstance(t32, StyleGAN3Adapter)


def test_noise_mode_is_refused_with_the_reason(tmp_path):
    from tests.stylegan3_fixtures import load_reference, write_stylegan3_pickle

    path = write_stylegan3_pickle(load_reference("t32"), tmp_path / "t32.pkl")
    with pytest.raises(NotSupportedError, match="noise_mode: got 'random'; allowed: none: StyleGAN3 networks have no noise"):
        latentdirs.load_generator(f"stylegan3:{path}", device="cpu", noise_mode="random")


def test_truncated_stylegan3_pickle_names_stylegan3(tmp_path):
    from tests.stylegan3_fixtures import load_reference, write_stylegan3_pickle

    path = write_stylegan3_pickle(load_reference("t32"), tmp_path / "t32.pkl")
    path.write_bytes(path.read_bytes()[:-2000])
    with pytest.raises(WeightsMismatchError, match="complete NVlabs StyleGAN3 network pickle"):
        latentdirs.load_generator(f"stylegan3:{path}", device="cpu")
