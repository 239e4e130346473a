"""Photos in: read image files with Pillow and prepare them as generator-sized tensors.

The preparation rule (normative text: docs/inversion.md, "Image preparation"):

1. **Inputs.** Files are taken as given; a directory contributes its images (files with a suffix in
   :data:`IMAGE_SUFFIXES`, hidden files skipped, sorted by name, not recursive); a pattern with
   ``*``, ``?`` or ``[`` that names no existing path is a glob, contributing its matches with an image
   suffix, sorted. The same file given twice is prepared once.
2. **Reading.** A file must be a regular file of 1 byte … :data:`MAX_FILE_BYTES`; it is read into
   memory once, and its ``sha256`` is of exactly those bytes, so what is hashed is what is decoded.
3. **Decoding.** Pillow only, restricted to :data:`FORMATS` (no format plugin that runs programs). The
   pixel count is checked against :data:`MAX_PIXELS` from the header, before a pixel is decoded
   (decompression bombs); Pillow's own bomb warning and error become the same refusal.
4. **Orientation.** The EXIF orientation is applied (``ImageOps.exif_transpose``); every coordinate
   after this step — crop boxes in and out — is in the upright image.
5. **Colour.** Any mode becomes 8-bit RGB (:func:`to_rgb`): transparency is composited on white
   (:data:`BACKGROUND`); 16-bit and 32-bit integer grey is scaled by 1/257 (0 … 65535 → 0 … 255);
   palette, 1-bit, grey and CMYK through Pillow's conversion (ICC profiles are not applied).
6. **Region.** The crop box ``x,y,w,h`` if one is given (it must lie inside the image), else the whole
   image; of it, the centred square of side ``s = min(w, h)`` (offsets rounded down). That square is
   the record's ``crop``: the part of the upright source the prepared image shows.
7. **Size.** The square is resized to the generator's ``R × R`` with Lanczos (antialiased; identity when
   ``s == R``). ``s < R`` is an upscale (recorded); ``s < R / 4`` is refused unless ``allow_upscale``.
8. **Values.** float32 ``[3, R, R]``, ``v / 127.5 − 1`` in [−1, 1], RGB order.

One bad input among many is reported and skipped (:class:`PhotoFailure`), never fatal to the others.
"""

from __future__ import annotations

import glob
import hashlib
import io
import math
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from latentdirs.errors import InvalidValueError, LatentDirsError, invalid

#: the largest image file read (bytes); larger ones are refused before a byte is read
MAX_FILE_BYTES = 256 * 2**20
#: the most pixels (width × height) an image may have; checked from its header, before decoding.
#: 2**26 ≈ 67 million: a 48-megapixel phone photo passes, and decoding stays under ~270 MB (RGBA)
MAX_PIXELS = 2**26
#: what transparency is composited on
BACKGROUND = (255, 255, 255)
#: the Pillow formats decoded (JPEG includes MPO, the multi-picture JPEGs phones write); no others are even tried
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM")
#: file suffixes taken from directories and globs (case-insensitive)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm")
#: smallest usable square side, as a fraction of the generator's resolution, without allow_upscale
MIN_SIDE_FRACTION = 0.25

_EXIF_ORIENTATION = 0x0112
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_CONVERTIBLE_MODES = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr")


class ImageInputError(InvalidValueError):
    """An input image cannot be used: missing, unreadable, truncated, too large, too small, or badly cropped."""


