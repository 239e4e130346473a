"""Image preparation (latentdirs.photos): real photos, every Pillow mode, EXIF orientation, crops, and
hostile input — each refusal one clear line, one bad file among many skipped and reported."""

from __future__ import annotations

import hashlib
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentdirs.photos import (MAX_PIXELS, CropBox, ImageInputError, PhotoRecord, collect_images, prepare_image,
                               prepare_images, read_photo, to_rgb)

DATA = Path(__file__).resolve().parent / "data"
ASTRONAUT = DATA / "astronaut.jpg"  # 256×256 JPEG, scikit-image's sample photo (public domain; tests/data/README.md)
CHELSEA = DATA / "chelsea.png"  # 180×120 PNG, scikit-image's cat (CC0)


def _pixels(tensor: torch.Tensor) -> np.ndarray:
    """[3, R, R] in [-1, 1] → [R, R, 3] in 0 … 255 (float, for exact comparisons after rounding)."""
    return np.rint((tensor.permute(1, 2, 0).numpy() + 1.0) * 127.5)


def _chelsea() -> np.ndarray:
    return np.asarray(Image.open(CHELSEA).convert("RGB"))


# ---------------------------------------------------------------------------------------------- real photos
def test_real_photo_is_resized_by_the_rule_and_recorded():
    tensor, record = prepare_image(ASTRONAUT, 64)
    assert tensor.shape == (3, 64, 64) and tensor.dtype == torch.float32
    assert -1.0 <= float(tensor.min()) and float(tensor.max()) <= 1.0
    reference = np.asarray(Image.open(ASTRONAUT).convert("RGB").resize((64, 64), Image.Resampling.LANCZOS),
                           dtype=np.float64)
    assert np.abs(_pixels(tensor) - reference).mean() < 1.5, "Lanczos resize of the whole (square) photo"
    assert record.sha256 == hashlib.sha256(ASTRONAUT.read_bytes()).hexdigest()
    assert record.size == (256, 256) and record.crop == CropBox(0, 0, 256, 256) and not record.upscaled
    assert record.path == str(ASTRONAUT) and Path(record.absolute).is_absolute()
    assert (record.format, record.mode, record.orientation, record.label) == ("JPEG", "RGB", 1, "astronaut")


def test_non_square_photo_is_centre_cropped_exactly():
    tensor, record = prepare_image(CHELSEA, 120)  # the square's side is the resolution: no resampling
    assert record.crop == CropBox(30, 0, 120, 120)
    assert np.array_equal(_pixels(tensor), _chelsea()[0:120, 30:150])


def test_explicit_crop_is_applied_first_then_its_centred_square():
    tensor, record = prepare_image(ASTRONAUT, 84, crop="72,10,84,84")  # the face
    upright = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    assert np.array_equal(_pixels(tensor), upright[10:94, 72:156])
    _, wide = prepare_image(ASTRONAUT, 64, crop=CropBox(72, 10, 100, 84))
    assert wide.crop == CropBox(80, 10, 84, 84) and wide.requested_crop == CropBox(72, 10, 100, 84)
    assert wide.to_json()["crop"] == [80, 10, 84, 84]


def test_exif_orientation_is_applied_before_everything(tmp_path):
    upright = Image.open(CHELSEA).convert("RGB")  # 180 × 120
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # how a camera held sideways stores it: 120 × 180
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "sideways.png"
    stored.save(path, exif=exif)
    tensor, record = prepare_image(path, 120)
    assert record.orientation == 6 and record.size == (180, 120) and record.crop == CropBox(30, 0, 120, 120)
    assert np.array_equal(_pixels(tensor), np.asarray(upright)[0:120, 30:150])
    _, cropped = prepare_image(path, 32, crop="150,0,30,40")  # a box of the upright image, not of the stored one
    assert cropped.crop == CropBox(150, 5, 30, 30)
    with pytest.raises(ImageInputError, match="inside the 180×120 image"):
        prepare_image(path, 32, crop="0,130,40,40")  # inside the stored 120 × 180, outside the upright image


