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


# Case 7: ids that collide, and sizes that disagree with the images.

def test_two_images_or_two_categories_sharing_an_id_are_refused(tmp_path):
    images = [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}]
    line = _one_error_line(_convert(_write(tmp_path / "i.json", _coco(images=images)), tmp_path / "out.json"))
    assert "i.json: images[0] and images[1] share id 1" in line
    categories = [{"id": 1, "name": "C3", "keypoints": list(CORNER_NAMES)},
                  {"id": 1, "name": "C4", "keypoints": list(CORNER_NAMES)}]
    line = _one_error_line(_convert(_write(tmp_path / "c.json", _coco(categories=categories)), tmp_path / "out.json"))
    assert "c.json: categories[0] and categories[1] share id 1" in line
    assert not (tmp_path / "out.json").exists()


def test_recorded_sizes_that_disagree_with_the_images_are_refused(tmp_path):
    coco = tmp_path / "coco.json"
    assert _convert(EXAMPLES / "annotations.json", coco).exit_code == 0
    data = json.loads(coco.read_text())
    width, height = data["images"][0]["width"], data["images"][0]["height"]
    assert _convert(coco, tmp_path / "ok.json", "--images", EXAMPLES).exit_code == 0  # the true sizes pass
    data["images"][0]["width"] = width * 2
    line = _one_error_line(_convert(_write(coco, data), tmp_path / "out.json", "--images", EXAMPLES))
    assert "images[0] (phantom_00000.png) 'width'/'height'" in line
    assert f"{width * 2} x {height}" in line and f"{width} x {height}" in line
    assert not (tmp_path / "out.json").exists()


# Case 8: vcorner -> COCO -> vcorner keeps every image's vertebra order, whatever the names.

def _vertebra(name: str, x: float, y: float, boundary: bool = False) -> dict:
    item = {"name": name, "center": [x + 20.0, y + 10.0],
            "corners": [[x, y], [x + 40.0, y + 0.5], [x + 0.25, y + 20.0], [x + 40.125, y + 20.0]]}
    if boundary:
        item["boundary"] = [[x, y], [x + 40.0, y], [x + 40.0, y + 20.0], [x, y + 20.0]]
    return item


def test_any_vertebra_names_round_trip_exactly_through_coco(tmp_path):
    names = [["b", "c"], ["a", "b", "c"], ["X", "C3", "C4"], ["C5", "C4"], ["c", "a"]]
    src = {"format": "vcorner-annotations/1", "images": [
        {"file": f"img{i}.png", **({"pixel_spacing_mm": 0.125} if i % 2 else {}),
         "vertebrae": [_vertebra(n, 10.0, 30.0 * k + 5, boundary=k == 0) for k, n in enumerate(image)]}
        for i, image in enumerate(names)]}
    _write(tmp_path / "src.json", src)
    assert _convert(tmp_path / "src.json", tmp_path / "coco.json").exit_code == 0
    assert _convert(tmp_path / "coco.json", tmp_path / "back.json").exit_code == 0
    assert json.loads((tmp_path / "back.json").read_text()) == src


def test_coco_without_a_recorded_order_puts_anatomical_names_cranial_first(tmp_path):
    data = _coco()
    data["annotations"].reverse()
    _write(tmp_path / "coco.json", data)
    assert _convert(tmp_path / "coco.json", tmp_path / "back.json").exit_code == 0
    (record,) = read_annotations(tmp_path / "back.json")
    assert [v.name for v in record.vertebrae] == ["C3", "C4"]


# Case 14: malformed COCO ends in one line naming the file, the entry and the field.

def _set(section: str, index: int, key: str | None, value: object):
    """A change to a valid document: ``section[index][key] = value`` (key None: the entry itself; value DELETE:
    the key removed)."""
    def change(data: dict) -> dict:
        if key is None:
            data[section][index] = value
        elif value is DELETE:
            del data[section][index][key]
        else:
            data[section][index][key] = value
        return data
    return change