@dataclass(frozen=True)
class CropBox:
    """A rectangle in pixels of the upright (EXIF-oriented) source: left ``x``, top ``y``, ``width``, ``height``."""

    x: int
    y: int
    width: int
    height: int

    def __post_init__(self) -> None:
        values = (self.x, self.y, self.width, self.height)
        if any(isinstance(v, bool) or not isinstance(v, int) for v in values):
            raise invalid("crop", list(values), "four integers x,y,w,h", cls=ImageInputError)
        if self.x < 0 or self.y < 0 or self.width < 1 or self.height < 1:
            raise invalid("crop", self.text(), "x, y ≥ 0 and w, h ≥ 1 (pixels)", "e.g. --crop 72,10,84,84",
                          cls=ImageInputError)

    @classmethod
    def parse(cls, text: str, *, param: str = "crop") -> "CropBox":
        """``"x,y,w,h"`` (integers, pixels) → a :class:`CropBox`."""
        parts = [part.strip() for part in str(text).split(",")]
        if len(parts) != 4 or not all(p.isdigit() for p in parts):
            raise invalid(param, text, "x,y,w,h: four non-negative integers (pixels of the upright image)",
                          "e.g. --crop 72,10,84,84", cls=ImageInputError)
        return cls(*(int(p) for p in parts))

    @classmethod
    def from_list(cls, values: Any, *, param: str = "crop") -> "CropBox":
        """``[x, y, w, h]`` as stored in JSON → a :class:`CropBox` (refused unless four integers)."""
        if not isinstance(values, (list, tuple)) or len(values) != 4:
            raise invalid(param, values, "[x, y, w, h]: four integers", cls=ImageInputError)
        return cls(*values)

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.width, self.height]

    def text(self) -> str:
        return ",".join(map(str, self.as_list()))

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)``, Pillow's box convention."""
        return self.x, self.y, self.x + self.width, self.y + self.height

    def inside(self, size: tuple[int, int]) -> bool:
        return self.x + self.width <= size[0] and self.y + self.height <= size[1]

    def centred_square(self) -> "CropBox":
        """The centred square of side ``min(width, height)`` (offsets rounded down)."""
        side = min(self.width, self.height)
        return CropBox(self.x + (self.width - side) // 2, self.y + (self.height - side) // 2, side, side)


@dataclass(frozen=True)
class PhotoRecord:
    """Where a prepared image came from and what was done to it (JSON form: :meth:`to_json`).

    Attributes:
        path: the path as given (or as derived from the directory or glob given).
        absolute: the absolute path (symlinks not resolved).
        sha256: hex SHA-256 of the file's bytes.
        size: ``(width, height)`` of the upright source, after EXIF orientation.
        crop: the square of the upright source the prepared image shows (source pixels).
        requested_crop: the crop box the caller gave, or None.
        upscaled: whether the square was smaller than the generator's resolution.
        orientation: the EXIF orientation applied (1: none).
        mode: the file's Pillow mode before conversion (e.g. ``"P"``, ``"I;16"``).
        format: the Pillow format (e.g. ``"PNG"``).
    """

    path: str
    absolute: str
    sha256: str
    size: tuple[int, int]
    crop: CropBox
    requested_crop: CropBox | None = None
    upscaled: bool = False
    orientation: int = 1
    mode: str = "RGB"
    format: str = ""

    @property
    def label(self) -> str:
        """The file name's stem, e.g. ``"astronaut"`` for ``photos/astronaut.jpg``."""
        return Path(self.path).stem or Path(self.absolute).stem

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "absolute": self.absolute, "sha256": self.sha256, "size": list(self.size),
                "crop": self.crop.as_list(),
                "requested_crop": None if self.requested_crop is None else self.requested_crop.as_list(),
                "upscaled": self.upscaled, "orientation": self.orientation, "mode": self.mode,
                "format": self.format}

    @classmethod
    def from_json(cls, record: Any, *, param: str = "source") -> "PhotoRecord":
        """Read back :meth:`to_json` (e.g. from a latents file), checking every field's JSON type."""
        if not isinstance(record, Mapping):
            raise invalid(param, record, "an object with path, absolute, sha256, size, crop", cls=ImageInputError)
        for key in ("path", "absolute", "sha256"):
            if not isinstance(record.get(key), str) or not record[key]:
                raise invalid(f"{param}.{key}", record.get(key), "a non-empty string", cls=ImageInputError)
        digest = record["sha256"]
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise invalid(f"{param}.sha256", digest, "64 lower-case hex digits", cls=ImageInputError)
        size = record.get("size")
        if (not isinstance(size, list) or len(size) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size)):
            raise invalid(f"{param}.size", size, "[width, height]: two integers ≥ 1", cls=ImageInputError)
        crop = CropBox.from_list(record.get("crop"), param=f"{param}.crop")
        requested = record.get("requested_crop")
        requested_crop = None if requested is None else CropBox.from_list(requested, param=f"{param}.requested_crop")
        if not crop.inside((size[0], size[1])):
            raise invalid(f"{param}.crop", crop.as_list(), f"a box inside the {size[0]}×{size[1]} image",
                          cls=ImageInputError)
        flags = {key: record.get(key, default) for key, default in (("upscaled", False), ("orientation", 1),
                                                                     ("mode", ""), ("format", ""))}
        if not isinstance(flags["upscaled"], bool):
            raise invalid(f"{param}.upscaled", flags["upscaled"], "true or false", cls=ImageInputError)
        if isinstance(flags["orientation"], bool) or flags["orientation"] not in range(1, 9):
            raise invalid(f"{param}.orientation", flags["orientation"], "an integer 1-8", cls=ImageInputError)
        for key in ("mode", "format"):
            if not isinstance(flags[key], str):
                raise invalid(f"{param}.{key}", flags[key], "a string", cls=ImageInputError)
        return cls(record["path"], record["absolute"], digest, (size[0], size[1]), crop, requested_crop,
                   flags["upscaled"], flags["orientation"], flags["mode"], flags["format"])


