"""train/mix_folders.py: phantom folders joined into one training folder (films hard-linked), names filtered."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from vcorner.io.annotations import read_annotations
from vcorner.io.images import read_image

SCRIPT = Path(__file__).resolve().parents[1] / "train" / "mix_folders.py"


def test_two_folders_mix_into_one_with_only_the_names_asked_for(toy_dataset, tmp_path):
    out = tmp_path / "mix"
    done = subprocess.run([sys.executable, str(SCRIPT), str(out), str(toy_dataset), str(toy_dataset),
                           "--names", "C3", "C5"], capture_output=True, text=True, check=True)
    source = read_annotations(toy_dataset / "annotations.json")
    mixed = read_annotations(out / "annotations.json")
    assert f"{2 * len(source)} films from 2 folders" in done.stdout
    assert [r.file for r in mixed] == [f"a_{r.file}" for r in source] + [f"b_{r.file}" for r in source]
    for record, original in zip(mixed, source + source, strict=True):
        assert [v.name for v in record.vertebrae] == [v.name for v in original.vertebrae if v.name in {"C3", "C5"}]
        np.testing.assert_array_equal(record.centers, original.centers[[v.name in {"C3", "C5"}
                                                                         for v in original.vertebrae]])
        assert not (out / record.file).is_symlink()  # a hard link: the folder stands on its own for vcorner tune
        np.testing.assert_array_equal(read_image(out / record.file).pixels,
                                      read_image(toy_dataset / original.file).pixels)
    again = subprocess.run([sys.executable, str(SCRIPT), str(out), str(toy_dataset)], capture_output=True, text=True)
    assert again.returncode == 2 and "exists; choose a new folder" in again.stderr
