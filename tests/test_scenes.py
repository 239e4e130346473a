"""The scene renderer (latentdirs.scenes) and the shipped factor reader (latentdirs.factor_reader)."""

from __future__ import annotations

import math

import pytest
import torch

from latentdirs import scenes
from latentdirs.errors import InvalidValueError, LatentDirsError

SQUARE, DISC, TRIANGLE, HEART = range(4)


def base_factors(n: int = 1, **changes) -> dict[str, torch.Tensor]:
    """A mid-range scene (a disc of 7 px radius, turned a little), repeated ``n`` times, with changes."""
    values = {"x": 0.0, "y": 0.0, "scale": 0.11, "rotation": 0.3, "hue": 0.6, "background": 0.25, "shape": DISC}
    values.update(changes)
    return {k: torch.as_tensor(v).expand(n).clone() if torch.as_tensor(v).dim() == 0 else torch.as_tensor(v)
            for k, v in values.items()}


def coverage(images: torch.Tensor, factors: dict[str, torch.Tensor]) -> torch.Tensor:
    """The object's coverage ``[N, 64, 64]``, solved from image = bg + α·(colour − bg) (least squares over RGB)."""
    rgb = (images + 1) / 2
    background = factors["background"].float()[:, None, None, None]
    colour = scenes.object_colour(factors["hue"].float())[:, :, None, None]
    contrast = colour - background
    return ((rgb - background) * contrast).sum(1) / (contrast ** 2).sum(1)


