"""Evaluation (P2P, P2C, fit failure, tables, plots) and tuning of the decoding settings."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from vcorner import CORNER_NAMES
from vcorner.cli import app
from vcorner.evaluation.metrics import match, read_predictions, table1_row
from vcorner.io.annotations import read_annotations


def write_predictions(path, records, shift=(0.0, 0.0), drop=0):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "vertebra", "corner", "x", "y", "confidence", "source"])
        rows = [[r.file, v.name, name, v.corners[k, 0] + shift[0], v.corners[k, 1] + shift[1], 0.9, "network"]
                for r in records for v in r.vertebrae for k, name in enumerate(CORNER_NAMES)]
        writer.writerows(rows[drop:])


def test_errors_in_mm_and_fit_failure(toy_dataset, tmp_path):
    records = read_annotations(toy_dataset / "annotations.json")
    write_predictions(tmp_path / "p.csv", records, shift=(3.0, 4.0))  # 5 px = 0.75 mm at 0.15 mm/px
    row = table1_row(match(read_predictions(tmp_path / "p.csv"), records))
    assert row["unit"] == "mm" and row["corners"] == 4 * 5 * 4
    assert row["p2p_mean"] == pytest.approx(0.75) and row["p2p_std"] == pytest.approx(0.0, abs=1e-9)
    assert row["fit_failure_pct"] == 0.0
    write_predictions(tmp_path / "far.csv", records, shift=(30.0, 0.0))  # 4.5 mm: every corner fails
    assert table1_row(match(read_predictions(tmp_path / "far.csv"), records))["fit_failure_pct"] == 100.0


def test_p2c_is_zero_on_the_boundary(toy_dataset, tmp_path):
    records = read_annotations(toy_dataset / "annotations.json")
    write_predictions(tmp_path / "p.csv", records)
    row = table1_row(match(read_predictions(tmp_path / "p.csv"), records))
    assert row["p2p_mean"] == pytest.approx(0.0, abs=1e-3) and row["p2c_mean"] < 0.02


def test_evaluate_cli_reports_missing_corners_and_writes_plots(toy_dataset, tmp_path):
    records = read_annotations(toy_dataset / "annotations.json")
    write_predictions(tmp_path / "p.csv", records, shift=(1.0, 0.0), drop=3)
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "p.csv"), str(toy_dataset / "annotations.json"),
                                      "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    assert "P2P median" in result.output and "3 missing corner(s)" in result.output
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["overall"]["corners"] == 77 and len(report["missing"]) == 3
    assert set(report["per_corner"]) == set(CORNER_NAMES)
    for name in ("cumulative_error.png", "box_plots.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 5000


def test_tune_picks_a_grid_setting_and_calibrates(toy_dataset, tiny_onnx, tmp_path):
    from vcorner.cli.common import open_model
    from vcorner.evaluation.tune import infer_records, tune_decode

    model = tmp_path / "m.onnx"
    shutil.copy(tiny_onnx, model)
    shutil.copy(f"{tiny_onnx}.json", f"{model}.json")
    runner, resolved = open_model(model)
    card = resolved.card
    with runner:
        jobs = infer_records(toy_dataset, read_annotations(toy_dataset / "annotations.json"), runner, card)
    grid = {"prior_inflation": (1.0, 4.0), "min_peak": (0.05,)}
    result = tune_decode(jobs, card, grid)
    best = min(result.candidates, key=lambda c: c["p2p_mean"])
    assert len(result.candidates) == 2 and result.decode.prior_inflation == best["prior_inflation"]
    assert 0.25 <= result.decode.ellipse_scale <= 16.0
    assert 0.0 <= result.coverage["inside_95"] <= 1.0 and np.isfinite(best["p2p_mean"])


@pytest.mark.parametrize("method", ["prior", "harris"])
def test_baselines_write_corners_that_evaluate_reads(toy_dataset, tiny_onnx, tmp_path, method):
    out = tmp_path / method
    result = CliRunner().invoke(app, ["baseline", str(toy_dataset), "--centers", str(toy_dataset / "centers.csv"),
                                      "--method", method, "--model", str(tiny_onnx), "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = read_annotations(toy_dataset / "annotations.json")
    row = table1_row(match(read_predictions(out / "corners.csv"), records))
    assert row["corners"] == 80 and row["missing"] == 0
    # The toy bodies are exact rectangles of one shape: the prior alone is almost exact and Harris finds
    # the rectangle corners within a couple of pixels.
    assert row["p2p_mean"] < 0.5


def test_evaluate_compares_methods(toy_dataset, tmp_path):
    records = read_annotations(toy_dataset / "annotations.json")
    write_predictions(tmp_path / "a.csv", records, shift=(1.0, 0.0))
    write_predictions(tmp_path / "b.csv", records, shift=(2.0, 0.0))
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "a.csv"), str(toy_dataset / "annotations.json"),
                                      "--compare", f"b={tmp_path / 'b.csv'}"])
    assert result.exit_code == 0, result.output
    assert "relative improvement of vcorner over b in mean P2P: 50%" in result.output


def test_calibration_counts_corners_inside_ellipses():
    from vcorner.evaluation.metrics import CornerErrors, calibration, ellipse_cov

    rng = np.random.default_rng(0)
    cov = ellipse_cov(3.0, 1.0, 30.0)
    offsets = rng.multivariate_normal([0, 0], cov, size=4000)
    d2 = [float(o @ np.linalg.solve(cov, o)) for o in offsets]
    calib = calibration(CornerErrors(d2=d2, source=["network"] * len(d2)))
    assert calib["inside_50"] == pytest.approx(0.5, abs=0.03) and calib["inside_95"] == pytest.approx(0.95, abs=0.015)


def test_patch_mode_reports_bc_and_a_histogram(toy_dataset, tiny_onnx, tmp_path):
    from vcorner.evaluation.patch_bc import bhattacharyya

    y = np.zeros((1, 4, 4))
    y[0, 0, :2] = 0.5
    assert bhattacharyya(y, y)[0] == pytest.approx(1.0)
    result = CliRunner().invoke(app, ["evaluate", str(tiny_onnx), str(toy_dataset / "annotations.json"),
                                      "--patches", "--out", str(tmp_path / "pbc")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "pbc" / "patch_bc.json").read_text())
    assert summary["patches"] == 4 * 5 * 4 and 0.0 < summary["mean"] < 1.0  # 4 images x 5 vertebrae x 4 patches
    assert (tmp_path / "pbc" / "patch_bc.png").stat().st_size > 5000


def test_tune_sampling_picks_the_fewest_patches_within_the_tolerance_and_updates_the_variants(toy_dataset, tiny_onnx,
                                                                                            tmp_path):
    from vcorner.models.modelfile import read_model_card

    model = tmp_path / "m.onnx"
    for suffix in ("", ".json"):
        shutil.copy(f"{tiny_onnx}{suffix}", f"{model}{suffix}")
    int8 = tmp_path / "m.int8.onnx"  # stands in for the INT8 variant: the card is what is checked
    int8.write_bytes(tiny_onnx.read_bytes())
    note = {"precision": "int8", "source_sha256": "ab" * 32}
    from dataclasses import replace

    from vcorner.models.modelfile import write_sidecar

    card = read_model_card(model)
    write_sidecar(int8, replace(card, training={**card.training, "quantization": note}))
    report = tmp_path / "tune.json"
    result = CliRunner().invoke(app, ["tune", str(model), str(toy_dataset), "--sampling", "--sampling-tolerance",
                                      "0.5", "--precision", "fp32", "--report", str(report)])
    assert result.exit_code == 0, result.output
    scores = json.loads(report.read_text())["sampling_variants"]
    own, allowed = scores[0]["p2p_mean"], [s for s in scores if s["p2p_mean"] <= scores[0]["p2p_mean"] + 0.5]
    tuned = read_model_card(model)
    assert tuned.sampling.patches_per_vertebra == min(s["patches_per_vertebra"] for s in allowed)
    assert tuned.training["before_tuning"]["sampling"]["grid_steps"] == card.sampling.grid_steps and own > 0
    assert read_model_card(int8).sampling == tuned.sampling  # the variant decodes alike
    assert read_model_card(int8).training["quantization"] == note
    # an untrained network puts no corner of its own: too few to refit the card's trust, kept with a line saying so
    assert "trust: kept the card's" in result.output and tuned.trust == card.trust
    said_fitted = "corner offset fitted" in result.output
    assert said_fitted == bool(tuned.decode.corner_offset) and (said_fitted or "no corner offset" in result.output)
    # tuned again, it starts from the sampling it was made with, not from the one the first tune chose
    again = CliRunner().invoke(app, ["tune", str(model), str(toy_dataset), "--sampling", "--sampling-tolerance", "0",
                                     "--precision", "fp32", "--report", str(report)])
    assert again.exit_code == 0, again.output
    rescored = json.loads(report.read_text())["sampling_variants"]
    assert rescored[0]["patches_per_vertebra"] == card.sampling.patches_per_vertebra == 4
    assert read_model_card(model).training["before_tuning"] == tuned.training["before_tuning"]