DELETE = object()
MALFORMED = {
    "category without id": (_set("categories", 1, "id", DELETE), "categories[1] 'id'"),
    "category without name": (_set("categories", 0, "name", DELETE), "categories[0] 'name'"),
    "image without id": (_set("images", 0, "id", DELETE), "images[0] 'id'"),
    "image without file_name": (_set("images", 0, "file_name", DELETE), "images[0] 'file_name'"),
    "an annotation that is a string": (_set("annotations", 1, None, "C4"), "annotations[1]: must be an object"),
    "an image that is a string": (_set("images", 0, None, "a.png"), "images[0]: must be an object"),
    "a 3-number centre": (_set("annotations", 0, "center", [1, 2, 3]), "annotations[0] 'center'"),
    "an odd-length boundary": (_set("annotations", 1, "boundary", [1, 2, 3, 4, 5, 6, 7]), "annotations[1] 'boundary'"),
    "an odd-length segmentation": (_set("annotations", 0, "segmentation", [[1, 2, 3]]),
                                   "annotations[0] 'segmentation'"),
    "keypoints as a string": (_set("annotations", 0, "keypoints", "10 10 2"), "annotations[0] 'keypoints'"),
    "keypoint names as a string": (_set("categories", 0, "keypoints", "superior_left"), "categories[0] 'keypoints'"),
    "pixel_spacing_mm 'abc'": (_set("images", 0, "pixel_spacing_mm", "abc"), "images[0] 'pixel_spacing_mm'"),
    "an integer name": (_set("categories", 0, "name", 3), "categories[0] 'name'"),
    "a string image_id": (_set("annotations", 0, "image_id", "1"), "annotations[0] 'image_id'"),
    "an unknown category_id": (_set("annotations", 0, "category_id", 9), "annotations[0] 'category_id'"),
    "a width of -5": (_set("images", 0, "width", -5), "images[0] 'width'"),
    "a 2-point boundary": (_set("annotations", 0, "boundary", [1, 2, 3, 4]), "annotations[0] 'boundary'"),
    "a NaN centre": (_set("annotations", 0, "center", [float("nan"), 1]), "annotations[0] 'center'"),
    "too few keypoints": (_set("annotations", 0, "keypoints", [1, 2, 2]), "annotations[0] (a.png, C3) 'keypoints'"),
    "a negative order": (_set("annotations", 0, "order", -1), "annotations[0] 'order'"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_coco_fails_in_one_line_naming_the_entry_and_field(tmp_path, case):
    change, named = MALFORMED[case]
    src = _write(tmp_path / "bad.json", change(_coco()))
    line = _one_error_line(_convert(src, tmp_path / "out.json"))
    assert f"bad.json: {named}" in line
    assert not (tmp_path / "out.json").exists()


# Case 16: what convert writes, vcorner reads back; what vcorner would refuse, convert refuses.

REFUSED = {
    "a negative pixel_spacing_mm": (_set("images", 0, "pixel_spacing_mm", -0.2), "images[0] 'pixel_spacing_mm'"),
    "a zero pixel_spacing_mm": (_set("images", 0, "pixel_spacing_mm", 0), "images[0] 'pixel_spacing_mm'"),
    "an infinite pixel_spacing_mm": (_set("images", 0, "pixel_spacing_mm", float("inf")),
                                     "images[0] 'pixel_spacing_mm'"),
    "a pixel_spacing_mm of a unit slip (14.9 for 0.149)": (_set("images", 0, "pixel_spacing_mm", 14.9),
                                                           "images[0] 'pixel_spacing_mm': 14.9 mm is outside"),
    "a null file_name": (_set("images", 0, "file_name", None), "images[0] 'file_name': must be a non-empty string, "
                                                               "got null"),
    "an integer file_name": (_set("images", 0, "file_name", 7), "images[0] 'file_name'"),
    "an empty file_name": (_set("images", 0, "file_name", ""), "images[0] 'file_name'"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_values_vcorner_would_refuse_are_refused_by_convert(tmp_path, case):
    change, named = REFUSED[case]
    line = _one_error_line(_convert(_write(tmp_path / "bad.json", change(_coco())), tmp_path / "out.json"))
    assert f"bad.json: {named}" in line


def test_a_file_name_listed_twice_is_refused(tmp_path):
    images = [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "a.png"}]
    line = _one_error_line(_convert(_write(tmp_path / "bad.json", _coco(images=images)), tmp_path / "out.json"))
    assert "bad.json: images[0] and images[1] share file_name \"a.png\"" in line


ACCEPTED = {
    "as given": lambda d: d,
    "no spacing, no sizes": lambda d: {**d, "images": [{"id": 1, "file_name": "a.png"}]},
    "the smallest plausible spacing": _set("images", 0, "pixel_spacing_mm", 0.02),
    "an odd spacing": _set("images", 0, "pixel_spacing_mm", 0.1234567891),
    "an unlabelled corner": _set("annotations", 0, "keypoints", [10, 10, 2, 50, 10, 0, 10, 30, 2, 50, 30, 2]),
    "a NaN keypoint": _set("annotations", 0, "keypoints", [10, float("nan"), 2] + [5, 5, 2] * 3),
    "a vertebra annotated twice": lambda d: {**d, "annotations": d["annotations"] + [d["annotations"][0]]},
    "an image without annotations": lambda d: {**d, "images": d["images"] + [{"id": 2, "file_name": "b.png"}]},
    "a person category": lambda d: {**d, "categories": d["categories"] + [{"id": 5, "name": "person",
                                                                            "keypoints": ["nose"]}]},
    "an empty boundary and segmentation": lambda d: _set("annotations", 0, "segmentation", [])(
        _set("annotations", 0, "boundary", [])(d)),
    "a float width": _set("images", 0, "width", 100.0),
}


@pytest.mark.parametrize("case", ACCEPTED)
def test_whatever_convert_writes_vcorner_reads_back(tmp_path, case):
    src = _write(tmp_path / "coco.json", ACCEPTED[case](_coco()))
    result = _convert(src, tmp_path / "annotations.json")
    assert result.exit_code == 0, result.output
    records = read_annotations(tmp_path / "annotations.json")
    assert records and records[0].file == "a.png"
    assert _convert(tmp_path / "annotations.json", tmp_path / "again.json").exit_code == 0
    assert _convert(tmp_path / "again.json", tmp_path / "back.json").exit_code == 0
    assert read_annotations(tmp_path / "back.json") and \
        json.loads((tmp_path / "back.json").read_text()) == json.loads((tmp_path / "annotations.json").read_text())


def test_unreadable_or_out_of_range_inputs_fail_in_one_line(tmp_path):
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00binary")
    assert "not UTF-8 text" in _one_error_line(_convert(tmp_path / "bin.json", tmp_path / "out.json"))
    huge = _write(tmp_path / "huge.json", _set("annotations", 0, "keypoints", [10**400, 1, 2] * 4)(_coco()))
    assert "annotations[0] 'keypoints'" in _one_error_line(_convert(huge, tmp_path / "out.json"))
    assert not (tmp_path / "out.json").exists()


def test_a_corners_csv_with_nan_corners_converts_without_them(tmp_path):
    rows = "".join(f"a.png,{v},{c},{'nan' if (v, c) == ('C3', 'superior_left') else 5},7,0.5\n"
                   for v in ("C3", "C4") for c in CORNER_NAMES)
    (tmp_path / "corners.csv").write_text("image,vertebra,corner,x,y,confidence\n" + rows)
    result = _convert(tmp_path / "corners.csv", tmp_path / "pred.json")
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "pred.json").read_text())["annotations"]) == 1  # C4 only