def centroid_px(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask centroid in pixel coordinates (column, row) of pixel centres."""
    grid = torch.arange(scenes.RESOLUTION, dtype=torch.float32)
    mass = alpha.sum((1, 2))
    return (alpha * grid[None, None, :]).sum((1, 2)) / mass, (alpha * grid[None, :, None]).sum((1, 2)) / mass


# ------------------------------------------------------------------ sampling and determinism
def test_render_scenes_is_deterministic_and_seeded():
    images, factors = scenes.render_scenes(32, seed=3)
    again, factors_again = scenes.render_scenes(32, seed=3)
    other, _ = scenes.render_scenes(32, seed=4)
    assert images.shape == (32, 3, 64, 64) and images.dtype == torch.float32
    assert torch.equal(images, again)
    assert all(torch.equal(factors[k], factors_again[k]) for k in scenes.FACTORS)
    assert not torch.equal(images, other)
    assert torch.equal(scenes.render_factors(factors), images)


def test_images_lie_in_the_tanh_range():
    images, _ = scenes.render_scenes(200, seed=0)
    assert float(images.min()) >= -1.0 and float(images.max()) <= 1.0
    # backgrounds near grey 0 reach −1; the object's brightest channel is VALUE = 0.95 → 0.9
    assert float(images.min()) < -0.99 and abs(float(images.max()) - 0.9) < 1e-5


def test_factors_cover_their_ranges_and_are_independent():
    factors = scenes.sample_factors(20000, seed=1)
    assert set(factors) == set(scenes.FACTORS)
    for name, (low, high) in scenes.FACTOR_RANGES.items():
        value = factors[name]
        assert value.dtype == torch.float32 and value.shape == (20000,)
        assert float(value.min()) >= low and float(value.max()) <= high
        assert float(value.min()) < low + 0.01 * (high - low) and float(value.max()) > high - 0.01 * (high - low)
        assert abs(float(value.mean()) - (low + high) / 2) < 0.02 * (high - low)
    counts = torch.bincount(factors["shape"], minlength=4)
    assert factors["shape"].dtype == torch.int64 and counts.min() > 4700
    table = torch.stack([factors[name] for name in scenes.FACTOR_RANGES] + [factors["shape"].float()])
    correlation = torch.corrcoef(table) - torch.eye(len(scenes.FACTORS))
    assert float(correlation.abs().max()) < 0.04


def test_a_batch_of_a_thousand_renders_in_one_call():
    images, factors = scenes.render_scenes(1000, seed=5)
    assert images.shape == (1000, 3, 64, 64) and bool(torch.isfinite(images).all())


# ------------------------------------------------------------------ each factor does what it says
@pytest.mark.parametrize("shape", [SQUARE, DISC, TRIANGLE, HEART])
def test_mask_centroid_follows_x_and_y(shape):
    x = torch.tensor([-0.3, -0.1, 0.0, 0.2, 0.3])
    y = torch.tensor([0.25, -0.3, 0.0, 0.1, -0.2])
    factors = base_factors(5, x=x, y=y, shape=shape, rotation=torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]))
    column, row = centroid_px(coverage(scenes.render_factors(factors), factors))
    tolerance = 0.35 if shape == HEART else 0.05  # the heart's centre is its centroid to within 2 % of its size
    assert torch.allclose(column, (0.5 + x) * 64 - 0.5, atol=tolerance)
    assert torch.allclose(row, (0.5 + y) * 64 - 0.5, atol=tolerance)


@pytest.mark.parametrize("shape", [SQUARE, DISC, TRIANGLE, HEART])
def test_mask_area_is_that_of_the_equal_area_disc(shape):
    scale = torch.tensor([0.08, 0.10, 0.12, 0.14, 0.16])
    factors = base_factors(5, scale=scale, shape=shape, rotation=torch.tensor([0.1, 0.7, 1.3, 2.9, 5.0]))
    area = coverage(scenes.render_factors(factors), factors).sum((1, 2))
    expected = math.pi * (scale * 64) ** 2
    assert torch.allclose(area, expected, rtol=0.02)
    assert bool((area[1:] > area[:-1]).all())


def test_hue_changes_the_object_colour_and_not_the_background():
    factors = base_factors(2, hue=torch.tensor([0.1, 0.6]))
    images = scenes.render_factors(factors)
    alpha = coverage(images, factors)
    outside, inside = alpha[0] < 1e-6, alpha[0] > 1 - 1e-6
    assert torch.equal(images[0][:, outside], images[1][:, outside])
    assert float((images[0][:, inside] - images[1][:, inside]).abs().amax()) > 0.5
    expected = scenes.object_colour(torch.tensor([0.1, 0.6])) * 2 - 1
    assert torch.allclose(images[:, :, inside].mean(2), expected, atol=1e-5)


def test_background_changes_only_the_background():
    factors = base_factors(2, background=torch.tensor([0.05, 0.45]))
    images = scenes.render_factors(factors)
    alpha = coverage(images, factors)
    outside, inside = alpha[0] < 1e-6, alpha[0] > 1 - 1e-6
    assert torch.equal(images[0][:, inside], images[1][:, inside])
    assert torch.allclose(images[0][:, outside], torch.tensor(-0.9))
    assert torch.allclose(images[1][:, outside], torch.tensor(-0.1))


@pytest.mark.parametrize("shape", [SQUARE, TRIANGLE, HEART])
def test_rotation_is_periodic_with_the_shape_symmetry(shape):
    k = scenes.SYMMETRY[shape]
    angles = torch.tensor([0.4, 0.4 + 2 * math.pi / k, 0.4 + math.pi / k])
    images = scenes.render_factors(base_factors(3, rotation=angles, shape=shape, scale=0.15))
    assert float((images[0] - images[1]).abs().max()) < 1e-3      # a full symmetry turn: the same image
    assert float((images[0] - images[2]).abs().max()) > 0.5       # half of it: visibly turned


def test_the_disc_does_not_change_with_rotation_and_shapes_differ():
    discs = scenes.render_factors(base_factors(2, rotation=torch.tensor([0.0, 2.0])))
    assert float((discs[0] - discs[1]).abs().max()) < 1e-5
    shapes = scenes.render_factors(base_factors(4, shape=torch.arange(4), scale=0.15))
    for a in range(4):
        for b in range(a + 1, 4):
            assert float((shapes[a] - shapes[b]).abs().max()) > 0.5, (scenes.SHAPES[a], scenes.SHAPES[b])


def test_edges_are_soft_and_move_continuously():
    """A 0.1 px shift changes the image by a small amount (anti-aliased), never by a whole pixel step."""
    factors = base_factors(2, x=torch.tensor([0.0, 0.1 / 64]), shape=SQUARE, rotation=0.0)
    images = scenes.render_factors(factors)
    alpha = coverage(images, factors)
    assert float(((alpha[0] > 0.01) & (alpha[0] < 0.99)).sum()) > 20   # a ramp around the outline
    assert 0.05 < float((alpha[0] - alpha[1]).abs().max()) < 0.15


# ------------------------------------------------------------------ inputs
def test_numbers_broadcast_against_tensors():
    factors = base_factors(3, x=torch.tensor([-0.2, 0.0, 0.2]))
    mixed = {**factors, "hue": 0.6, "shape": DISC}
    assert torch.equal(scenes.render_factors(mixed), scenes.render_factors(factors))


@pytest.mark.parametrize("change, message", [
    ({"shape": 4}, "factors['shape']: got [4]"),
    ({"shape": 1.5}, "factors['shape']"),
    ({"scale": 0.0}, "factors['scale']"),
    ({"background": 1.5}, "factors['background']"),
    ({"x": float("nan")}, "factors['x']"),
    ({"y": torch.zeros(2), "x": torch.zeros(3)}, "one length"),
])
def test_bad_factor_values_are_refused(change, message):
    with pytest.raises(InvalidValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        scenes.render_factors({**base_factors(1), **change})


def test_missing_and_unknown_factor_names_are_refused():
    factors = base_factors(1)
    del factors["hue"]
    with pytest.raises(InvalidValueError, match="add \\['hue'\\]"):
        scenes.render_factors(factors)
    with pytest.raises(InvalidValueError, match="remove \\['colour'\\]"):
        scenes.render_factors({**base_factors(1), "colour": 0.2})
    with pytest.raises(LatentDirsError, match="n: got 0"):
        scenes.render_scenes(0)


# ------------------------------------------------------------------ the shipped factor reader
@pytest.fixture(scope="module")
def reader():
    from latentdirs.factor_reader import load_factor_reader

    return load_factor_reader()


def test_the_reader_reads_held_out_scenes(reader):
    """Bounds about twice the held-out errors of docs/testbed.md (4 000 scenes there, 256 here)."""
    images, factors = scenes.render_scenes(256, seed=31337)
    read = reader.read(images)
    assert float((read["shape"] == factors["shape"]).float().mean()) > 0.95
    for name, bound_px in (("x", 1.0), ("y", 1.0), ("scale", 0.6)):
        assert float((read[name] - factors[name]).abs().mean()) * 64 < bound_px, name
    assert float((read["background"] - factors["background"]).abs().mean()) < 0.02
    hue_error = (read["hue"] - factors["hue"]).remainder(1.0)
    assert float(torch.minimum(hue_error, 1 - hue_error).mean()) * 360 < 6.0
    discs = read["shape"] == DISC
    assert bool(read["rotation"][discs].isnan().all()) and not bool(read["rotation"][~discs].isnan().any())
    assert reader.features(images[:5]).shape == (5, 256)


def test_the_reader_refuses_other_images_and_other_files(reader, tmp_path):
    from safetensors.torch import save_file

    from latentdirs.errors import MissingWeightsError, WeightsMismatchError
    from latentdirs.factor_reader import load_factor_reader

    with pytest.raises(InvalidValueError, match=r"images: got \(2, 3, 32, 32\)"):
        reader.read(torch.zeros(2, 3, 32, 32))
    with pytest.raises(MissingWeightsError, match="path: got"):
        load_factor_reader(tmp_path / "absent.safetensors")
    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3)}, str(other))
    with pytest.raises(WeightsMismatchError, match="is not a factor reader"):
        load_factor_reader(other)
