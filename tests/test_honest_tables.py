"""Tables whose words match their numbers (issue #32): evaluate's calibration verdicts, fit failure and order,
the centre checks' reasons in errors.csv, ``measure --ap`` and the overlays' names."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import crushed_spine_files, make_spine
from vcorner import CORNER_NAMES
from vcorner.cli import app
from vcorner.io.annotations import write_annotations

THORACIC = [f"T{i}" for i in range(1, 13)]


def thoracic_films(folder, spacing=None, count=3):
    """``count`` annotated films of T1-T12 (straight spines, 40 px apart) in ``folder``/annotations.json."""
    records = []
    for i in range(count):
        record = make_spine(n=12, size=40.0, origin=(300.0, 60.0))
        vertebrae = tuple(replace(v, name=THORACIC[k]) for k, v in enumerate(record.vertebrae))
        records.append(replace(record, file=f"film{i}.png", pixel_spacing_mm=spacing, vertebrae=vertebrae))
    write_annotations(folder / "annotations.json", records)
    return records


def write_corners(path, records, noise_px=2.0, shift=(1.5, 0.0), sd_px=(0.6, 0.5), seed=1):
    """A corners.csv of the annotated corners moved by ``shift`` plus Gaussian noise (sd ``noise_px`` per
    axis), each claiming an ellipse of sd ``sd_px`` (major, minor); rows listed caudal first, T names as text."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in records:
        for v in sorted(r.vertebrae, key=lambda v: v.name):  # T1, T10, T11, T12, T2...: text order
            for k, corner in enumerate(CORNER_NAMES):
                dx, dy = rng.normal(0.0, noise_px, 2) + shift
                rows.append([r.file, v.name, corner, v.corners[k, 0] + dx, v.corners[k, 1] + dy, 0.9, *sd_px, 0.0,
                             "network"])
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "vertebra", "corner", "x", "y", "confidence", "sd_major_px", "sd_minor_px",
                         "angle_deg", "source"])
        writer.writerows(rows)


def evaluate(tmp_path, *extra):
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "corners.csv"), str(tmp_path / "annotations.json"),
                                      "--out", str(tmp_path / "eval"), *extra])
    assert result.exit_code == 0, result.output
    return result.output, json.loads((tmp_path / "eval" / "metrics.json").read_text())


def verdict(output: str, level: int) -> tuple[float, str]:
    """The measured share and the words printed after it for the ``level``% ellipses."""
    found = re.search(rf"the {level}% ellipses hold ([0-9.]+)% of true corners: ([a-z ]+)", output)
    assert found, output
    return float(found.group(1)) / 100.0, found.group(2).strip()


def expected_words(share: float, low: float, high: float) -> str:
    return "too tight" if share < low else "too wide" if share > high else "about right"


def test_a_bad_models_evaluation_says_what_its_numbers_say(tmp_path):
    """Shifted corners with tiny ellipses and no pixel spacing: the calibration is called too tight at both
    levels (it printed "well calibrated: about 50% and 95%"), fit failure is n/a (3 px were counted as 3 mm),
    vertebrae are cranial first (T2 before T10), and every missing value reads n/a."""
    write_corners(tmp_path / "corners.csv", thoracic_films(tmp_path))
    output, report = evaluate(tmp_path)
    print(output)  # the deliberately bad case, for the record
    assert "well calibrated" not in output
    for level, (low, high) in ((95, (0.90, 0.98)), (50, (0.40, 0.60))):
        share, words = verdict(output, level)
        assert words.startswith(expected_words(share, low, high)) and words.startswith("too tight")
        assert report["overall"][f"inside_{level}"] == pytest.approx(share, abs=6e-4)
    assert report["calibration"]["inside_50"] is not None and len(report["calibration"]["verdicts"]) == 2
    assert "fit failure: P2P n/a (no pixel spacing)" in output and not re.search(r"\bnan\b", output.lower())
    assert report["overall"]["fit_failure_pct"] is None
    assert report["overall"]["fit_failure_rule"] == "n/a (no pixel spacing)"
    assert list(report["per_vertebra"]) == THORACIC
    table = output[output.index("Per vertebra"):]
    assert [m for m in re.findall(r"│ (T\d+) ", table)] == THORACIC
    for row in report["per_vertebra"].values():
        assert {"inside_50", "inside_95"} <= set(row) and row["fit_failure_pct"] is None


