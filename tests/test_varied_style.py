"""The domain-randomized phantom style (vcorner/phantoms/varied.py): each film its own look, the anatomy's own
annotations inside the film, and ``vcorner synth --style varied`` mixing it with the context films."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from vcorner.cli import app
from vcorner.io.annotations import read_annotations
from vcorner.phantoms.anatomy import LEVELS
from vcorner.phantoms.varied import POSTERIOR, render_varied


def test_a_varied_film_has_its_levels_in_order_on_bone_inside_the_film():
    looks = set()
    for seed in range(6):
        pixels, record, info = render_varied(np.random.default_rng(seed))
        h, w = pixels.shape
        assert pixels.dtype == np.float32 and np.isfinite(pixels).all()
        assert 0.0 <= pixels.min() and pixels.max() <= 1.0
        assert 700 <= h <= 1600 and info["posterior"] in POSTERIOR
        looks.add((info["posterior"], info["body_fill"]))
        names = [v.name for v in record.vertebrae]
        assert names == [n for n in LEVELS if n in names] and {"C3", "C4", "C5", "C6", "C7"} <= set(names)
        ys = [v.center[1] for v in record.vertebrae]
        assert np.all(np.diff(ys) > 0), ys  # cranial first, within 12 degrees of upright
        for v in record.vertebrae:
            assert np.all((v.center >= 0) & (v.center <= [w - 1, h - 1]))
            inside = v.corners + 0.3 * (v.corners.mean(axis=0) - v.corners)
            inside = inside[np.all((inside >= 0) & (inside <= [w - 1, h - 1]), axis=1)]  # T1 may be cut off
            bone = pixels[np.round(inside[:, 1]).astype(int), np.round(inside[:, 0]).astype(int)]
            around = np.median(pixels)
            assert np.mean(bone > around) >= 0.75, (seed, v.name, bone, around)
    assert len(looks) == 6  # every film draws its own look


def test_synth_varied_mixes_randomized_and_context_films_and_is_reproducible(tmp_path):
    for out in ("a", "b"):
        result = CliRunner().invoke(app, ["synth", str(tmp_path / out), "--images", "6", "--seed", "3",
                                          "--style", "varied", "--workers", "1"])
        assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "a" / "phantoms.json").read_text())
    styles = [m.get("style", "train") for m in document["images"]]
    assert document["style"] == "varied" and "varied" in styles and "train" in styles, styles
    records = read_annotations(tmp_path / "a" / "annotations.json")
    assert any(v.name == "C2" for r in records for v in r.vertebrae)
    for record in records:
        assert (tmp_path / "a" / record.file).read_bytes() == (tmp_path / "b" / record.file).read_bytes()
