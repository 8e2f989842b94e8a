"""The one output rule (vcorner/io/claims.py): never an input, never an existing file without --force, and with
--force the earlier file is kept in previous-<time>/."""

from __future__ import annotations

import pytest

from vcorner.io.claims import claim_files, claim_folder
from vcorner.io.records import InputError


def test_an_output_that_is_an_input_is_refused_even_with_force(tmp_path):
    src = tmp_path / "a.json"
    src.write_text("{}")
    with pytest.raises(InputError, match="is an input of this command"):
        claim_files([tmp_path / "." / "a.json"], inputs=[src], force=True)
    assert src.read_text() == "{}"


def test_an_existing_file_is_refused_without_force_and_kept_with_it(tmp_path):
    old = tmp_path / "centers.csv"
    old.write_text("clicked")
    with pytest.raises(InputError, match="--force"):
        claim_files([old, tmp_path / "new.csv"])
    assert old.read_text() == "clicked"
    keep = claim_files([old, tmp_path / "new.csv"], force=True)
    assert not old.exists() and (keep / "centers.csv").read_text() == "clicked"
    assert keep.parent == tmp_path and keep.name.startswith("previous-")


def test_own_earlier_outputs_are_rewritten_and_new_paths_pass(tmp_path):
    page = tmp_path / "report.html"
    page.write_text("<meta name=generator content='vcorner report'>")
    assert claim_files([page], own=lambda p: "vcorner report" in p.read_text()) is None
    assert page.exists()
    assert claim_folder(tmp_path / "new", ["metrics.json"]) is None


def test_a_folder_where_a_file_goes_and_a_file_where_a_folder_goes_are_refused(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is a folder"):
        claim_files([tmp_path / "d"], force=True)
    with pytest.raises(InputError, match="is a file"):
        claim_folder(tmp_path / "f", ["metrics.json"])


def test_two_forced_replacements_within_a_second_keep_both_earlier_files(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("first")
    one = claim_files([path], force=True)
    path.write_text("second")
    two = claim_files([path], force=True)
    assert one != two and (one / "out.csv").read_text() == "first" and (two / "out.csv").read_text() == "second"


def test_forced_files_of_the_same_name_in_two_folders_are_both_kept(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "model.onnx").write_text("A")
    (tmp_path / "b" / "model.onnx").write_text("B")
    claim_files([tmp_path / "a" / "model.onnx", tmp_path / "b" / "model.onnx"], force=True)
    assert next((tmp_path / "a").glob("previous-*/model.onnx")).read_text() == "A"
    assert next((tmp_path / "b").glob("previous-*/model.onnx")).read_text() == "B"


def test_forced_files_of_one_folder_share_one_previous_folder(tmp_path):
    for name in ("corners.csv", "errors.csv", "run.json"):
        (tmp_path / name).write_text(name)
    keep = claim_files([tmp_path / n for n in ("corners.csv", "errors.csv", "run.json")], force=True)
    assert list(tmp_path.glob("previous-*")) == [keep]
    assert sorted(p.name for p in keep.iterdir()) == ["corners.csv", "errors.csv", "run.json"]
