"""Issue E: the worst-first HTML report (checked in a real headless browser) and COCO keypoints in and out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vcorner.cli import app
from vcorner.io.annotations import read_annotations
from vcorner.io.coco import coco_to_records, records_to_coco

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "xrays"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A batch of the examples plus a broken image and a vertebra left out, with overlays."""
    root = tmp_path_factory.mktemp("xrays")
    shutil.copytree(EXAMPLES, root, dirs_exist_ok=True)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with open(root / "centers.csv", "a", encoding="utf-8") as handle:
        handle.write("broken.png,C3,100,100,0.2\nbroken.png,C4,100,160,0.2\n")
    out = root.parent / "out"
    result = CliRunner().invoke(app, ["batch", str(root), "--centers", str(root / "centers.csv"), "--out", str(out),
                                      "--vis", "--json"])
    assert result.exit_code == 1, result.output
    return out


def test_report_lists_every_image_worst_first(run):
    result = CliRunner().invoke(app, ["report", str(run), "--annotations", str(EXAMPLES / "annotations.json")])
    assert result.exit_code == 0, result.output
    html = (run / "report.html").read_text()
    assert html.count("<tr class=") == 7 and html.index("broken.png") < html.index("phantom_00000.png")
    assert html.count('src="data:image/jpeg;base64,') == 6 and 'href="vis/phantom_00000.png"' in html
    assert "max error (px)" in html and 'href="json/phantom_00001.dcm.json"' in html


def test_report_without_overlays_draws_its_own_thumbnails(tmp_path):
    out = tmp_path / "out"
    assert CliRunner().invoke(app, ["batch", str(EXAMPLES), "--centers", str(EXAMPLES / "centers.csv"), "--out",
                                    str(out)]).exit_code == 0
    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report.html").read_text().count('src="data:image/jpeg;base64,') == 6


def test_report_escapes_names(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "errors.csv").write_text('image,vertebra,reason\n"<script>alert(1)</script>.png",,broken\n')
    corner = "a.png,</script><script>alert(2)</script>,{},1,2,0.5,1,1,0,network\n"
    (out / "corners.csv").write_text("image,vertebra,corner,x,y,confidence,sd_major_px,sd_minor_px,angle_deg,source\n"
                                     + "".join(corner.format(c) for c in ("superior_left", "superior_right",
                                                                           "inferior_left", "inferior_right")))
    assert CliRunner().invoke(app, ["report", str(out)]).exit_code == 0
    html = (out / "report.html").read_text()
    assert "<script>alert(" not in html and "&lt;script&gt;alert(1)" in html


def test_report_refuses_a_folder_that_is_not_a_batch(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "not a vcorner batch output" in result.output


@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; "
                           ".ci/run installs them)")
def test_report_in_a_headless_browser_loads_clean_shows_every_image_and_sorts(run, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By

    CliRunner().invoke(app, ["report", str(run), "--annotations", str(EXAMPLES / "annotations.json")])
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(str(CHROMEDRIVER)))
    try:
        driver.get((run / "report.html").as_uri())

        def shown():
            rows = driver.find_elements(By.CSS_SELECTOR, "#images > tbody > tr")
            return [r.get_attribute("data-image") for r in rows]

        names = shown()
        assert len(names) == 7 and names[0] == "broken.png"
        assert all(img.get_attribute("naturalWidth") != "0" for img in driver.find_elements(By.CSS_SELECTOR, "img"))
        driver.find_element(By.CSS_SELECTOR, 'th[data-key="image"]').click()
        assert shown() == sorted(names)
        driver.find_element(By.CSS_SELECTOR, 'th[data-key="image"]').click()
        assert shown() == sorted(names, reverse=True)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        driver.save_screenshot(str(tmp_path / "report.png"))
        assert (tmp_path / "report.png").stat().st_size > 10_000
    finally:
        driver.quit()


def test_vcorner_to_coco_and_back_is_the_identity():
    records = read_annotations(EXAMPLES / "annotations.json")
    back = coco_to_records(json.loads(json.dumps(records_to_coco(records))))
    assert [r.file for r in back] == [r.file for r in records]
    for a, b in zip(records, back, strict=True):
        assert a.pixel_spacing_mm == b.pixel_spacing_mm
        assert [v.name for v in a.vertebrae] == [v.name for v in b.vertebrae]
        for u, w in zip(a.vertebrae, b.vertebrae, strict=True):
            assert np.abs(u.corners - w.corners).max() < 1e-9 and np.abs(u.center - w.center).max() < 1e-9
            assert (u.boundary is None) == (w.boundary is None)
            if u.boundary is not None:
                assert np.abs(u.boundary - w.boundary).max() < 1e-9


