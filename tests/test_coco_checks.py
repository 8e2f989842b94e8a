"""Issue #28 (cases 3, 7, 8, 14, 16): ``vcorner convert`` never replaces a file the user had, refuses
inconsistent or malformed COCO in one line (file, entry, field), and round-trips any vertebra names exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vcorner import CORNER_NAMES
from vcorner.cli import app
from vcorner.io.annotations import read_annotations

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "xrays"


def _convert(*args: object):
    return CliRunner().invoke(app, ["convert", *map(str, args)])


def _one_error_line(result) -> str:
    """The single ``error:`` line of a refused command (exit code 2, no traceback)."""
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), (result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def _coco(images=None, categories=None, annotations=None) -> dict:
    """A small valid COCO keypoints document: one image, vertebrae C3 and C4."""
    keypoints = list(CORNER_NAMES)
    return {
        "images": images if images is not None else [{"id": 1, "file_name": "a.png", "width": 100, "height": 80,
                                                      "pixel_spacing_mm": 0.2}],
        "categories": categories if categories is not None else [
            {"id": 1, "name": "C3", "keypoints": keypoints}, {"id": 2, "name": "C4", "keypoints": keypoints}],
        "annotations": annotations if annotations is not None else [
            {"id": 1, "image_id": 1, "category_id": 1, "keypoints": [10, 10, 2, 50, 10, 2, 10, 30, 2, 50, 30, 2]},
            {"id": 2, "image_id": 1, "category_id": 2, "keypoints": [10, 40, 2, 50, 40, 2, 10, 60, 2, 50, 60, 2]}],
    }


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


# Case 3: an output never replaces a file the user had.

def test_convert_onto_its_own_input_is_refused_even_with_force(tmp_path):
    src = tmp_path / "corners.csv"
    src.write_text("image,vertebra,corner,x,y\n")
    before = src.read_text()
    for extra in ([], ["--force"]):
        line = _one_error_line(_convert(src, src, *extra))
        assert "is an input of this command" in line
    assert src.read_text() == before and not list(tmp_path.glob("previous-*"))


def test_convert_onto_an_existing_file_needs_force_and_keeps_the_old_one(tmp_path):
    dst = tmp_path / "coco.json"
    dst.write_text("mine")
    line = _one_error_line(_convert(EXAMPLES / "annotations.json", dst))
    assert "--force" in line and str(dst) in line and dst.read_text() == "mine"
    result = _convert(EXAMPLES / "annotations.json", dst, "--force")
    assert result.exit_code == 0, result.output
    (kept,) = tmp_path.glob("previous-*/coco.json")
    assert kept.read_text() == "mine" and json.loads(dst.read_text())["annotations"]
