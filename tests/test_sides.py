"""The film's own anterior side against its view (``vcorner/geometry/sides.py``, README.md "Flags":
``view_contradicted``): the posterior-minus-anterior contrast of a known film, and clicked centres on a mirrored or
inverted film without their view flagged through ``vcorner batch``."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from vcorner.cli import app
from vcorner.geometry.frames import Frames, frames_from_centers
from vcorner.geometry.patches import build_pyramid
from vcorner.geometry.sides import film_side, side_contrast
from vcorner.geometry.views import mirror_frames

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "xrays"


def spine_film() -> tuple[np.ndarray, np.ndarray]:
    """A 400 x 300 film of five bodies 60 px apart on x = 150, facing +x: a bright column of bone behind them
    (x 60-95), dark air in front (x 205-240); and its five centres."""
    film = np.full((400, 300), 0.4, dtype=np.float32)
    film[:, 60:95] = 0.8
    film[:, 205:240] = 0.1
    centres = np.array([[150.0, 80.0 + 60.0 * i] for i in range(5)])
    for x, y in centres:
        film[int(y) - 22:int(y) + 22, int(x) - 27:int(x) + 27] = 0.9
    return film, centres


def test_the_bone_behind_the_bodies_reads_positive_and_a_mirrored_or_inverted_reading_negative():
    film, centres = spine_film()
    pyramid = build_pyramid(film)
    frames = frames_from_centers(centres)
    assert np.allclose(frames.axes[:, :, 0], [1.0, 0.0], atol=1e-6)  # +x anterior: the film faces +x
    contrast = side_contrast(pyramid, frames)
    assert contrast.shape == (5,) and np.all(contrast > 1.0)
    assert np.allclose(side_contrast(pyramid, mirror_frames(frames)), -contrast, atol=1e-5)
    assert np.allclose(side_contrast(pyramid, frames, inverted=True), -contrast, atol=1e-5)
    assert film_side(pyramid, frames) == pytest.approx(float(np.median(contrast)))
    assert film_side(pyramid, mirror_frames(frames)) < 0 and film_side(pyramid, frames, inverted=True) < 0
    assert film_side(pyramid, mirror_frames(frames), inverted=True) > 0  # both: the sides agree again
    none = Frames(centers=np.zeros((0, 2)), axes=np.zeros((0, 2, 2)), sizes=np.zeros(0))
    assert side_contrast(pyramid, none).shape == (0,) and np.isnan(film_side(pyramid, none))


def _write_centres(path: Path, rows: list[list[str]], view: str | None) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "vertebra", "x", "y", "pixel_spacing_mm"] + (["view"] if view else []))
        writer.writerows(r + ([view] if view else []) for r in rows)


@pytest.mark.parametrize(("pose", "view"), [("mirrored", "mirrored"), ("inverted", "inverted")])
def test_clicked_centres_on_a_film_read_in_the_wrong_view_are_flagged_and_the_right_view_is_not(tmp_path, pose, view):
    """An example film mirrored (patient facing left) or inverted (bone dark), its clicked centres moved with it: with
    no ``view`` column its corners' anterior and posterior labels would be swapped, so every row is flagged
    ``view_contradicted`` and run.json counts it; with its view given, no row is; the film as it is never is."""
    pixels = cv2.imread(str(EXAMPLES / "phantom_00000.png"), cv2.IMREAD_GRAYSCALE)
    w = pixels.shape[1]
    with open(EXAMPLES / "centers.csv", encoding="utf-8", newline="") as handle:
        rows = [r for r in csv.reader(handle)][1:]
    rows = [r for r in rows if r[0] == "phantom_00000.png"]
    films = tmp_path / "films"
    films.mkdir()
    posed = cv2.flip(pixels, 1) if pose == "mirrored" else 255 - pixels
    cv2.imwrite(str(films / "posed.png"), posed)
    cv2.imwrite(str(films / "as_is.png"), pixels)
    moved = [["posed.png", r[1], f"{w - 1 - float(r[2]):.3f}" if pose == "mirrored" else r[2], r[3], r[4]]
             for r in rows]
    plain = [["as_is.png", *r[1:5]] for r in rows]
    for given, expected in ((None, True), (view, False)):
        centres = tmp_path / f"centres-{given}.csv"
        _write_centres(centres, moved + plain if given is None else moved, given)
        out = tmp_path / f"out-{given}"
        result = CliRunner().invoke(app, ["batch", str(films), "--centers", str(centres), "--out", str(out)],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        with open(out / "corners.csv", encoding="utf-8", newline="") as handle:
            corners = list(csv.DictReader(handle))
        posed_flags = {"view_contradicted" in r["flags"].split(";") for r in corners if r["image"] == "posed.png"}
        assert posed_flags == {expected}
        assert not any("view_contradicted" in r["flags"] for r in corners if r["image"] == "as_is.png")
        if expected:
            assert "1 image(s) flagged view_contradicted" in result.output and "give it that view" in result.output
        else:
            assert "view_contradicted" not in result.output


def test_a_turned_film_the_view_finder_reads_mirrored_is_flagged_not_answered_swapped(tmp_path):
    """tests/data/varied_turned_read_mirrored.png: a varied validation film (seed 6363, film 10) turned by 35 degrees
    and halved. The view finder reads it mirrored without doubt, and before the side check every name went out right
    with its anterior and posterior corners swapped and no flag. Now it is read as it is, or flagged on every row."""
    films = tmp_path / "films"
    films.mkdir()
    name = "varied_turned_read_mirrored.png"
    (films / name).write_bytes((Path(__file__).parent / "data" / name).read_bytes())
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["batch", str(films), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with open(out / "centers.detected.csv", encoding="utf-8", newline="") as handle:
        detected = list(csv.DictReader(handle))
    with open(out / "corners.csv", encoding="utf-8", newline="") as handle:
        corners = list(csv.DictReader(handle))
    assert detected and corners
    if any("mirrored" in r["view"] for r in detected):
        assert all("view_contradicted" in r["flags"].split(";") for r in detected + corners)


def test_vcorner_detect_flags_a_film_named_in_the_wrong_mirror_as_the_batch_does(tmp_path):
    """``vcorner detect`` writes centres and views for review; the turned film the view finder reads mirrored went
    out there with every name right, its view wrong and no flag (only ``vcorner batch`` ran the side check). Now it
    is flagged on every row and named in a line after the summary; the example film beside it is not. With a
    corner model whose card leaves the check off (a frontal model's would), nothing is flagged."""
    import json

    films = tmp_path / "films"
    films.mkdir()
    name = "varied_turned_read_mirrored.png"
    (films / name).write_bytes((Path(__file__).parent / "data" / name).read_bytes())
    (films / "phantom_00000.png").write_bytes((EXAMPLES / "phantom_00000.png").read_bytes())

    def detect(out: Path, *extra: str) -> tuple[list[dict[str, str]], str]:
        result = CliRunner().invoke(app, ["detect", str(films), "--out", str(out), *extra], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        with open(out, encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle)), result.output

    rows, output = detect(tmp_path / "centres.csv")
    turned = [r for r in rows if r["image"] == name]
    example = [r for r in rows if r["image"] == "phantom_00000.png"]
    assert turned and example and all(r["view"] == "as_is" and r["flags"] == "" for r in example)
    assert all(r["view"] == "mirrored" for r in turned)  # the fixture's point: the shipped finder reads it so
    assert all("view_contradicted" in r["flags"].split(";") for r in turned)
    assert "1 image(s) flagged view_contradicted" in " ".join(output.split())
    shipped = Path(__file__).resolve().parents[1] / "vcorner" / "models" / "default.onnx"
    (tmp_path / "model.onnx").write_bytes(shipped.read_bytes())
    card = json.loads(Path(f"{shipped}.json").read_text(encoding="utf-8"))
    card["card"]["trust"]["side_check"] = False
    (tmp_path / "model.onnx.json").write_text(json.dumps(card), encoding="utf-8")
    rows, output = detect(tmp_path / "unchecked.csv", "--model", str(tmp_path / "model.onnx"))
    assert rows and not any("view_contradicted" in r["flags"] for r in rows)


def test_the_overlay_names_the_flags_every_vertebra_of_the_film_carries():
    """``--vis`` overlays say why a film is flagged in their top-left corner (what the README asks a user to check
    there): the flags every vertebra carries, in their order; a film without them is drawn untouched."""
    from vcorner.pipeline.overlay import draw_flags
    from vcorner.pipeline.overlay import shared_flags as image_flags
    from vcorner.postprocess.decode import VertebraCorners

    def vertebra(name: str, flags: tuple[str, ...]) -> VertebraCorners:
        return VertebraCorners(name, np.zeros((4, 2)), np.ones(4), np.tile(np.eye(2), (4, 1, 1)), ("network",) * 4,
                               flags)

    film = [vertebra("C3", ("view_contradicted", "patches_disagree")), vertebra("C4", ("view_contradicted",))]
    assert image_flags(film) == ["view_contradicted"] and image_flags([]) == []
    assert image_flags([vertebra("C3", ()), vertebra("C4", ("patches_disagree",))]) == []
    blank = np.zeros((200, 300, 3), np.uint8)
    assert not draw_flags(blank.copy(), []).any()
    drawn = draw_flags(blank.copy(), image_flags(film))
    assert drawn[:40, :200].any() and not drawn[60:].any()
