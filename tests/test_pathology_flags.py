"""Flags with operating points (issue #29): ``genant_N`` / ``possible_genant_N`` and ``slip`` / ``possible_slip`` from
the measure's own interval; their sensitivity and specificity against the annotations; the prior's weight that
falls with the map's confidence."""

from __future__ import annotations

import numpy as np
import pytest

from vcorner.config import DecodeConfig
from vcorner.measure.compare import flag_detection
from vcorner.measure.intervals import Measurement, genant_flags, slip_flags
from vcorner.postprocess.decode import confidence_inflation


def _draws(value: float, low: float, high: float, n: int = 4001) -> np.ndarray:
    """(1 + n,) a value and n draws whose 2.5th-97.5th percentiles are about ``low`` and ``high``."""
    return np.concatenate([[value], np.linspace(low - (high - low) / 38, high + (high - low) / 38, n)])


@pytest.mark.parametrize(("low", "high", "expected"), [
    (5.0, 15.0, []),                                   # below 20%: nothing
    (15.0, 22.0, ["possible_genant_1"]),               # straddles 20%
    (21.0, 24.0, ["genant_1"]),                        # above 20%, below 25%
    (21.0, 30.0, ["genant_1", "possible_genant_2"]),   # above 20%, straddles 25%
    (26.0, 45.0, ["genant_2", "possible_genant_3"]),
    (41.0, 50.0, ["genant_3"]),
])
def test_genant_flags_follow_the_interval(low, high, expected) -> None:
    assert genant_flags(_draws((low + high) / 2, low, high), possible=97.5) == expected


@pytest.mark.parametrize(("low", "high", "expected"), [
    (-1.0, 2.0, []), (1.0, 3.5, ["possible_slip"]), (3.2, 5.0, ["slip"]), (-5.0, -3.1, ["slip"]),
    (-4.0, -2.0, ["possible_slip"]), (-3.5, 3.5, ["possible_slip"]),
])
def test_slip_flags_follow_the_interval(low, high, expected) -> None:
    assert slip_flags(_draws((low + high) / 2, low, high), possible=97.5) == expected


def test_a_lower_percentile_raises_possible_flags_more_sparingly() -> None:
    """At the 60th percentile, an interval of 15-22% (its 60th percentile near 19%) raises nothing, one of 17-24%
    (near 21%) a possible grade 1; a slip of 0.5-3.2 mm reaches 3 mm only above its 90th percentile, 2.0-3.4 mm
    at it."""
    assert genant_flags(_draws(18.5, 15.0, 22.0), possible=60.0) == []
    assert genant_flags(_draws(20.5, 17.0, 24.0), possible=60.0) == ["possible_genant_1"]
    assert slip_flags(_draws(1.8, 0.5, 3.2), possible=90.0) == []
    assert slip_flags(_draws(1.8, 0.5, 3.2), possible=97.5) == ["possible_slip"]
    assert slip_flags(_draws(2.7, 2.0, 3.4), possible=90.0) == ["possible_slip"]


def test_a_value_without_draws_is_its_own_interval() -> None:
    assert genant_flags(np.array([26.0])) == ["genant_2"] and slip_flags(np.array([-3.0])) == ["slip"]


def _row(image: str, measure: str, value: float, flags: str = "", unit: str = "grade") -> Measurement:
    return Measurement(image, measure, "C4" if measure == "genant_grade" else "C4-C5", value, unit, value, value, flags)


def test_flag_detection_counts_each_operating_point() -> None:
    truth = [_row("a", "genant_grade", 1), _row("b", "genant_grade", 2), _row("c", "genant_grade", 0),
             _row("a", "listhesis", 3.4, unit="mm"), _row("b", "listhesis", 1.0, unit="mm")]
    predicted = [_row("a", "genant_grade", 1, "genant_1"), _row("b", "genant_grade", 1, "possible_genant_2"),
                 _row("c", "genant_grade", 0, "prior_corner;possible_genant_1"),
                 _row("a", "listhesis", 2.9, "possible_slip", "mm"), _row("b", "listhesis", 1.2, "", "mm")]
    found = flag_detection(predicted, truth)
    sure, either = found["genant_N (Genant grade >= 1)"], found["genant_N or possible_genant_N"]
    assert (sure["sensitivity"], sure["specificity"]) == (0.5, 1.0)
    assert (either["sensitivity"], either["specificity"]) == (1.0, 0.0)
    assert found["slip (>= 3 mm)"]["sensitivity"] == 0.0 and found["slip or possible_slip"]["sensitivity"] == 1.0
    assert found["slip or possible_slip"]["specificity"] == 1.0


def test_prior_weight_falls_with_the_maps_confidence() -> None:
    off = DecodeConfig(prior_inflation=16.0)
    np.testing.assert_allclose(confidence_inflation(np.array([0.0, 0.5, 1.0, 0.2]), off), 16.0)
    sharp = DecodeConfig(prior_inflation=16.0, prior_sharp_inflation=1600.0)
    found = confidence_inflation(np.array([0.0, 0.5, 1.0, 1.7]), sharp)
    np.testing.assert_allclose(found, [16.0, 160.0, 1600.0, 1600.0])


def test_a_sharp_map_overrules_a_prior_it_disagrees_with() -> None:
    """Perfect maps of corners 0.1 vertebra sizes off the prior's mean (a deformed vertebra): a strong prior pulls
    the found corners towards its mean; weighted by the map's confidence, they stay on the maps' peaks."""
    from tests.conftest import make_spine
    from tests.test_postprocess import IMAGE_SHAPE, shifted_prior, synthetic_outputs
    from vcorner.geometry.frames import frames_from_centers
    from vcorner.postprocess.decode import decode_image

    spine = make_spine(n=4, angle_deg=10.0, size=60.0)
    corners = np.stack([v.corners for v in spine.vertebrae])
    frames = frames_from_centers(spine.centers)
    prior = shifted_prior(frames, corners, 0.1)
    maps, affines, owner = synthetic_outputs(frames, corners, flat=-1)
    names = [v.name for v in spine.vertebrae]
    errors = {}
    for sharp in (0.0, 1000.0):
        found = decode_image(maps, affines, owner, frames, names, prior, IMAGE_SHAPE,
                             DecodeConfig(prior_inflation=1.0, prior_sharp_inflation=sharp))
        errors[sharp] = np.mean([np.linalg.norm(f.xy - c, axis=1) for f, c in zip(found, corners, strict=True)])
    assert errors[0.0] > 1.0 and errors[1000.0] < 0.5 * errors[0.0]


def test_evaluate_reports_each_flags_sensitivity_and_specificity(tmp_path) -> None:
    """``vcorner evaluate`` prints and writes the sensitivity and specificity of every flag operating point."""
    import json

    from typer.testing import CliRunner

    from tests.conftest import crushed_spine_files
    from vcorner.cli import app

    crushed_spine_files(tmp_path, lambda i: 0.5)
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "corners.csv"), str(tmp_path / "annotations.json"),
                                      "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    assert "flag genant_N (Genant grade >= 1): sensitivity 100.0%, specificity 100.0%" in result.output
    assert "flag slip (>= 3 mm): sensitivity n/a" in result.output  # no slip annotated: no sensitivity, never 0%
    flags = json.loads((tmp_path / "eval" / "metrics.json").read_text())["measurements"]["flags"]
    assert flags["genant_N or possible_genant_N"]["positives"] == 1
    assert flags["genant_N or possible_genant_N"]["negatives"] == 4