@dataclass(frozen=True)
class PhotoFailure:
    """An input that was skipped: its path as given and the one-line reason (``error`` is the exception)."""

    path: str
    error: LatentDirsError

    @property
    def message(self) -> str:
        return str(self.error)


@dataclass
class PreparedPhotos:
    """The result of :func:`prepare_images`.

    Attributes:
        images: float32 ``[N, 3, R, R]`` in [−1, 1], one per successful input, in input order.
        records: one :class:`PhotoRecord` per image.
        failures: the inputs that were skipped, in input order.
    """

    images: torch.Tensor
    records: list[PhotoRecord]
    failures: list[PhotoFailure] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> list[str]:
        """File-name stems, one per image (row labels of an edit)."""
        return [record.label for record in self.records]


# ---------------------------------------------------------------------------------------------- inputs
def collect_images(inputs: Sequence[str | os.PathLike[str]]) -> tuple[list[str], list[PhotoFailure]]:
    """Expand files, directories and globs into image paths (rule 1); inputs that give none are failures.

    Returns ``(paths as given or derived, failures)``; paths keep input order, each file once.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    paths: list[str] = []
    failures: list[PhotoFailure] = []
    seen: set[str] = set()
    for given in inputs:
        try:
            found = _expand(os.fspath(given))
        except ImageInputError as error:
            failures.append(PhotoFailure(os.fspath(given), error))
            continue
        for path in found:
            key = os.path.abspath(path)
            if key not in seen:
                seen.add(key)
                paths.append(path)
    return paths, failures


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _expand(given: str) -> list[str]:
    if not given.strip():
        raise invalid("images", given, "a file, a directory or a glob", cls=ImageInputError)
    path = Path(given)
    if path.is_dir():
        try:
            names = sorted(entry.name for entry in os.scandir(path) if entry.is_file() and _is_image_name(entry.name))
        except OSError as error:
            raise invalid("images", given, "a readable directory", f"It cannot be listed ({error.strerror})",
                          cls=ImageInputError) from None
        if not names:
            raise invalid("images", given, f"a directory holding images ({', '.join(IMAGE_SUFFIXES)})",
                          "This directory has none (subdirectories are not searched)", cls=ImageInputError)
        return [os.path.join(given, name) for name in names]
    if path.exists() or os.path.lexists(given):
        return [given]
    if glob.has_magic(given):
        matches = sorted(m for m in glob.glob(given) if os.path.isfile(m) and _is_image_name(os.path.basename(m)))
        if not matches:
            raise invalid("images", given, "a glob matching image files", "Nothing matches it", cls=ImageInputError)
        return matches
    raise invalid("images", given, "an existing file, directory or glob", "No such file or directory",
                  cls=ImageInputError)


# ---------------------------------------------------------------------------------------------- decoding
def read_file(path: str | os.PathLike[str], *, max_bytes: int = MAX_FILE_BYTES) -> tuple[bytes, str]:
    """The bytes of an image file and their hex SHA-256 (rule 2); refused past ``max_bytes`` before reading."""
    name = os.fspath(path)
    try:
        info = os.stat(name)
    except OSError as error:
        raise invalid("image", name, "a readable image file", f"It cannot be opened ({error.strerror})",
                      cls=ImageInputError) from None
    if not stat.S_ISREG(info.st_mode):
        raise invalid("image", name, "a regular file", "This is a directory, device or pipe", cls=ImageInputError)
    if info.st_size == 0:
        raise invalid("image", name, "an image file", "It is empty (0 bytes)", cls=ImageInputError)
    if info.st_size > max_bytes:
        raise invalid("image", name, f"files of at most {max_bytes // 2**20} MiB",
                      f"It has {info.st_size / 2**20:.0f} MiB; downscale or re-encode it", cls=ImageInputError)
    try:
        with open(name, "rb") as handle:
            data = handle.read(max_bytes + 1)  # +1: a file that grew since stat() is caught, not truncated
    except OSError as error:
        raise invalid("image", name, "a readable image file", f"It cannot be read ({error.strerror})",
                      cls=ImageInputError) from None
    if len(data) > max_bytes:
        raise invalid("image", name, f"files of at most {max_bytes // 2**20} MiB", "It grew while being read",
                      cls=ImageInputError)
    return data, hashlib.sha256(data).hexdigest()


def decode(data: bytes, name: str, *, max_pixels: int = MAX_PIXELS) -> tuple[Image.Image, int, str, str]:
    """Decode file bytes (rules 3–4) → ``(upright image in its own mode, EXIF orientation, mode, format)``.

    The pixel count is checked from the header before anything is decoded.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(FORMATS))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise _bomb(name, None, max_pixels) from None
    except UnidentifiedImageError:
        raise invalid("image", name, f"an image file in one of {', '.join(FORMATS)}",
                      "Pillow does not recognise its content (is it an image, or a file renamed to an image name?)",
                      cls=ImageInputError) from None
    except Exception as error:  # Pillow's plugins raise OSError, SyntaxError, ValueError, struct.error, …
        raise _damaged(name, error) from None
    width, height = image.size
    if width < 1 or height < 1:
        raise _damaged(name, ValueError(f"size {width}×{height}"))
    if width * height > max_pixels:
        raise _bomb(name, (width, height), max_pixels)
    mode, kind = image.mode, image.format or ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
            orientation = _orientation(image)
            upright = ImageOps.exif_transpose(image) if orientation != 1 else image
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise _bomb(name, None, max_pixels) from None
    except Exception as error:  # truncated or corrupt data surfaces while decoding
        raise _damaged(name, error) from None
    return upright, orientation, mode, kind


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # an unreadable EXIF block leaves the pixels as stored, as viewers do
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _bomb(name: str, size: tuple[int, int] | None, max_pixels: int) -> LatentDirsError:
    shown = f"It declares {size[0]}×{size[1]} = {size[0] * size[1]:,} pixels" if size else \
        "Pillow flags it as a decompression bomb"
    return invalid("image", name, f"at most {max_pixels:,} pixels (width × height)",
                   f"{shown}; downscale it first", cls=ImageInputError)


