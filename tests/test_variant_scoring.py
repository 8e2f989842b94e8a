"""benchmarks/automatic_variants.py's scoring: a film answered without a flag whose every name is right but whose
corners are swapped front to back (read in the wrong mirror) counts as wrong; flagged, or with its corners right, it
does not; and the variant writer keeps only the vertebrae whose centre stays on a turned film."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import cv2
import numpy as np

from vcorner import CORNER_NAMES
from vcorner.io.annotations import write_annotations
from vcorner.io.records import ImageRecord, Vertebra

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "automatic_variants.py"


def scoring():
    spec = importlib.util.spec_from_file_location("automatic_variants", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def body(name: str, y: float) -> Vertebra:
    """A 40 x 30 px body centred at (100, y): corners in CORNER_NAMES order (superior_left first)."""
    corners = np.array([[80.0, y - 15], [120.0, y - 15], [120.0, y + 15], [80.0, y + 15]])
    assert CORNER_NAMES[0] == "superior_left"
    return Vertebra(name, np.array([100.0, y]), corners)


def write_run(run: Path, films: dict[str, tuple[list[Vertebra], bool, str]]) -> None:
    """``corners.csv``, ``centers.detected.csv`` and ``errors.csv`` of films: name -> (vertebrae as found, swap their
    corners front to back, the image's flag)."""
    run.mkdir()
    with open(run / "errors.csv", "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerow(["image", "vertebra", "error"])
    with open(run / "centers.detected.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "vertebra", "x", "y", "pixel_spacing_mm", "confidence", "view", "naming_margin",
                         "flags"])
        for image, (found, _, flag) in films.items():
            writer.writerows([image, v.name, *v.center, "", 0.5, "as_is", 0.3, flag] for v in found)
    with open(run / "corners.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "vertebra", "corner", "x", "y", "source", "flags"])
        for image, (found, swap, flag) in films.items():
            for v in found:
                corners = v.corners[[1, 0, 3, 2]] if swap else v.corners
                writer.writerows([image, v.name, c, *xy, "network", flag]
                                 for c, xy in zip(CORNER_NAMES, corners, strict=True))


def test_a_film_read_in_the_wrong_mirror_without_a_flag_counts_as_wrong(tmp_path):
    variants = scoring()
    truth = [body("C3", 100.0), body("C4", 150.0), body("C5", 200.0)]
    films = {"swapped.png": (truth, True, ""), "swapped_flagged.png": (truth, True, "view_uncertain"),
             "right.png": (truth, False, "")}
    write_annotations(tmp_path / "annotations.json", [ImageRecord(f, tuple(truth), 0.2) for f in films])
    write_run(tmp_path / "run", films)
    assert variants.unflagged_far_films(tmp_path, tmp_path / "run") == ["swapped.png"]  # 40 px = 8 mm off
    counts = variants.score(tmp_path, tmp_path / "run")
    assert counts["unflagged_wrong_films"] == 0 and counts["recall"] == 1.0  # the names alone do not see it
    assert variants.unflagged_far_films(tmp_path, tmp_path / "run", limit_mm=10.0) == []


def test_a_film_turned_in_its_own_frame_keeps_only_the_vertebrae_whose_centre_stays_on_it(tmp_path):
    """A film 200 px wide turned by 45 degrees about its centre: C3 at the centre stays, C7 near the bottom edge is
    carried off the film and leaves the variant's annotations (it cannot be found, so recall does not count it); the
    turned centres that stay are where the turn puts them."""
    variants = scoring()
    data = tmp_path / "data"
    data.mkdir()
    cv2.imwrite(str(data / "film.png"), np.random.default_rng(0).integers(0, 255, (300, 200), dtype=np.uint8))
    vertebrae = (body("C3", 150.0), body("C7", 295.0))  # (100, 150) and (100, 295)
    write_annotations(data / "annotations.json", [ImageRecord("film.png", vertebrae, 0.2)])
    variants.write_variant(data, tmp_path / "turned", "turned_45")
    turned = variants.read_annotations(tmp_path / "turned" / "annotations.json")[0]
    assert [v.name for v in turned.vertebrae] == ["C3"]
    affine = cv2.getRotationMatrix2D((99.5, 149.5), 45.0, 1.0)
    assert np.allclose(turned.vertebrae[0].center, affine[:, :2] @ [100.0, 150.0] + affine[:, 2], atol=1e-3)
    off = affine[:, :2] @ [100.0, 295.0] + affine[:, 2]
    assert off[0] > 199.5 or off[1] > 299.5  # C7's turned centre lies outside the film
    variants.write_variant(data, tmp_path / "as_is", "as_is")
    assert len(variants.read_annotations(tmp_path / "as_is" / "annotations.json")[0].vertebrae) == 2


def test_the_clinical_processing_variants_keep_the_film_and_raise_its_local_contrast():
    """benchmarks/degraded_films.py's clahe, unsharp and equalized variants: each keeps the film's size and
    coordinates (factor 1) and gives finite grey levels; a dull film (grey levels 0.45-0.55) comes out with a wider
    spread of grey levels, and its edge (a bright square on a dark ground) steeper, as processed films do."""
    spec = importlib.util.spec_from_file_location("degraded_films", SCRIPT.with_name("degraded_films.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    film = np.full((200, 160), 0.45, dtype=np.float32)
    film[60:140, 40:120] = 0.55
    rng = np.random.default_rng(0)
    for name in ("clahe", "unsharp", "equalized"):
        out, factor = module.degraded(film, name, rng, film)
        assert out.shape == film.shape and factor == 1.0 and np.isfinite(out).all(), name
        step = float(out[100, 41] - out[100, 38])  # across the square's left edge
        assert np.ptp(np.clip(out, 0, 1)) > np.ptp(film) and step > 0.1, (name, np.ptp(out), step)
