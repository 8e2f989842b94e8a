"""Films in other poses through ``vcorner batch`` without centres, with the shipped detector (issue #33): each
film mirrored, flipped top to bottom, turned half a turn, turned by -35 degrees, inverted, cut to C5-C7, with
its C5 pasted a second time beside the spine, and put beside another film ends in the right names, or in a
named flag or refusal; never in wrong names given as sure."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from vcorner.cli import app
from vcorner.io.annotations import read_annotations

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "xrays"
FILMS = ("phantom_00000.png", "phantom_00002.png")


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def moved(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return np.asarray(points) @ affine[:, :2].T + affine[:, 2]


def pose(pixels: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The film in pose ``name`` and the (2, 3) affine taking its points there."""
    h, w = pixels.shape[:2]
    if name == "mirrored":
        affine = np.array([[-1.0, 0, w - 1], [0, 1.0, 0]])
    elif name == "upside_down":
        affine = np.array([[1.0, 0, 0], [0, -1.0, h - 1]])
    elif name == "turned_180":
        affine = np.array([[-1.0, 0, w - 1], [0, -1.0, h - 1]])
    elif name == "turned_-35":
        affine = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), -35.0, 1.0)
    else:
        affine = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    out = cv2.warpAffine(pixels, affine, (w, h), flags=cv2.INTER_LINEAR, borderValue=int(pixels.min()))
    return (255 - out if name == "inverted" else out), affine


def pasted(pixels: np.ndarray, c4, c5, c6) -> np.ndarray:
    """The film with its C5 body pasted a second time beside the spine (1.6 vertebra spacings to one side, where
    the copy fits): a film with one vertebra twice (issue #27's bad input)."""
    x, y = c5.center
    half = int(0.25 * (c6.center[1] - c4.center[1]))
    box = pixels[int(y) - half:int(y) + half, int(x) - int(1.2 * half):int(x) + int(1.2 * half)].copy()
    shift = int(3.2 * half) * (1 if x + 4.4 * half < pixels.shape[1] else -1)
    out = pixels.copy()
    out[int(y) - half:int(y) + half, int(x) - int(1.2 * half) + shift:int(x) + int(1.2 * half) + shift] = box
    return out


@pytest.fixture(scope="module")
def posed(tmp_path_factory):
    """Two example films in each pose, with the true centres moved along: file -> name -> (x, y)."""
    root = tmp_path_factory.mktemp("posed")
    truth: dict[str, dict[str, np.ndarray]] = {}
    spacing: dict[str, float] = {}
    records = {r.file: r for r in read_annotations(EXAMPLES / "annotations.json")}
    for film in FILMS:
        pixels = cv2.imread(str(EXAMPLES / film), cv2.IMREAD_GRAYSCALE)
        for name in ("mirrored", "upside_down", "turned_180", "turned_-35", "inverted"):
            out, affine = pose(pixels, name)
            file = f"{name}_{film}"
            cv2.imwrite(str(root / file), out)
            truth[file] = {v.name: moved(v.center, affine) for v in records[film].vertebrae}
            spacing[file] = records[film].pixel_spacing_mm
        c4, c5 = (next(v for v in records[film].vertebrae if v.name == n) for n in ("C4", "C5"))
        top = int(0.5 * (c4.corners[:, 1].max() + c5.corners[:, 1].min()))
        cv2.imwrite(str(root / f"cropped_{film}"), pixels[top:])
        truth[f"cropped_{film}"] = {v.name: v.center - [0, top] for v in records[film].vertebrae
                                    if v.name in ("C5", "C6", "C7")}
        spacing[f"cropped_{film}"] = records[film].pixel_spacing_mm
        cv2.imwrite(str(root / f"pasted_{film}"), pasted(pixels, c4, c5, next(v for v in records[film].vertebrae
                                                                             if v.name == "C6")))
        truth[f"pasted_{film}"] = {v.name: v.center for v in records[film].vertebrae}
        spacing[f"pasted_{film}"] = records[film].pixel_spacing_mm
    a, b = (cv2.imread(str(EXAMPLES / f), cv2.IMREAD_GRAYSCALE) for f in FILMS)
    height = max(a.shape[0], b.shape[0])
    pad = [np.pad(x, ((0, height - x.shape[0]), (0, 0)), constant_values=int(x.min())) for x in (a, b)]
    cv2.imwrite(str(root / "side_by_side.png"), np.hstack(pad))
    # two spines: the names must all come from one of them (C3 of one and C5-C7 of the other is wrong)
    left, right = ({v.name: v.center + [shift, 0] for v in records[f].vertebrae}
                   for f, shift in ((FILMS[0], 0), (FILMS[1], a.shape[1])))
    truth["side_by_side.png"], alternatives = left, {"side_by_side.png": right}
    result = CliRunner().invoke(app, ["batch", str(root), "--out", str(root / "out")], catch_exceptions=False)
    assert result.exit_code in (0, 1), result.output
    spacing["side_by_side.png"] = records[FILMS[0]].pixel_spacing_mm
    return root / "out", truth, spacing, alternatives


