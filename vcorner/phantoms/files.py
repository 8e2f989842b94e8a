"""Write phantom radiographs: PNG, JPEG, TIFF (8/16-bit) and Secondary Capture DICOM, atomically.

The reading side, with its checks, is :mod:`vcorner.io.images`; this writer makes the test and benchmark data
(``vcorner synth``) in every format the reader accepts.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np

from vcorner.io.atomic import write_bytes_atomic
from vcorner.io.formats import KIND_BY_SUFFIX, SUPPORTED_SUFFIXES

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _dicom_bytes(pixels: np.ndarray, spacing: float | None, photometric: str, bits_stored: int,
                 uid_entropy: list[str] | None) -> bytes:
    """A Secondary Capture DICOM file (explicit VR little endian) holding ``pixels`` as stored values."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    def uid(role: str) -> str:
        return generate_uid(entropy_srcs=[*uid_entropy, role] if uid_entropy is not None else None)

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    ds.SOPClassUID, ds.SOPInstanceUID = SECONDARY_CAPTURE, uid("instance")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study"), uid("series")
    ds.PatientName, ds.PatientID, ds.Modality, ds.ConversionType = "PHANTOM^VCORNER", "PHANTOM", "OT", "SYN"
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, 1
    for keyword in ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "ReferringPhysicianName",
                    "AccessionNumber"):
        setattr(ds, keyword, "")  # type 2: present, empty
    ds.ImageType, ds.PatientOrientation = ["DERIVED", "SECONDARY"], ["A", "F"]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    if spacing is not None:
        ds.PixelSpacing = [f"{spacing:.6g}", f"{spacing:.6g}"]
    stored = ((1 << bits_stored) - 1 - pixels.astype(np.int64)) if photometric == "MONOCHROME1" else pixels
    ds.PixelData = np.ascontiguousarray(stored, dtype=pixels.dtype.newbyteorder("<")).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_image(path: Path, pixels: np.ndarray, *, pixel_spacing_mm: float | None = None,
                photometric: str = "MONOCHROME2", bits_stored: int | None = None, jpeg_quality: int = 95,
                uid_entropy: list[str] | None = None) -> None:
    """Write a grayscale image atomically; the format follows the suffix.

    Args:
        path: Destination; ``.png``, ``.jpg``/``.jpeg`` (8-bit only), ``.tif``/``.tiff`` (deflate with
            horizontal predictor) or ``.dcm``/``.dicom`` (uncompressed, explicit VR little endian).
        pixels: (H, W) uint8 or uint16 values, bright = bone.
        pixel_spacing_mm: Stored as DICOM PixelSpacing; other formats do not keep it.
        photometric: DICOM only: ``MONOCHROME2`` stores the values, ``MONOCHROME1`` stores
            ``2**bits_stored - 1 - value`` so that readers invert them back.
        bits_stored: DICOM BitsStored (default: the sample size); values must fit.
        jpeg_quality: JPEG quality, 0-100.
        uid_entropy: DICOM only: strings from which the UIDs are derived (reproducible files);
            None draws random UIDs.

    Raises:
        ValueError: unsupported suffix, dtype, shape, photometric or bit depth.
    """
    path = Path(path)
    kind = KIND_BY_SUFFIX.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: unsupported suffix for writing; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{path}: expected (H, W) uint8 or uint16 pixels, got {pixels.shape} {pixels.dtype}")
    if kind == "dicom":
        bits = bits_stored or pixels.dtype.itemsize * 8
        if photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise ValueError(f"{path}: photometric must be MONOCHROME1 or MONOCHROME2, got {photometric!r}")
        if not 1 <= bits <= pixels.dtype.itemsize * 8 or int(pixels.max(initial=0)) >= 1 << bits:
            raise ValueError(f"{path}: values do not fit in BitsStored={bits}")
        data = _dicom_bytes(pixels, pixel_spacing_mm, photometric, bits, uid_entropy)
    else:
        if kind == "jpeg" and pixels.dtype != np.uint8:
            raise ValueError(f"{path}: JPEG holds 8-bit pixels only, got {pixels.dtype}")
        params = {"jpeg": [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)],
                  "tiff": [cv2.IMWRITE_TIFF_COMPRESSION, cv2.IMWRITE_TIFF_COMPRESSION_ADOBE_DEFLATE,
                           cv2.IMWRITE_TIFF_PREDICTOR, cv2.IMWRITE_TIFF_PREDICTOR_HORIZONTAL]}.get(kind, [])
        ok, encoded = cv2.imencode(path.suffix.lower(), np.ascontiguousarray(pixels), params)
        if not ok:
            raise ValueError(f"{path}: OpenCV could not encode the image")
        data = encoded.tobytes()
    write_bytes_atomic(path, data)
