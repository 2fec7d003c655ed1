"""Decode a PNG with zlib alone (8-bit RGB or RGBA, not interlaced: what Chromium's
screenshots are), to tell a rendered page from a blank one."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def _paeth(left: int, up: int, corner: int) -> int:
    estimate = left + up - corner
    pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
    if pa <= pb and pa <= pc:
        return left
    return up if pb <= pc else corner


def decode(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of pixels as RGB(A) bytes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset, idat = 8, b""
    width = height = channels = 0
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        offset += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                line[i] = (line[i] + _paeth(left, up, corner)) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, rows


def colours(path: Path) -> tuple[int, float]:
    """(distinct colours, share of pixels that are not white) of a PNG."""
    width, height, rows = decode(path)
    channels = len(rows[0]) // width if rows else 3
    seen: set[bytes] = set()
    coloured = 0
    for row in rows:
        for x in range(0, len(row), channels):
            pixel = row[x:x + 3]
            seen.add(pixel)
            coloured += pixel != b"\xff\xff\xff"
    return len(seen), coloured / max(width * height, 1)
