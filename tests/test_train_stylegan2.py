"""shapes-stylegan2: its training script (tiny real runs), the shipped file, and the safetensors format
that ``stylegan2:FILE`` reads (issue 14)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import latentdirs
from latentdirs.catalogue import checkpoints_dir, entry
from latentdirs.errors import NotSupportedError, WeightsMismatchError
from latentdirs.generators.shapes_stylegan2 import WEIGHTS_FILE
from latentdirs.registry import load_generator
from tests.conftest import invoke
from training import train_stylegan2

SHIPPED = checkpoints_dir() / WEIGHTS_FILE


def _args(out: Path, steps: int) -> list[str]:
    # 8 px, a handful of channels: a real run of the real code in well under a second per step
    return ["--steps", str(steps), "--resolution", "8", "--channels", "16", "--z-dim", "8", "--batch", "4",
            "--grid-every", "2", "--seed", "3", "--out", str(out)]


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # train() sets the thread count; give the test process its own back


def _trained(out: Path) -> dict:
    return torch.load(out / "state.pt", map_location="cpu", weights_only=True)


def test_training_runs_and_resumes_the_same_run(tmp_path, one_thread):
    """4 steps in one go == 2 steps, then a restart that resumes from state.pt for 2 more (R1 at step 0)."""
    train_stylegan2.main(_args(tmp_path / "once", 4))
    train_stylegan2.main(_args(tmp_path / "twice", 2))
    assert _trained(tmp_path / "twice")["step"] == 2
    train_stylegan2.main(_args(tmp_path / "twice", 4))
    once, twice = _trained(tmp_path / "once"), _trained(tmp_path / "twice")
    assert once["step"] == twice["step"] == 4
    for part in ("generator", "discriminator", "average"):
        for key, value in once[part].items():
            assert torch.isfinite(value).all(), f"{part}.{key}"
            torch.testing.assert_close(twice[part][key], value, atol=1e-5, rtol=1e-4, msg=f"{part}.{key}")
    logged = [json.loads(line) for line in (tmp_path / "once" / "losses.jsonl").read_text().splitlines()]
    assert logged[0]["step"] == 0 and "r1" in logged[0]
    assert all(math.isfinite(v) for v in logged[0].values())
    assert sorted(p.name for p in (tmp_path / "once").glob("grid-*.png")) == ["grid-000002.png", "grid-000004.png"]
    assert torch.equal(once["average"]["mapping.w_avg"], once["generator"]["mapping.w_avg"])
    assert once["generator"]["mapping.w_avg"].abs().sum() > 0, "w_avg is tracked"


def test_exported_file_loads_as_stylegan2(tmp_path, one_thread):
    train_stylegan2.main(_args(tmp_path, 1))
    path = tmp_path / "g.safetensors"
    train_stylegan2.main(_args(tmp_path, 1)[:-2] + ["--out", str(tmp_path), "--export-only", "--export", str(path)])
    generator = load_generator(f"stylegan2:{path}", device="cpu")
    assert generator.describe()["source_format"] == "safetensors"
    assert generator.resolution == 8 and generator.z_dim == 8
    images = generator.synthesize(generator.sample(2, seed=0))
    assert images.shape == (2, 3, 8, 8) and torch.isfinite(images).all()


# ---------------------------------------------------------------------- the shipped generator
@pytest.fixture(scope="module")
def shipped():
    return load_generator("shapes-stylegan2", device="cpu")


def test_shipped_file_is_catalogued_and_small():
    described = entry("shapes-stylegan2")
    assert described.file == WEIGHTS_FILE and described.recipe and described.resolution == 32
    assert SHIPPED.stat().st_size <= 4 * 1024 * 1024
    assert all(v.dtype == torch.float16 for v in load_file(str(SHIPPED)).values())


def test_shipped_loads_through_the_stylegan2_path(shipped):
    by_path = load_generator(f"stylegan2:{SHIPPED}", device="cpu")
    assert shipped.fingerprint() == by_path.fingerprint()
    assert shipped.describe()["source_format"] == by_path.describe()["source_format"] == "safetensors"
    latents = shipped.sample(4, seed=11)
    torch.testing.assert_close(latents, by_path.sample(4, seed=11))
    with torch.no_grad():
        images, raw = shipped.synthesize(latents), by_path.synthesize(latents)
    torch.testing.assert_close(images, raw.clamp(-1, 1))  # the same network; shapes-stylegan2 clamps
    inside = raw.abs() < 1
    assert inside.float().mean() > 0.5 and torch.equal(images[inside], raw[inside])
    assert images.shape == (4, 3, 32, 32) and torch.isfinite(images).all()
    assert images.std() > 0.05, "the trained generator draws something, not a flat image"
    assert shipped.spaces["w+"].num_layers == 8


def test_shipped_reads_its_scene_factors(shipped):
    with torch.no_grad():
        factors = shipped.read_factors(shipped.synthesize(shipped.sample(3, seed=0)))
    assert set(shipped.factor_names) <= set(factors)
    assert all(factors[name].shape == (3,) for name in ("x", "y", "scale", "hue"))
    assert load_generator(f"stylegan2:{SHIPPED}", device="cpu").read_factors(torch.zeros(1, 3, 32, 32)) is None


def test_sefa_discovers_on_shapes_stylegan2_through_the_cli(tmp_path, shipped):
    from click.testing import CliRunner

    path = tmp_path / "sefa.safetensors"
    result = invoke(CliRunner(), "discover", "shapes-stylegan2", "-m", "sefa", "-k", "4", "--device", "cpu",
                    "-o", path)
    assert result.exit_code == 0, result.output
    directions = latentdirs.Directions.load(path, generator=shipped)  # fingerprint checked
    assert directions.vectors.shape == (4, 64)
    torch.testing.assert_close(directions.vectors @ directions.vectors.T, torch.eye(4), atol=1e-4, rtol=0)


def test_shapes_stylegan2_takes_no_argument():
    with pytest.raises(latentdirs.errors.InvalidValueError, match="got .shapes-stylegan2:x.; allowed: .shapes-stylegan2. without"):
        load_generator("shapes-stylegan2:x", device="cpu")


# ---------------------------------------------------------------------- hostile safetensors files
def _tiny_state() -> dict[str, torch.Tensor]:
    config = train_stylegan2.generator_config(8, z_dim=8, max_channels=16)
    return {k: v.clone() for k, v in train_stylegan2.StyleGAN2Generator(config).state_dict().items()}


def _write(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    return path


def _refused(path: Path, pattern: str) -> None:
    with pytest.raises(WeightsMismatchError, match=pattern) as caught:
        load_generator(f"stylegan2:{path}", device="cpu")
    assert "\n" not in str(caught.value) and path.name in str(caught.value)


def test_hostile_safetensors_are_refused_in_one_line(tmp_path):
    state = _tiny_state()
    good = _write(tmp_path / "good.safetensors", state).read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(good[:len(good) // 2])
    _refused(tmp_path / "truncated.safetensors", "unreadable safetensors file")
    (tmp_path / "header.safetensors").write_bytes(good[:8] + b"{not json" + good[17:])
    _refused(tmp_path / "header.safetensors", "not JSON|unreadable safetensors")

    wrong = dict(state, **{"synthesis.b8.conv0.weight": torch.zeros(16, 16, 1, 3)})
    _refused(_write(tmp_path / "shape.safetensors", wrong), "wrongly shaped.*synthesis.b8.conv0.weight")
    missing = {k: v for k, v in state.items() if k != "synthesis.b8.torgb.bias"}
    _refused(_write(tmp_path / "missing.safetensors", missing), "synthesis.b8.torgb")
    nan = dict(state, **{"synthesis.b4.conv1.weight": state["synthesis.b4.conv1.weight"].index_fill(0, torch.tensor([1]), math.nan)})
    _refused(_write(tmp_path / "nan.safetensors", nan), r"synthesis.b4.conv1.weight holds 144 non-finite values")
    inf = dict(state, **{"mapping.fc0.bias": torch.full((8,), math.inf)})
    _refused(_write(tmp_path / "inf.safetensors", inf), "mapping.fc0.bias holds 8 non-finite")
    integers = dict(state, **{"synthesis.b4.const": torch.zeros(16, 4, 4, dtype=torch.int32)})
    _refused(_write(tmp_path / "int.safetensors", integers), "int32, not floating point")
    _refused(_write(tmp_path / "meta.safetensors", state, {"mapping_lr": "fast"}), "mapping_lr='fast'")
    _refused(_write(tmp_path / "lr.safetensors", state, {"mapping_lr": "-1"}), "mapping learning-rate multiplier")
    huge = dict(state, **{"synthesis.b8.conv1.weight": torch.zeros(5000, 1, 3, 3),
                          "synthesis.b8.conv1.bias": torch.zeros(5000)})
    with pytest.raises(WeightsMismatchError, match="nothing was allocated|shapes"):
        load_generator(f"stylegan2:{_write(tmp_path / 'huge.safetensors', huge)}", device="cpu")


def test_safetensors_options_and_unknown_average(tmp_path):
    state = _tiny_state()
    state["mapping.w_avg"] = torch.full_like(state["mapping.w_avg"], math.nan)  # "unknown": estimated
    path = _write(tmp_path / "g.safetensors", state, {"conv_clamp": "256", "mapping_lr": "0.01"})
    with pytest.warns(UserWarning, match="estimating it"):
        generator = load_generator(f"stylegan2:{path}", device="cpu")
    assert generator.config.conv_clamp == 256.0 and generator.config.mapping_lr == 0.01
    assert torch.isfinite(generator.network.mapping.w_avg).all()
    with pytest.raises(NotSupportedError, match="architecture 'orig'; supported: skip, resnet"):
        load_generator(f"stylegan2:{_write(tmp_path / 'arch.safetensors', _tiny_state(), {'architecture': 'orig'})}",
                       device="cpu")