def test_fit_failure_in_px_only_against_a_threshold_the_user_gives(tmp_path):
    write_corners(tmp_path / "corners.csv", thoracic_films(tmp_path))
    output, report = evaluate(tmp_path, "--fit-failure-px", "6")
    assert report["overall"]["fit_failure_rule"] == "> 6 px (--fit-failure-px)" and "P2P > 6 px" in output
    assert 0.0 <= report["overall"]["fit_failure_pct"] < 10.0


def test_fit_failure_in_mm_keeps_the_papers_3_mm(tmp_path):
    write_corners(tmp_path / "corners.csv", thoracic_films(tmp_path, spacing=0.15))
    output, report = evaluate(tmp_path)
    assert report["overall"]["fit_failure_rule"] == "> 3 mm" and report["overall"]["fit_failure_pct"] == 0.0
    assert "fit failure: P2P > 3 mm" in output


@pytest.mark.parametrize("sd, words", [((2.0, 2.0), "about right"), ((12.0, 12.0), "too wide")])
def test_calibration_words_follow_the_measured_coverage(tmp_path, sd, words):
    write_corners(tmp_path / "corners.csv", thoracic_films(tmp_path), shift=(0.0, 0.0), sd_px=sd)
    output, _ = evaluate(tmp_path)
    for level, (low, high) in ((95, (0.90, 0.98)), (50, (0.40, 0.60))):
        share, said = verdict(output, level)
        assert said.startswith(expected_words(share, low, high))
    assert verdict(output, 95)[1].startswith(words)


def test_the_centre_table_prints_n_a_not_nan(tmp_path):
    records = thoracic_films(tmp_path, spacing=0.15)
    with open(tmp_path / "centers.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "vertebra", "x", "y"])
        for r in records:  # every name on the wrong vertebra: nothing is correct, so no error to average
            for v, other in zip(r.vertebrae, r.vertebrae[::-1], strict=True):
                writer.writerow([r.file, v.name, *other.center])
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "centers.csv"), str(tmp_path / "annotations.json")])
    assert result.exit_code == 0, result.output
    assert not re.search(r"\bnan\b", result.output.lower()) and "n/a" in result.output


CENTRE_CASES = {  # image -> C3..C7 centres (x, y) on a 400 x 450 film, spacing 60 px
    "step.png": [(200, 80), (200, 140), (200, 200), (200, 260), (200, 434)],  # C6-C7: 2.9 spacings
    "turn.png": [(200, 80), (200, 140), (260, 200), (200, 260), (200, 320)],  # turns by 90 degrees at C5
    "twins.png": [(200, 80), (200, 140), (200, 230), (200, 230), (200, 320)],  # C5 and C6 on one point
}


