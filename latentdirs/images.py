"""Images: tensors → uint8, labelled grids, strips, animations, atomic image files.

Composition only; no generator or direction maths here.
"""

from __future__ import annotations

import struct
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from latentdirs.atomic import atomic_path
from latentdirs.errors import invalid

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


def grid_image(tiles: np.ndarray, *, row_labels: Sequence[str] = (), column_labels: Sequence[str] = (),
               title: str = "") -> Image.Image:
    """Compose ``[R, C, H, W, 3]`` uint8 tiles into one picture with a title, row and column labels."""
    if tiles.ndim != 5 or tiles.shape[-1] != 3:
        raise invalid("tiles", f"shape {tiles.shape}", "[rows, columns, H, W, 3] uint8")
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
    return Image.fromarray(block)


def encode_png(pixels: np.ndarray) -> bytes:
    """Encode ``[H, W, 3]`` uint8 RGB as PNG, tuned for speed: "Up" row filter + zlib run-length mode.

    About 2.3× faster than Pillow's encoder on edit grids here (which tries every filter per row), for
    files about 15 % larger; the bytes are a standard PNG any reader decodes losslessly.
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise invalid("pixels", f"{pixels.dtype} array of shape {pixels.shape}", "uint8 [H, W, 3]")
    height, width, _ = pixels.shape
    rows = np.ascontiguousarray(pixels).reshape(height, width * 3)
    filtered = np.empty((height, width * 3 + 1), dtype=np.uint8)
    filtered[:, 0] = 2  # filter type Up: each byte minus the byte above (mod 256)
    filtered[0, 0] = 0  # the first row has nothing above: no filter
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    compressor = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    data = compressor.compress(filtered.data) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def save_image(image: Image.Image, path: str | Path) -> Path:
    """Save an image atomically; PNG through :func:`encode_png`, other formats (by suffix) through Pillow."""
    path = Path(path)
    kind = _format(path)
    with atomic_path(path) as temporary:
        if kind == "PNG" and image.mode == "RGB":
            temporary.write_bytes(encode_png(np.asarray(image)))
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
