"""Read radiographs: PNG, JPEG, TIFF (8/16-bit) and DICOM, with a decompression-bomb guard.

Every image is returned as float32 intensities in [0, 1] with bone bright (0 = air). Intensity mapping:

- PNG/JPEG/TIFF: by the sample type's range (uint8 / 255, uint16 / 65535); other sample types (float or
  signed TIFFs) by their min-max.
- DICOM: the modality LUT (RescaleSlope/Intercept) is applied, then the values are min-max normalized
  (robust to files whose BitsStored overstates the range actually used), then MONOCHROME1 is inverted.

Before any pixel is decoded, the dimensions are read from the header (PNG IHDR, JPEG SOF marker, TIFF
first IFD, DICOM Rows/Columns read with ``stop_before_pixels``) and an image with more than ``max_pixels``
pixels is refused, so a decompression bomb never allocates its claimed size. Every failure is an
:class:`~vcorner.io.records.InputError` whose message is one line naming the file.

EXIF orientation (JPEG, PNG, TIFF tag 274) is applied as image viewers apply it, with a warning naming it:
centres are taken to be clicked on the image as displayed. An image whose pixels are all equal (blank, all
black) and a DICOM whose RescaleSlope is 0 or not a number are refused: they hold nothing to find.
"""

from __future__ import annotations

import io
import logging
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from vcorner.io.records import InputError
from vcorner.io.spacing import spacing_problem

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 200_000_000
SUPPORTED_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom")
KIND_BY_SUFFIX = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff",
                   ".dcm": "dicom", ".dicom": "dicom"}
_MAGIC = {"png": (b"\x89PNG\r\n\x1a\n",), "jpeg": (b"\xff\xd8",), "tiff": (b"II*\x00", b"MM\x00*", b"II+\x00",
                                                                          b"MM\x00+")}
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_MAX_SEGMENTS = 10_000


@dataclass(frozen=True)
class XRayImage:
    """A decoded radiograph.

    Attributes:
        pixels: (H, W) float32 in [0, 1]; 0 = dark (air), 1 = bright (bone).
        pixel_spacing_mm: Physical pixel size in mm (DICOM only), or None when unknown.
        bits: Stored bit depth (8, 16, or DICOM BitsStored such as 12).
    """

    pixels: np.ndarray
    pixel_spacing_mm: float | None
    bits: int


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


def _kind(path: Path) -> str:
    """The image kind of ``path`` from its suffix (or DICOM preamble), after checking the file exists."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected an image file")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror})") from None
    return _kind_from(path, size, lambda: _has_dicom_preamble(path))


def _kind_from(name: Path, size: int, has_preamble: Callable[[], bool]) -> str:
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


def check_contrast(pixels: np.ndarray, path: Path) -> None:
    """InputError when every pixel has the same value (blank or all-black image: nothing to find)."""
    low, high, _, _ = cv2.minMaxLoc(pixels) if pixels.size else (0.0, 1.0, None, None)
    if high <= low:
        raise InputError(f"{path}: every pixel has the same value ({low:.3g}): a blank image")


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
        return _header_size(handle, kind, path)


def _header_size(handle: BinaryIO, kind: str, name: Path) -> tuple[int, int]:
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


def _check_size(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise InputError(f"{path}: absurd image dimensions {width} x {height}")
    if width * height > max_pixels:
        raise InputError(f"{path}: image of {width} x {height} = {width * height} pixels exceeds the limit of "
                         f"{max_pixels} (decompression bomb?); refused before decoding")


def _to_gray(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        return array[:, :, 0]
    if array.ndim == 3 and array.shape[2] in (3, 4):
        code = cv2.COLOR_BGR2GRAY if array.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        return cv2.cvtColor(array, code)
    if array.ndim != 2:
        raise InputError(f"{path}: unsupported pixel layout {array.shape}")
    return array


def _unit_range(array: np.ndarray) -> np.ndarray:
    """(H, W) values min-max normalized to float32 [0, 1] (zeros for a constant image)."""
    values = array.astype(np.float32)
    low, high = float(values.min()), float(values.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    values -= low  # in place: the same float32 operations as (values - low) / (high - low), no temporaries
    values /= high - low
    return values


def _scaled(array: np.ndarray, full: float) -> np.ndarray:
    """(H, W) integer samples / ``full`` as float32 (divided in place: no temporary)."""
    values = array.astype(np.float32)
    values /= full
    return values


def _read_raster(encoded: bytes, path: Path, kind: str, max_pixels: int) -> XRayImage:
    """Decode the PNG/JPEG/TIFF bytes of the file ``path`` once its header's size passed ``max_pixels``."""
    width, height = _header_size(io.BytesIO(encoded), kind, path)  # BytesIO shares the bytes, no copy
    _check_size(path, width, height, max_pixels)
    data = np.frombuffer(encoded, dtype=np.uint8)
    if kind == "jpeg" and b"\xff\xd9" not in data[-1024:].tobytes():
        raise InputError(f"{path}: truncated JPEG data (no end-of-image marker)")
    try:
        array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise InputError(f"{path}: cannot decode {kind.upper()} ({str(err).strip().splitlines()[-1]})") from None
    if array is None or array.size == 0:
        raise InputError(f"{path}: corrupt or truncated {kind.upper()} data (decoder failed)")
    array = _to_gray(array, path)
    orientation = exif_orientation(data, kind)
    if orientation != 1:
        logger.warning("%s: EXIF orientation %d applied (the image as viewers display it); centres are read in "
                       "that orientation", path, orientation)
        array = orient(array, orientation)
    if array.dtype == np.uint8:
        return XRayImage(_scaled(array, 255.0), None, 8)
    if array.dtype == np.uint16:
        return XRayImage(_scaled(array, 65535.0), None, 16)
    logger.warning("%s: %s samples, intensities min-max normalized", path, array.dtype)
    return XRayImage(_unit_range(array), None, array.dtype.itemsize * 8)


