"""Phantoms: determinism, valid annotations that match the drawn anatomy, hard cases, formats, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from vcorner import CORNER_NAMES
from vcorner.cli import app
from vcorner.io.annotations import read_annotations
from vcorner.io.centers import read_centers
from vcorner.io.images import read_image
from vcorner.io.records import ImageRecord
from vcorner.phantoms.anatomy import ANNOTATED
from vcorner.phantoms.dataset import HARD_CASES, render_phantom, schedule, synthesize_dataset
from vcorner.phantoms.overlay import CORNER_COLOURS, draw_annotations
from vcorner.phantoms.shapes import point_to_polygon_distance

N_IMAGES = 3  # formats png8, dcm_mono1 (a hard case), png16


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, list[ImageRecord]]:
    out = tmp_path_factory.mktemp("phantoms")
    return out, synthesize_dataset(out, N_IMAGES, seed=5, workers=1)


@pytest.fixture(scope="module")
def rendered() -> list[tuple[np.ndarray, ImageRecord, dict]]:
    """Two phantoms with their noise-free truth: a typical one and a hard one."""
    return [render_phantom(np.random.default_rng(11), hard=False), render_phantom(np.random.default_rng(12), hard=True)]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_seed_same_bytes_regardless_of_workers(dataset, tmp_path: Path) -> None:
    out, _ = dataset
    progress: list[int] = []
    synthesize_dataset(tmp_path, N_IMAGES, seed=5, workers=2, progress=progress.append)
    assert _files(tmp_path) == _files(out)
    assert sum(progress) == N_IMAGES


def test_render_is_deterministic_and_seed_dependent() -> None:
    a = render_phantom(np.random.default_rng(3), fmt="png8")
    b = render_phantom(np.random.default_rng(3), fmt="png8")
    c = render_phantom(np.random.default_rng(4), fmt="png8")
    assert np.array_equal(a[0], b[0]) and a[2]["format"] == "png8"
    assert all(np.array_equal(u.corners, v.corners) for u, v in zip(a[1].vertebrae, b[1].vertebrae, strict=True))
    assert a[0].shape != c[0].shape or not np.array_equal(a[0], c[0])


def test_annotations_and_centres_are_valid(dataset) -> None:
    out, records = dataset
    written = read_annotations(out / "annotations.json")
    centres = {r.file: r for r in read_centers(out / "centers.csv")}
    assert [r.file for r in written] == [f"phantom_{i:05d}{s}" for i, s in enumerate((".png", ".dcm", ".png"))]
    for record, returned in zip(written, records, strict=True):
        assert [v.name for v in record.vertebrae] == list(ANNOTATED)
        assert 0.1 <= record.pixel_spacing_mm <= 0.2
        assert centres[record.file].pixel_spacing_mm == pytest.approx(record.pixel_spacing_mm, rel=1e-5)
        np.testing.assert_allclose(centres[record.file].centers, record.centers, atol=1e-3)
        for v, w in zip(record.vertebrae, returned.vertebrae, strict=True):
            assert v.corners.shape == (4, 2) and 12 <= len(v.boundary) <= 20
            np.testing.assert_allclose(v.corners, w.corners, atol=1e-3)


def test_formats_read_back(dataset) -> None:
    out, records = dataset
    meta = json.loads((out / "phantoms.json").read_text())["images"]
    assert [m["format"] for m in meta] == ["png8", "dcm_mono1", "png16"]
    bits = []
    for record, info in zip(records, meta, strict=True):
        image = read_image(out / record.file)
        assert list(image.pixels.shape) == info["shape"]
        bits.append(image.bits)
    assert bits == [8, 12, 16]
    assert read_image(out / records[1].file).pixel_spacing_mm == pytest.approx(records[1].pixel_spacing_mm, rel=1e-5)


def _inside(points: np.ndarray, shape: tuple[int, int]) -> bool:
    return bool(np.all(points >= 0) and np.all(points[:, 0] <= shape[1] - 1) and np.all(points[:, 1] <= shape[0] - 1))


def test_annotations_match_the_true_anatomy(rendered) -> None:
    for pixels, record, meta in rendered:
        mm = 1.0 / record.pixel_spacing_mm
        for v in record.vertebrae:
            truth = meta["truth"][v.name]
            assert _inside(v.center[None], pixels.shape)
            if not (meta["cropped"] and v.name == "C7"):
                assert _inside(v.corners, pixels.shape) and _inside(v.boundary, pixels.shape)
            assert point_to_polygon_distance(v.corners, truth.outline).max() < 1.5 * mm
            assert np.hypot(*(v.corners - truth.corners).T).max() < 2.0 * mm
            assert point_to_polygon_distance(v.boundary, truth.outline).max() < 1.5 * mm
            assert 0 < np.hypot(*(v.center - truth.centroid)) < 12.0


def test_truth_json_holds_the_exact_corners_the_clicks_scatter_around(dataset) -> None:
    """``truth.json`` is ``annotations.json`` without the annotator: same films and names, each corner the one the
    phantom's anatomy puts there (the clicks are within a few click sd of it, and not on it)."""
    out, records = dataset
    exact = read_annotations(out / "truth.json")
    assert [r.file for r in exact] == [r.file for r in records]
    offsets = []
    for clicked, true in zip(records, exact, strict=True):
        assert [v.name for v in true.vertebrae] == [v.name for v in clicked.vertebrae]
        assert true.pixel_spacing_mm == pytest.approx(clicked.pixel_spacing_mm, rel=1e-5)
        for c, t in zip(clicked.vertebrae, true.vertebrae, strict=True):
            offsets.append((c.corners - t.corners) * clicked.pixel_spacing_mm)
    offsets = np.concatenate(offsets)
    assert 0.2 < offsets.std() < 0.5  # the annotator's 0.35 mm per axis (vcorner/phantoms/annotate.py)
    rendered_again = render_phantom(np.random.default_rng(np.random.SeedSequence(5).spawn(N_IMAGES)[0]),
                                    fmt=schedule(0)[0], hard=schedule(0)[1])[2]["truth"]
    for v in exact[0].vertebrae:
        np.testing.assert_allclose(v.corners, rendered_again[v.name].corners, atol=1e-3)