def _damaged(name: str, error: Exception) -> LatentDirsError:
    reason = (str(error).splitlines() or [type(error).__name__])[0][:160] or type(error).__name__
    return invalid("image", name, "a complete image file Pillow can decode",
                   f"It cannot be decoded ({reason}): it may be truncated or damaged; re-export or re-download it",
                   cls=ImageInputError)


def to_rgb(image: Image.Image, *, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """Any Pillow mode → 8-bit ``RGB`` (rule 5).

    * ``I;16*`` and ``I``: values clipped to 0 … 65535 and divided by 257, as grey (a transparency key
      of such an image is ignored);
    * ``F``: values clipped to 0 … 255, as grey;
    * with alpha (RGBA, LA, PA, premultiplied) or a transparency key (P, L, RGB with ``transparency``):
      composited on ``background`` (white by default): ``rgb · a + background · (1 − a)``, rounded;
    * ``1``, ``L``, ``P``, ``RGBX``, ``CMYK``, ``YCbCr``: Pillow's ``convert("RGB")`` (no ICC colour
      management); ``RGB`` unchanged. Other modes (LAB, HSV, …) are refused.
    """
    mode = image.mode
    if mode in _WIDE_GREY_MODES or mode == "F":  # before transparency: Pillow cannot convert these to RGBA
        values = np.asarray(image).astype(np.float64)
        grey = np.clip(values, 0.0, 65535.0) / 257.0 if mode != "F" else np.nan_to_num(values)
        return Image.fromarray(np.rint(np.clip(grey, 0.0, 255.0)).astype(np.uint8), "L").convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:] / 255.0
        mixed = rgba[..., :3] * alpha + np.asarray(background, dtype=np.float32) * (1.0 - alpha)
        return Image.fromarray(np.clip(np.rint(mixed), 0, 255).astype(np.uint8), "RGB")
    if mode == "RGB":
        return image
    if mode in _CONVERTIBLE_MODES:
        return image.convert("RGB")
    raise invalid("image mode", mode, f"one of {', '.join(_CONVERTIBLE_MODES + _ALPHA_MODES + _WIDE_GREY_MODES)}, F",
                  "Convert the file to RGB first", cls=ImageInputError)


