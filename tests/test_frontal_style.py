"""The frontal (AP) thoracolumbar phantom style (``vcorner synth --style ap``, :mod:`vcorner.phantoms.frontal`):
another view and region, for measuring that the tool says when a film is outside what it learned (issue #27)."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from vcorner.cli import app
from vcorner.geometry.sequence import checked_annotation
from vcorner.io.annotations import read_annotations
from vcorner.phantoms.frontal import render_frontal
from vcorner.phantoms.tall import ANNOTATED


def test_an_ap_film_shows_wide_bodies_t1_to_l5_in_order_on_bone():
    curves = set()
    for seed in range(6):
        pixels, record, info = render_frontal(np.random.default_rng(seed))
        height, width = pixels.shape
        names = [v.name for v in record.vertebrae]
        start = ANNOTATED.index(names[0])
        assert names == list(ANNOTATED[start:start + len(names)]) and len(names) >= 5  # one unbroken run
        assert height / width > 1.2 and 0.3 <= record.pixel_spacing_mm <= 0.5
        assert [v.name for v in checked_annotation(record).vertebrae] == names
        for v in record.vertebrae:
            assert np.all((v.corners >= 0) & (v.corners <= [width - 1, height - 1]))
            wide = np.linalg.norm(v.corners[1] - v.corners[0])
            tall = np.linalg.norm(v.corners[2] - v.corners[0])
            assert wide > 1.2 * tall  # seen from the front: wider than tall
            assert v.corners[1][0] > v.corners[0][0] and v.corners[2][1] > v.corners[0][1]  # film's left/right, up
            assert pixels[int(round(v.center[1])), int(round(v.center[0]))] > np.median(pixels)  # on bone
        curves.add(info["curve"])
    assert len(curves) >= 2


def test_vcorner_synth_style_ap_writes_a_dataset_with_its_truth(tmp_path):
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "ap"), "--images", "2", "--seed", "5", "--style", "ap",
                                      "--workers", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    records = read_annotations(tmp_path / "ap" / "annotations.json")
    assert len(records) == 2 and all(r.file.startswith("ap_") for r in records)
    assert json.loads((tmp_path / "ap" / "phantoms.json").read_text())["style"] == "ap"
    exact = read_annotations(tmp_path / "ap" / "truth.json")  # exact corners already: the same
    for r, e in zip(records, exact, strict=True):
        assert all(np.array_equal(a.corners, b.corners) for a, b in zip(r.vertebrae, e.vertebrae, strict=True))