@pytest.mark.parametrize("style", ["varied", "holdout"])
def test_truth_json_of_other_styles(tmp_path: Path, style: str) -> None:
    """The varied style's clicks scatter about its truth; the holdout renderer annotates exact corners already."""
    records = synthesize_dataset(tmp_path, 2, seed=3, workers=1, style=style)
    exact = read_annotations(tmp_path / "truth.json")
    moved = np.concatenate([np.hypot(*(c.corners - t.corners).T) for r, e in zip(records, exact, strict=True)
                            for c, t in zip(r.vertebrae, e.vertebrae, strict=True)])
    assert moved.max() == 0.0 if style == "holdout" else moved.min() > 0.0


def test_corner_order_follows_the_vertebra_frame(rendered, dataset) -> None:
    records = [r for _, r, _ in rendered] + dataset[1]
    for record in records:
        centres = record.centers
        for i, v in enumerate(record.vertebrae):
            down = centres[min(i + 1, len(centres) - 1)] - centres[max(i - 1, 0)]
            down /= np.hypot(*down)
            anterior = np.array([down[1], -down[0]])  # the patient faces right: +x when the spine runs down
            along, across = v.corners @ down, v.corners @ anterior
            assert max(along[0], along[1]) < min(along[2], along[3]), (record.file, v.name)
            assert max(across[0], across[2]) < min(across[1], across[3]), (record.file, v.name)


def test_bodies_are_brighter_than_the_tissue_in_front(dataset) -> None:
    """The images show the annotated bodies where the annotations say (also through DICOM MONOCHROME1)."""
    out, records = dataset
    for record in records:
        image = read_image(out / record.file).pixels
        mm = 1.0 / record.pixel_spacing_mm
        for v in record.vertebrae[:2]:
            mask = np.zeros(image.shape, np.uint8)
            cv2.fillPoly(mask, [np.round(v.boundary).astype(np.int32)], 1)
            inner = cv2.erode(mask, np.ones((int(2 * mm),) * 2, np.uint8)) > 0
            front = (v.corners[1] + v.corners[3]) / 2 + ((v.corners[1] + v.corners[3]) / 2 - v.center) * 0.35
            x, y = np.round(front).astype(int)
            ring = image[y - 3 : y + 4, x - 3 : x + 4]
            assert image[inner].mean() > ring.mean(), (record.file, v.name)


def test_hard_cases_in_at_least_a_fifth(dataset) -> None:
    assert sum(schedule(i)[1] for i in range(20)) >= 4
    meta = json.loads((dataset[0] / "phantoms.json").read_text())["images"]
    assert [bool(m["hard_cases"]) for m in meta] == [schedule(i)[1] for i in range(N_IMAGES)]
    assert all(set(m["hard_cases"]) <= set(HARD_CASES) for m in meta)


def test_hard_phantom_reports_its_cases(rendered) -> None:
    typical, hard = rendered[0][2], rendered[1][2]
    assert typical["hard_cases"] == [] and hard["hard_cases"]
    assert ("metal" in hard["hard_cases"]) == ("hardware" in hard)


def test_overlay_draws_corner_colours(rendered) -> None:
    pixels, record, _ = rendered[0]
    rgb = draw_annotations(pixels, record)
    assert rgb.shape == (*pixels.shape, 3) and rgb.dtype == np.uint8
    for name, corner in zip(CORNER_NAMES, record.vertebrae[2].corners, strict=True):
        x, y = np.round(corner).astype(int)
        assert tuple(rgb[y, x]) == CORNER_COLOURS[name]


def test_cli_synth_writes_a_dataset(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "cli"), "--images", "2", "--seed", "1", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert len(read_annotations(tmp_path / "cli" / "annotations.json")) == 2
    assert "2 phantom" in result.output


@pytest.mark.parametrize("target", ["a_file", "a_file/below"])
def test_cli_synth_unwritable_output_is_one_line_exit_2(tmp_path: Path, target: str) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    result = CliRunner().invoke(app, ["synth", str(tmp_path / target), "--images", "1"])
    assert result.exit_code == 2
    assert "error:" in result.output and len(result.output.strip().splitlines()) == 1
