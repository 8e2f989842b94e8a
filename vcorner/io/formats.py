"""What kind of image a file is and how large, from its name and header alone: format sniffing (suffix, magic
bytes, the DICOM ``DICM`` preamble) and the decompression-bomb guard (PNG IHDR, JPEG SOF marker, TIFF first IFD
read before any pixel is decoded; an image of more than ``max_pixels`` pixels is refused). Every failure is an
:class:`~vcorner.io.records.InputError` whose message is one line naming the file.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from vcorner.io.records import InputError

DEFAULT_MAX_PIXELS = 200_000_000


SUPPORTED_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom")


KIND_BY_SUFFIX = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff",
                   ".dcm": "dicom", ".dicom": "dicom"}


_MAGIC = {"png": (b"\x89PNG\r\n\x1a\n",), "jpeg": (b"\xff\xd8",), "tiff": (b"II*\x00", b"MM\x00*", b"II+\x00",
                                                                          b"MM\x00+")}


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


_MAX_SEGMENTS = 10_000


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def is_image_path(path: Path) -> bool:
    """True for a supported image suffix, or a file of any other suffix with the DICOM ``DICM`` preamble."""
    path = Path(path)
    if path.suffix.lower() in SUPPORTED_SUFFIXES:
        return True
    return path.is_file() and _has_dicom_preamble(path)


def file_kind(path: Path) -> str:
    """The image kind of ``path`` from its suffix (or DICOM preamble), after checking the file exists."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected an image file")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror})") from None
    return kind_from(path, size, lambda: _has_dicom_preamble(path))


def kind_from(name: Path, size: int, has_preamble: Callable[[], bool]) -> str:
    """The image kind of a file ``name`` of ``size`` bytes from its suffix, else its DICOM preamble."""
    if size == 0:
        raise InputError(f"{name}: empty file (0 bytes)")
    kind = KIND_BY_SUFFIX.get(name.suffix.lower())
    if kind is None and has_preamble():
        kind = "dicom"
    if kind is None:
        raise InputError(f"{name}: unsupported file type {name.suffix or '(no suffix)'!r}; "
                         f"supported: {', '.join(SUPPORTED_SUFFIXES)} or DICOM without suffix")
    return kind


def _unpack(fmt: str, data: bytes) -> tuple[int, ...]:
    if len(data) < struct.calcsize(fmt):
        raise ValueError("truncated header")
    return struct.unpack(fmt, data[: struct.calcsize(fmt)])


def _png_size(handle: BinaryIO) -> tuple[int, int]:
    head = handle.read(24)
    if head[12:16] != b"IHDR":
        raise ValueError("no IHDR chunk")
    return _unpack(">II", head[16:24])  # type: ignore[return-value]


def _jpeg_size(handle: BinaryIO) -> tuple[int, int]:
    """Walk the JPEG markers up to the first start-of-frame; reads a few bytes per segment."""
    handle.read(2)
    for _ in range(_MAX_SEGMENTS):
        byte = handle.read(1)
        if byte != b"\xff":
            raise ValueError("bad marker" if byte else "truncated header")
        marker = handle.read(1)
        while marker == b"\xff":  # fill bytes
            marker = handle.read(1)
        if not marker:
            raise ValueError("truncated header")
        code = marker[0]
        if code in (0x01, 0xD8) or 0xD0 <= code <= 0xD7:
            continue
        if code in (0xD9, 0xDA):
            raise ValueError("no frame header before the image data")
        (length,) = _unpack(">H", handle.read(2))
        if code in _JPEG_SOF:
            height, width = _unpack(">xHH", handle.read(5))
            return width, height
        handle.seek(length - 2, io.SEEK_CUR)
    raise ValueError("no frame header")


def _tiff_size(handle: BinaryIO) -> tuple[int, int]:
    """Width and height from the first IFD of a classic or Big TIFF."""
    head = handle.read(16)
    order = "<" if head[:2] == b"II" else ">"
    (magic,) = _unpack(order + "H", head[2:4])
    big = magic == 43
    (offset,) = _unpack(order + ("Q" if big else "I"), head[8:16] if big else head[4:8])
    handle.seek(offset)
    (count,) = _unpack(order + ("Q" if big else "H"), handle.read(8 if big else 2))
    entry = 20 if big else 12
    data = handle.read(min(count, 4096) * entry)
    sizes: dict[int, int] = {}
    for i in range(len(data) // entry):
        tag, kind = _unpack(order + "HH", data[i * entry : i * entry + 4])
        value = data[i * entry + (12 if big else 8) : (i + 1) * entry]
        code = {3: "H", 4: "I", 16: "Q"}.get(kind)
        if tag in (256, 257) and code:
            sizes[tag] = _unpack(order + code, value)[0]
    if 256 not in sizes or 257 not in sizes:
        raise ValueError("no ImageWidth/ImageLength in the first IFD")
    return sizes[256], sizes[257]


def raster_size(path: Path, kind: str) -> tuple[int, int]:
    """(width, height) of a PNG/JPEG/TIFF read from its header only (bounded memory and time).

    Raises:
        InputError: the header is missing, truncated or of another format.
    """
    try:
        handle = path.open("rb")
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    with handle:
        return header_size(handle, kind, path)


def header_size(handle: BinaryIO, kind: str, name: Path) -> tuple[int, int]:
    """(width, height) from the header of the PNG/JPEG/TIFF open in ``handle`` (at its start)."""
    parsers = {"png": _png_size, "jpeg": _jpeg_size, "tiff": _tiff_size}
    try:
        magic = handle.read(8)
        if not magic.startswith(_MAGIC[kind]):
            raise ValueError(f"not a {kind.upper()} file (unrecognized signature)")
        handle.seek(0)
        return parsers[kind](handle)
    except (ValueError, struct.error, OSError) as err:
        raise InputError(f"{name}: corrupt {kind.upper()} header ({err})") from None


def check_size(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise InputError(f"{path}: absurd image dimensions {width} x {height}")
    if width * height > max_pixels:
        raise InputError(f"{path}: image of {width} x {height} = {width * height} pixels exceeds the limit of "
                         f"{max_pixels} (decompression bomb?); refused before decoding")
