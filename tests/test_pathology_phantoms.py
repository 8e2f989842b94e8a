"""Phantoms with clinical pathology (``vcorner synth --pathology clinical``): grades, shapes and slips a reader
looks for, true corners in the annotations, and the default renderer left as it was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vcorner.cli import app
from vcorner.measure import definitions as d
from vcorner.phantoms.anatomy import ANNOTATED, sample_shape, sample_spine
from vcorner.phantoms.dataset import render_phantom
from vcorner.phantoms.pathology import corner_loss, fracture_shape, sample_clinical_spine, sample_spine_with, wedge_for


@pytest.fixture(scope="module")
def spines() -> list:
    return [sample_clinical_spine(np.random.default_rng(i), osteoporotic=i % 4 == 1) for i in range(300)]


def _truth(spine) -> tuple[np.ndarray, np.ndarray]:
    """Genant grades (5,) and slips (4,) mm of the annotated C3-C7 corners of a spine (mm frame)."""
    xy = np.stack([spine.body(name).corners() for name in ANNOTATED])[None]
    return d.genant_grade(d.height_loss(d.heights(xy)))[0], d.listhesis(xy)[0][0]


def test_rare_is_the_default_renderer_unchanged() -> None:
    """``rare`` draws exactly :func:`sample_spine`'s spine from the same generator state."""
    for seed in range(20):
        a, b = sample_spine(np.random.default_rng(seed)), sample_spine_with("rare", np.random.default_rng(seed))
        assert all(np.array_equal(u.corners(), v.corners()) for u, v in zip(a.bodies, b.bodies, strict=True))
        assert a.listhesis == b.listhesis and a.fracture == b.fracture
    with pytest.raises(ValueError, match="pathology"):
        sample_spine_with("severe", np.random.default_rng(0))


def test_every_genant_grade_and_both_slip_directions(spines) -> None:
    """Grades 1-3 each in at least 1% of C3-C7 bodies, and no more than 15% fractured in all; slips >= 3 mm both
    ways, up to 8 mm."""
    grades = np.concatenate([_truth(s)[0] for s in spines])
    slips = np.concatenate([_truth(s)[1] for s in spines])
    share = [float(np.mean(grades == g)) for g in (1, 2, 3)]
    assert min(share) >= 0.01 and sum(share) <= 0.15, share
    assert np.sum(slips >= 3.0) >= 20 and np.sum(slips <= -3.0) >= 10
    assert 6.0 < np.abs(slips).max() <= 8.5
    shapes = {f[1] for s in spines for f in s.fractures}
    assert shapes == {"wedge", "crush", "biconcave", "mild"}
    assert sum(bool(s.fused) for s in spines) >= 5


def test_wedge_reaches_its_target_height_loss() -> None:
    shape = sample_shape(np.random.default_rng(2), 3, 1.0, 0.5)
    for loss in (0.1, 0.22, 0.33, 0.5):
        assert corner_loss(wedge_for(shape, loss)) == pytest.approx(loss, abs=1e-3)
    crushed = fracture_shape(shape, "crush", 0.3, np.random.default_rng(0))
    assert crushed.height == pytest.approx(shape.height * 0.7)
    with pytest.raises(ValueError, match="unknown fracture shape"):
        fracture_shape(shape, "burst", 0.3, np.random.default_rng(0))


def test_annotations_keep_the_true_corners_of_a_fracture() -> None:
    """The rendered record of a fractured spine holds the deformed body's own corners (within annotator noise)."""
    for seed in range(60):
        pixels, record, meta = render_phantom(np.random.default_rng(seed), fmt="png8", pathology="clinical")
        grades = [f for f in meta["pathology"]["fractures"] if f[1] in ("wedge", "crush")]
        if grades:
            break
    name = grades[0][0]
    vertebra = next(v for v in record.vertebrae if v.name == name)
    mm = 1.0 / record.pixel_spacing_mm
    assert np.hypot(*(vertebra.corners - meta["truth"][name].corners).T).max() < 2.0 * mm
    truth = np.stack([meta["truth"][n].corners for n in ANNOTATED])[None]
    assert d.height_loss(d.heights(truth))[0][ANNOTATED.index(name)] > 0.15


def test_cli_synth_pathology(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["synth", str(tmp_path / "p"), "--images", "2", "--seed", "3", "--workers", "1",
                                 "--pathology", "clinical"])
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "p" / "phantoms.json").read_text())
    assert document["pathology"] == "clinical"
    assert all(m["pathology"]["kind"] == "clinical" for m in document["images"])
    refused = runner.invoke(app, ["synth", str(tmp_path / "q"), "--images", "1", "--pathology", "clinical",
                                  "--style", "holdout"])
    assert refused.exit_code != 0 and "pathology" in refused.output
    unknown = runner.invoke(app, ["synth", str(tmp_path / "r"), "--images", "1", "--pathology", "many"])
    assert unknown.exit_code != 0 and "pathology" in unknown.output
