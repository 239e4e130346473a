"""Image composition and the fast PNG encoder."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from latentdirs.errors import InvalidValueError
from latentdirs.images import encode_png, grid_image, save_animation, save_image, to_uint8


def test_to_uint8_maps_range_and_clips():
    images = torch.tensor([-1.5, -1.0, 0.0, 1.0, 2.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    pixels = to_uint8(images)
    assert pixels.shape == (1, 1, 5, 3) and pixels.dtype == np.uint8
    assert pixels[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 5, 3), (64, 513, 3)])
def test_png_round_trip_is_lossless(shape):
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, size=shape, dtype=np.uint8)
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(pixels))))
    assert np.array_equal(decoded, pixels)


def test_png_refuses_other_arrays():
    with pytest.raises(InvalidValueError, match="uint8 \\[H, W, 3\\]"):
        encode_png(np.zeros((4, 4), dtype=np.uint8))


def test_grid_places_tiles_and_labels(tmp_path):
    tiles = np.zeros((2, 3, 8, 8, 3), dtype=np.uint8)
    tiles[1, 2] = 200
    picture = grid_image(tiles, row_labels=["seed 0", "seed 1"], column_labels=["-1", "0", "+1"], title="d0")
    array = np.asarray(picture)
    assert array.shape[0] > 2 * 8 and array.shape[1] > 3 * 8
    assert (array == 200).all(axis=2).sum() == 64, "exactly one 8×8 tile is bright"
    assert (array < 100).any(axis=2).sum() > 64, "labels drew dark text"
    path = save_image(picture, tmp_path / "grid.png")
    assert np.array_equal(np.asarray(Image.open(path)), array)


def test_animation_sweeps_there_and_back(tmp_path):
    frames = [Image.new("RGB", (4, 4), (v, v, v)) for v in (0, 120, 240)]
    path = save_animation(frames, tmp_path / "a.gif")
    assert Image.open(path).n_frames == 4
    assert save_animation(frames, tmp_path / "a.webp").stat().st_size > 0
    with pytest.raises(InvalidValueError, match="a .png, .gif, .webp or .jpg file name"):
        save_animation(frames, tmp_path / "a.bmp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "a.webp"]
