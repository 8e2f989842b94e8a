"""Issue A: every input ends in correct, finite corners with the right labels, or a named refusal; nothing the
user had is lost or overwritten. Each case runs ``vcorner batch`` as a user would, with the shipped model on a
shipped example film (``examples/xrays``) so that corners are real corners."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from vcorner.cli import app
from vcorner.io.annotations import read_annotations
from vcorner.io.centers import load_centers

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "xrays"
IMAGE = "phantom_00000.png"
HEADER = "image,vertebra,x,y\n"


def rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def truth() -> dict[str, np.ndarray]:
    record = next(r for r in read_annotations(EXAMPLES / "annotations.json") if r.file == IMAGE)
    return {v.name: v for v in record.vertebrae}


def centre_rows(names=("C3", "C4", "C5", "C6", "C7"), image: str = IMAGE, moved=None) -> list[str]:
    """centers.csv rows of the example image, with ``moved`` = {name: (x, y)} replacing some centres."""
    vertebrae = truth()
    out = []
    for name in names:
        x, y = (moved or {}).get(name, vertebrae[name].center)
        out.append(f"{image},{name},{float(x)!r},{float(y)!r}\n")
    return out


@pytest.fixture
def films(tmp_path) -> Path:
    root = tmp_path / "in"
    root.mkdir()
    shutil.copy(EXAMPLES / IMAGE, root / IMAGE)
    return root


def batch(root: Path, lines, out: Path, *extra: str, centers: Path | None = None):
    centers = centers or root / "centers.csv"
    centers.write_text(HEADER + "".join(lines), encoding="utf-8")
    return CliRunner().invoke(app, ["batch", str(root), "--centers", str(centers), "--out", str(out), *extra])


def corners(out: Path) -> dict[tuple[str, str], np.ndarray]:
    return {(r["vertebra"], r["corner"]): np.array([float(r["x"]), float(r["y"])])
            for r in rows(out / "corners.csv")}


def strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


FIT_FAILURE_PX = 3.0 / 0.16294  # the paper's fit failure, 3 mm, at the example film's pixel spacing


def mean_error(found: dict, names) -> float:
    from vcorner import CORNER_NAMES

    vertebrae = truth()
    return float(np.mean([np.linalg.norm(found[(n, c)] - vertebrae[n].corners[k])
                          for n in names for k, c in enumerate(CORNER_NAMES)]))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """Corners of the example film from its clicked centres, cranial first (the honest answer)."""
    root = tmp_path_factory.mktemp("ref")
    shutil.copy(EXAMPLES / IMAGE, root / IMAGE)
    result = batch(root, centre_rows(), root / "out")
    assert result.exit_code == 0, result.output
    return corners(root / "out")


def test_reference_corners_are_accurate(reference):
    assert mean_error(reference, ["C3", "C4", "C5", "C6", "C7"]) < 6.0  # px at 0.16 mm: under 1 mm


def test_a_centre_repeated_on_another_vertebra_is_named_and_the_rest_answered(films, tmp_path):
    c3 = tuple(truth()["C3"].center)
    result = batch(films, centre_rows(moved={"C5": c3}), tmp_path / "out", "--json")
    assert result.exit_code == 1, result.output
    errors = rows(tmp_path / "out" / "errors.csv")
    assert [(e["image"], e["vertebra"]) for e in errors] == [(IMAGE, "C5")]
    assert "coincides with C3" in errors[0]["reason"]
    found = corners(tmp_path / "out")
    assert {v for v, _ in found} == {"C3", "C4", "C6", "C7"}
    assert all(np.all(np.isfinite(xy)) for xy in found.values())
    assert all(np.isfinite(float(r[c])) for r in rows(tmp_path / "out" / "corners.csv")
               for c in ("confidence", "sd_major_px", "sd_minor_px", "angle_deg"))
    strict_json((tmp_path / "out" / "json" / f"{IMAGE}.json").read_text())
    assert batch(films, centre_rows(names=("C3", "C4", "C6", "C7")), tmp_path / "omitted").exit_code == 0
    assert found.keys() == corners(tmp_path / "omitted").keys()
    assert all(np.array_equal(found[k], xy) for k, xy in corners(tmp_path / "omitted").items())
    assert mean_error(found, ["C3", "C4", "C6", "C7"]) < FIT_FAILURE_PX / 2


def test_near_coincident_centres_are_refused_not_given_zero_size_ellipses(films, tmp_path):
    x, y = truth()["C3"].center
    result = batch(films, centre_rows(moved={"C4": (x + 1e-4, y)}), tmp_path / "out")
    assert result.exit_code == 1
    errors = rows(tmp_path / "out" / "errors.csv")  # which of the two labels is right cannot be told: neither
    assert [e["vertebra"] for e in errors] == ["C3", "C4"] and all("cannot be told" in e["reason"] for e in errors)
    table = rows(tmp_path / "out" / "corners.csv")
    assert {r["vertebra"] for r in table} == {"C5", "C6", "C7"}
    assert all(float(r["sd_minor_px"]) > 0.1 for r in table)
    assert mean_error(corners(tmp_path / "out"), ["C5", "C6", "C7"]) < FIT_FAILURE_PX


def test_caudal_first_lists_keep_their_labels(films, tmp_path, reference, caplog):
    result = batch(films, centre_rows()[::-1], tmp_path / "out")
    assert result.exit_code == 0, result.output
    found = corners(tmp_path / "out")
    assert found.keys() == reference.keys()
    assert max(np.abs(found[k] - reference[k]).max() for k in found) < 1e-3


def test_a_caudal_first_list_of_unnamed_vertebrae_is_reversed(films, tmp_path, caplog):
    names = dict(zip(["C3", "C4", "C5", "C6", "C7"], "abcde", strict=True))
    lines = [line.replace(f",{n},", f",{names[n]},") for n, line in zip(names, centre_rows(), strict=True)]
    assert batch(films, lines, tmp_path / "cranial_first").exit_code == 0
    result = batch(films, lines[::-1], tmp_path / "out")
    assert result.exit_code == 0 and "bottom to top" in caplog.text
    found, reference = corners(tmp_path / "out"), corners(tmp_path / "cranial_first")
    assert found.keys() == reference.keys()
    assert max(np.abs(found[k] - reference[k]).max() for k in found) < 1e-3


def test_one_centre_far_out_of_line_costs_only_that_vertebra(films, tmp_path):
    result = batch(films, centre_rows(moved={"C6": (420.0, 5.0)}), tmp_path / "out")  # clicked at the top
    assert result.exit_code == 1
    assert [(e["vertebra"], "out of line" in e["reason"]) for e in rows(tmp_path / "out" / "errors.csv")] == [
        ("C6", True)]
    found = corners(tmp_path / "out")
    assert batch(films, centre_rows(names=("C3", "C4", "C5", "C7")), tmp_path / "omitted").exit_code == 0
    assert all(np.array_equal(found[k], xy) for k, xy in corners(tmp_path / "omitted").items())
    assert found.keys() == corners(tmp_path / "omitted").keys()
    assert mean_error(found, ["C3", "C4", "C5", "C7"]) < FIT_FAILURE_PX / 2  # not hundreds of pixels off


def test_a_centre_just_outside_the_image_serves_its_neighbours(films, tmp_path, reference):
    pixels = cv2.imread(str(films / IMAGE), cv2.IMREAD_UNCHANGED)
    top = int(np.ceil(truth()["C3"].center[1] + 0.6))  # C3's centre lands 0.6-1.6 px above the first row
    cv2.imwrite(str(films / IMAGE), pixels[top:])
    moved = {n: (v.center[0], v.center[1] - top) for n, v in truth().items()}
    result = batch(films, centre_rows(moved=moved), tmp_path / "out")
    assert result.exit_code == 0, result.output
    table = rows(tmp_path / "out" / "corners.csv")
    assert Counter(r["vertebra"] for r in table) == dict.fromkeys(["C3", "C4", "C5", "C6", "C7"], 4)
    flagged = [(r["vertebra"], r["corner"]) for r in table if r["source"] == "outside"]
    assert flagged and all(v == "C3" and c.startswith("superior") for v, c in flagged)
    assert all(float(r["y"]) < -0.5 and float(r["confidence"]) == 0 for r in table if r["source"] == "outside")
    shifted = {k: xy + [0, top] for k, xy in corners(tmp_path / "out").items()}
    assert mean_error(shifted, ["C4", "C5", "C6", "C7"]) < 8.0


def copy_model(tmp_path: Path) -> Path:
    from vcorner.models.modelfile import default_model_path

    model = tmp_path / "m.onnx"
    shutil.copy(default_model_path(), model)
    shutil.copy(f"{default_model_path()}.json", f"{model}.json")
    return model


def test_a_hand_edited_card_is_refused(films, tmp_path):
    model = copy_model(tmp_path)
    sidecar = json.loads(Path(f"{model}.json").read_text())
    sidecar["card"]["decode"]["min_peak"] = 0.01
    Path(f"{model}.json").write_text(json.dumps(sidecar))
    result = batch(films, centre_rows(), tmp_path / "out", "--model", str(model))
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "SHA-256" in result.output
    assert not (tmp_path / "out").exists()


def test_a_card_for_another_patch_size_is_refused_in_one_line(films, tmp_path):
    from dataclasses import replace

    from vcorner.models.modelfile import read_model_card, write_sidecar

    model = copy_model(tmp_path)
    card = read_model_card(model)
    write_sidecar(model, replace(card, sampling=replace(card.sampling, patch_size=32)))
    result = batch(films, centre_rows(), tmp_path / "out", "--model", str(model))
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "32x32" in result.output and "Traceback" not in result.output


def test_a_retuned_card_redoes_the_images_on_resume(films, tmp_path):
    from dataclasses import replace

    from vcorner.models.modelfile import read_model_card, write_sidecar

    model = copy_model(tmp_path)
    assert batch(films, centre_rows(), tmp_path / "out", "--model", str(model)).exit_code == 0
    card = read_model_card(model)
    write_sidecar(model, card.with_decode(replace(card.decode, ellipse_scale=3.0)))
    result = batch(films, centre_rows(), tmp_path / "out", "--model", str(model))
    assert result.exit_code == 0 and "1 image(s) done (1 redone" in result.output
    assert json.loads((tmp_path / "out" / "run.json").read_text())["card"] is not None


def test_standard_csv_quoting_round_trips(films, tmp_path):
    shutil.copy(films / IMAGE, films / "a,b.png")
    lines = [line.replace(f"{IMAGE},C3,", '"a,b.png","C3 ""a""",') for line in centre_rows(image=IMAGE)]
    lines = [line.replace(IMAGE, '"a,b.png"') for line in lines]
    centers = films / "centers.csv"
    centers.write_text(HEADER + "".join(lines), encoding="utf-8")
    (record,) = load_centers(centers).records
    assert record.file == "a,b.png" and record.vertebrae[0].name == 'C3 "a"'
    result = batch(films, lines, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert {r["vertebra"] for r in rows(tmp_path / "out" / "corners.csv")} >= {'C3 "a"', "C4"}


def test_semicolon_files_and_tabs_are_read(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("image;vertebra;x;y\na.png;C3;1,5;2\na.png;C4;3;40\n")
    (record,) = load_centers(path).records
    assert record.centers.tolist() == [[1.5, 2.0], [3.0, 40.0]]
    path.write_text("image\tvertebra\tx\ty\na.png\tC3\t1\t2\n")
    assert load_centers(path).records[0].file == "a.png"


def test_formula_like_names_are_neutralised_and_read_back(films, tmp_path):
    lines = [line.replace(",C3,", ",=1+1,") for line in centre_rows()]
    result = batch(films, lines, tmp_path / "out")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "out" / "corners.csv").read_text()
    assert ",'=1+1," in text and ",=1+1," not in text
    again = batch(films, lines, tmp_path / "out")
    assert again.exit_code == 0 and "1 already done" in again.output  # the journal reads its own names back


def test_dot_slash_and_plain_names_are_one_image(films, tmp_path):
    lines = centre_rows()
    lines = lines[:2] + [line.replace(IMAGE, f"./{IMAGE}") for line in lines[2:]]
    (record,) = load_centers(_write(films / "c.csv", lines)).records
    assert record.file == IMAGE and len(record.vertebrae) == 5
    lines.append(f"./{IMAGE},C3,1.0,2.0\n")
    assert "listed twice" in load_centers(_write(films / "c.csv", lines)).problems[IMAGE]


def _write(path: Path, lines) -> Path:
    path.write_text(HEADER + "".join(lines), encoding="utf-8")
    return path


def test_a_second_run_with_other_centres_keeps_the_first_runs_rows(films, tmp_path):
    shutil.copy(films / IMAGE, films / "other.png")
    assert batch(films, centre_rows(), tmp_path / "out").exit_code == 0
    result = batch(films, centre_rows(image="other.png"), tmp_path / "out")
    assert result.exit_code == 0
    assert Counter(r["image"] for r in rows(tmp_path / "out" / "corners.csv")) == {IMAGE: 20, "other.png": 20}
    digests = json.loads((tmp_path / "out" / "run.json").read_text())["centers"]
    assert set(digests) == {IMAGE, "other.png"}


def test_no_resume_moves_the_earlier_run_aside(films, tmp_path):
    assert batch(films, centre_rows(), tmp_path / "out").exit_code == 0
    before = (tmp_path / "out" / "corners.csv").read_text()
    assert batch(films, centre_rows(), tmp_path / "out", "--no-resume").exit_code == 0
    (kept,) = (tmp_path / "out").glob("previous-*/corners.csv")
    assert kept.read_text() == before


def test_overlays_never_overwrite_the_input_images(films, tmp_path):
    out = tmp_path / "out"
    (out / "vis").mkdir(parents=True)
    shutil.copy(films / IMAGE, out / "vis" / IMAGE)
    original = (out / "vis" / IMAGE).read_bytes()
    result = batch(out / "vis", centre_rows(), out, "--vis", centers=tmp_path / "centers.csv")
    assert result.exit_code == 2 and "would overwrite an input" in result.output
    assert (out / "vis" / IMAGE).read_bytes() == original and not (out / "corners.csv").exists()


def test_outputs_never_overwrite_the_centres_file(films):
    result = batch(films, centre_rows(), films, centers=films / "corners.csv")
    assert result.exit_code == 2 and "would overwrite an input" in result.output


def test_too_many_vertebrae_refuse_their_image(tmp_path):
    lines = [f"a.png,V{i},{i},{10 * i}\n" for i in range(65)]
    table = load_centers(_write(tmp_path / "c.csv", lines))
    assert not table.records and "more than 64 vertebrae" in table.problems["a.png"]


def test_a_bad_device_writes_nothing(films, tmp_path, monkeypatch):
    monkeypatch.setenv("VCORNER_CACHE", str(tmp_path / "cache"))
    result = batch(films, centre_rows(), tmp_path / "out", "--device", "foo")
    assert result.exit_code == 2 and "--device must be" in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_usage_errors_leave_no_empty_output_folder(films, tmp_path):
    result = CliRunner().invoke(app, ["batch", str(films), "--centers", str(tmp_path / "missing.csv"), "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 2 and not (tmp_path / "out").exists()


def test_threads_are_clamped_to_the_cores(films, tmp_path):
    result = batch(films, centre_rows(), tmp_path / "out", "--threads", "1000")
    assert result.exit_code == 0 and "--threads 1000 is more than" in result.output


def test_blank_images_and_zero_rescale_slope_are_named(films, tmp_path):
    from vcorner.phantoms.files import write_image

    cv2.imwrite(str(films / "black.png"), np.zeros((300, 300), np.uint8))
    write_image(films / "flat.dcm", np.full((300, 300), 700, np.uint16), pixel_spacing_mm=0.2)
    lines = centre_rows() + centre_rows(image="black.png") + centre_rows(image="flat.dcm")
    result = batch(films, lines, tmp_path / "out")
    assert result.exit_code == 1
    errors = {e["image"]: e["reason"] for e in rows(tmp_path / "out" / "errors.csv")}
    assert "same value" in errors["black.png"] and "same value" in errors["flat.dcm"]


def test_a_zero_rescale_slope_is_refused(tmp_path):
    import pydicom

    from vcorner.io.images import read_image
    from vcorner.io.records import InputError
    from vcorner.phantoms.files import write_image

    path = tmp_path / "a.dcm"
    write_image(path, np.random.default_rng(0).integers(0, 4000, (64, 64)).astype(np.uint16))
    ds = pydicom.dcmread(path)
    ds.RescaleSlope = "0"
    ds.save_as(path)
    with pytest.raises(InputError, match="RescaleSlope is 0"):
        read_image(path)


def test_exif_orientation_is_applied_with_a_warning(tmp_path, caplog):
    from vcorner.io.images import read_image

    pixels = np.zeros((40, 60), np.uint8)
    pixels[:10, :20] = 255  # a bright block at the top left as stored
    ok, encoded = cv2.imencode(".jpg", pixels)
    tiff = b"MM\x00*\x00\x00\x00\x08" + b"\x00\x01" + b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00" + b"\x00" * 4
    app1 = b"\xff\xe1" + (len(tiff) + 8).to_bytes(2, "big") + b"Exif\x00\x00" + tiff
    data = encoded.tobytes()
    (tmp_path / "r.jpg").write_bytes(data[:2] + app1 + data[2:])
    image = read_image(tmp_path / "r.jpg")
    assert image.pixels.shape == (60, 40)  # orientation 6: turned 90 degrees clockwise, as viewers show it
    assert image.pixels[:20, -10:].mean() > 0.8 and "EXIF orientation 6" in caplog.text


def test_a_jpeg_ls_dicom_names_the_missing_packages(tmp_path):
    from vcorner.io.images import read_image
    from vcorner.io.records import InputError

    _jpeg_ls_dicom(tmp_path / "ls.dcm")
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "ls.dcm")
    assert "pyjpegls" in str(err.value) and "\n" not in str(err.value)


def test_evaluate_refuses_nan_and_unmatched_predictions(tmp_path):
    (tmp_path / "p.csv").write_text("image,vertebra,corner,x,y\na.png,C3,superior_left,nan,1\n")
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "p.csv"), str(EXAMPLES / "annotations.json")])
    assert result.exit_code == 2 and "finite" in result.output
    (tmp_path / "p.csv").write_text("image,vertebra,corner,x,y\na.png,C3,superior_left,1,1\n")
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "p.csv"), str(EXAMPLES / "annotations.json")])
    assert result.exit_code == 2 and "no predicted corner matches" in result.output