def _spacing_pair(value: object) -> tuple[float, float] | None:
    """A DICOM (row, column) spacing pair in mm, or None when absent or not two finite positive numbers."""
    try:
        numbers = [float(v) for v in value] if value is not None else []  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    if len(numbers) != 2 or not all(math.isfinite(v) and v > 0 for v in numbers):
        return None
    return numbers[0], numbers[1]


def dicom_spacing_xy(ds: object, path: Path) -> tuple[tuple[float, float] | None, str | None]:
    """Pixel spacing in mm per axis, (x, y) = (column spacing, row spacing), from PixelSpacing, else
    ImagerPixelSpacing; or None and the reason (one line naming the file) when the header has a spacing
    outside :data:`vcorner.io.spacing.SPACING_RANGE_MM` (a unit slip). (None, None) without a spacing."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = getattr(ds, keyword, None)
        pair = _spacing_pair(value)
        if pair is not None:
            problems = [p for p in map(spacing_problem, pair) if p]
            if problems:
                return None, f"{path}: {keyword} {list(pair)} refused: {problems[0]}"
            return (pair[1], pair[0]), None
        if value is not None:
            logger.warning("%s: ignoring invalid %s %r", path, keyword, value)
    return None, None


def dicom_spacing(ds: object, path: Path) -> float | None:
    """The one pixel spacing in mm of a DICOM header (:func:`dicom_spacing_xy`), or None with a warning when
    it is implausible or anisotropic: the corners are then in pixels, and ``vcorner measure`` applies the
    two spacings per axis itself (a mean would make heights up to half again too large)."""
    xy, problem = dicom_spacing_xy(ds, path)
    if problem:
        logger.warning("%s; lengths stay in pixels", problem)
        return None
    if xy is None:
        return None
    if abs(xy[0] - xy[1]) > 1e-6 * max(xy):
        logger.warning("%s: anisotropic pixel spacing %.6g mm (x) by %.6g mm (y): not one spacing, so the corners "
                       "carry none; vcorner measure applies each axis its own", path, xy[0], xy[1])
        return None
    return xy[0]


def _dicom_header(path: Path, max_pixels: int, encoded: bytes | None = None) -> object:
    """The DICOM header (no pixels) of the file ``path``, or of its ``encoded`` bytes when given, after
    checking its size against ``max_pixels``."""
    import pydicom

    source: Path | BinaryIO = path if encoded is None else io.BytesIO(encoded)
    defer = "1 MB" if encoded is None else None  # bytes in memory: nothing to gain by deferring
    try:
        ds = pydicom.dcmread(source, stop_before_pixels=True, defer_size=defer, force=True)
    except Exception as err:  # pydicom raises many types on corrupt files
        raise InputError(f"{path}: not a readable DICOM file ({type(err).__name__}: {err})") from None
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if rows is None or cols is None:
        raise InputError(f"{path}: DICOM file without an image (no Rows/Columns)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    _check_size(path, int(cols), int(rows) * max(frames, 1), max_pixels)
    return ds


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of an image from its header only (EXIF rotations by 90 degrees swap them, as
    :func:`read_image` does); None when the file is missing or unreadable."""
    path = Path(path)
    try:
        kind = _kind(path)
        if kind == "dicom":
            header = _dicom_header(path, DEFAULT_MAX_PIXELS)
            return int(header.Columns), int(header.Rows)
        width, height = raster_size(path, kind)
        with path.open("rb") as handle:
            head = np.frombuffer(handle.read(1 << 16), dtype=np.uint8)
        return (height, width) if exif_orientation(head, kind) in (5, 6, 7, 8) else (width, height)
    except (InputError, OSError, AttributeError, ValueError):
        return None


