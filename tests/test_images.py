"""Image reading and writing: round trips per format, DICOM semantics, bad input, decompression bombs."""

from __future__ import annotations

import logging
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from vcorner.io.images import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_SUFFIXES,
    is_image_path,
    raster_size,
    read_image,
    read_image_bytes,
)
from vcorner.io.records import InputError
from vcorner.phantoms.files import write_image

RNG = np.random.default_rng(7)
IMG8 = RNG.integers(0, 256, (37, 53), dtype=np.uint8)
IMG16 = RNG.integers(0, 65536, (37, 53), dtype=np.uint16)
IMG12 = RNG.integers(0, 4096, (37, 53), dtype=np.uint16)


def _unit(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    return (values - values.min()) / (values.max() - values.min())


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff"])
@pytest.mark.parametrize("pixels", [IMG8, IMG16], ids=["8bit", "16bit"])
def test_lossless_round_trip(tmp_path: Path, suffix: str, pixels: np.ndarray) -> None:
    path = tmp_path / f"img{suffix}"
    write_image(path, pixels)
    image = read_image(path)
    scale = 255.0 if pixels.dtype == np.uint8 else 65535.0
    assert image.pixels.dtype == np.float32 and image.pixels.shape == pixels.shape
    assert image.bits == pixels.dtype.itemsize * 8 and image.pixel_spacing_mm is None
    np.testing.assert_allclose(image.pixels, pixels / scale, atol=1e-6)


def test_jpeg_round_trip_within_tolerance(tmp_path: Path) -> None:
    smooth = cv2.GaussianBlur(IMG8, (0, 0), 3)
    write_image(tmp_path / "a.jpg", smooth, jpeg_quality=95)
    image = read_image(tmp_path / "a.jpg")
    assert image.bits == 8
    assert np.abs(image.pixels - smooth / 255.0).mean() < 0.01


def test_jpeg_refuses_16_bit(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="8-bit"):
        write_image(tmp_path / "a.jpg", IMG16)


def test_colour_png_is_converted_to_gray(tmp_path: Path) -> None:
    colour = np.dstack([IMG8, IMG8, IMG8])
    ok, data = cv2.imencode(".png", colour)
    (tmp_path / "c.png").write_bytes(data.tobytes())
    np.testing.assert_allclose(read_image(tmp_path / "c.png").pixels, IMG8 / 255.0, atol=1 / 255)


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_dicom_round_trip(tmp_path: Path, photometric: str) -> None:
    path = tmp_path / "a.dcm"
    write_image(path, IMG12, pixel_spacing_mm=0.143, photometric=photometric, bits_stored=12)
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == photometric and ds.BitsAllocated == 16 and ds.BitsStored == 12
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    stored = ds.pixel_array
    expected_stored = 4095 - IMG12 if photometric == "MONOCHROME1" else IMG12
    np.testing.assert_array_equal(stored, expected_stored)
    image = read_image(path)
    assert image.bits == 12 and image.pixel_spacing_mm == pytest.approx(0.143)
    np.testing.assert_allclose(image.pixels, _unit(IMG12), atol=1e-6)


def test_dicom_uids_reproducible_from_entropy(tmp_path: Path) -> None:
    for name in ("a.dcm", "b.dcm"):
        write_image(tmp_path / name, IMG8, uid_entropy=["seed", "1"])
    assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "b.dcm").read_bytes()


def _edit_dicom(path: Path, **changes: object) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path)


def test_dicom_imager_pixel_spacing_fallback_and_anisotropy(tmp_path: Path, caplog) -> None:
    path = tmp_path / "a.dcm"
    write_image(path, IMG8, pixel_spacing_mm=0.1)
    _edit_dicom(path, PixelSpacing=None, ImagerPixelSpacing=["0.2", "0.1"])
    with caplog.at_level(logging.WARNING):
        image = read_image(path)
    assert image.pixel_spacing_mm is None  # no mean of 0.2 and 0.1: vcorner measure applies each axis its own
    assert "anisotropic" in caplog.text


def test_dicom_rescale_slope_intercept_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "a.dcm"
    write_image(path, IMG12, bits_stored=12)
    _edit_dicom(path, RescaleSlope="-2", RescaleIntercept="100")  # a negative slope inverts the image
    np.testing.assert_allclose(read_image(path).pixels, 1.0 - _unit(IMG12), atol=1e-6)


def test_an_identity_modality_lut_reads_the_stored_values_as_the_lut_would(tmp_path: Path) -> None:
    """Slope 1 and intercept 0 (or none) skip the LUT: the same pixels as a LUT that only scales them."""
    for name, changes in {"none.dcm": {}, "identity.dcm": {"RescaleSlope": "1", "RescaleIntercept": "0"},
                          "scaled.dcm": {"RescaleSlope": "3", "RescaleIntercept": "0"}}.items():
        write_image(tmp_path / name, IMG12, bits_stored=12)
        _edit_dicom(tmp_path / name, **changes)
    assert np.array_equal(read_image(tmp_path / "none.dcm").pixels, read_image(tmp_path / "identity.dcm").pixels)
    np.testing.assert_allclose(read_image(tmp_path / "identity.dcm").pixels, _unit(IMG12), atol=1e-7)
    np.testing.assert_allclose(read_image(tmp_path / "scaled.dcm").pixels, _unit(IMG12), atol=1e-6)


def test_dicom_without_suffix_is_recognized(tmp_path: Path) -> None:
    path = tmp_path / "1.2.840.5"
    write_image(tmp_path / "a.dcm", IMG8)
    (tmp_path / "a.dcm").rename(path)
    assert is_image_path(path)
    assert read_image(path).pixels.shape == IMG8.shape