def test_ctrl_c_stops_promptly_says_how_to_resume_and_resume_completes(tmp_path, toy_dataset, tiny_onnx):
    root = tmp_path / "many"
    root.mkdir()
    lines = []
    source = {r.file: r for r in load_centers(toy_dataset / "centers.csv").records}
    for i in range(200):
        record = source[f"toy{i % 4}.png"]
        shutil.copy(toy_dataset / record.file, root / f"{i:03d}.png")
        lines += [f"{i:03d}.png,{v.name},{v.center[0]},{v.center[1]}\n" for v in record.vertebrae]
    _write(root / "centers.csv", lines)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "vcorner", "batch", str(root), "--centers", str(root / "centers.csv"),
               "--out", str(out), "--model", str(tiny_onnx), "--batch-size", "16"]
    # a user's Ctrl-C at a terminal: the batch starts with SIGINT handled even when these tests run in a shell's
    # background job (which starts them with SIGINT ignored, inherited by every child)
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
            (out / "corners.csv").is_file() and (out / "corners.csv").read_text().count("\n") > 40):
        time.sleep(0.05)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    stopped = time.monotonic() - sent
    assert process.returncode == 130, err
    assert "run the same command again to resume" in err and "Traceback" not in err
    assert stopped < 10  # generous for a loaded CI machine; measured well under a second here
    done = Counter(r["image"] for r in rows(out / "corners.csv"))
    assert 0 < len(done) < 200 and set(done.values()) == {20}
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert Counter(r["image"] for r in rows(out / "corners.csv")) == {f"{i:03d}.png": 20 for i in range(200)}