def read_photo(path: str | os.PathLike[str], *, sha256: str | None = None, max_bytes: int = MAX_FILE_BYTES,
               max_pixels: int = MAX_PIXELS) -> tuple[Image.Image, str]:
    """An image file as the upright 8-bit RGB picture the rule prepares from (rules 2–5), and its sha256.

    With ``sha256``, a file whose bytes hash otherwise is refused (it changed since it was recorded).
    """
    name = os.fspath(path)
    data, digest = read_file(name, max_bytes=max_bytes)
    if sha256 is not None and digest != sha256:
        raise invalid("image", name, f"the file recorded with sha256 {sha256[:12]}…",
                      f"Its content changed (sha256 now {digest[:12]}…); restore it or invert it again",
                      cls=ImageInputError)
    upright, *_ = decode(data, name, max_pixels=max_pixels)
    return _converted(upright, name), digest


def _converted(image: Image.Image, name: str) -> Image.Image:
    """:func:`to_rgb`, with a failure inside Pillow reported as this file's one-line error."""
    try:
        return to_rgb(image)
    except ImageInputError:
        raise
    except Exception as error:  # a mode Pillow decodes but cannot convert as asked
        raise _damaged(name, error) from None


# ---------------------------------------------------------------------------------------------- preparation
def prepare_image(path: str | os.PathLike[str], resolution: int, *, crop: CropBox | str | None = None,
                  allow_upscale: bool = False, max_bytes: int = MAX_FILE_BYTES,
                  max_pixels: int = MAX_PIXELS) -> tuple[torch.Tensor, PhotoRecord]:
    """One image file → ``(float32 [3, R, R] in [−1, 1], its PhotoRecord)`` by the module's rule.

    Raises :class:`ImageInputError` (one line) for anything the rule refuses.
    """
    size = _check_resolution(resolution)
    requested = CropBox.parse(crop) if isinstance(crop, str) else crop
    name = os.fspath(path)
    data, digest = read_file(name, max_bytes=max_bytes)
    upright, orientation, mode, kind = decode(data, name, max_pixels=max_pixels)
    region = requested if requested is not None else CropBox(0, 0, *upright.size)
    if not region.inside(upright.size):
        raise invalid("crop", region.text(), f"a box inside the {upright.size[0]}×{upright.size[1]} image "
                      f"{name!r} (x + w ≤ {upright.size[0]}, y + h ≤ {upright.size[1]}; upright, after EXIF "
                      "orientation)", cls=ImageInputError)
    square = region.centred_square()
    if square.width < size * MIN_SIDE_FRACTION and not allow_upscale:
        raise invalid("image", name, f"a region at least {math.ceil(size * MIN_SIDE_FRACTION)} px on its shorter "
                      f"side (a quarter of the generator's {size} px)",
                      f"It is {square.width} px; allow the upscale explicitly (--allow-upscale / allow_upscale=True) "
                      "or use a larger image", cls=ImageInputError)
    rgb = _converted(upright, name)
    if square.width == size:  # exactly the generator's size: no resampling at all
        prepared = rgb.crop(square.box)
    else:
        prepared = rgb.resize((size, size), Image.Resampling.LANCZOS, box=square.box, reducing_gap=3.0)
    pixels = torch.from_numpy(np.asarray(prepared, dtype=np.float32).copy())  # [R, R, 3] 0 … 255
    tensor = (pixels.permute(2, 0, 1) / 127.5 - 1.0).contiguous()
    record = PhotoRecord(path=name, absolute=os.path.abspath(name), sha256=digest, size=upright.size,
                         crop=square, requested_crop=requested, upscaled=square.width < size,
                         orientation=orientation, mode=mode, format=kind)
    return tensor, record


