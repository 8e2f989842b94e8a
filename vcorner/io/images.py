"""Read radiographs: PNG, JPEG, TIFF (8/16-bit) and DICOM, with a decompression-bomb guard.

The concerns live apart: format sniffing and the size guard in :mod:`vcorner.io.formats`, EXIF orientation in
:mod:`vcorner.io.exif`, DICOM headers and spacing in :mod:`vcorner.io.dicom`, intensity mapping in
:mod:`vcorner.io.intensity`; this module decodes and puts them together.

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
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vcorner.io.dicom import dicom_header, dicom_spacing, has_modality_lut
from vcorner.io.exif import exif_orientation, orient
from vcorner.io.formats import (
    DEFAULT_MAX_PIXELS,
    KIND_BY_SUFFIX,
    SUPPORTED_SUFFIXES,
    check_size,
    file_kind,
    header_size,
    is_image_path,
    kind_from,
    raster_size,
)
from vcorner.io.intensity import check_contrast, scaled, to_gray, unit_range
from vcorner.io.records import InputError

__all__ = ["DEFAULT_MAX_PIXELS", "KIND_BY_SUFFIX", "SUPPORTED_SUFFIXES", "XRayImage", "image_size",
           "is_image_path", "read_image", "read_image_bytes", "read_image_file"]

logger = logging.getLogger(__name__)


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


def _read_raster(encoded: bytes, path: Path, kind: str, max_pixels: int) -> XRayImage:
    """Decode the PNG/JPEG/TIFF bytes of the file ``path`` once its header's size passed ``max_pixels``."""
    width, height = header_size(io.BytesIO(encoded), kind, path)  # BytesIO shares the bytes, no copy
    check_size(path, width, height, max_pixels)
    data = np.frombuffer(encoded, dtype=np.uint8)
    if kind == "jpeg" and b"\xff\xd9" not in data[-1024:].tobytes():
        raise InputError(f"{path}: truncated JPEG data (no end-of-image marker)")
    try:
        array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise InputError(f"{path}: cannot decode {kind.upper()} ({str(err).strip().splitlines()[-1]})") from None
    if array is None or array.size == 0:
        raise InputError(f"{path}: corrupt or truncated {kind.upper()} data (decoder failed)")
    array = to_gray(array, path)
    orientation = exif_orientation(data, kind)
    if orientation != 1:
        logger.warning("%s: EXIF orientation %d applied (the image as viewers display it); centres are read in "
                       "that orientation", path, orientation)
        array = orient(array, orientation)
    if array.dtype == np.uint8:
        return XRayImage(scaled(array, 255.0), None, 8)
    if array.dtype == np.uint16:
        return XRayImage(scaled(array, 65535.0), None, 16)
    logger.warning("%s: %s samples, intensities min-max normalized", path, array.dtype)
    return XRayImage(unit_range(array), None, array.dtype.itemsize * 8)


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of an image from its header only (EXIF rotations by 90 degrees swap them, as
    :func:`read_image` does); None when the file is missing or unreadable."""
    path = Path(path)
    try:
        kind = file_kind(path)
        if kind == "dicom":
            header = dicom_header(path, DEFAULT_MAX_PIXELS)
            return int(header.Columns), int(header.Rows)
        width, height = raster_size(path, kind)
        with path.open("rb") as handle:
            head = np.frombuffer(handle.read(1 << 16), dtype=np.uint8)
        return (height, width) if exif_orientation(head, kind) in (5, 6, 7, 8) else (width, height)
    except (InputError, OSError, AttributeError, ValueError):
        return None


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
    kind = file_kind(path)
    try:
        if kind == "dicom":
            dicom_header(path, max_pixels)
        else:
            check_size(path, *raster_size(path, kind), max_pixels)
        return path.read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None


def read_image_bytes(encoded: bytes, name: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> XRayImage:
    """:func:`read_image` of a file's bytes already in memory (e.g. read by a Ray task): the same checks and the
    same one-line errors, which name the file ``name`` (whose suffix gives the format, as on disk)."""
    name = Path(name)
    kind = kind_from(name, len(encoded), lambda: encoded[128:132] == b"DICM")
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


def _read_dicom(encoded: bytes, path: Path, max_pixels: int) -> XRayImage:
    """Decode the DICOM bytes of the file ``path`` (first frame, modality LUT, MONOCHROME1 inverted)."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    header = dicom_header(path, max_pixels, encoded)
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
        values = apply_modality_lut(stored, ds) if has_modality_lut(ds) else stored
    except Exception as err:  # truncated data, unsupported transfer syntax, bad attributes
        message = " ".join(str(err).split())[:400] or type(err).__name__  # every line: plugin names come last
        raise InputError(f"{path}: cannot decode DICOM pixel data ({message})") from None
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        logger.warning("%s: %d frames, using the first", path, int(ds.NumberOfFrames))
        values = values[0]
    if values.ndim == 3:
        values = cv2.cvtColor(values.astype(np.float32), cv2.COLOR_RGB2GRAY)
    pixels = unit_range(values)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        pixels = 1.0 - pixels
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    return XRayImage(np.ascontiguousarray(pixels, dtype=np.float32), dicom_spacing(header, path), bits)