def test_films_in_other_poses_get_the_right_names_or_a_named_flag(posed):
    out, truth, spacing, alternatives = posed
    refused = {r["image"] for r in read_rows(out / "errors.csv") if not r.get("vertebra")}
    detected: dict[str, dict[str, tuple[np.ndarray, str]]] = {}
    for r in read_rows(out / "centers.detected.csv"):
        detected.setdefault(r["image"], {})[r["vertebra"]] = (np.array([float(r["x"]), float(r["y"])]), r["flags"])
    answered_right = 0
    for file, names in truth.items():
        found = detected.get(file, {})
        flagged = file in refused or any(flags for _, flags in found.values())
        wrong = min(([n for n, (xy, _) in found.items()
                      if n not in known or np.linalg.norm(xy - known[n]) * spacing[file] > 3.0]
                     for known in (names, alternatives.get(file, names))), key=len)
        assert flagged or not wrong, f"{file}: {wrong} named wrong without a flag"
        answered_right += bool(found) and not wrong and not flagged
    assert answered_right >= 8, f"only {answered_right} of {len(truth)} films answered right"


def test_the_view_each_film_was_seen_in_is_recorded(posed):
    out, _, _, _ = posed
    views = {r["image"]: r["view"] for r in read_rows(out / "centers.detected.csv")}
    expected = {"mirrored": "mirrored", "upside_down": "mirrored+turned_180", "turned_180": "turned_180",
                "inverted": "inverted", "cropped": "as_is", "turned_-35": "as_is"}
    for file, view in views.items():
        kind = next((k for k in expected if file.startswith(k)), None)
        if kind is not None:
            assert view == expected[kind], (file, view)


def test_films_of_another_region_are_refused_or_flagged_never_named_c3_c7_as_sure(tmp_path):
    """Lateral (``tall``) and frontal (``ap``) thoracolumbar films (T1-L5, no cervical spine) through the automatic
    batch: each film is refused ("no vertebrae found", failed centre checks) or answered with a flag on its rows, but
    for at most issue #27's aim of 2% of the answered films (README.md, "Flags": 1 of 120 of each kind measured)."""
    answered = unflagged = refused = 0
    for style, seed in (("tall", 9191), ("ap", 4040)):
        films, out = tmp_path / style, tmp_path / f"{style}-out"
        made = CliRunner().invoke(app, ["synth", str(films), "--style", style, "--images", "30", "--seed", str(seed)],
                                  catch_exceptions=False)
        assert made.exit_code == 0, made.output
        result = CliRunner().invoke(app, ["batch", str(films), "--out", str(out)], catch_exceptions=False)
        assert result.exit_code in (0, 1), result.output
        gone = {r["image"] for r in read_rows(out / "errors.csv") if not r.get("vertebra")}
        rows: dict[str, list[str]] = {}
        for r in read_rows(out / "corners.csv"):
            rows.setdefault(r["image"], []).append(r["flags"])
        assert not gone & set(rows) and len(gone) + len(rows) == 30
        refused += len(gone)
        answered += len(rows)
        unflagged += sum(not any(flags) for flags in rows.values())
    assert answered >= 30 and unflagged <= 0.02 * answered, (unflagged, answered, refused)


