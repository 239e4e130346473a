"""A fast PNG writer for 8-bit RGB, with *banded* encoding so strips of a grid cost no second compression.

Why not Pillow: its encoder tries every row filter for every row, which on a 2-core CPU costs as
much as the generator's forward pass for small images. Here every row uses the "Up" filter (each
byte minus the byte above), and zlib runs in run-length mode at level 1: about 2.3× faster on edit
grids, files about 15 % larger, a standard PNG for every reader.

Banded encoding: a picture is cut into horizontal bands; each band is filtered on its own (its first
row unfiltered) and compressed into an independent, byte-aligned deflate segment. Any sequence of
bands — the whole grid, or the header band plus one row band (a strip) — is then a valid PNG made by
concatenating segments, with only a checksum computed anew.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from latentdirs.errors import invalid

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KiB window, "fastest" level hint; (0x7801 % 31 == 0)
_FINAL_EMPTY_BLOCK = b"\x03\x00"  # a final static-Huffman block holding only end-of-block


@dataclass(frozen=True)
class Band:
    """One band: its filtered bytes (for the checksum), deflated segment, and size."""

    filtered: bytes
    segment: bytes
    height: int
    width: int


def _check(pixels: np.ndarray) -> None:
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3 or 0 in pixels.shape:
        raise invalid("pixels", f"{pixels.dtype} array of shape {pixels.shape}", "uint8 [H, W, 3], H, W ≥ 1")


def encode_band(pixels: np.ndarray) -> Band:
    """Filter and deflate ``[h, W, 3]`` uint8 rows into an independent segment."""
    _check(pixels)
    height, width, _ = pixels.shape
    rows = np.ascontiguousarray(pixels).reshape(height, width * 3)
    filtered = np.empty((height, width * 3 + 1), dtype=np.uint8)
    filtered[:, 0] = 2  # filter type Up
    filtered[0, 0] = 0  # a band's first row stands alone: no filter
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # wraps mod 256, as PNG specifies
    data = filtered.tobytes()
    compressor = zlib.compressobj(1, zlib.DEFLATED, -15, 9, zlib.Z_RLE)  # raw deflate, no header
    segment = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)  # byte-aligned, not final
    return Band(data, segment, height, width)


def assemble_png(bands: Sequence[Band]) -> bytes:
    """A PNG of the bands stacked top to bottom (all of one width)."""
    if not bands or len({band.width for band in bands}) != 1:
        raise invalid("bands", f"{len(bands)} bands of widths {sorted({b.width for b in bands})}",
                      "one or more bands of one width")
    checksum = 1
    for band in bands:
        checksum = zlib.adler32(band.filtered, checksum)
    stream = _ZLIB_HEADER + b"".join(b.segment for b in bands) + _FINAL_EMPTY_BLOCK + struct.pack(">I", checksum)
    height = sum(band.height for band in bands)
    header = struct.pack(">IIBBBBB", bands[0].width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b"")


def encode_png(pixels: np.ndarray) -> bytes:
    """Encode ``[H, W, 3]`` uint8 RGB as one PNG."""
    return assemble_png([encode_band(pixels)])


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
