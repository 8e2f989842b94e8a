"""EXIF orientation (JPEG, PNG, TIFF tag 274), applied as image viewers apply it: centres are taken to be
clicked on the image as displayed.
"""

from __future__ import annotations

import struct

import numpy as np


def _ifd0_orientation(buffer: memoryview, start: int = 0) -> int:
    """EXIF/TIFF Orientation (tag 274) of the first IFD of the classic-TIFF structure at ``buffer[start:]``;
    1 when absent or unreadable. Reads in place (no copy of the file)."""
    head = bytes(buffer[start:start + 2])
    if head not in (b"II", b"MM"):
        return 1
    order = "<" if head == b"II" else ">"
    try:
        (offset,) = struct.unpack_from(order + "I", buffer, start + 4)
        (count,) = struct.unpack_from(order + "H", buffer, start + offset)
        for i in range(min(count, 4096)):
            entry = start + offset + 2 + 12 * i
            tag, kind = struct.unpack_from(order + "HH", buffer, entry)
            if tag == 274 and kind == 3:
                (value,) = struct.unpack_from(order + "H", buffer, entry + 8)
                return value if 1 <= value <= 8 else 1
    except struct.error:
        return 1
    return 1


def exif_orientation(data: np.ndarray, kind: str) -> int:
    """EXIF orientation 1-8 of an encoded JPEG, PNG or TIFF held in a (N,) uint8 array (1: as stored)."""
    buffer = memoryview(data)
    if kind == "tiff":
        return _ifd0_orientation(buffer)
    marker = {"jpeg": b"Exif\x00\x00", "png": b"eXIf"}.get(kind)
    at = data[: 1 << 16].tobytes().find(marker) if marker else -1  # JPEG's APP1 and PNG's eXIf come early
    return _ifd0_orientation(buffer, at + len(marker)) if at >= 0 else 1


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W) pixels as stored -> as displayed under EXIF ``orientation`` (1-8)."""
    turned = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
              5: lambda a: a.T, 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].T,
              8: lambda a: np.rot90(a, 1)}.get(orientation)
    return np.ascontiguousarray(turned(array)) if turned else array