def test_coco_coordinates_put_the_origin_at_the_pixel_corner():
    record = read_annotations(EXAMPLES / "annotations.json")[0]
    coco = records_to_coco([record])
    first = coco["annotations"][0]
    assert first["keypoints"][0] == pytest.approx(record.vertebrae[0].corners[0][0] + 0.5)
    assert coco["categories"][0]["keypoints"] == ["superior_left", "superior_right", "inferior_left",
                                                  "inferior_right"]
    x, y, w, h = first["bbox"]
    assert x == pytest.approx(record.vertebrae[0].corners[:, 0].min() + 0.5) and w > 0 and h > 0


def test_coco_from_another_tool_imports_with_warnings(caplog):
    coco = {
        "images": [{"id": 7, "file_name": "a.png", "width": 100, "height": 100}],
        "categories": [{"id": 1, "name": "C4", "keypoints": ["inferior_right", "inferior_left", "superior_right",
                                                             "superior_left"]},
                       {"id": 2, "name": "C3", "keypoints": ["superior_left", "superior_right", "inferior_left",
                                                             "inferior_right"]},
                       {"id": 3, "name": "person", "keypoints": ["nose"]}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "keypoints": [50, 80, 2, 10, 80, 2, 50, 55, 2, 10, 55, 2]},
            {"id": 2, "image_id": 7, "category_id": 2, "keypoints": [10, 10, 2, 50, 10, 2, 10, 40, 0, 50, 40, 2]},
            {"id": 3, "image_id": 7, "category_id": 3, "keypoints": [5, 5, 2]},
        ]}
    (record,) = coco_to_records(coco, "other.json")
    assert [v.name for v in record.vertebrae] == ["C4"]  # C3 has an unlabelled corner, "person" is no vertebra
    assert record.vertebrae[0].corners.tolist() == [[9.5, 54.5], [49.5, 54.5], [9.5, 79.5], [49.5, 79.5]]
    assert record.vertebrae[0].center.tolist() == [29.5, 67.0]  # the mean of the corners without a 'center'
    assert "visibility 0" in caplog.text and "'person' lacks the keypoints" in caplog.text


def test_bad_coco_files_fail_in_one_line(tmp_path):
    cases = {"no_keypoints.json": ({"images": [], "annotations": [], "categories": [{"id": 1, "name": "C3"}]},
                                   "no category has the four keypoints"),
             "missing_image.json": ({"images": [], "categories": [{"id": 1, "name": "C3", "keypoints": [
                 "superior_left", "superior_right", "inferior_left", "inferior_right"]}],
                 "annotations": [{"id": 1, "image_id": 9, "category_id": 1, "keypoints": [0] * 12}]},
                 "which is not in 'images'"),
             "not_coco.json": ({"hello": 1}, "not a COCO keypoints file")}
    for name, (data, message) in cases.items():
        (tmp_path / name).write_text(json.dumps(data))
        result = CliRunner().invoke(app, ["convert", str(tmp_path / name), str(tmp_path / "a.json")])
        assert result.exit_code == 2 and message in result.output and result.output.count("\n") == 1, name


def test_convert_commands_round_trip_files_and_export_predictions(tmp_path, run):
    runner = CliRunner()
    result = runner.invoke(app, ["convert", str(EXAMPLES / "annotations.json"), str(tmp_path / "coco.json")])
    assert result.exit_code == 0, result.output
    coco = json.loads((tmp_path / "coco.json").read_text())
    assert coco["images"][0]["width"] > 0 and len(coco["annotations"]) == 30
    assert runner.invoke(app, ["convert", str(tmp_path / "coco.json"), str(tmp_path / "back.json")]).exit_code == 0
    assert json.loads((tmp_path / "back.json").read_text()) == json.loads((EXAMPLES / "annotations.json").read_text())
    result = runner.invoke(app, ["convert", str(run / "corners.csv"), str(tmp_path / "pred.json")])
    assert result.exit_code == 0, result.output
    pred = json.loads((tmp_path / "pred.json").read_text())
    assert len(pred["annotations"]) == 30 and all(0 <= a["score"] <= 1 for a in pred["annotations"])
    assert pred["images"][0]["width"] > 0  # sizes from the images folder recorded in run.json


@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()), reason="needs chromium and chromium-driver")
def test_opening_an_image_in_the_browser_shows_its_corner_table(run):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By

    CliRunner().invoke(app, ["report", str(run)])
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(str(CHROMEDRIVER)))
    try:
        driver.get((run / "report.html").as_uri())
        row = driver.find_element(By.CSS_SELECTOR, '#images > tbody > tr[data-image="phantom_00000.png"]')
        row.find_element(By.TAG_NAME, "summary").click()
        from selenium.webdriver.support.ui import WebDriverWait

        # the table is built on the toggle event, after the click returns: wait for it (a CI run read 0 cells)
        WebDriverWait(driver, 10).until(lambda _: row.find_elements(By.CSS_SELECTOR, "table.corners td"))
        cells = row.find_elements(By.CSS_SELECTOR, "table.corners td")
        assert len(cells) == 20 * 8 and cells[0].text == "C3" and cells[1].text == "superior_left"
    finally:
        driver.quit()
