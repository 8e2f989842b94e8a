"""Many-level films (README.md, "Many-level films"): the tall phantom style, views of any (height, width), peak
decoding that follows the view's geometry, and the tall detector recipe through ``vcorner train``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vcorner.cli import app
from vcorner.config import DetectionConfig
from vcorner.geometry.letterbox import detector_input, letterbox_affine, to_grid
from vcorner.geometry.patches import build_pyramid
from vcorner.geometry.sequence import checked_annotation
from vcorner.io.annotations import read_annotations
from vcorner.io.records import anatomical_rank
from vcorner.phantoms.tall import ANNOTATED, render_tall
from vcorner.postprocess.peaks import decode_detections, decode_view, decoding_limits

RECIPE = Path(__file__).resolve().parents[1] / "train" / "detector-tall.toml"
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_a_tall_film_names_t1_to_l5_in_order_with_corners_around_each_centre():
    full = cropped = 0
    for seed in range(8):
        pixels, record, info = render_tall(np.random.default_rng(seed))
        height, width = pixels.shape
        names = [v.name for v in record.vertebrae]
        start = ANNOTATED.index(names[0])
        assert names == list(ANNOTATED[start:start + len(names)]) and len(names) >= 5  # one unbroken run
        assert height / width > 1.4 and 0.3 <= record.pixel_spacing_mm <= 0.5
        checked = checked_annotation(record)  # the centre checks accept T1-L5 as they come
        assert [v.name for v in checked.vertebrae] == names
        assert [anatomical_rank(n) for n in names] == sorted(anatomical_rank(n) for n in names)
        for v in record.vertebrae:
            assert np.all((v.corners >= 0) & (v.corners <= [width - 1, height - 1]))
            assert np.linalg.norm(v.center - v.corners.mean(axis=0)) < 3.0 / record.pixel_spacing_mm
            superior, inferior = (v.corners[0] + v.corners[1]) / 2, (v.corners[2] + v.corners[3]) / 2
            assert inferior[1] > superior[1]  # cranial side up
            assert pixels[int(round(v.center[1])), int(round(v.center[0]))] > np.median(pixels)  # on bone
        if len(names) == 17:
            full += 1
            tall = [np.linalg.norm((v.corners[2] + v.corners[3] - v.corners[0] - v.corners[1]) / 2)
                    for v in record.vertebrae]
            assert tall[-1] > 1.4 * tall[0]  # bodies grow caudally
        cropped += info["crop"] != "full"
    assert full >= 2 and cropped >= 1


def test_vcorner_synth_style_tall_writes_a_dataset_the_readers_accept(tmp_path):
    result = run_cli("synth", tmp_path / "tall", "--images", 2, "--seed", 5, "--style", "tall", "--workers", 1)
    assert result.exit_code == 0, result.output
    records = read_annotations(tmp_path / "tall" / "annotations.json")
    assert len(records) == 2 and all(r.file.startswith("tall_") for r in records)
    assert json.loads((tmp_path / "tall" / "phantoms.json").read_text())["style"] == "tall"


def test_a_non_square_letterbox_keeps_the_square_one_and_fits_a_tall_film():
    assert np.array_equal(letterbox_affine((400, 300), 128), letterbox_affine((400, 300), (128, 128)))
    affine = letterbox_affine((1000, 400), (256, 96))
    corners = to_grid(affine, np.array([[0.0, 0.0], [399.0, 999.0]]))
    assert np.all(corners >= -0.5) and np.all(corners <= [95.5, 255.5])
    assert affine[0, 0] == pytest.approx(max(1000 / 256, 400 / 96))
    view = detector_input(build_pyramid(np.random.default_rng(0).random((1000, 400)).astype(np.float32)), affine,
                          (256, 96))
    assert view.shape == (1, 1, 256, 96)
    assert DetectionConfig(input_size=256, input_width=96).input_shape == (256, 96)
    assert DetectionConfig().input_shape == (128, 128)


def two_peaks(distance: float, sd: float = 1.0, size: int = 128) -> np.ndarray:
    """Maps of two names, each a Gaussian of ``sd`` px, ``distance`` px apart down the grid's middle column."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    maps = []
    for y in (60.0, 60.0 + distance):
        g = np.exp(-0.5 * ((xx - 64.0) ** 2 + (yy - y) ** 2) / sd**2)
        maps.append(g / g.sum())
    return np.stack(maps).astype(np.float32)


