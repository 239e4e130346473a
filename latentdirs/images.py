"""Images: tensors → uint8, labelled grids, strips, animations, atomic image files.

Composition only; no generator or direction maths here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from latentdirs.atomic import atomic_path, write_bytes_atomic
from latentdirs.errors import invalid
from latentdirs.png import assemble_png, encode_band, encode_png

LABEL_HEIGHT = 14
MARGIN = 2
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[N, 3, H, W]`` floats in [-1, 1] → ``[N, H, W, 3]`` uint8 (values outside are clipped)."""
    scaled = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).numpy()


@lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont:
    # Pillow's default font is parsed from embedded bytes on every call: load it once.
    return ImageFont.load_default()


@dataclass(frozen=True)
class Grid:
    """A composed grid: ``pixels`` ``[H, W, 3]`` uint8 and its horizontal ``bands`` as (start, stop) rows.

    ``bands[0]`` is the header (title and column labels), ``bands[1 + r]`` row ``r`` (its label and
    tiles), ``bands[-1]`` the bottom margin; header + one row band + margin is that row's strip.
    """

    pixels: np.ndarray
    bands: list[tuple[int, int]]

    def image(self) -> Image.Image:
        return Image.fromarray(self.pixels)


def compose_grid(tiles: np.ndarray, *, row_labels: Sequence[str] = (), column_labels: Sequence[str] = (),
                 title: str = "") -> Grid:
    """Compose ``[R, C, H, W, 3]`` uint8 tiles into one labelled picture (see :class:`Grid`)."""
    if tiles.ndim != 5 or tiles.shape[-1] != 3 or tiles.dtype != np.uint8:
        raise invalid("tiles", f"{tiles.dtype} array of shape {tiles.shape}", "[rows, columns, H, W, 3] uint8")
    rows, columns, height, width, _ = tiles.shape
    font = _font()
    draw_probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = max([int(draw_probe.textlength(t, font=font)) + 6 for t in row_labels] + [0])
    top = (LABEL_HEIGHT if title else 0) + (LABEL_HEIGHT if column_labels else 0)
    cell_w, cell_h = width + MARGIN, height + MARGIN
    canvas = Image.new("RGB", (label_width + columns * cell_w + MARGIN, top + rows * cell_h + MARGIN), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((MARGIN, 1), title, fill=INK, font=font)
    for c, text in enumerate(column_labels):
        x = label_width + MARGIN + c * cell_w + (width - draw.textlength(text, font=font)) / 2
        draw.text((x, top - LABEL_HEIGHT + 1), text, fill=INK, font=font)
    for r, text in enumerate(row_labels):
        draw.text((2, top + MARGIN + r * cell_h + (height - 10) / 2), text, fill=INK, font=font)
    block = np.asarray(canvas).copy()
    for r in range(rows):
        y = top + MARGIN + r * cell_h
        for c in range(columns):
            x = label_width + MARGIN + c * cell_w
            block[y:y + height, x:x + width] = tiles[r, c]
    bands = [(0, top)] + [(top + r * cell_h, top + (r + 1) * cell_h) for r in range(rows)]
    bands.append((top + rows * cell_h, top + rows * cell_h + MARGIN))
    return Grid(block, bands)


def grid_image(tiles: np.ndarray, *, row_labels: Sequence[str] = (), column_labels: Sequence[str] = (),
               title: str = "") -> Image.Image:
    """:func:`compose_grid` as a Pillow image."""
    return compose_grid(tiles, row_labels=row_labels, column_labels=column_labels, title=title).image()


def save_grid_and_strips(grid: Grid, path: str | Path, strip_paths: Sequence[str | Path | None] = ()) -> None:
    """Write the grid PNG and, for row ``r`` with ``strip_paths[r]`` set, its strip PNG — all atomically.

    The grid is compressed once, band by band; each strip reuses its bands' compressed bytes.
    """
    encoded = [encode_band(grid.pixels[start:stop]) for start, stop in grid.bands if stop > start]
    has_header = grid.bands[0][1] > grid.bands[0][0]
    header, rows, footer = (encoded[:1] if has_header else []), encoded[int(has_header):-1], encoded[-1]
    write_bytes_atomic(path, assemble_png(encoded))
    for row, strip_path in zip(rows, strip_paths):
        if strip_path is not None:
            write_bytes_atomic(strip_path, assemble_png(header + [row, footer]))


def save_image(image: Image.Image, path: str | Path) -> Path:
    """Save an image atomically; PNG through :func:`encode_png`, other formats (by suffix) through Pillow."""
    path = Path(path)
    kind = _format(path)
    with atomic_path(path) as temporary:
        if kind == "PNG" and image.mode == "RGB":
            temporary.write_bytes(encode_png(np.asarray(image)))  # faster than Pillow, see latentdirs.png
        else:
            image.save(temporary, format=kind)
    return path


def save_animation(frames: Sequence[Image.Image], path: str | Path, *, duration_ms: int = 120) -> Path:
    """Save frames as a looping animated GIF or WebP (by suffix), atomically, going there and back."""
    if not frames:
        raise invalid("frames", 0, "at least one frame")
    sequence = list(frames) + list(frames[-2:0:-1])  # ping-pong sweep
    path = Path(path)
    with atomic_path(path) as temporary:
        sequence[0].save(temporary, format=_format(path), save_all=True, append_images=sequence[1:],
                         duration=duration_ms, loop=0)
    return path


def _format(path: Path) -> str:
    formats = {".png": "PNG", ".gif": "GIF", ".webp": "WEBP", ".jpg": "JPEG", ".jpeg": "JPEG"}
    suffix = path.suffix.lower()
    if suffix not in formats:
        raise invalid("output", str(path), "a .png, .gif, .webp or .jpg file name")
    return formats[suffix]
