"""The saliency barycentre (latentdirs.saliency): known answers on renderer scenes, colour invariance,
and the refusals."""

from __future__ import annotations

import pytest
import torch

from latentdirs import scenes
from latentdirs.errors import InvalidValueError
from latentdirs.saliency import FADED, contrast_saliency, saliency_amounts, saliency_moments


@pytest.fixture(scope="module")
def scene():
    """400 renderer scenes whose objects lie well inside the frame (no border cut), and their factors."""
    images, factors = scenes.render_scenes(400, seed=11)
    keep = (factors["x"].abs() < 0.27) & (factors["y"].abs() < 0.27)
    return images[keep], {name: value[keep] for name, value in factors.items()}


def test_the_barycentre_is_the_objects_centre(scene):
    images, factors = scene
    x, y, _, _ = saliency_moments(images)
    assert len(x) > 150
    assert float((x - factors["x"]).abs().max()) * 64 < 0.1  # px at 64 px; the centroid is the centre
    assert float((y - factors["y"]).abs().max()) * 64 < 0.1
    small = torch.nn.functional.avg_pool2d(images, 2)  # the 32 px images shapes-stylegan2 draws
    x32, _, _, _ = saliency_moments(small)
    assert float((x32 - factors["x"]).abs().mean()) * 64 < 0.1


def test_shifts_and_zooms_read_as_rendered(scene):
    images, factors = scene
    moved = scenes.render_factors({**factors, "x": factors["x"] + 0.05, "y": factors["y"] - 0.03})
    assert float((saliency_amounts(images, moved, "shift-x") - 0.05).abs().max()) < 0.002
    assert float((saliency_amounts(images, moved, "shift-y") + 0.03).abs().max()) < 0.002
    grown = scenes.render_factors({**factors, "scale": factors["scale"] * 1.2})
    zoom = saliency_amounts(images, grown, "zoom")
    assert abs(float(zoom.mean()) - 0.2) < 0.01 and float(zoom.std()) < 0.01


def test_a_change_of_colour_alone_is_no_move(scene):
    """Registration compares colours; the barycentre only asks where the contrast is."""
    images, factors = scene
    recoloured = scenes.render_factors({**factors, "hue": (factors["hue"] + 0.5) % 1.0})
    assert float(saliency_amounts(images, recoloured, "shift-x").abs().max()) * 64 < 0.05


def test_an_object_that_fades_has_no_shift_reading(scene):
    """Half the contrast gone (the object faded, or left the frame) is no move the barycentre can read."""
    images, factors = scene
    background = factors["background"].view(-1, 1, 1, 1) * 2 - 1
    faded = background + 0.6 * (images - background)  # contrast 0.6, saliency mass 0.36 of the source's
    assert torch.isnan(saliency_amounts(images, faded, "shift-x", faded=FADED)).all()
    assert float(saliency_amounts(images, faded, "shift-x").abs().max()) * 64 < 0.05  # a measurement reads it
    kept = background + 0.8 * (images - background)  # mass 0.64: still read, and still no move
    assert float(saliency_amounts(images, kept, "shift-y", faded=FADED).abs().max()) * 64 < 0.05


def test_a_flat_image_has_no_barycentre_and_bad_input_is_refused_in_one_line(scene):
    images, _ = scene
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert float(contrast_saliency(flat).abs().max()) == 0
    assert all(torch.isnan(value).all() for value in saliency_moments(flat))
    with pytest.raises(InvalidValueError, match=r"^transform: got 'rotation'; allowed: shift-x, shift-y, zoom .*"
                                                r"Measure it by registration$"):
        saliency_amounts(images[:1], images[:1], "rotation")
    with pytest.raises(InvalidValueError, match=r"^images: got '\(1, 3, 64, 64\) and \(2, 3, 64, 64\)'"):
        saliency_amounts(images[:1], images[:2], "shift-x")