def test_a_film_of_another_style_cut_to_c2_c5_is_named_right_or_flagged_never_shifted_as_sure(tmp_path):
    """Issue #33's first sighting, cut short: a film of the validation-only style (seed 777303, film 6) cut just below
    C5. Both the namer and the view finder take C2 for C3 and shift every name by one level, so their agreement
    proves nothing; the finder finds neither anchor (C2, T1) in it, so the film is flagged levels_uncertain rather
    than answered as sure (through `vcorner batch` without centres)."""
    data = tmp_path / "holdout"
    made = CliRunner().invoke(app, ["synth", str(data), "--style", "holdout", "--images", "7", "--seed", "777303",
                                    "--workers", "1"], catch_exceptions=False)
    assert made.exit_code == 0, made.output
    record = read_annotations(data / "annotations.json")[6]
    c5, c6 = (next(v for v in record.vertebrae if v.name == n) for n in ("C5", "C6"))
    bottom = int(min(c6.corners[:, 1].min(), c5.corners[:, 1].max() + 0.6 * (c6.corners[:, 1].min()
                                                                             - c5.corners[:, 1].max())))
    films = tmp_path / "films"
    films.mkdir()
    cv2.imwrite(str(films / "cut.png"), cv2.imread(str(data / record.file), cv2.IMREAD_GRAYSCALE)[:bottom])
    result = CliRunner().invoke(app, ["batch", str(films), "--out", str(tmp_path / "out")], catch_exceptions=False)
    assert result.exit_code in (0, 1), result.output
    truth = {v.name: v.center for v in record.vertebrae if v.name in ("C3", "C4", "C5")}
    rows = read_rows(tmp_path / "out" / "centers.detected.csv")
    refused = any(not r.get("vertebra") for r in read_rows(tmp_path / "out" / "errors.csv"))
    wrong = [r["vertebra"] for r in rows if r["vertebra"] not in truth or np.linalg.norm(
        np.array([float(r["x"]), float(r["y"])]) - truth[r["vertebra"]]) * record.pixel_spacing_mm > 3.0]
    flagged = refused or all("levels_uncertain" in r["flags"] for r in rows)
    assert flagged or not wrong, f"named {wrong} wrong without a flag"


def assert_cut_examples_named_right(tmp_path: Path, bottom_of, shown: tuple[str, ...]) -> None:
    """The five example PNG/JPEG/TIFF films cut at ``bottom_of(record)`` (image row) through ``vcorner detect``:
    each is named exactly ``shown``, every centre within 3 mm of its annotated one."""
    films = tmp_path / "cut"
    films.mkdir()
    truth: dict[str, dict[str, np.ndarray]] = {}
    spacing: dict[str, float] = {}
    for record in read_annotations(EXAMPLES / "annotations.json"):
        pixels = cv2.imread(str(EXAMPLES / record.file), cv2.IMREAD_GRAYSCALE)
        if pixels is None:  # the DICOM
            continue
        file = Path(record.file).with_suffix(".png").name
        cv2.imwrite(str(films / file), pixels[:bottom_of(record)])
        truth[file] = {v.name: v.center for v in record.vertebrae if v.name in shown}
        spacing[file] = record.pixel_spacing_mm
    out = tmp_path / "centers.csv"
    result = CliRunner().invoke(app, ["detect", str(films), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    found: dict[str, dict[str, np.ndarray]] = {}
    for r in read_rows(out):
        found.setdefault(r["image"], {})[r["vertebra"]] = np.array([float(r["x"]), float(r["y"])])
    assert len(truth) == 5 and set(found) == set(truth)
    for file, names in truth.items():
        assert set(found[file]) == set(names), (file, sorted(found[file]))
        for name, xy in names.items():
            assert np.linalg.norm(found[file][name] - xy) * spacing[file] < 3.0, (file, name)


def vertebra(record, name: str):
    return next(v for v in record.vertebrae if v.name == name)


def test_example_films_cut_below_c5_are_named_right(tmp_path):
    """The five example films cut in the C5-C6 disc (C3-C5 left): each is named C3, C4, C5, every centre within 3 mm
    of its annotated one. Before the spine order took its sense from the informative maps, the flat C6/C7 maps of a
    film showing none of them turned the order: one film came out with C4 and C5 swapped, one as "no vertebrae
    found"."""
    assert_cut_examples_named_right(
        tmp_path, lambda r: int(0.5 * (vertebra(r, "C5").corners[:, 1].max() + vertebra(r, "C6").corners[:, 1].min())),
        ("C3", "C4", "C5"))


def test_example_films_cut_below_c7s_centre_keep_c7(tmp_path):
    """The example films cut 0.4 of C7's height below its centre (its lower endplate off the film, as on 15% of the
    phantoms and many clinical films, at the shoulders): each is named C3-C7, every centre within 3 mm of its
    annotated one. Before the cut-body rules (postprocess/peaks.continued_ends, stages/detect.finder_ends) three of
    the five lost C7; cut deeper (0.1-0.3 of its height below its centre) two to four of them still do."""
    def below_c7(record) -> int:
        c7 = vertebra(record, "C7")
        return int(c7.center[1] + 0.4 * (c7.corners[2:, 1].mean() - c7.corners[:2, 1].mean()))

    assert_cut_examples_named_right(tmp_path, below_c7, ("C3", "C4", "C5", "C6", "C7"))
