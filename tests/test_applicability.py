"""Issue #27 (first step): a corner model given names it never trained on says so once per run, in run.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "xrays"


def test_names_the_model_never_trained_on_are_named_once_and_recorded(tmp_path):
    text = (EXAMPLES / "centers.csv").read_text(encoding="utf-8")
    for cervical, thoracic in zip(("C3", "C4", "C5", "C6", "C7"), ("T1", "T2", "T3", "T4", "T5"), strict=True):
        text = text.replace(f",{cervical},", f",{thoracic},")
    centres = tmp_path / "centers.csv"
    centres.write_text(text, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "vcorner", "batch", str(EXAMPLES), "--centers", str(centres),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "never in its training data" in line]
    assert len(warnings) == 1 and "C3, C4, C5, C6, C7" in warnings[0] and "T1, T2, T3, T4, T5" in warnings[0]
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["names_not_trained"] == ["T1", "T2", "T3", "T4", "T5"]
    clicked = subprocess.run([sys.executable, "-m", "vcorner", "batch", str(EXAMPLES), "--centers",
                              str(EXAMPLES / "centers.csv"), "--out", str(tmp_path / "known")],
                             capture_output=True, text=True)
    assert "never in its training data" not in clicked.stderr
    assert "names_not_trained" not in json.loads((tmp_path / "known" / "run.json").read_text())
