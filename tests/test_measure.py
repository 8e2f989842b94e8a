"""Issue D: measurements from corners with 95% intervals: known geometry, calibrated intervals, commands."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vcorner.cli import app
from vcorner.measure import definitions as d
from vcorner.measure.intervals import ImageCorners, measure_image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "xrays"


def box(x0: float, y0: float, width: float = 40.0, front: float = 30.0, back: float = 30.0) -> np.ndarray:
    """(4, 2) corners of a vertebra facing right (anterior = +x): posterior height ``back``, anterior ``front``."""
    return np.array([[x0, y0], [x0 + width, y0 + back - front], [x0, y0 + back], [x0 + width, y0 + back]])


def corners_of(*vertebrae: np.ndarray, sd: float = 1e-3, names=None) -> ImageCorners:
    xy = np.stack(vertebrae)
    names = names or tuple(f"C{3 + i}" for i in range(len(xy)))
    return ImageCorners("a.png", tuple(names), xy, np.broadcast_to(sd**2 * np.eye(2), (*xy.shape, 2)).copy(),
                        np.ones(xy.shape[:2], dtype=bool))


def rows_by(rows):
    return {(r.measure, r.level): r for r in rows}


def test_heights_and_wedging_of_known_boxes():
    normal, wedged = box(0, 0), box(0, 40, front=21.0)
    h = d.heights(np.stack([normal, wedged]))
    assert h["anterior_height"].tolist() == pytest.approx([30.0, 21.0])
    assert h["posterior_height"].tolist() == pytest.approx([30.0, 30.0])
    assert h["middle_height"].tolist() == pytest.approx([30.0, 25.5])
    loss = d.height_loss(h)
    assert loss.tolist() == pytest.approx([0.0, 0.3])
    assert d.genant_grade(np.array([0.1, 0.2, 0.3, 0.45])).tolist() == [0, 1, 2, 3]


def test_a_crushed_vertebra_is_graded_against_its_neighbours():
    rows = rows_by(measure_image(corners_of(box(0, 0), box(0, 40, front=18, back=18), box(0, 70)), 0.1))
    assert rows[("height_loss", "C4")].value == pytest.approx(40.0)
    assert rows[("genant_grade", "C4")].value == 3 and "genant_3" in rows[("genant_grade", "C4")].flags
    assert rows[("anterior_height", "C4")].unit == "mm" and rows[("anterior_height", "C4")].value == pytest.approx(1.8)


def test_an_anterior_slip_is_positive_in_mm_and_percent_on_either_side():
    upper, lower = box(3.0, 0.0), box(0.0, 35.0)  # the upper vertebra 3 px anterior of the lower one
    rows = rows_by(measure_image(corners_of(upper, lower), 0.5))
    assert rows[("listhesis", "C3-C4")].value == pytest.approx(1.5)  # 3 px x 0.5 mm
    assert rows[("listhesis_pct", "C3-C4")].value == pytest.approx(7.5)  # of the 40 px endplate
    assert rows[("meyerding_grade", "C3-C4")].value == 1
    mirror = np.array([[-1.0, 1.0]])
    flipped = corners_of((upper * mirror)[[1, 0, 3, 2]], (lower * mirror)[[1, 0, 3, 2]])  # facing left
    assert rows_by(measure_image(flipped, 0.5, anterior="left"))[("listhesis", "C3-C4")].value == pytest.approx(1.5)
    assert d.meyerding_grade(np.array([-3.0, 0.0, 10.0, 30.0, 120.0])).tolist() == [0, 0, 1, 2, 5]


def test_angles_are_positive_when_the_disc_opens_anteriorly():
    lower = box(0.0, 35.0)
    turn = np.deg2rad(-10.0)  # the upper vertebra tilted so that its anterior end rises (y down)
    rot = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    upper = (box(0.0, 0.0) - [0.0, 30.0]) @ rot.T + [0.0, 30.0]
    rows = rows_by(measure_image(corners_of(upper, lower), 0.1))
    assert rows[("segmental_angle", "C3-C4")].value == pytest.approx(10.0)
    assert rows[("global_angle", "C3-C4")].value == pytest.approx(10.0)
    kyphotic = rows_by(measure_image(corners_of((box(0, 0) - [40, 30]) @ rot + [40, 30], lower), 0.1))
    assert kyphotic[("segmental_angle", "C3-C4")].value == pytest.approx(-10.0)


def test_cobb_angle_finds_the_most_tilted_pair():
    def tilted(y, deg):
        a = np.deg2rad(deg)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        return (box(0, 0) - [20, 15]) @ rot.T + [20, 15 + y]

    spine = np.stack([tilted(0, 0), tilted(40, 12), tilted(80, 0), tilted(120, -15), tilted(160, -2)])
    angle, upper, lower = d.cobb_angle(spine)
    assert float(angle) == pytest.approx(27.0) and (int(upper), int(lower)) == (1, 3)
    rows = rows_by(measure_image(corners_of(*spine), 0.1, ap=True))
    # the value is bias-corrected by Monte Carlo; with corners 0.001 px sure the correction is below 0.001 degree
    assert rows[("cobb_angle", "C4-C6")].value == pytest.approx(27.0, abs=1e-3)


def test_intervals_hold_95_percent_of_true_values_when_the_ellipses_are_right():
    rng = np.random.default_rng(1)
    truth = np.stack([box(0, 0), box(2, 36, front=24), box(1, 72)])
    sd = 1.5
    expected = rows_by(measure_image(corners_of(*truth), 0.1))
    inside: dict[str, list[bool]] = {}
    for trial in range(300):
        noisy = truth + rng.normal(0.0, sd, truth.shape)
        found = ImageCorners(f"t{trial}.png", ("C3", "C4", "C5"), noisy,
                             np.broadcast_to(sd**2 * np.eye(2), (3, 4, 2, 2)).copy(), np.ones((3, 4), dtype=bool))
        for row in measure_image(found, 0.1, samples=400):
            if row.unit != "grade":
                true = expected[(row.measure, row.level)].value
                inside.setdefault(row.measure, []).append(row.ci95_low <= true <= row.ci95_high)
    coverage = {m: float(np.mean(v)) for m, v in inside.items()}
    smooth = {m: c for m, c in coverage.items() if m != "height_loss"}
    assert all(0.92 <= c <= 0.98 for c in smooth.values()), coverage
    # height loss takes a min and a max of noisy heights: with unbiased corners its percentile intervals
    # undercover a normal vertebra (0.84 here; on phantoms, whose corners bias it low, 93%: README)
    assert 0.75 <= coverage["height_loss"] <= 0.99, coverage


def test_prior_corners_widen_and_flag_their_measures():
    base = corners_of(box(0, 0), box(0, 36), sd=0.5)
    cov, network = base.cov.copy(), base.network.copy()
    cov[1, 0], network[1, 0] = 25.0 * np.eye(2), False
    prior = ImageCorners("a.png", base.names, base.xy, cov, network)
    plain, widened = rows_by(measure_image(base, 0.1)), rows_by(measure_image(prior, 0.1))
    key = ("posterior_height", "C4")
    assert widened[key].ci95_high - widened[key].ci95_low > 3 * (plain[key].ci95_high - plain[key].ci95_low)
    assert "prior_corner" in widened[key].flags and "prior_corner" not in widened[("posterior_height", "C3")].flags


def test_one_vertebra_gives_only_its_own_measures_and_no_spacing_gives_pixels():
    rows = measure_image(corners_of(box(0, 0)), None)
    assert {r.measure for r in rows} == {"anterior_height", "middle_height", "posterior_height", "wedge_ratio",
                                         "height_loss", "genant_grade"}
    assert {r.unit for r in rows if r.measure.endswith("height")} == {"px"}
    assert all(np.isfinite([r.value, r.ci95_low, r.ci95_high]).all() for r in rows)


def test_vertebrae_that_are_not_neighbours_get_no_level_measures():
    rows = rows_by(measure_image(corners_of(box(0, 0), box(0, 72), names=("C3", "C5")), 0.1))
    assert not any(m in ("listhesis", "segmental_angle") for m, _ in rows) and ("global_angle", "C3-C5") in rows


def test_batch_measure_and_measure_command_agree(tmp_path):
    root = tmp_path / "in"
    shutil.copytree(EXAMPLES, root)
    result = CliRunner().invoke(app, ["batch", str(root), "--centers", str(root / "centers.csv"), "--out",
                                      str(tmp_path / "out"), "--measure"])
    assert result.exit_code == 0, result.output
    batch_rows = (tmp_path / "out" / "measurements.csv").read_text()
    again = CliRunner().invoke(app, ["measure", str(tmp_path / "out" / "corners.csv"), "--out", str(tmp_path / "m"),
                                     "--images", str(root), "--centers", str(root / "centers.csv")])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "m" / "measurements.csv").read_text() == batch_rows
    rows = list(csv.DictReader(batch_rows.splitlines()))
    assert {r["unit"] for r in rows if r["measure"] == "listhesis"} == {"mm"}
    assert len({r["image"] for r in rows}) == 6 and all(r["value"] not in ("nan", "inf") for r in rows)
    bare = CliRunner().invoke(app, ["measure", str(tmp_path / "out" / "corners.csv"), "--out", str(tmp_path / "px")])
    assert bare.exit_code == 0 and "in pixels" in bare.output
    assert {r["unit"] for r in csv.DictReader(open(tmp_path / "px" / "measurements.csv"))
            if r["measure"] == "listhesis"} == {"px"}


def test_the_shipped_cards_reader_spread_gives_anatomy_intervals_inside_the_readers(tmp_path):
    """Issue #29: the batch records the card's reader spread in run.json; measurements.csv then carries anatomy
    intervals, narrower than the reader's and around the same value; without a spacing or with --reader-sd-mm 0,
    none."""
    import json

    result = CliRunner().invoke(app, ["batch", str(EXAMPLES), "--centers", str(EXAMPLES / "centers.csv"), "--out",
                                      str(tmp_path / "out"), "--measure"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "run.json").read_text())["reader_sd_mm"] == pytest.approx(0.35, abs=0.01)
    rows = [r for r in csv.DictReader(open(tmp_path / "out" / "measurements.csv")) if r["unit"] == "mm"]
    assert rows
    for r in rows:
        low, high, a_low, a_high = (float(r[k]) for k in ("ci95_low", "ci95_high", "anatomy_ci95_low",
                                                           "anatomy_ci95_high"))
        assert low <= a_low <= float(r["value"]) <= a_high <= high, r
    assert np.median([(float(r["anatomy_ci95_high"]) - float(r["anatomy_ci95_low"]))
                      / (float(r["ci95_high"]) - float(r["ci95_low"])) for r in rows]) < 0.7
    for extra, folder in ((["--reader-sd-mm", "0", "--centers", str(EXAMPLES / "centers.csv")], "none"), ([], "px")):
        again = CliRunner().invoke(app, ["measure", str(tmp_path / "out" / "corners.csv"), "--out",
                                         str(tmp_path / folder), *extra])
        assert again.exit_code == 0, again.output
        assert {r["anatomy_ci95_low"] for r in csv.DictReader(open(tmp_path / folder / "measurements.csv"))} == {""}
    bad = CliRunner().invoke(app, ["measure", str(tmp_path / "out" / "corners.csv"), "--out", str(tmp_path / "nan"),
                                   "--reader-sd-mm", "nan"])
    assert bad.exit_code == 2 and "--reader-sd-mm" in bad.output


@pytest.mark.parametrize("ap", [False, True])
def test_every_value_lies_inside_its_anatomy_interval(ap):
    """The Cobb angle's bias correction comes from the draws, so each pass corrects it by its own amount: the anatomy
    interval is moved to the reader pass's value (before, on such spines, the Cobb angle fell below its anatomy
    interval in most films)."""
    rng = np.random.default_rng(1)
    outside, cobbs = [], 0
    for trial in range(20):
        tilts = np.radians(rng.uniform(-8, 8, 5))
        spine = []
        for i, t in enumerate(tilts):
            b = box(0, 40 * i)
            turn = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
            spine.append((b - b.mean(0)) @ turn.T + b.mean(0))
        xy = np.stack(spine) + rng.normal(0, 1.5, (5, 4, 2))
        found = ImageCorners(f"t{trial}.png", tuple(f"T{i + 1}" for i in range(5)), xy,
                             np.broadcast_to(3.6**2 * np.eye(2), (5, 4, 2, 2)).copy(), np.ones((5, 4), dtype=bool))
        rows = measure_image(found, 0.1, ap=ap, reader_sd_mm=0.35, samples=500)
        cobbs += sum(r.measure == "cobb_angle" for r in rows)
        outside += [(r.measure, r.anatomy_low, r.value, r.anatomy_high) for r in rows
                    if not r.anatomy_low <= r.value <= r.anatomy_high]
    assert not outside, outside
    assert cobbs == (20 if ap else 0)


def test_anatomy_covariance_takes_the_readers_spread_out_down_to_its_floor():
    from vcorner.measure.intervals import anatomy_covariance

    cov = np.array([[[5.0, 0.0], [0.0, 2.0]], [[1.2, 0.0], [0.0, 1.02]]])
    out = anatomy_covariance(cov, (1.0, 1.0), floor=0.03)
    assert out[0] == pytest.approx(np.diag([4.0, 1.0]))
    assert out[1] == pytest.approx(np.diag([0.2, 0.0306]))  # 1.02 - 1 is below 3% of 1.02: the floor
    turned = np.array([[3.0, 1.0], [1.0, 3.0]])  # eigenvalues 4 and 2 along the diagonals
    assert anatomy_covariance(turned, (1.0, 1.0)) == pytest.approx(turned - np.eye(2))
    assert np.linalg.eigvalsh(anatomy_covariance(turned, (3.0, 3.0), floor=0.03)) == pytest.approx([0.06, 0.12])
    assert anatomy_covariance(np.diag([5.0, 5.0]), (2.0, 1.0)) == pytest.approx(np.diag([1.0, 4.0]))


def test_anatomy_intervals_hold_95_percent_of_true_values_and_reader_intervals_of_a_readers():
    """Issue #29: corners found with sd 1 px about the truth, a reader clicking with sd 1.2 px, ellipses calibrated
    to the reader (their variance the sum): the reader intervals hold the reader's values, the anatomy intervals
    (reader spread taken out) hold the true ones, both near 95%."""
    rng = np.random.default_rng(3)
    truth = np.stack([box(0, 0), box(2, 36, front=24), box(1, 72)])
    found_sd, reader_sd, spacing = 1.0, 1.2, 0.1
    cov = np.broadcast_to((found_sd**2 + reader_sd**2) * np.eye(2), (3, 4, 2, 2)).copy()
    expected = rows_by(measure_image(corners_of(*truth), spacing))
    anatomy, reader = [], []
    for trial in range(300):
        clicks = rows_by(measure_image(corners_of(*(truth + rng.normal(0.0, reader_sd, truth.shape))), spacing))
        found = ImageCorners(f"t{trial}.png", ("C3", "C4", "C5"), truth + rng.normal(0.0, found_sd, truth.shape),
                             cov, np.ones((3, 4), dtype=bool))
        for row in measure_image(found, spacing, samples=400, reader_sd_mm=reader_sd * spacing):
            if row.measure in ("anterior_height", "posterior_height", "listhesis", "segmental_angle"):
                anatomy.append(row.anatomy_low <= expected[(row.measure, row.level)].value <= row.anatomy_high)
                reader.append(row.ci95_low <= clicks[(row.measure, row.level)].value <= row.ci95_high)
    assert 0.93 <= np.mean(anatomy) <= 0.97 and 0.93 <= np.mean(reader) <= 0.97, (np.mean(anatomy), np.mean(reader))


def test_evaluate_compares_measurements_with_the_annotations(tmp_path):
    result = CliRunner().invoke(app, ["batch", str(EXAMPLES), "--centers", str(EXAMPLES / "centers.csv"), "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 0
    report = CliRunner().invoke(app, ["evaluate", str(tmp_path / "out" / "corners.csv"),
                                      str(EXAMPLES / "annotations.json"), "--out", str(tmp_path / "eval")])
    assert report.exit_code == 0 and "Measurements against the annotated corners" in report.output
    import json

    measures = json.loads((tmp_path / "eval" / "metrics.json").read_text())["measurements"]["per_measure"]
    assert measures["posterior_height"]["mae"] < 1.0 and measures["posterior_height"]["unit"] == "mm"
    # the batch recorded the shipped card's reader spread: the anatomy intervals are scored too
    assert "in anatomy interval" in report.output and 0.0 <= measures["posterior_height"]["coverage_anatomy"] <= 1.0


def test_overlay_labels_give_heights_and_slips():
    from vcorner.pipeline.overlay import measurement_labels
    from vcorner.postprocess.decode import VertebraCorners

    def vertebra(name, xy):
        return VertebraCorners(name, xy, np.ones(4), np.broadcast_to(np.eye(2), (4, 2, 2)), ("network",) * 4)

    corners = [vertebra("C3", box(8.0, 0.0, front=21.0)), vertebra("C4", box(0.0, 35.0))]
    assert measurement_labels(corners, 0.5) == ["C3 10.5/15.0 mm, slip +4.0 mm", "C4 15.0/15.0 mm"]
    assert measurement_labels(corners, None) == ["C3 21.0/30.0 px", "C4 30.0/30.0 px"]  # no slip flag in px


def scoliotic_spine(rng: np.random.Generator, count: int = 12, width: float = 40.0, height: float = 30.0):
    """(count, 4, 2) corners of a spine whose tilts follow a sine of random amplitude (5-30 degrees) and phase."""
    tilts = np.deg2rad(rng.uniform(5, 30) * np.sin(np.linspace(0, np.pi, count) + rng.uniform(0, np.pi)))
    xy = np.zeros((count, 4, 2))
    for i, t in enumerate(tilts):
        centre = np.array([300 + 20 * np.sin(i / 3), 100 + i * (height + 10)])
        right, down = np.array([np.cos(t), np.sin(t)]), np.array([-np.sin(t), np.cos(t)])
        xy[i] = [centre + sx * right * width / 2 + sy * down * height / 2 for sy in (-1, 1) for sx in (-1, 1)]
    return xy


@pytest.mark.parametrize("sd_px", [0.5, 1.5, 3.0])
def test_cobb_intervals_hold_95_percent_of_known_angles_and_the_bias_is_corrected(sd_px):
    """Issue #29: the Cobb angle's 95% interval on simulated spines with known angles, corners found with
    Gaussian noise of the sd their ellipses state (the maximum taken anew per draw held 26-86% here)."""
    rng = np.random.default_rng(7)
    inside, errors = [], []
    for k in range(200):
        truth = scoliotic_spine(rng)
        true_cobb = float(d.cobb_angle(truth)[0])
        found = truth + rng.normal(0.0, sd_px, truth.shape)
        cov = np.broadcast_to(np.eye(2) * sd_px**2, (*truth.shape[:2], 2, 2)).copy()
        corners = ImageCorners(f"spine{k}", tuple(f"T{i + 1}" for i in range(len(truth))), found, cov,
                               np.ones(truth.shape[:2], bool))
        row = next(r for r in measure_image(corners, None, ap=True) if r.measure == "cobb_angle")
        inside.append(row.ci95_low <= true_cobb <= row.ci95_high)
        errors.append(row.value - true_cobb)
    assert 0.90 <= np.mean(inside) <= 0.98, np.mean(inside)
    assert abs(np.mean(errors)) < 0.4 + 1.2 * sd_px, np.mean(errors)  # selection bias left: 0.1-3.3 degrees