def prepare_images(inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str], resolution: int, *,
                   crop: CropBox | str | None = None, allow_upscale: bool = False,
                   max_bytes: int = MAX_FILE_BYTES, max_pixels: int = MAX_PIXELS) -> PreparedPhotos:
    """Files, directories and globs → :class:`PreparedPhotos` (``images [N, 3, R, R]`` in [−1, 1]).

    ``crop`` (one box for every image) is applied first, then the centred square, then the resize.
    Inputs that fail are skipped and listed in ``failures``; when *no* input gives an image the error
    is raised instead (the only failure's own, or one that counts and names them).
    """
    size = _check_resolution(resolution)
    if isinstance(crop, str):
        crop = CropBox.parse(crop)
    tensors: list[torch.Tensor] = []
    records: list[PhotoRecord] = []
    failures: list[PhotoFailure] = []
    seen: set[str] = set()
    for given in [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs:
        paths, missing = collect_images([given])
        failures.extend(missing)
        for path in paths:
            if os.path.abspath(path) in seen:  # the same file through two inputs: prepared once
                continue
            seen.add(os.path.abspath(path))
            try:
                tensor, record = prepare_image(path, size, crop=crop, allow_upscale=allow_upscale,
                                               max_bytes=max_bytes, max_pixels=max_pixels)
            except ImageInputError as error:
                failures.append(PhotoFailure(path, error))
                continue
            tensors.append(tensor)
            records.append(record)
    if not records:
        raise _nothing_usable(failures)
    return PreparedPhotos(torch.stack(tensors), records, failures)


def _nothing_usable(failures: list[PhotoFailure]) -> LatentDirsError:
    if len(failures) == 1:
        return failures[0].error
    if not failures:
        return invalid("images", [], "at least one image file, directory or glob", cls=ImageInputError)
    names = [f.path for f in failures]
    return invalid("images", names, "at least one usable image",
                   f"None of the {len(failures)} inputs could be used; first: {failures[0].message}",
                   cls=ImageInputError)


def _check_resolution(resolution: Any) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or not 1 <= resolution <= 8192:
        raise invalid("resolution", resolution, "an integer from 1 to 8192 (the generator's output size)")
    return resolution


__all__ = ["BACKGROUND", "CropBox", "FORMATS", "IMAGE_SUFFIXES", "ImageInputError", "MAX_FILE_BYTES", "MAX_PIXELS",
           "PhotoFailure", "PhotoRecord", "PreparedPhotos", "collect_images", "decode", "prepare_image",
           "prepare_images", "read_file", "read_photo", "to_rgb"]