def test_errors_of_an_earlier_run_stay_listed_but_do_not_fail_this_one(films, tmp_path):
    shutil.copy(films / IMAGE, films / "other.png")
    first = batch(films, centre_rows() + ["missing.png,C3,1,2\n", "missing.png,C4,1,60\n"], tmp_path / "out")
    assert first.exit_code == 1
    second = batch(films, centre_rows(image="other.png"), tmp_path / "out")
    assert second.exit_code == 0
    assert [e["image"] for e in rows(tmp_path / "out" / "errors.csv")] == ["missing.png"]


def test_an_uncalibrated_card_is_said_once_and_recorded(tmp_path, toy_dataset, tiny_onnx, films):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["batch", str(toy_dataset), "--centers", str(toy_dataset / "centers.csv"),
                                      "--out", str(out), "--model", str(tiny_onnx)])
    assert result.exit_code == 0 and result.output.count("never calibrated") == 1
    assert "never calibrated" in json.loads((out / "run.json").read_text())["calibration"]
    shipped = batch(films, centre_rows(), tmp_path / "shipped")
    assert "never calibrated" not in shipped.output
    assert json.loads((tmp_path / "shipped" / "run.json").read_text())["calibration"] == "calibrated"


def test_evaluate_shows_coverage_beside_the_errors(films, tmp_path):
    assert batch(films, centre_rows(), tmp_path / "out").exit_code == 0
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "out" / "corners.csv"),
                                      str(EXAMPLES / "annotations.json"), "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    assert "in 95% ellipse" in result.output.replace("\n", " ") or "95%" in result.output
    metrics = strict_json((tmp_path / "eval" / "metrics.json").read_text())
    assert 0.0 <= metrics["overall"]["inside_95"] <= 1.0


