"""benchmarks/detector_margins.py: the flag margins chosen on several in-style validation folders pooled, written
into a copy of the shipped namer's card; a holdout folder is refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from vcorner.cli import app
from vcorner.models.modelfile import default_detector_path, read_detector_card

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "detector_margins.py"


def test_margins_pool_folders_and_refuse_the_holdout(tmp_path):
    for name, seed, style in (("a", 11, "train"), ("b", 12, "train"), ("h", 13, "holdout")):
        made = CliRunner().invoke(app, ["synth", str(tmp_path / name), "--images", "3", "--seed", str(seed),
                                        "--style", style])
        assert made.exit_code == 0, made.output
    models = tmp_path / "models"
    models.mkdir()
    shipped = default_detector_path()
    for file in ("detector.onnx", "detector.onnx.json", "views.onnx", "views.onnx.json"):
        shutil.copy(shipped.parent / file, models / file)
    done = subprocess.run([sys.executable, str(SCRIPT), str(models / "detector.onnx"), str(tmp_path / "a"),
                           str(tmp_path / "b"), "--finder", str(models / "views.onnx"), "--align", "15", "--write"],
                          capture_output=True, text=True, check=True)
    printed = json.loads(done.stdout[:done.stdout.rindex("}") + 1])
    assert printed["chosen_on"]["val_films"] + printed["chosen_on"]["wrong_view_chosen"] == 6  # both folders
    card = read_detector_card(models / "detector.onnx")[0]
    assert card.detection.naming_margin == printed["detection"]["naming_margin"] > 0
    chosen = card.training["margins_chosen_on"]
    assert chosen["data"] == f"{tmp_path / 'a'} {tmp_path / 'b'}" and "views.onnx --align 15" in chosen["command"]
    refused = subprocess.run([sys.executable, str(SCRIPT), str(models / "detector.onnx"), str(tmp_path / "a"),
                              str(tmp_path / "h")], capture_output=True, text=True)
    assert refused.returncode == 2 and "the holdout style is for validation only" in refused.stderr