def test_errors_csv_reasons_name_the_measured_quantity_and_its_limit(tmp_path, toy_dataset, tiny_onnx):
    """"out of line (nearest centre 80.0 px away, typical spacing 76.7 px)" did not say what was out of line:
    each reason now states the measured step or turn against its limit, and what was done."""
    import shutil

    root = tmp_path / "in"
    root.mkdir()
    lines = ["image,vertebra,x,y"]
    for image, centres in CENTRE_CASES.items():
        shutil.copy(toy_dataset / "toy0.png", root / image)
        lines += [f"{image},C{3 + i},{x},{y}" for i, (x, y) in enumerate(centres)]
    (root / "centers.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["batch", str(root), "--centers", str(root / "centers.csv"), "--out",
                                      str(tmp_path / "out"), "--model", str(tiny_onnx)])
    assert result.exit_code == 1, result.output
    with open(tmp_path / "out" / "errors.csv", newline="", encoding="utf-8") as handle:
        reasons = {(r["image"], r["vertebra"]): r["reason"] for r in csv.DictReader(handle)}
    print("\n".join(f"{k}: {v}" for k, v in reasons.items()))
    assert set(reasons) == {("step.png", "C7"), ("turn.png", "C5"), ("twins.png", "C5"), ("twins.png", "C6")}
    step = re.search(r"the step C6-C7 is ([0-9.]+) typical spacings per level .*limit ([0-9.]+)\); left out$",
                     reasons["step.png", "C7"])
    assert step and float(step.group(1)) == pytest.approx(2.9, abs=0.05) and float(step.group(2)) == 2.6
    turn = re.search(r"turns by ([0-9]+) degrees at C5 \(limit ([0-9]+);", reasons["turn.png", "C5"])
    assert turn and int(turn.group(1)) == 90 and int(turn.group(2)) == 75
    for name, other in (("C5", "C6"), ("C6", "C5")):
        reason = reasons["twins.png", name]
        assert f"coincides with {other}'s: 0.0 px apart, under the limit of" in reason
        assert reason.endswith("which of the two is right cannot be told, so both are left out")
    for reason in reasons.values():
        assert "nearest centre" not in reason and "neither is used" not in reason