# ---------------------------------------------------------------------------------------------- modes
def _save(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def test_every_mode_becomes_the_rgb_it_shows(tmp_path):
    rgb = _chelsea()[0:64, 0:64]
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    expect_grey = np.repeat(grey[..., None], 3, axis=2)

    cases: dict[str, tuple[Path, np.ndarray]] = {}
    cases["L"] = (_save(Image.fromarray(grey, "L"), tmp_path / "grey.png"), expect_grey)
    wide = (grey.astype(np.uint16) * 257)
    cases["I;16"] = (_save(Image.fromarray(wide), tmp_path / "grey16.png"), expect_grey)
    cases["I"] = (_save(Image.fromarray(wide.astype(np.int32), "I"), tmp_path / "grey32.tif"), expect_grey)
    cases["CMYK"] = (_save(Image.fromarray(rgb).convert("CMYK"), tmp_path / "print.tif"), rgb)
    bits = (np.indices((64, 64)).sum(axis=0) // 8 % 2).astype(bool)
    cases["1"] = (_save(Image.fromarray(bits), tmp_path / "bits.png"), np.repeat(bits[..., None] * 255, 3, axis=2))

    alpha = np.zeros((64, 64), dtype=np.uint8)
    alpha[:, 32:] = 255
    alpha[:, 31] = 128
    rgba = np.dstack([rgb, alpha])
    white = np.full((64, 64, 3), 255.0)
    mixed = np.rint(rgb * (alpha[..., None] / 255.0) + white * (1 - alpha[..., None] / 255.0))
    cases["RGBA"] = (_save(Image.fromarray(rgba, "RGBA"), tmp_path / "cut.png"), mixed)
    la = np.dstack([grey, alpha])
    mixed_grey = np.rint(expect_grey * (alpha[..., None] / 255.0) + white * (1 - alpha[..., None] / 255.0))
    cases["LA"] = (_save(Image.fromarray(la, "LA"), tmp_path / "cut-grey.png"), mixed_grey)

    palette = Image.fromarray(rgb).quantize(16)
    indices = np.asarray(palette).copy()
    indices[:8, :8] = 15
    keyed = Image.fromarray(indices, "P")
    keyed.putpalette(palette.getpalette())
    colours = np.asarray(palette.getpalette(), dtype=np.uint8)[:48].reshape(16, 3)
    expect_palette = colours[indices].astype(np.float64)
    expect_palette[indices == 15] = 255  # index 15 is transparent: white
    cases["P"] = (_save(keyed, tmp_path / "palette.png", transparency=15), expect_palette)
    cases["GIF"] = (_save(keyed, tmp_path / "palette.gif", transparency=15), expect_palette)

    for name, (path, expected) in cases.items():
        tensor, record = prepare_image(path, 64)
        assert tensor.shape == (3, 64, 64), name
        assert np.array_equal(_pixels(tensor), np.asarray(expected, dtype=np.float64)), name
        assert record.mode == Image.open(path).mode, name
    assert prepare_image(cases["I;16"][0], 64)[1].mode == "I;16"


def test_cmyk_jpeg_and_refused_modes(tmp_path):
    rgb = _chelsea()[0:64, 0:64]
    path = _save(Image.fromarray(rgb).convert("CMYK"), tmp_path / "print.jpg", quality=95)
    tensor, record = prepare_image(path, 64)
    assert record.mode == "CMYK" and np.abs(_pixels(tensor) - rgb).mean() < 4
    lab = Image.new("LAB", (8, 8))
    with pytest.raises(ImageInputError, match="image mode: got 'LAB'"):
        to_rgb(lab)


# ---------------------------------------------------------------------------------------------- hostile input
def _png(width: int, height: int, body: bytes = b"\x78\x9c\x03\x00\x00\x00\x00\x01") -> bytes:
    """A PNG that declares ``width × height`` RGB pixels and holds only ``body`` as image data."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [(20000, 20000), (9000, 8000)], ids=["beyond-pillow-limit", "beyond-our-cap"])
def test_decompression_bombs_are_refused_before_decoding(tmp_path, size):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(*size))  # a few dozen bytes; decoding would need gigabytes
    assert size[0] * size[1] > MAX_PIXELS and path.stat().st_size < 100
    with pytest.raises(ImageInputError, match=r"image: got '.*bomb.png'; allowed: at most 67,108,864 pixels"):
        prepare_image(path, 64)


def test_damaged_files_each_get_one_clear_line(tmp_path):
    cases = {
        "empty.png": (b"", "It is empty \\(0 bytes\\)"),
        "notes.png": (b"these are my holiday notes, not a picture\n" * 4, "Pillow does not recognise its content"),
        "cut.png": (CHELSEA.read_bytes()[: CHELSEA.stat().st_size // 2], "It cannot be decoded .*truncated"),
        "cut.jpg": (ASTRONAUT.read_bytes()[: ASTRONAUT.stat().st_size // 2], "It cannot be decoded .*truncated"),
        "header-only.png": (CHELSEA.read_bytes()[:40], "cannot be decoded|does not recognise"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ImageInputError, match=message) as caught:
            prepare_image(path, 64)
        assert "\n" not in str(caught.value) and name in str(caught.value), name


def test_sizes_crops_and_upscales(tmp_path):
    tiny = _save(Image.fromarray(_chelsea()[:10, :10]), tmp_path / "tiny.png")
    with pytest.raises(ImageInputError, match="at least 16 px on its shorter side .* It is 10 px; allow the upscale"):
        prepare_image(tiny, 64)
    tensor, record = prepare_image(tiny, 64, allow_upscale=True)
    assert record.upscaled and tensor.shape == (3, 64, 64)
    assert prepare_image(_save(Image.fromarray(_chelsea()[:32, :32]), tmp_path / "small.png"), 64)[1].upscaled
    with pytest.raises(ImageInputError, match="crop: got '100,0,100,100'; allowed: a box inside the 180×120 image"):
        prepare_image(CHELSEA, 64, crop="100,0,100,100")
    for text in ("1,2,3", "a,b,c,d", "-1,0,10,10", "0,0,0,10", "1.5,0,10,10"):
        with pytest.raises(ImageInputError, match="crop: got"):
            prepare_image(CHELSEA, 64, crop=text)
    with pytest.raises(ImageInputError, match="files of at most 0 MiB"):
        prepare_image(ASTRONAUT, 64, max_bytes=1000)
    with pytest.raises(ImageInputError, match="a regular file"):
        prepare_image(Path("/dev/null"), 64)


def test_inputs_files_directories_globs(tmp_path):
    folder = tmp_path / "photos"
    (folder / "deeper").mkdir(parents=True)
    shutil.copy(CHELSEA, folder / "b_cat.png")
    shutil.copy(ASTRONAUT, folder / "a_face.JPG")
    shutil.copy(ASTRONAUT, folder / "deeper" / "not-searched.jpg")
    (folder / "._a_face.JPG").write_bytes(b"macOS resource fork")  # hidden: skipped
    (folder / "readme.txt").write_text("not an image")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    paths, failures = collect_images([folder, str(tmp_path / "photos" / "*.png"), empty, tmp_path / "missing.png",
                                      str(tmp_path / "*.webp")])
    assert paths == [str(folder / "a_face.JPG"), str(folder / "b_cat.png")], "sorted, once each, not recursive"
    messages = [f.message for f in failures]
    assert len(messages) == 3
    assert "allowed: a directory holding images" in messages[0] and "subdirectories are not searched" in messages[0]
    assert "No such file or directory" in messages[1] and "Nothing matches it" in messages[2]


def test_one_bad_image_among_many_is_skipped_and_reported(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(ASTRONAUT.read_bytes()[:500])
    prepared = prepare_images([ASTRONAUT, bad, tmp_path / "gone.png", CHELSEA, ASTRONAUT], 32, crop=None)
    assert prepared.images.shape == (2, 3, 32, 32) and prepared.labels == ["astronaut", "chelsea"]
    assert [f.path for f in prepared.failures] == [str(bad), str(tmp_path / "gone.png")]
    assert all(isinstance(f.error, ImageInputError) for f in prepared.failures)
    cropped = prepare_images([CHELSEA, ASTRONAUT], 32, crop="100,100,100,100")  # fits the 256-px photo only
    assert cropped.labels == ["astronaut"] and "inside the 180×120 image" in cropped.failures[0].message
    with pytest.raises(ImageInputError, match="gone.png'; allowed: an existing file"):
        prepare_images([tmp_path / "gone.png"], 32)
    with pytest.raises(ImageInputError, match="None of the 2 inputs could be used; first: .*broken.jpg"):
        prepare_images([bad, tmp_path / "gone.png"], 32)


def test_read_photo_refuses_a_changed_file_and_records_round_trip(tmp_path):
    path = tmp_path / "cat.png"
    shutil.copy(CHELSEA, path)
    _, record = prepare_image(path, 64)
    image, digest = read_photo(path, sha256=record.sha256)
    assert image.mode == "RGB" and image.size == (180, 120) and digest == record.sha256
    assert PhotoRecord.from_json(record.to_json()) == record
    Image.fromarray(_chelsea()[::-1].copy()).save(path)
    with pytest.raises(ImageInputError, match="Its content changed"):
        read_photo(path, sha256=record.sha256)
    hostile = {"sha256": "xyz", "size": [0, 10], "crop": [0, 0, 500, 500], "upscaled": "no", "orientation": 9,
               "path": 3}
    for key, value in hostile.items():
        with pytest.raises(ImageInputError, match=f"source.{key}: got"):
            PhotoRecord.from_json({**record.to_json(), key: value})