def test_an_image_refused_now_loses_its_stale_corners(films, tmp_path):
    assert batch(films, centre_rows(), tmp_path / "out").exit_code == 0
    only_one = centre_rows(names=("C3",))  # one vertebra: the image is refused now
    result = batch(films, only_one, tmp_path / "out")
    assert result.exit_code == 1
    assert rows(tmp_path / "out" / "corners.csv") == []  # no corners left that errors.csv contradicts
    assert [e["image"] for e in rows(tmp_path / "out" / "errors.csv")] == [IMAGE]


def test_lumbar_levels_put_l5_next_to_s1():
    from vcorner.geometry.sequence import spine_levels
    from vcorner.measure.intervals import adjacent_pairs

    assert spine_levels(["L4", "L5", "S1"]).tolist() == [22, 23, 24]
    assert adjacent_pairs(["L4", "L5", "S1"]) == [0, 1]
    assert spine_levels(["L5", "L6", "S1"]).tolist() == [23, 24, 25]  # a sixth lumbar vertebra is kept


def test_a_retuned_card_redoes_only_images_decoded_with_the_old_one(films, tmp_path):
    from dataclasses import replace

    from vcorner.models.modelfile import read_model_card, write_sidecar

    model = copy_model(tmp_path)
    shutil.copy(films / IMAGE, films / "other.png")
    assert batch(films, centre_rows(), tmp_path / "out", "--model", str(model)).exit_code == 0
    card = read_model_card(model)
    write_sidecar(model, card.with_decode(replace(card.decode, ellipse_scale=3.0)))
    assert batch(films, centre_rows(image="other.png"), tmp_path / "out", "--model", str(model)).exit_code == 0
    cards = json.loads((tmp_path / "out" / "run.json").read_text())["cards"]
    assert cards[IMAGE] != cards["other.png"]  # the first image keeps the record of the card it was decoded with
    again = batch(films, centre_rows(), tmp_path / "out", "--model", str(model))
    assert again.exit_code == 0 and "1 image(s) done (1 redone" in again.output


