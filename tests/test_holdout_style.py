"""The validation-only phantom style (vcorner/phantoms/holdout.py): real films with true corners on the drawn
outline, in vcorner's formats, and refused by everything that trains or chooses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from vcorner.cli import app
from vcorner.io.annotations import read_annotations
from vcorner.io.centers import load_centers
from vcorner.phantoms.holdout import ANNOTATED, render_holdout

ROOT = Path(__file__).resolve().parents[1]


def test_a_holdout_film_has_its_corners_on_bright_bone_inside_the_film():
    for seed in range(3):
        pixels, record, info = render_holdout(np.random.default_rng(seed))
        h, w = pixels.shape
        assert info["style"] == "holdout" and 0.1 <= record.pixel_spacing_mm <= 0.2
        assert [v.name for v in record.vertebrae] == list(ANNOTATED)
        for v in record.vertebrae:
            assert np.all((v.corners >= 0) & (v.corners <= [w - 1, h - 1]))
            inside = v.corners + 0.3 * (v.corners.mean(axis=0) - v.corners)  # a step into the body
            bone = pixels[np.round(inside[:, 1]).astype(int), np.round(inside[:, 0]).astype(int)]
            assert np.all(bone > np.median(pixels)), (seed, v.name, bone)
            sides = np.linalg.norm(v.corners[[1, 3]] - v.corners[[0, 2]], axis=1) * record.pixel_spacing_mm
            assert np.all((12.0 < sides) & (sides < 22.0))  # bodies 15-17.5 mm deep, +-12%


def test_synth_writes_a_holdout_set_that_batch_reads_and_train_and_tune_refuse(tmp_path):
    data = tmp_path / "holdout"
    assert CliRunner().invoke(app, ["synth", str(data), "--images", "2", "--style", "holdout"]).exit_code == 0
    records = read_annotations(data / "annotations.json")
    assert [r.file for r in records] == ["holdout_00000.png", "holdout_00001.png"]
    assert len(load_centers(data / "centers.csv").records) == 2
    result = CliRunner().invoke(app, ["batch", str(data), "--centers", str(data / "centers.csv"), "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    for command in (["train", str(data), "--config", str(ROOT / "train" / "lite.toml"), "--out", str(tmp_path / "run")],
                    ["tune", str(ROOT / "vcorner" / "models" / "default.onnx"), str(data)]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2 and "for validation only" in result.output, result.output
    assert not (tmp_path / "run").exists()
