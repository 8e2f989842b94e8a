"""Issue #28 cases 9-11: units never mixed, measurements by anatomy whatever the row order, spacing checked.

Each case is reproduced as a user meets it, through the CLI, and the honest outcome asserted.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from vcorner import CORNER_NAMES
from vcorner.cli import app
from vcorner.io.annotations import read_annotations, write_annotations
from vcorner.io.spacing import SPACING_RANGE_MM, common_unit
from vcorner.measure import definitions as d
from vcorner.phantoms.files import write_image

from .conftest import make_spine

HEADER = ["image", "vertebra", "corner", "x", "y", "confidence", "sd_major_px", "sd_minor_px", "angle_deg", "source"]


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def corner_rows(image: str, names, corners, sd: float = 0.8) -> list[list]:
    """corners.csv rows of one image: ``corners`` (V, 4, 2) in CORNER_NAMES order."""
    return [[image, name, corner, f"{xy[k, 0]:.3f}", f"{xy[k, 1]:.3f}", "0.9", sd, sd, "0", "network"]
            for name, xy in zip(names, corners, strict=True) for k, corner in enumerate(CORNER_NAMES)]


def write_corners(path: Path, rows: list[list]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


def one_line_error(result, *parts: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for part in parts:
        assert part in lines[0], lines[0]


# --- case 9: evaluate, tune and calibrate in one unit ---------------------------------------------------------------

def write_predictions(path: Path, records, shift=(3.0, 4.0)) -> None:
    write_corners(path, [[r.file, v.name, c, v.corners[k, 0] + shift[0], v.corners[k, 1] + shift[1], 0.9, 1.0, 1.0,
                          0.0, "network"] for r in records for v in r.vertebrae for k, c in enumerate(CORNER_NAMES)])


@pytest.fixture
def half_spaced(toy_dataset, tmp_path):
    """The toy annotations with a pixel spacing on only 2 of the 4 images."""
    from dataclasses import replace

    records = read_annotations(toy_dataset / "annotations.json")
    records = [r if i < 2 else replace(r, pixel_spacing_mm=None) for i, r in enumerate(records)]
    write_annotations(tmp_path / "annotations.json", records)
    return tmp_path / "annotations.json", records


def test_evaluate_with_spacing_on_some_images_reports_px_for_all(half_spaced, tmp_path):
    annotations, records = half_spaced
    write_predictions(tmp_path / "p.csv", records)  # every corner 5 px off: 0.75 mm where spaced at 0.15 mm
    result = invoke("evaluate", tmp_path / "p.csv", annotations, "--out", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    assert "2 of 4 images have no pixel spacing: errors in px for all" in result.output
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    # before: the mean of 0.75 (mm) and 5 (px) corners, 2.875, labelled px
    assert report["overall"]["unit"] == "px" and report["overall"]["p2p_mean"] == pytest.approx(5.0)
    assert report["unit_note"] == "2 of 4 images have no pixel spacing: errors in px for all"
    assert {m["unit"] for m in report["measurements"]["per_measure"].values()} <= {"px", "%", "ratio", "grade", "deg"}


def test_evaluate_in_mm_when_every_image_has_a_spacing(toy_dataset, tmp_path):
    records = read_annotations(toy_dataset / "annotations.json")
    write_predictions(tmp_path / "p.csv", records)
    result = invoke("evaluate", tmp_path / "p.csv", toy_dataset / "annotations.json", "--out", tmp_path / "eval")
    assert result.exit_code == 0 and "no pixel spacing" not in result.output, result.output
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["overall"]["unit"] == "mm" and report["overall"]["p2p_mean"] == pytest.approx(0.75)
    assert report["unit_note"] is None


def test_one_function_decides_the_unit_of_a_set_of_images(toy_dataset):
    from dataclasses import replace

    records = read_annotations(toy_dataset / "annotations.json")
    assert common_unit(records) == ("mm", None)
    mixed = [replace(records[0], pixel_spacing_mm=None), *records[1:]]
    assert common_unit(mixed) == ("px", "1 of 4 images have no pixel spacing: errors in px for all")


def test_tuning_on_a_mixed_set_scores_every_candidate_in_px(half_spaced, toy_dataset, tiny_onnx, caplog):
    from dataclasses import replace

    from vcorner.cli.common import open_model
    from vcorner.evaluation.tune import infer_records, tune_decode

    _, mixed = half_spaced
    bare = [replace(r, pixel_spacing_mm=None) for r in mixed]
    runner, resolved = open_model(tiny_onnx)
    grid = {"prior_inflation": (1.0, 4.0), "min_peak": (0.05,)}
    with runner:
        results = [tune_decode(infer_records(toy_dataset, records, runner, resolved.card), resolved.card, grid)
                   for records in (mixed, bare)]
    assert results[0].unit == "px" and "2 of 4 images have no pixel spacing" in results[0].unit_note
    assert "2 of 4 images have no pixel spacing: errors in px for all" in caplog.text
    # the same scores as with no spacing at all: no candidate is chosen on a mix of mm and px
    assert [c["p2p_mean"] for c in results[0].candidates] == pytest.approx([c["p2p_mean"]
                                                                            for c in results[1].candidates])


# --- case 10: measure orders vertebrae by anatomy -------------------------------------------------------------------

def spine_rows(image: str, names, seed: int = 0) -> list[list]:
    record = make_spine(n=len(names), angle_deg=8.0, size=60.0)
    rng = np.random.default_rng(seed)
    corners = np.array([v.corners for v in record.vertebrae]) + rng.normal(0, 2.0, (len(names), 4, 2))
    return corner_rows(image, names, corners)


def measure_text(tmp_path: Path, name: str, rows: list[list], *extra: str) -> str:
    corners = write_corners(tmp_path / f"{name}.csv", rows)
    result = invoke("measure", corners, "--out", tmp_path / name, "--spacing", "0.15", *extra)
    assert result.exit_code == 0, result.output
    return (tmp_path / name / "measurements.csv").read_text()


def test_measure_gives_the_same_file_whatever_the_row_order(tmp_path):
    names = ["C3", "C4", "C5", "C6", "C7"]
    cranial = spine_rows("a.png", names) + spine_rows("b.png", names, seed=1)
    reference = measure_text(tmp_path, "cranial", cranial)
    by_vertebra = [cranial[i:i + 4] for i in range(0, len(cranial), 4)]
    caudal = [row for image in (by_vertebra[:5], by_vertebra[5:]) for v in image[::-1] for row in v]
    shuffled = []
    for image in (cranial[:20], cranial[20:]):
        image = list(image)
        random.Random(3).shuffle(image)
        shuffled += image
    assert measure_text(tmp_path, "caudal", caudal) == reference
    assert measure_text(tmp_path, "shuffled", shuffled) == reference
    levels = {r["level"] for r in csv.DictReader(reference.splitlines()) if r["measure"] == "listhesis"}
    assert levels == {"C3-C4", "C4-C5", "C5-C6", "C6-C7"}  # before, caudal first: C7-C6 ... with other values
    assert "C3-C7" in reference and "C7-C3" not in reference


def test_thoracic_names_sorted_as_text_pair_by_anatomy(tmp_path):
    names = ["T8", "T9", "T10", "T11", "T12"]
    rows = spine_rows("t.png", names)
    as_text = sorted(rows, key=lambda r: (r[1], CORNER_NAMES.index(r[2])))  # T10, T11, T12, T8, T9
    assert [r[1] for r in as_text[::4]] == ["T10", "T11", "T12", "T8", "T9"]
    text = measure_text(tmp_path, "text", as_text)
    assert text == measure_text(tmp_path, "anatomy", rows)
    pairs = {r["level"] for r in csv.DictReader(text.splitlines()) if r["measure"] == "segmental_angle"}
    assert pairs == {"T8-T9", "T9-T10", "T10-T11", "T11-T12"}  # before: T12-T8 among them
    assert {r["level"] for r in csv.DictReader(text.splitlines()) if r["measure"] == "global_angle"} == {"T8-T12"}


def test_measure_uses_the_ordering_of_the_centre_checks():
    import vcorner.measure.table as table
    from vcorner.geometry.sequence import cranial_order

    assert table.cranial_order is cranial_order  # one ordering, not a second one


# --- case 11: spacing per axis, in a plausible range, refused in one line -------------------------------------------

ROW_MM, COLUMN_MM = 0.149, 0.298  # DICOM PixelSpacing 0.149\0.298: rows 0.149 mm apart (y), columns 0.298 mm (x)


def mm_spine() -> tuple[list[str], np.ndarray]:
    """Five cervical bodies in mm (16 mm deep, 14-15 mm tall, lordotic, the second one wedged)."""
    names, bodies = ["C3", "C4", "C5", "C6", "C7"], []
    for i in range(5):
        angle = np.radians(-12.0 + 5.0 * i)
        down, right = np.array([np.sin(angle), np.cos(angle)]), np.array([np.cos(angle), -np.sin(angle)])
        top = np.array([30.0, 10.0]) + i * 19.0 * down
        front = 11.0 if i == 1 else 14.0 + 0.2 * i
        bodies.append([top, top + 16.0 * right, top + 14.5 * down, top + 16.0 * right + front * down])
    return names, np.array(bodies)


def anisotropic_dicom(root: Path, spacing=(f"{ROW_MM}", f"{COLUMN_MM}")) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_image(root / "aniso.dcm", (np.arange(600 * 300) % 997).astype(np.uint16).reshape(600, 300),
                pixel_spacing_mm=0.2)
    ds = pydicom.dcmread(root / "aniso.dcm")
    ds.PixelSpacing = list(spacing)
    ds.save_as(root / "aniso.dcm")
    return root / "aniso.dcm"


def rows_of(path: Path) -> dict[tuple[str, str], dict]:
    return {(r["measure"], r["level"]): r for r in csv.DictReader(open(path, encoding="utf-8"))}


def test_anisotropic_dicom_spacing_is_applied_per_axis(tmp_path):
    names, mm = mm_spine()
    px = mm / np.array([COLUMN_MM, ROW_MM])  # x from the column spacing, y from the row spacing
    anisotropic_dicom(tmp_path / "images")
    corners = write_corners(tmp_path / "corners.csv", corner_rows("aniso.dcm", names, px, sd=0.5))
    result = invoke("measure", corners, "--out", tmp_path / "m", "--images", tmp_path / "images")
    assert result.exit_code == 0, result.output
    rows = rows_of(tmp_path / "m" / "measurements.csv")
    truth = d.heights(mm)
    for v, name in enumerate(names):
        for key in ("anterior_height", "posterior_height", "middle_height"):
            row = rows[(key, name)]
            assert row["unit"] == "mm"
            assert float(row["value"]) == pytest.approx(truth[key][v], abs=2e-3)  # before: 41-49% too large
            assert float(row["ci95_low"]) <= truth[key][v] <= float(row["ci95_high"])  # before: every one missed
    angles = d.segmental_angle(mm)
    for i in range(4):
        assert float(rows[("segmental_angle", f"{names[i]}-{names[i + 1]}")]["value"]) == pytest.approx(angles[i],
                                                                                                        abs=1e-3)


def test_anisotropic_dicom_in_the_batch_carries_no_mean_spacing(tmp_path, caplog):
    from vcorner.io.images import read_image

    path = anisotropic_dicom(tmp_path)
    image = read_image(path)
    assert image.pixel_spacing_mm is None and "anisotropic" in caplog.text  # overlays in px, not a mean's mm


def test_a_dicom_spacing_off_by_a_unit_is_flagged_in_measurements_csv(tmp_path):
    names, mm = mm_spine()
    anisotropic_dicom(tmp_path / "images", spacing=("14.9", "14.9"))
    corners = write_corners(tmp_path / "corners.csv", corner_rows("aniso.dcm", names, mm / 0.149))
    result = invoke("measure", corners, "--out", tmp_path / "m", "--images", tmp_path / "images")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(tmp_path / "m" / "measurements.csv", encoding="utf-8")))
    lengths = [r for r in rows if r["measure"].endswith("height") or r["measure"] == "listhesis"]
    assert lengths and all(r["unit"] == "px" and "spacing_refused" in r["flags"] for r in lengths)
    assert max(float(r["value"]) for r in lengths) < 200  # px; before: 1,449 "mm" tall C3
    assert not any("spacing_refused" in r["flags"] for r in rows if r["unit"] not in ("px",))


@pytest.mark.parametrize("value", ["inf", "nan", "-0.1", "0", "14.9", "0.001"])
def test_measure_refuses_an_impossible_spacing_in_one_line(tmp_path, value):
    corners = write_corners(tmp_path / "c.csv", spine_rows("a.png", ["C3", "C4"]))
    result = invoke("measure", corners, "--out", tmp_path / "m", f"--spacing={value}")
    one_line_error(result, "--spacing", "pixel spacing")
    assert not (tmp_path / "m" / "measurements.csv").exists()


def test_a_centres_file_spacing_out_of_range_is_refused_naming_the_row(tmp_path):
    corners = write_corners(tmp_path / "c.csv", spine_rows("a.png", ["C3", "C4"]))
    (tmp_path / "centers.csv").write_text("image,vertebra,x,y,pixel_spacing_mm\na.png,C3,10,10,14.9\n"
                                          "a.png,C4,10,70,14.9\n", encoding="utf-8")
    result = invoke("measure", corners, "--out", tmp_path / "m", "--centers", tmp_path / "centers.csv")
    one_line_error(result, "centers.csv: row 2", "14.9 mm is outside the plausible 0.02-2 mm")


def test_a_batch_refuses_the_image_whose_centres_give_an_implausible_spacing(toy_dataset, tiny_onnx, tmp_path):
    root = tmp_path / "in"
    shutil.copytree(toy_dataset, root)
    lines = (root / "centers.csv").read_text().splitlines()
    lines[1:] = [line.rsplit(",", 1)[0] + (",inf" if line.startswith("toy1.png") else ",0.15") for line in lines[1:]]
    (root / "centers.csv").write_text("\n".join(lines) + "\n")
    result = invoke("batch", root, "--centers", root / "centers.csv", "--model", tiny_onnx, "--out", tmp_path / "out")
    assert result.exit_code == 1, result.output
    errors = list(csv.DictReader(open(tmp_path / "out" / "errors.csv", encoding="utf-8")))
    assert [e["image"] for e in errors] == ["toy1.png"]
    assert "centers.csv: row 7: pixel_spacing_mm: pixel spacing must be a positive finite number" in errors[0]["reason"]
    assert {r["image"] for r in csv.DictReader(open(tmp_path / "out" / "corners.csv"))} == {"toy0.png", "toy2.png",
                                                                                          "toy3.png"}


@pytest.mark.parametrize("value", [float("inf"), -1.0, 14.9, 1e-4])
def test_evaluate_refuses_annotations_with_an_implausible_spacing(toy_dataset, tmp_path, value):
    data = json.loads((toy_dataset / "annotations.json").read_text())
    data["images"][2]["pixel_spacing_mm"] = value
    (tmp_path / "a.json").write_text(json.dumps(data))
    write_predictions(tmp_path / "p.csv", read_annotations(toy_dataset / "annotations.json"))
    result = invoke("evaluate", tmp_path / "p.csv", tmp_path / "a.json")
    one_line_error(result, "image 2 (toy2.png)", "pixel_spacing_mm: pixel spacing")


def test_the_plausible_range_is_the_documented_one():
    assert SPACING_RANGE_MM == (0.02, 2.0)
