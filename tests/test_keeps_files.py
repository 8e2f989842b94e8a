"""Issue #28, as a user meets it: every command keeps the files the user had (detect, report, a resumed batch),
walks DIR without reading vcorner's own outputs, and answers a broken corners.csv or an odd name in one line.
Each test reproduces what was seen, through the CLI, and asserts the honest outcome."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from vcorner.cli import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "xrays"


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert "Traceback" not in result.output
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.fixture
def films(tmp_path) -> Path:
    root = tmp_path / "films"
    root.mkdir()
    for name in ("phantom_00000.png", "phantom_00002.png"):
        shutil.copy(EXAMPLES / name, root / name)
    return root


def centres_of(films: Path, tmp_path: Path) -> Path:
    rows = [r for r in csv.DictReader(open(EXAMPLES / "centers.csv", encoding="utf-8"))
            if (films / r["image"]).exists()]
    path = tmp_path / "centers.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_detect_never_replaces_a_centres_file_and_force_keeps_the_old_one(films, tmp_path):
    clicked = films / "centers.csv"
    clicked.write_text("image,vertebra,x,y,pixel_spacing_mm\na.png,C3,1,2,0.1\n", encoding="utf-8")
    errors = films / "centers.errors.csv"
    errors.write_text("mine\n", encoding="utf-8")
    before = clicked.read_bytes()
    result = run_cli("detect", films, "--out", clicked)
    assert result.exit_code == 2
    assert "--force" in one_line_error(result) and str(clicked) in result.output
    assert clicked.read_bytes() == before and errors.read_text() == "mine\n"

    result = run_cli("detect", films, "--out", clicked, "--force")
    assert result.exit_code == 0, result.output
    kept = [p for p in films.glob("previous-*/*")]
    assert sorted(p.name for p in kept) == ["centers.csv", "centers.errors.csv"]
    assert (kept[0].parent / "centers.csv").read_bytes() == before
    assert "confidence" in clicked.read_text()


def test_detect_refuses_to_write_over_one_of_its_images(films):
    target = films / "phantom_00000.png"
    before = target.read_bytes()
    result = run_cli("detect", films, "--out", target, "--force")
    assert result.exit_code == 2 and str(target) in one_line_error(result)
    assert target.read_bytes() == before and not list(films.glob("previous-*"))


def test_report_never_writes_over_the_batch_or_another_file(films, tmp_path):
    out = tmp_path / "out"
    assert run_cli("batch", films, "--centers", centres_of(films, tmp_path), "--out", out).exit_code == 0
    corners = (out / "corners.csv").read_bytes()
    result = run_cli("report", out, "--out", out / "corners.csv")
    assert result.exit_code == 2 and "is an input" in one_line_error(result)
    assert (out / "corners.csv").read_bytes() == corners

    picture = tmp_path / "holiday.png"
    picture.write_bytes(b"not mine to replace")
    result = run_cli("report", out, "--out", picture)
    assert result.exit_code == 2 and "--force" in one_line_error(result)
    assert picture.read_bytes() == b"not mine to replace"

    assert run_cli("report", out).exit_code == 0
    assert run_cli("report", out).exit_code == 0  # its own earlier page is rewritten
    assert not list(out.glob("previous-*"))


def test_a_redone_image_leaves_no_stale_json_or_overlay_and_the_report_links_only_current_files(films, tmp_path):
    out = tmp_path / "out"
    centres = centres_of(films, tmp_path)
    assert run_cli("batch", films, "--centers", centres, "--out", out, "--json", "--vis").exit_code == 0
    assert (out / "json" / "phantom_00000.png.json").is_file()
    rows = list(csv.DictReader(open(centres, encoding="utf-8")))
    for row in rows:
        if row["image"] == "phantom_00000.png":
            row["x"] = f"{float(row['x']) + 3:.1f}"  # the user moved the centres of one image
    with open(centres, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert run_cli("batch", films, "--centers", centres, "--out", out).exit_code == 0
    assert not (out / "json" / "phantom_00000.png.json").exists()
    assert not (out / "vis" / "phantom_00000.png").exists()
    assert (out / "json" / "phantom_00002.png.json").is_file()  # still the current answer of its image
    assert run_cli("report", out).exit_code == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "json/phantom_00002.png.json" in page and "json/phantom_00000.png.json" not in page


def test_no_resume_moves_the_earlier_json_and_overlays_aside(films, tmp_path):
    out = tmp_path / "out"
    centres = centres_of(films, tmp_path)
    assert run_cli("batch", films, "--centers", centres, "--out", out, "--vis").exit_code == 0
    assert run_cli("batch", films, "--centers", centres, "--out", out, "--no-resume").exit_code == 0
    kept = next(out.glob("previous-*"))
    assert (kept / "vis" / "phantom_00000.png").is_file() and not (out / "vis").exists()


def test_walking_dir_skips_an_earlier_runs_overlays(films, tmp_path):
    first = films / "run1"
    assert run_cli("batch", films, "--out", first, "--vis").exit_code == 0
    assert len(list((first / "vis").glob("*.png"))) == 2
    detected = tmp_path / "detected.csv"
    result = run_cli("detect", films, "--out", detected)
    assert result.exit_code == 0, result.output
    images = {r["image"] for r in csv.DictReader(open(detected, encoding="utf-8"))}
    assert images == {"phantom_00000.png", "phantom_00002.png"}
    second = tmp_path / "run2"
    assert run_cli("batch", films, "--out", second).exit_code == 0
    assert {r["image"] for r in csv.DictReader(open(second / "corners.csv", encoding="utf-8"))} == images


def test_a_sixteen_bit_film_on_a_pedestal_is_found_automatically(tmp_path):
    films = tmp_path / "films"
    films.mkdir()
    pixels = cv2.imread(str(EXAMPLES / "phantom_00000.png"), cv2.IMREAD_GRAYSCALE).astype(np.float64)
    narrow = (30000 + pixels / 255.0 * 400).round().astype(np.uint16)  # 400 grey levels on a 30,000 pedestal
    cv2.imwrite(str(films / "pedestal.png"), narrow)
    result = run_cli("batch", films, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    names = {r["vertebra"] for r in csv.DictReader(open(tmp_path / "out" / "corners.csv", encoding="utf-8"))}
    truth = {r["vertebra"] for r in csv.DictReader(open(EXAMPLES / "centers.csv", encoding="utf-8"))
             if r["image"] == "phantom_00000.png"}
    assert names == truth


@pytest.mark.parametrize("change, field", [(("x", ""), "x"), (("corner", "middle"), "corner"),
                                            (("confidence", "nan"), "confidence")])
def test_report_on_a_broken_corners_csv_fails_in_one_line(films, tmp_path, change, field):
    out = tmp_path / "out"
    assert run_cli("batch", films, "--centers", centres_of(films, tmp_path), "--out", out).exit_code == 0
    rows = list(csv.DictReader(open(out / "corners.csv", encoding="utf-8")))
    rows[3][change[0]] = change[1]
    with open(out / "corners.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = run_cli("report", out)
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "line 5" in line and field in line


def test_report_links_are_url_encoded_and_relative_to_the_page(tmp_path):
    films = tmp_path / "films"
    films.mkdir()
    shutil.copy(EXAMPLES / "phantom_00000.png", films / "film#2 a.png")
    shutil.copy(EXAMPLES / "phantom_00002.png", films / "b.png")
    out = tmp_path / "out"
    assert run_cli("batch", films, "--out", out, "--json", "--vis").exit_code == 0
    pages = tmp_path / "pages"
    pages.mkdir()
    assert run_cli("report", out, "--out", pages / "r.html").exit_code == 0
    page = (pages / "r.html").read_text(encoding="utf-8")
    assert 'href="../out/json/film%232%20a.png.json"' in page
    assert 'href="../out/vis/film%232%20a.png"' in page


def test_numba_caches_in_the_user_cache_folder_never_in_the_package(tmp_path):
    """Issue #28 case 18: a cache written into site-packages shadowed a later editable install."""
    import os
    import subprocess
    import sys

    import vcorner

    package = Path(vcorner.__file__).parent
    before = set(package.rglob("*.nb[ic]"))
    env = {**os.environ, "VCORNER_CACHE": str(tmp_path / "cache"), "NUMBA_CACHE_DIR": ""}
    code = ("import numba; from vcorner.postprocess import kernels; kernels.warm_up(); "
            "print(repr(numba.config.CACHE_DIR))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "''"  # the process's own setting is restored for other packages
    assert len(list((tmp_path / "cache" / "numba").rglob("*.nbi"))) >= 7
    assert set(package.rglob("*.nb[ic]")) == before


def test_warnings_read_as_one_plain_line_and_the_rate_leaves_set_up_out(films, tmp_path):
    """Issue #28 case 19, as a subprocess: no logging record format, and the summary separates the set-up."""
    import subprocess
    import sys

    centres = centres_of(films, tmp_path)
    shutil.copy(EXAMPLES / "phantom_00003.jpg", films / "unlisted.jpg")
    done = subprocess.run([sys.executable, "-m", "vcorner", "batch", str(films), "--centers", str(centres),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "warning: 1 image(s) in" in done.stderr and "WARNING" not in done.stderr
    summary = next(line for line in done.stderr.splitlines() if "image(s) done" in line)
    assert "s of set-up (" in summary
    import json

    last = json.loads((tmp_path / "out" / "run.json").read_text())["last_run"]
    assert last["setup_seconds"] > 0 and last["patches_per_s"] > 0


def test_a_missing_dependency_is_exit_code_3_not_a_usage_error(tmp_path):
    """Issue #30: failures of the machine or a dependency have their own exit code and say so in one line."""
    from vcorner.hardware.cuda import has_module

    if has_module("tensorrt"):
        pytest.skip("TensorRT is installed here: the backend may run")
    result = run_cli("batch", EXAMPLES, "--centers", EXAMPLES / "centers.csv", "--out", tmp_path / "out",
                     "--backend", "trt")
    assert result.exit_code == 3, result.output
    line = one_line_error(result)
    assert "pip install 'vcorner[gpu]'" in line and "not of your input" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "long"])
def test_names_a_centres_file_rejects_never_reach_a_file_outside_out(tmp_path, kind):
    """A review found that a rejected row's name (absolute, '..', too long) reached the stale-output cleanup,
    which deleted the user's radiographs; such names are refused and nothing outside OUT/json, OUT/vis is touched."""
    films = tmp_path / "films"
    films.mkdir()
    for name in ("phantom_00000.png", "phantom_00002.png"):
        shutil.copy(EXAMPLES / name, films / name)
    precious = tmp_path / "precious.png"
    shutil.copy(EXAMPLES / "phantom_00005.png", precious)
    name = {"absolute": str(films / "phantom_00000.png"), "dotdot": "../precious.png",
            "long": "a" * 300 + ".png"}[kind]
    rows = [r for r in csv.DictReader(open(EXAMPLES / "centers.csv", encoding="utf-8"))
            if r["image"] == "phantom_00002.png"]
    text = "image,vertebra,x,y,pixel_spacing_mm\n" + "".join(
        f"{img},{r['vertebra']},{r['x']},{r['y']},{r['pixel_spacing_mm']}\n" for img in (name, "phantom_00002.png")
        for r in rows)
    centres = tmp_path / "centers.csv"
    centres.write_text(text, encoding="utf-8")
    before = {p: p.read_bytes() for p in [*films.iterdir(), precious]}
    for _ in range(2):  # a fresh run, then a resumed one with --vis and --json
        result = run_cli("batch", films, "--centers", centres, "--out", tmp_path / "out", "--vis", "--json")
        assert result.exit_code == 1, result.output  # the bad row's image fails, the other is answered
    assert {p: p.read_bytes() for p in before} == before
