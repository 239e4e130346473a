"""Image composition and the fast PNG encoder."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from latentdirs.errors import InvalidValueError
from latentdirs.images import compose_grid, grid_image, save_animation, save_grid_and_strips, save_image, to_uint8
from latentdirs.png import assemble_png, encode_band, encode_png


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


def test_strips_reuse_grid_bands_and_decode_exactly(tmp_path):
    tiles = np.random.default_rng(3).integers(0, 256, size=(3, 4, 16, 16, 3), dtype=np.uint8)
    grid = compose_grid(tiles, row_labels=["a", "b", "c"], column_labels=["1", "2", "3", "4"], title="t")
    strips = [tmp_path / "s0.png", None, tmp_path / "s2.png"]
    save_grid_and_strips(grid, tmp_path / "g.png", strips)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "s0.png", "s2.png"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "g.png")), grid.pixels)
    (h0, h1), footer = grid.bands[0], grid.bands[-1]
    for row, path in ((0, strips[0]), (2, strips[2])):
        start, stop = grid.bands[1 + row]
        expected = np.concatenate([grid.pixels[h0:h1], grid.pixels[start:stop], grid.pixels[footer[0]:footer[1]]])
        assert np.array_equal(np.asarray(Image.open(path)), expected)
        assert np.array_equal(expected[h1 - h0 + 2:h1 - h0 + 18, -18:-2], tiles[row, 3])


def test_bands_of_other_widths_refused():
    with pytest.raises(InvalidValueError, match="one width"):
        assemble_png([encode_band(np.zeros((2, 3, 3), np.uint8)), encode_band(np.zeros((2, 4, 3), np.uint8))])