def test_neighbours_6_px_apart_are_both_kept_when_the_view_geometry_says_so():
    maps = two_peaks(6.0)
    shipped = DetectionConfig()
    assert decoding_limits(shipped) == (6.0, 20.0)  # the shipped 128 px detector: fixed constants, as before
    lost = decode_view(maps, ("T1", "T2"), IDENTITY, shipped)[0]
    assert min(d.confidence for d in lost) < 0.05  # both sharp maps flattened (spread 12.6 px < 20) or suppressed
    tall = DetectionConfig(spacing_px=6.6)  # a 17-level film in 128 px
    suppress, spread = decoding_limits(tall)
    assert suppress < 6.0 and spread < 4 * np.pi  # under the distance and under a 1 px Gaussian's spread
    found = decode_view(maps, ("T1", "T2"), IDENTITY, tall)[0]
    assert [d.name for d in found] == ["T1", "T2"] and min(d.confidence for d in found) > 0.5
    assert np.allclose([d.xy for d in found], [[64.0, 60.0], [64.0, 66.0]], atol=0.05)


def test_without_a_recorded_geometry_the_decoding_is_the_shipped_one():
    rng = np.random.default_rng(3)
    for _ in range(5):
        maps = rng.random((5, 128, 128)).astype(np.float32) ** 8
        maps[rng.integers(0, 5)] = two_peaks(14.0, 2.0)[0]
        maps /= maps.sum(axis=(1, 2), keepdims=True)
        names = ("C3", "C4", "C5", "C6", "C7")
        old = decode_detections(maps, names, IDENTITY, 3.0)
        new = decode_view(maps, names, IDENTITY, DetectionConfig())[0]
        assert [(d.name, d.xy.tolist(), d.confidence) for d in old] == [(d.name, d.xy.tolist(), d.confidence)
                                                                          for d in new]


def test_the_tall_recipe_trains_through_vcorner_train_and_detects_on_a_non_square_view(tmp_path):
    data = tmp_path / "tall"
    assert run_cli("synth", data, "--images", 6, "--seed", 8, "--style", "tall", "--workers", 1).exit_code == 0
    text = RECIPE.read_text()
    shrunk = tmp_path / "tall.toml"
    shrunk.write_text(text.replace("epochs = 20", "epochs = 1\nmax_steps = 1").replace("batch_size = 16",
                                                                                       "batch_size = 2"))
    assert "max_steps = 1" in shrunk.read_text()
    result = run_cli("train", data, "--config", shrunk, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    from vcorner.models.detector_card import DetectorCard
    from vcorner.models.modelfile import read_checkpoint_card

    card = read_checkpoint_card(tmp_path / "run" / "model.safetensors", DetectorCard)
    assert card.names[0] == "T1" and card.input_shape == (256, 96)
    assert card.detection.spacing_px > 0  # the training views' geometry, which the decoding follows
    assert run_cli("export", tmp_path / "run", "--out", tmp_path / "tall.onnx").exit_code == 0
    result = run_cli("detect", data, "--detector", tmp_path / "tall.onnx", "--out", tmp_path / "c.csv",
                     "--min-confidence", 0.0)
    assert result.exit_code in (0, 1), result.output  # an untrained detector may find nothing, but runs
    assert card.model_args["head_width"] == 48  # the hidden map head: 17 maps from 8 first-level features
    second = tmp_path / "tall-2.toml"  # the second stage starts from the first's weights
    second.write_text(RECIPE.with_name("detector-tall-2.toml").read_text().replace(
        "epochs = 40", "epochs = 1\nmax_steps = 1").replace("batch_size = 16", "batch_size = 2"))
    result = run_cli("train", data, "--config", second, "--init", tmp_path / "run", "--out", tmp_path / "run2")
    assert result.exit_code == 0, result.output
    card = read_checkpoint_card(tmp_path / "run2" / "model.safetensors", DetectorCard)
    assert card.training["recipe"] == "detector-tall-2" and card.training["init"]["epoch"] == 1
    third = tmp_path / "tall-3.toml"  # the third stage starts from the second's, at a lower learning rate
    third.write_text(RECIPE.with_name("detector-tall-3.toml").read_text().replace(
        "epochs = 20", "epochs = 1\nmax_steps = 1").replace("batch_size = 16", "batch_size = 2"))
    result = run_cli("train", data, "--config", third, "--init", tmp_path / "run2", "--out", tmp_path / "run3")
    assert result.exit_code == 0, result.output
    card = read_checkpoint_card(tmp_path / "run3" / "model.safetensors", DetectorCard)
    assert card.training["recipe"] == "detector-tall-3"
    assert card.training["init"]["checkpoint"] == str(tmp_path / "run2")
