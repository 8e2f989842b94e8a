"""Issue #27: flags travel from the corners to every output (corners.csv, JSON, measurements.csv, run.json, the
summary line, the report's order), and files from before flags are still read. Each case runs ``vcorner`` as a
user would, with the shipped model (its card's trust limits) on the shipped example films."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vcorner.cli import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "xrays"
MOVED = "phantom_00000.png"
CLEAN = "phantom_00002.png"


def rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def run(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def centres(tmp_path: Path, moved: bool = True, rename: dict[str, str] | None = None) -> Path:
    """A centres file of two example films; with ``moved`` the first film's C5 centre moved 45% of the way to C6
    (its frame then straddles the C5-C6 disc: the corners found are those of no real vertebra)."""
    listed = [r for r in rows(EXAMPLES / "centers.csv") if r["image"] in (MOVED, CLEAN)]
    if moved:
        first = [r for r in listed if r["image"] == MOVED]
        c5, c6 = (next(r for r in first if r["vertebra"] == n) for n in ("C5", "C6"))
        for axis in ("x", "y"):
            c5[axis] = f"{float(c5[axis]) + 0.45 * (float(c6[axis]) - float(c5[axis])):.3f}"
    for r in listed:
        r["vertebra"] = (rename or {}).get(r["vertebra"], r["vertebra"])
    path = tmp_path / "centers.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(listed[0]))
        writer.writeheader()
        writer.writerows(listed)
    return path


@pytest.fixture(scope="module")
def flagged_run(tmp_path_factory):
    """One batch with --json --measure over a film whose C5 centre was moved and a clean film; its OUT and
    the summary line."""
    tmp = tmp_path_factory.mktemp("flags")
    out = tmp / "out"
    result = run("batch", EXAMPLES, "--centers", centres(tmp), "--out", out, "--json", "--measure")
    assert result.exit_code == 0, result.output
    return out, result.output


def test_a_moved_centre_flags_its_vertebra_and_lowers_its_confidence(flagged_run, tmp_path):
    out, _ = flagged_run
    found = rows(out / "corners.csv")
    assert list(found[0])[-1] == "flags"
    flagged = {(r["image"], r["vertebra"]) for r in found if r["flags"]}
    assert flagged == {(MOVED, "C5")}
    assert {r["flags"] for r in found if r["flags"]} <= {"implausible_shape", "implausible_shape;patches_disagree"}
    clean_out = tmp_path / "clean"
    assert run("batch", EXAMPLES, "--centers", centres(tmp_path, moved=False), "--out", clean_out).exit_code == 0
    assert all(r["flags"] == "" for r in rows(clean_out / "corners.csv"))
    c5 = [float(r["confidence"]) for r in found if r["image"] == MOVED and r["vertebra"] == "C5"]
    assert max(c5) <= 0.5  # the card's flagged_confidence halves every corner of a flagged vertebra
    vertebrae = json.loads((out / "json" / f"{MOVED}.json").read_text())["vertebrae"]
    assert [v["flags"] for v in vertebrae if v["name"] == "C5"][0][0] == "implausible_shape"
    assert all(v["flags"] == [] for v in vertebrae if v["name"] != "C5")


def test_flags_are_counted_in_run_json_and_the_summary_line(flagged_run):
    out, output = flagged_run
    last = json.loads((out / "run.json").read_text())["last_run"]
    assert last["flags"]["implausible_shape"] == {"images": 1, "vertebrae": 1}
    assert "flagged: implausible_shape 1 vertebra(e) of 1 image(s)" in " ".join(output.split())


def test_measurements_built_on_a_flagged_vertebra_carry_its_flag(flagged_run):
    out, _ = flagged_run
    measured = [r for r in rows(out / "measurements.csv") if r["image"] == MOVED]
    on_c5 = [r for r in measured if "C5" in r["level"].split("-") or r["measure"] == "global_angle"]
    assert on_c5 and all("implausible_shape" in r["flags"].split(";") for r in on_c5)
    others = [r for r in measured if r not in on_c5]
    assert others and not any("implausible_shape" in r["flags"] for r in others)
    assert not any("implausible_shape" in r["flags"] for r in rows(out / "measurements.csv") if r["image"] == CLEAN)


def test_the_report_lists_flagged_films_first(flagged_run, tmp_path):
    out, _ = flagged_run
    page = tmp_path / "report.html"
    assert run("report", out, "--out", page).exit_code == 0
    text = page.read_text(encoding="utf-8")
    assert text.index(f'data-image="{MOVED}"') < text.index(f'data-image="{CLEAN}"')
    assert "C5 flagged: implausible_shape" in text


def test_names_never_trained_on_are_flagged_on_every_row(tmp_path):
    out = tmp_path / "out"
    listed = centres(tmp_path, moved=False, rename={f"C{i}": f"T{i - 2}" for i in range(3, 8)})
    assert run("batch", EXAMPLES, "--centers", listed, "--out", out).exit_code == 0
    assert {r["flags"].split(";")[0] for r in rows(out / "corners.csv")} == {"unknown_name"}
    assert json.loads((out / "run.json").read_text())["last_run"]["flags"]["unknown_name"] == {"images": 2,
                                                                                               "vertebrae": 10}


def test_a_corners_csv_from_before_flags_is_still_read_and_resumed(flagged_run, tmp_path):
    out, _ = flagged_run
    old = tmp_path / "old"
    old.mkdir()
    found = rows(out / "corners.csv")
    with open(old / "corners.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(found[0])[:-1], extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(found)
    annotations = EXAMPLES / "annotations.json"
    assert run("measure", old / "corners.csv", "--out", tmp_path / "m").exit_code == 0
    assert rows(tmp_path / "m" / "measurements.csv")
    assert run("evaluate", old / "corners.csv", annotations).exit_code == 0
    assert run("report", old, "--out", tmp_path / "r.html").exit_code == 0
    assert run("convert", old / "corners.csv", tmp_path / "coco.json").exit_code == 0
    resumed = run("batch", EXAMPLES, "--centers", centres(tmp_path), "--out", old)
    assert resumed.exit_code == 0, resumed.output
    again = rows(old / "corners.csv")
    assert list(again[0])[-1] == "flags" and len(again) == len(found)
    assert {(r["image"], r["vertebra"]) for r in again if r["flags"]} == {(MOVED, "C5")}
    assert np.allclose([float(r["x"]) for r in again], [float(r["x"]) for r in found])


def test_the_detectors_image_flags_reach_every_row_of_its_image(tmp_path):
    """``DetectedCentres.flags`` (filled by the detector's view search) are carried by every row of that image."""
    from vcorner.cli.common import open_model
    from vcorner.io.annotations import read_annotations
    from vcorner.io.records import ImageRecord
    from vcorner.pipeline.run import BatchSettings
    from vcorner.pipeline.steps import finish_one, prepare_one
    from vcorner.stages.detect import DetectedCentres
    from vcorner.stages.plan import PlannedImage

    record = next(r for r in read_annotations(EXAMPLES / "annotations.json") if r.file == CLEAN)
    found = DetectedCentres(record, {}, record, flags=("levels_uncertain",))
    runner, resolved = open_model(None)
    settings = BatchSettings()
    with runner:
        job = prepare_one(PlannedImage(ImageRecord(CLEAN, ()), EXAMPLES / CLEAN), resolved.card, settings,
                          detect=lambda *_: found)
        job.maps = runner.infer_all(job.patches, 64)
    done = finish_one(job, resolved.card, tmp_path, settings)
    assert len(done.rows) == 4 * len(record.vertebrae)
    assert {row[-1] for row in done.rows} == {"levels_uncertain"}


def test_ellipses_grow_with_patch_disagreement_and_flatness():
    from vcorner.config import TrustConfig
    from vcorner.postprocess.plausibility import evidence_covariance

    trust = TrustConfig(size_sd=0.02, flat_sd=0.06, scatter_scale=0.7)
    sharp = evidence_covariance(100.0, np.full(4, 1.0), np.zeros((4, 2, 2)), trust)
    flat = evidence_covariance(100.0, np.full(4, 0.4), np.zeros((4, 2, 2)), trust)
    apart = evidence_covariance(100.0, np.full(4, 1.0), np.tile(np.diag([9.0, 0.0]), (4, 1, 1)), trust)
    assert np.allclose(sharp[:, 0, 0], 4.0 + 1.0 / 12.0)  # (0.02 x 100 px)^2 plus the one-pixel floor
    assert np.all(flat[:, 0, 0] > sharp[:, 0, 0]) and np.allclose(flat[:, 0, 1], 0.0)
    assert np.allclose(apart[:, 0, 0] - sharp[:, 0, 0], 0.49 * 9.0) and np.allclose(apart[:, 1, 1], sharp[:, 1, 1])


def test_evaluate_reports_the_calibration_of_unflagged_corners(flagged_run, tmp_path):
    out, _ = flagged_run
    result = run("evaluate", out / "corners.csv", EXAMPLES / "annotations.json", "--out", tmp_path / "e")
    assert result.exit_code == 0, result.output
    assert "network corners without a flag (4 of 40 corners flagged)" in " ".join(result.output.split())
    unflagged = json.loads((tmp_path / "e" / "metrics.json").read_text())["calibration"]["unflagged"]
    assert unflagged["ellipse_corners"] <= 36


def test_clicked_names_that_run_the_wrong_way_are_flagged_levels_uncertain(tmp_path):
    """An example film whose clicked centres are named C7-C3 from the top: its bodies then narrow down the spine
    (`postprocess/plausibility.width_slope`), and every row says levels_uncertain; named as clicked, none does."""
    listed = [r for r in rows(EXAMPLES / "centers.csv") if r["image"] == CLEAN]
    names = [r["vertebra"] for r in listed]
    for reverse in (False, True):
        folder = tmp_path / f"reversed-{reverse}"
        folder.mkdir()
        path = folder / "centers.csv"
        flip = dict(zip(names, names[::-1], strict=True)) if reverse else {n: n for n in names}
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(listed[0]))
            writer.writeheader()
            writer.writerows({**r, "vertebra": flip[r["vertebra"]]} for r in listed)
        result = run("batch", EXAMPLES, "--centers", path, "--out", folder / "out")
        assert result.exit_code == 0, result.output
        found = rows(folder / "out" / "corners.csv")
        assert len(found) == 20
        assert all(("levels_uncertain" in r["flags"].split(";")) == reverse for r in found), found


def test_width_slope_reads_bodies_that_widen_down_the_spine_and_flags_them_reversed():
    from vcorner.postprocess.plausibility import WIDTH_SLOPE_LIMIT, narrowing_flags, width_slope

    names = ["C3", "C4", "C5", "C6", "C7"]
    grow = 1.0 + 0.05 * np.arange(5)  # 5 px wider per level
    bodies = np.stack([[[0, 0], [100 * g, 0], [0, 80], [100 * g, 80]] for g in grow])
    xy = bodies + np.arange(5)[:, None, None] * [0, 100]
    assert width_slope(xy, names) == pytest.approx(0.05 / grow.mean(), rel=1e-6)
    assert width_slope(xy, names[::-1]) < WIDTH_SLOPE_LIMIT  # the same bodies named the wrong way
    assert narrowing_flags(("view_uncertain",), xy, names[::-1]) == ("view_uncertain", "levels_uncertain")
    assert narrowing_flags((), xy, names) == ()
    assert np.isnan(width_slope(xy[:3], names[2::-1]))  # three names are too few to tell
    assert narrowing_flags((), xy[:3], names[2::-1]) == ()