def test_measure_ap_writes_only_what_an_ap_film_shows(tmp_path):
    """``measure --ap`` wrote anterior/posterior heights, wedge ratios, Genant grades and listhesis, which an AP
    film does not show; now only the AP measures, with values that match a spine tilted by 10 degrees."""
    from vcorner.measure.intervals import AP_MEASURES

    record = replace(make_spine(n=5, angle_deg=10.0, size=60.0), pixel_spacing_mm=None)
    write_corners(tmp_path / "corners.csv", [record], noise_px=0.0, shift=(0.0, 0.0), sd_px=(0.05, 0.05))
    for extra in ([], ["--ap"]):
        out = tmp_path / ("ap" if extra else "lateral")
        result = CliRunner().invoke(app, ["measure", str(tmp_path / "corners.csv"), "--out", str(out),
                                          "--spacing", "0.15", *extra])
        assert result.exit_code == 0, result.output
    with open(tmp_path / "ap" / "measurements.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["measure"] for r in rows} == set(AP_MEASURES)
    with open(tmp_path / "lateral" / "measurements.csv", newline="", encoding="utf-8") as handle:
        lateral = {r["measure"] for r in csv.DictReader(handle)}
    assert {"anterior_height", "genant_grade", "listhesis"} <= lateral and "cobb_angle" not in lateral
    values = {(r["measure"], r["level"]): float(r["value"]) for r in rows}
    for name in ("C3", "C4", "C5", "C6", "C7"):
        assert values["lateral_tilt", name] == pytest.approx(10.0, abs=0.01)  # right side lower on the image
        assert values["width", name] == pytest.approx(0.84 * 60 * 0.15, abs=0.01)  # mm
        assert values["middle_height", name] == pytest.approx(0.66 * 60 * 0.15, abs=0.01)
    assert values["coronal_angle", "C3-C4"] == pytest.approx(0.0, abs=0.01)
    assert [k for k in values if k[0] == "cobb_angle"] and all(r["unit"] in ("mm", "deg") for r in rows)


def test_overlay_names_are_one_to_one_without_a_doubled_extension():
    from vcorner.pipeline.overlay import overlay_name

    names = ["a.png", "a.jpg", "a.JPG", "a.jpeg", "a.dcm", "a_jpg.png", "a_jpg_png.png", "a.jpg.png", "a_.png",
             "scan", "scan_", "a.b_c", "a_b.c", "x/a.png", "x/a.tif", "film_00001.png", "a.PNG"]
    overlays = [overlay_name(n) for n in names]
    assert len(set(overlays)) == len(names) and all(o.lower().endswith(".png") for o in overlays)
    assert overlay_name("images/a.jpg") == "images/a_jpg.png" and overlay_name("images/a.png") == "images/a.png"
    assert overlay_name("film_00001.png") == "film_00001.png"


def test_overlays_of_a_subfolder_have_one_extension_and_report_and_resume_find_them(tmp_path, toy_dataset,
                                                                                      tiny_onnx):
    """``images/a.jpg`` gave ``vis/images/a.jpg.png``; now ``vis/images/a_jpg.png`` beside ``a.png``'s own
    ``vis/images/a.png``; ``vcorner report`` links both, and a resumed run keeps (renames) an overlay an
    earlier version wrote under the old name instead of redoing the image."""
    import cv2

    root = tmp_path / "in"
    (root / "images").mkdir(parents=True)
    grey = cv2.imread(str(toy_dataset / "toy0.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(root / "images" / "a.png"), grey)
    cv2.imwrite(str(root / "images" / "a.jpg"), grey)
    rows = [f"images/{name},C{3 + i},200,{80 + 60 * i}" for name in ("a.png", "a.jpg") for i in range(5)]
    (root / "centers.csv").write_text("image,vertebra,x,y\n" + "\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    command = ["batch", str(root), "--centers", str(root / "centers.csv"), "--out", str(out), "--model",
               str(tiny_onnx), "--vis"]
    first = CliRunner().invoke(app, command)
    assert first.exit_code == 0, first.output
    written = sorted(p.relative_to(out / "vis").as_posix() for p in (out / "vis").rglob("*.png"))
    assert written == ["images/a.png", "images/a_jpg.png"]
    report = CliRunner().invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    page = (out / "report.html").read_text(encoding="utf-8")
    assert 'href="vis/images/a_jpg.png"' in page and 'href="vis/images/a.png"' in page
    drawn = (out / "vis" / "images" / "a_jpg.png").stat().st_mtime_ns
    (out / "vis" / "images" / "a_jpg.png").rename(out / "vis" / "images" / "a.jpg.png")  # an earlier version's
    again = CliRunner().invoke(app, command)
    assert again.exit_code == 0, again.output
    assert (out / "vis" / "images" / "a_jpg.png").stat().st_mtime_ns == drawn  # renamed, not redrawn
    assert not (out / "vis" / "images" / "a.jpg.png").exists()


def test_ap_overlay_labels_show_the_tilt_not_lateral_heights():
    """Issue #32 point 7: `batch --vis --measure --ap` labelled AP overlays with anterior/posterior heights."""
    import numpy as np

    from vcorner.pipeline.overlay import measurement_labels
    from vcorner.postprocess.decode import VertebraCorners

    def vertebra(name, turn_deg, y):
        a = np.deg2rad(turn_deg)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        xy = np.array([[-20.0, -15.0], [20.0, -15.0], [-20.0, 15.0], [20.0, 15.0]]) @ rot.T + [100.0, y]
        return VertebraCorners(name, xy, np.ones(4), np.tile(np.eye(2), (4, 1, 1)), ("network",) * 4)

    corners = [vertebra("T1", 0.0, 50.0), vertebra("T2", 10.0, 100.0)]
    assert measurement_labels(corners, 0.1, "ap") == ["T1 tilt +0.0 deg", "T2 tilt +10.0 deg"]
    assert "/" in measurement_labels(corners, 0.1, "right")[0]  # lateral: anterior/posterior heights


def test_evaluate_reports_p2p_of_deformed_and_normal_vertebrae(tmp_path):
    """Issue #29: evaluate splits the corner error by the annotated shape (Genant grade >= 1 or a slip)."""
    crushed_spine_files(tmp_path, lambda i: 4.0 if i == 2 else 1.0)  # the deformed vertebra's corners found worse
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "corners.csv"),
                                          str(tmp_path / "annotations.json"), "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    assert "deformed 0.600 mm (1 vertebrae); normal 0.150 mm (4 vertebrae)" in result.output
    split = json.loads((tmp_path / "eval" / "metrics.json").read_text())["measurements"]["p2p_by_shape"]
    assert split["deformed"]["vertebrae"] == 1 and split["normal"]["p2p_mean"] == pytest.approx(0.15)