def test_an_unlisted_image_cut_by_a_kill_is_not_kept_half(films, tmp_path):
    shutil.copy(films / IMAGE, films / "other.png")
    assert batch(films, centre_rows(), tmp_path / "out").exit_code == 0
    corners_csv = tmp_path / "out" / "corners.csv"
    corners_csv.write_text("".join(corners_csv.read_text().splitlines(keepends=True)[:9]))  # a kill mid-image
    assert batch(films, centre_rows(image="other.png"), tmp_path / "out").exit_code == 0
    assert {r["image"] for r in rows(corners_csv)} == {"other.png"}


def _jpeg_ls_dicom(path: Path) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 16, 12, 11, 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + b"\x00" * 20])
    ds.save_as(path, enforce_file_format=True)


def test_batch_names_zero_slope_jpeg_ls_and_runaway_vertebra_lists_in_errors_csv(films, tmp_path):
    import pydicom

    from vcorner.phantoms.files import write_image

    write_image(films / "slope.dcm", np.random.default_rng(0).integers(0, 4000, (300, 300)).astype(np.uint16))
    ds = pydicom.dcmread(films / "slope.dcm")
    ds.RescaleSlope = "0"
    ds.save_as(films / "slope.dcm")
    _jpeg_ls_dicom(films / "ls.dcm")
    shutil.copy(films / IMAGE, films / "many.png")
    lines = (centre_rows() + centre_rows(image="slope.dcm") + centre_rows(image="ls.dcm")
             + [f"many.png,V{i},{100 + i},{10 + 8 * i}\n" for i in range(65)])
    result = batch(films, lines, tmp_path / "out")
    assert result.exit_code == 1, result.output
    errors = {e["image"]: e["reason"] for e in rows(tmp_path / "out" / "errors.csv")}
    assert "RescaleSlope is 0" in errors["slope.dcm"] and "pyjpegls" in errors["ls.dcm"]
    assert "more than 64 vertebrae" in errors["many.png"]
    assert Counter(r["image"] for r in rows(tmp_path / "out" / "corners.csv")) == {IMAGE: 20}


