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


def test_a_detected_centre_in_the_letterbox_margin_is_left_out_by_name():
    """Issue #32 point 6: no centre outside the image's own pixels comes from the detector."""
    import numpy as np

    from vcorner.geometry.letterbox import letterbox_affine, to_grid
    from vcorner.models.modelfile import default_detector_path, read_detector_card
    from vcorner.stages.detect import detect_centres

    card, _ = read_detector_card(default_detector_path())
    size, shape = card.detection.input_size, (200, 800)  # a wide film: the view has margins above and below
    affine = letterbox_affine(shape, size)
    centres = [(380.0, 20.0 + 40.0 * i) for i in range(5)]
    centres[0] = (380.0, -60.0)  # C3 in the margin above the film
    grid = to_grid(affine, np.array(centres))
    yy, xx = np.mgrid[0:size, 0:size]
    maps = np.stack([np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / 8.0) for gx, gy in grid])  # sd 2 px: a blob
    maps = (maps / maps.sum(axis=(1, 2), keepdims=True))[None].astype(np.float32)
    found = detect_centres([np.zeros(shape, np.float32)], shape, "wide.png", None, card, lambda _: maps)
    assert [v.name for v in found.listed.vertebrae] == ["C4", "C5", "C6", "C7"]
    assert "outside the image's 800 x 200 pixels" in found.left_out["C3"]