def dicom_file_spacing(path: Path) -> tuple[tuple[float, float] | None, str | None]:
    """:func:`dicom_spacing_xy` of a DICOM file's header, read without its pixels; (None, None) for any other
    file, a DICOM without spacing, or a file that cannot be read."""
    path = Path(path)
    try:
        if not path.is_file() or _kind(path) != "dicom":
            return None, None
        return dicom_spacing_xy(_dicom_header(path, DEFAULT_MAX_PIXELS), path)
    except (InputError, OSError):
        return None, None


def _has_modality_lut(ds: object) -> bool:
    """Whether the modality LUT changes the stored values (a LUT sequence, or a slope or intercept other than
    1 and 0); without one the stored integers are used as they are, as the LUT would return them."""
    if "ModalityLUTSequence" in ds:  # type: ignore[operator]
        return True
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")  # type: ignore[attr-defined]
    try:
        return float(1 if slope is None else slope) != 1.0 or float(0 if intercept is None else intercept) != 0.0
    except (TypeError, ValueError):
        return True


def _read_dicom(encoded: bytes, path: Path, max_pixels: int) -> XRayImage:
    """Decode the DICOM bytes of the file ``path`` (first frame, modality LUT, MONOCHROME1 inverted)."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    header = _dicom_header(path, max_pixels, encoded)
    slope = header.get("RescaleSlope")
    try:
        usable = slope is None or (math.isfinite(float(slope)) and float(slope) != 0.0)
    except (TypeError, ValueError):
        usable = False
    if not usable:
        raise InputError(f"{path}: RescaleSlope is {slope}: the pixel values would carry no image")
    try:
        ds = pydicom.dcmread(io.BytesIO(encoded), force=True)
        stored = ds.pixel_array
        values = apply_modality_lut(stored, ds) if _has_modality_lut(ds) else stored
    except Exception as err:  # truncated data, unsupported transfer syntax, bad attributes
        message = " ".join(str(err).split())[:400] or type(err).__name__  # every line: plugin names come last
        raise InputError(f"{path}: cannot decode DICOM pixel data ({message})") from None
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        logger.warning("%s: %d frames, using the first", path, int(ds.NumberOfFrames))
        values = values[0]
    if values.ndim == 3:
        values = cv2.cvtColor(values.astype(np.float32), cv2.COLOR_RGB2GRAY)
    pixels = _unit_range(values)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        pixels = 1.0 - pixels
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    return XRayImage(np.ascontiguousarray(pixels, dtype=np.float32), dicom_spacing(header, path), bits)


def read_image(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> XRayImage:
    """Read a radiograph as float32 intensities in [0, 1], bone bright.

    Args:
        path: PNG, JPEG, TIFF or DICOM file (DICOM also without suffix when it has the DICM preamble).
        max_pixels: Largest accepted width x height (x frames); larger images are refused before decoding.

    Returns:
        The image; ``pixel_spacing_mm`` is set for DICOM with PixelSpacing or ImagerPixelSpacing.

    Raises:
        InputError: one line naming the file and the problem (missing, directory, empty, unsupported,
            corrupt or truncated, absurd or too large dimensions).
    """
    path = Path(path)
    return read_image_bytes(read_image_file(path, max_pixels=max_pixels), path, max_pixels=max_pixels)


def read_image_file(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """The bytes of the image file ``path`` once the checks :func:`read_image` makes before decoding pass: the file
    exists, is of a supported kind, and its header's size is within ``max_pixels`` (checked before the file is
    read whole). The Ray batch's read tasks call this, so their refusals are the local batch's, word for word.

    Raises:
        InputError: one line naming the file and the problem.
    """
    path = Path(path)
    kind = _kind(path)
    try:
        if kind == "dicom":
            _dicom_header(path, max_pixels)
        else:
            _check_size(path, *raster_size(path, kind), max_pixels)
        return path.read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None


def read_image_bytes(encoded: bytes, name: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> XRayImage:
    """:func:`read_image` of a file's bytes already in memory (e.g. read by a Ray task): the same checks and the
    same one-line errors, which name the file ``name`` (whose suffix gives the format, as on disk)."""
    name = Path(name)
    kind = _kind_from(name, len(encoded), lambda: encoded[128:132] == b"DICM")
    return _decode(encoded, name, kind, max_pixels)


def _decode(encoded: bytes, path: Path, kind: str, max_pixels: int) -> XRayImage:
    """The checked image of the ``kind`` file ``path`` whose bytes are ``encoded``."""
    try:
        image = _read_dicom(encoded, path, max_pixels) if kind == "dicom" else _read_raster(encoded, path, kind,
                                                                                            max_pixels)
        check_contrast(image.pixels, path)
        return image
    except MemoryError:
        raise InputError(f"{path}: out of memory while decoding") from None