def test_supported_suffixes() -> None:
    assert ".png" in SUPPORTED_SUFFIXES and ".dcm" in SUPPORTED_SUFFIXES
    assert is_image_path(Path("x/Y.TIFF")) and not is_image_path(Path("x/notes.txt"))


def _truncate(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    out = path.with_name("cut_" + path.name)
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


def _bad_inputs(tmp_path: Path) -> dict[str, Path]:
    """One file per failure mode, each with a distinct name."""
    cases: dict[str, Path] = {"missing": tmp_path / "missing.png", "directory": tmp_path / "folder.png"}
    cases["directory"].mkdir()
    cases["empty"] = tmp_path / "empty.png"
    cases["empty"].write_bytes(b"")
    cases["unsupported"] = tmp_path / "scan.bmp"
    cases["unsupported"].write_bytes(b"BM" + bytes(64))
    cases["not_png"] = tmp_path / "text.png"
    cases["not_png"].write_text("not an image at all")
    cases["not_dicom"] = tmp_path / "text.dcm"
    cases["not_dicom"].write_text("not a dicom file")
    smooth = cv2.GaussianBlur(RNG.integers(0, 256, (200, 300), dtype=np.uint8), (0, 0), 2)
    for suffix in (".png", ".jpg", ".tif", ".dcm"):
        write_image(tmp_path / f"whole{suffix}", smooth)
        cases[f"truncated{suffix}"] = _truncate(tmp_path / f"whole{suffix}", 0.5)
    return cases


def test_bad_inputs_raise_one_line_input_error_naming_the_file(tmp_path: Path) -> None:
    for case, path in _bad_inputs(tmp_path).items():
        with pytest.raises(InputError) as info:
            read_image(path)
        message = str(info.value)
        assert path.name in message and "\n" not in message, (case, message)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bombs(tmp_path: Path) -> dict[str, Path]:
    """Files of a few bytes whose headers claim enormous images."""
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0))
    png += _png_chunk(b"IDAT", zlib.compress(bytes(10_000))) + _png_chunk(b"IEND", b"")
    jpeg = b"\xff\xd8\xff\xe0\x00\x04ab\xff\xc0\x00\x0b\x08\xff\xff\xff\xff\x01\x01\x11\x00\xff\xd9"
    tiff = b"II*\x00\x08\x00\x00\x00\x02\x00" + struct.pack("<HHII", 256, 4, 1, 90_000)
    tiff += struct.pack("<HHII", 257, 4, 1, 90_000) + bytes(4)
    files = {"bomb.png": png, "bomb.jpg": jpeg, "bomb.tif": tiff}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    write_image(tmp_path / "bomb.dcm", IMG8)
    _edit_dicom(tmp_path / "bomb.dcm", Rows=60_000, Columns=60_000, NumberOfFrames="10")
    return {name: tmp_path / name for name in [*files, "bomb.dcm"]}


def test_decompression_bombs_refused_fast_from_the_header(tmp_path: Path) -> None:
    for name, path in _bombs(tmp_path).items():
        start = time.perf_counter()
        with pytest.raises(InputError, match="exceeds the limit") as info:
            read_image(path)
        assert time.perf_counter() - start < 0.5, name
        assert path.name in str(info.value)


def _error_of(read) -> str:
    with pytest.raises(InputError) as info:
        read()
    return str(info.value)


def test_bytes_are_read_as_the_file_is(tmp_path: Path) -> None:
    """The Ray actors decode the bytes a read task brought: the same pixels, spacing and one-line errors."""
    smooth = cv2.GaussianBlur(IMG16, (0, 0), 2)
    for suffix in (".png", ".tif", ".dcm"):
        write_image(tmp_path / f"good{suffix}", smooth, pixel_spacing_mm=0.2 if suffix == ".dcm" else None)
    write_image(tmp_path / "good.jpg", (smooth >> 8).astype(np.uint8))
    (tmp_path / "good_dicom_no_suffix").write_bytes((tmp_path / "good.dcm").read_bytes())
    for path in sorted(tmp_path.glob("good*")):
        on_disk, in_memory = read_image(path), read_image_bytes(path.read_bytes(), path)
        assert (in_memory.bits, in_memory.pixel_spacing_mm) == (on_disk.bits, on_disk.pixel_spacing_mm), path.name
        np.testing.assert_array_equal(in_memory.pixels, on_disk.pixels)
    cases = {k: v for k, v in _bad_inputs(tmp_path).items() if v.is_file()} | _bombs(tmp_path)
    assert len(cases) == 12
    for case, path in cases.items():
        message = _error_of(lambda: read_image_bytes(path.read_bytes(), path))  # noqa: B023
        assert message == _error_of(lambda: read_image(path)), case  # noqa: B023


def test_header_sizes_and_configurable_limit(tmp_path: Path) -> None:
    assert raster_size(_bombs(tmp_path)["bomb.jpg"], "jpeg") == (65535, 65535)
    write_image(tmp_path / "a.png", IMG8)
    assert raster_size(tmp_path / "a.png", "png") == (53, 37)
    with pytest.raises(InputError, match="exceeds"):
        read_image(tmp_path / "a.png", max_pixels=100)
    assert read_image(tmp_path / "a.png", max_pixels=DEFAULT_MAX_PIXELS).pixels.shape == (37, 53)


def test_absurd_dicom_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "zero.dcm"
    write_image(path, IMG8)
    _edit_dicom(path, Rows=0)
    with pytest.raises(InputError, match="zero.dcm.*absurd"):
        read_image(path)