def test_batch_applies_exif_orientation_and_says_so(films, tmp_path, caplog):
    pixels = cv2.imread(str(films / IMAGE), cv2.IMREAD_GRAYSCALE)
    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(np.rot90(pixels, 1)), [cv2.IMWRITE_JPEG_QUALITY, 97])
    tiff = b"MM\x00*\x00\x00\x00\x08" + b"\x00\x01" + b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00" + b"\x00" * 4
    app1 = b"\xff\xe1" + (len(tiff) + 8).to_bytes(2, "big") + b"Exif\x00\x00" + tiff
    data = encoded.tobytes()
    (films / "turned.jpg").write_bytes(data[:2] + app1 + data[2:])  # stored turned, displayed upright
    result = batch(films, centre_rows(image="turned.jpg"), tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "EXIF orientation 6 applied" in caplog.text
    found = corners(tmp_path / "out")
    assert mean_error(found, ["C3", "C4", "C5", "C6", "C7"]) < FIT_FAILURE_PX / 2  # clicked upright, found upright


def test_a_full_disk_names_the_file_and_spares_the_other_images(films, tmp_path, monkeypatch):
    from vcorner.pipeline.outputs import CornerJournal

    add, calls = CornerJournal.add, []

    def full_once(self, rows_):
        calls.append(1)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        add(self, rows_)

    monkeypatch.setattr(CornerJournal, "add", full_once)
    shutil.copy(films / IMAGE, films / "other.png")
    result = batch(films, centre_rows() + centre_rows(image="other.png"), tmp_path / "out")
    assert result.exit_code == 1
    (error,) = rows(tmp_path / "out" / "errors.csv")
    assert error["image"] == IMAGE and f"cannot write {tmp_path / 'out' / 'corners.csv'}" in error["reason"]
    assert "No space left on device" in error["reason"]
    assert {r["image"] for r in rows(tmp_path / "out" / "corners.csv")} == {"other.png"}
