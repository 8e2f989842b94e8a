"""The automatic path on films users have (issue #33's tables): a phantom set as rendered, mirrored (patient
facing left), upside down (flipped top to bottom), turned by +-35 degrees and by 180, inverted (bone dark) and
cropped to C5-C7 or C2-C5, each run through ``vcorner batch`` without centres and scored against its
transformed annotations; and, for comparison, through ``vcorner batch --centers`` with its true centres and view.

Per variant: named-centre recall (the right name within 3 mm), misnamed centres, misnamed centres of films that
carry no flag (no ``errors.csv`` row, no image flag in ``centers.detected.csv``), films answered wrong without a
flag, films without a flag whose corners lie more than 3 mm off under a right name (read in the wrong mirror: every
anterior and posterior label swapped), and mean corner P2P of the vertebrae found under their right name, from
detected and from clicked centres, and the share of true corners inside the 95% ellipses of the corners answered
without any flag (issue #27).
Corner labels are anatomical: a film the detector mirrored back keeps "right" anterior (README.md, "Orientation
and polarity"). Writes ``benchmarks/results/automatic_variants.md`` (or ``--results``).

    python benchmarks/automatic_variants.py --data DIR [--variants as_is mirror ...] [--detector D.onnx]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from vcorner import CORNER_NAMES
from vcorner.evaluation.metrics import mahalanobis2
from vcorner.io.annotations import read_annotations, write_annotations
from vcorner.io.images import read_image
from vcorner.io.records import ImageRecord, Vertebra
from vcorner.phantoms.dataset import CONTEXT_LEVELS
from vcorner.stages.detect import outside_reason

RESULTS = Path(__file__).parent / "results"
VIEW_OF = {"mirror": "mirrored", "upside_down": "mirrored+turned_180", "turned_180": "turned_180",
           "inverted": "inverted"}
"""The view (vcorner.geometry.views) that brings each variant back to the learned pose; as_is for the others."""


def _affine(name: str, shape: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int], bool]:
    """(2, 3) image -> variant affine, the variant's (H, W), and whether it is a reflection."""
    h, w = shape
    if name == "mirror":
        return np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0]]), shape, True
    if name == "upside_down":
        return np.array([[1.0, 0.0, 0.0], [0.0, -1.0, h - 1.0]]), shape, True
    if name == "turned_180":
        return np.array([[-1.0, 0.0, w - 1.0], [0.0, -1.0, h - 1.0]]), shape, False
    if name.startswith("turned_"):
        return cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), float(name.split("_")[1]), 1.0), shape, False
    return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), shape, False


def transformed(record: ImageRecord, affine: np.ndarray, keep: Callable[[str], bool]) -> ImageRecord:
    """The record's centres and corners through ``affine`` (labels kept: they are anatomical)."""
    def move(points: np.ndarray) -> np.ndarray:
        return np.asarray(points) @ affine[:, :2].T + affine[:, 2]

    vertebrae = tuple(Vertebra(v.name, move(v.center), move(v.corners)) for v in record.vertebrae if keep(v.name))
    return ImageRecord(record.file, vertebrae, record.pixel_spacing_mm)


def _everyone(name: str) -> bool:
    return True


def _lower_three(name: str) -> bool:
    return name in ("C5", "C6", "C7")


def _upper_three(name: str) -> bool:
    return name in ("C3", "C4", "C5")


def on_film(vertebrae: tuple[Vertebra, ...], shape: tuple[int, int]) -> tuple[Vertebra, ...]:
    """The ``vertebrae`` whose centre lies on a film of ``shape`` (H, W) pixels: a film turned in its own frame loses
    its corners, and a vertebra whose centre the turn carries off it is not on the film (vcorner leaves out centres
    outside the image's pixels by design: :func:`vcorner.stages.detect.outside_reason`)."""
    return tuple(v for v in vertebrae if not outside_reason(v.center, shape))


def write_variant(data: Path, out: Path, name: str) -> None:
    """The films of ``data`` as variant ``name`` in ``out`` (8-bit PNG) with their annotations."""
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for record in read_annotations(data / "annotations.json"):
        pixels = read_image(data / record.file).pixels
        affine, (h, w), _ = _affine(name, pixels.shape)
        view = cv2.warpAffine(pixels, affine, (w, h), flags=cv2.INTER_LINEAR, borderValue=float(pixels.min()))
        keep = _everyone
        if name == "inverted":
            view = 1.0 - view
        if name == "cropped_C5_C7":
            c4, c5 = (next(v for v in record.vertebrae if v.name == n) for n in ("C4", "C5"))
            top = int(max(c4.corners[:, 1].max(), c5.corners[:, 1].min() - 0.6 * (c5.corners[:, 1].min()
                                                                                  - c4.corners[:, 1].max())))
            view, affine = view[top:], np.array([[1.0, 0.0, 0.0], [0.0, 1.0, -float(top)]])
            keep = _lower_three
        if name == "cropped_C2_C5":
            c5, c6 = (next(v for v in record.vertebrae if v.name == n) for n in ("C5", "C6"))
            bottom = int(min(c6.corners[:, 1].min(), c5.corners[:, 1].max() + 0.6 * (c6.corners[:, 1].min()
                                                                                     - c5.corners[:, 1].max())))
            view = view[:bottom]
            keep = _upper_three
        file = Path(record.file).with_suffix(".png").name
        cv2.imwrite(str(out / file), np.clip(np.round(view * 255), 0, 255).astype(np.uint8))
        moved = transformed(record, affine, keep)
        records.append(ImageRecord(file, on_film(moved.vertebrae, view.shape), record.pixel_spacing_mm))
    write_annotations(out / "annotations.json", records)
    view = VIEW_OF.get(name, "as_is")
    with open(out / "centers.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "vertebra", "x", "y", "pixel_spacing_mm", "view"])
        for r in records:
            writer.writerows([r.file, v.name, f"{v.center[0]:.3f}", f"{v.center[1]:.3f}", r.pixel_spacing_mm, view]
                             for v in r.vertebrae)


def p2p_mm(folder: Path, run: Path, names: dict[str, set[str]] | None = None) -> float:
    """Mean corner P2P (mm) of ``run/corners.csv`` against the annotations of ``folder`` (only the vertebrae of
    ``names`` per image when given)."""
    records = read_annotations(folder / "annotations.json")
    truth = {r.file: {v.name: v for v in r.vertebrae} for r in records}
    spacing = {r.file: r.pixel_spacing_mm for r in records}
    corners: dict[tuple[str, str], list] = {}
    for row in csv.DictReader(open(run / "corners.csv", encoding="utf-8")):
        corners.setdefault((row["image"], row["vertebra"]), []).append([float(row["x"]), float(row["y"])])
    errors = [np.hypot(*(np.array(xy) - truth[image][name].corners).T).mean() * spacing[image]
              for (image, name), xy in corners.items()
              if name in truth.get(image, {}) and (names is None or name in names.get(image, set()))]
    return float(np.mean(errors)) if errors else float("nan")


def naming_counts(truth: dict[str, ImageRecord], found: dict[str, list[tuple[str, np.ndarray]]],
                  flagged: set[str]) -> tuple[dict[str, int | float], list[tuple[str, str]]]:
    """Recall and misnamed centres (all, and in films without a flag), films answered wrong without a flag and films
    all right but flagged, of the detections ``found`` (image -> (name, xy) in pixels) against ``truth``; and the
    (image, name) of the rightly named ones (the right name within 3 mm). Recall counts the levels vcorner names:
    C2 and T1, annotated in context and varied sets only as anchors, are left out of it."""
    found_right = misnamed = annotated = silent_wrong = silent_misnamed = right_flagged = 0
    rightly: list[tuple[str, str]] = []
    for image, record in truth.items():
        known = {v.name: v for v in record.vertebrae}
        annotated += sum(name not in CONTEXT_LEVELS for name in known)
        wrong = False
        for name, xy in found.get(image, []):
            right = name in known and np.hypot(*(xy - known[name].center)) * record.pixel_spacing_mm <= 3.0
            found_right += right
            if not right:
                misnamed += 1
                silent_misnamed += image not in flagged
                wrong = True
            else:
                rightly.append((image, name))
        silent_wrong += wrong and image not in flagged
        right_flagged += bool(found.get(image)) and not wrong and image in flagged
    return {"recall": found_right / annotated, "misnamed": misnamed, "silent_misnamed": silent_misnamed,
            "right_flagged": right_flagged, "films": len(truth), "unflagged_wrong_films": silent_wrong}, rightly


def flagged_films(run: Path, row_flags: bool = True) -> set[str]:
    """The films of a batch's OUT with an ``errors.csv`` line or an image flag in ``centers.detected.csv``, and with
    ``row_flags`` also those with a flag on any ``corners.csv`` row."""
    flagged = {row["image"] for row in csv.DictReader(open(run / "errors.csv", encoding="utf-8"))}
    flagged |= {row["image"] for row in csv.DictReader(open(run / "centers.detected.csv", encoding="utf-8"))
                if row.get("flags")}
    if row_flags:
        flagged |= {row["image"] for row in csv.DictReader(open(run / "corners.csv", encoding="utf-8"))
                    if row.get("flags")}
    return flagged


def score(folder: Path, run: Path) -> dict[str, float]:
    """:func:`naming_counts` of a batch's ``centers.detected.csv`` (flagged: an ``errors.csv`` line or an image flag),
    and P2P (mm) of rightly named vertebrae."""
    truth = {r.file: r for r in read_annotations(folder / "annotations.json")}
    detected: dict[str, dict[str, np.ndarray]] = {}
    for row in csv.DictReader(open(run / "centers.detected.csv", encoding="utf-8")):
        detected.setdefault(row["image"], {})[row["vertebra"]] = np.array([float(row["x"]), float(row["y"])])
    flagged = flagged_films(run, row_flags=False)
    corners: dict[tuple[str, str], list] = {}
    for row in csv.DictReader(open(run / "corners.csv", encoding="utf-8")):
        corners.setdefault((row["image"], row["vertebra"]), []).append([float(row["x"]), float(row["y"])])
    counts, rightly = naming_counts(truth, {image: list(names.items()) for image, names in detected.items()}, flagged)
    known = {(image, v.name): v for image, r in truth.items() for v in r.vertebrae}
    p2p = [np.hypot(*(np.array(corners[key]) - known[key].corners).T).mean() * truth[key[0]].pixel_spacing_mm
           for key in rightly if key in corners]
    return {**counts, "p2p_mean_mm": float(np.mean(p2p)) if p2p else float("nan")}


def unflagged_coverage(folder: Path, run: Path) -> tuple[float, int]:
    """Share of the true corners inside the 95% ellipses of the network corners answered without any flag (no
    image flag, no ``errors.csv`` line, no row flag), and their number. A corner of a misnamed vertebra is scored
    against the annotated corner of the name it was given: a wrong answer is never covered by luck."""
    truth = {r.file: {v.name: v for v in r.vertebrae} for r in read_annotations(folder / "annotations.json")}
    flagged = flagged_films(run, row_flags=False)
    inside = []
    for row in csv.DictReader(open(run / "corners.csv", encoding="utf-8")):
        if row["image"] in flagged or row.get("flags") or row.get("source") != "network":
            continue
        vertebra = truth.get(row["image"], {}).get(row["vertebra"])
        if vertebra is None:
            inside.append(False)  # a name the film does not have: wrong wherever its ellipse lies
            continue
        offset = vertebra.corners[CORNER_NAMES.index(row["corner"])] - [float(row["x"]), float(row["y"])]
        inside.append(mahalanobis2(row, offset) <= -2.0 * np.log(0.05))
    return (float(np.mean(inside)) if inside else float("nan")), len(inside)


def unflagged_far_films(folder: Path, run: Path, limit_mm: float = 3.0) -> list[str]:
    """The films answered without any flag (no ``errors.csv`` line, no image or row flag) where a vertebra under a
    name the film has lies more than ``limit_mm`` from that name's annotated corners (mean over its network corners):
    a film read in the wrong mirror has every name right and every corner's anterior and posterior labels swapped,
    which the naming counts do not see."""
    truth = {r.file: r for r in read_annotations(folder / "annotations.json")}
    flagged = flagged_films(run)
    corners: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for row in csv.DictReader(open(run / "corners.csv", encoding="utf-8")):
        if row.get("source") == "network":
            corners.setdefault((row["image"], row["vertebra"]), {})[row["corner"]] = np.array(
                [float(row["x"]), float(row["y"])])
    far = set()
    for (image, name), found in corners.items():
        record = truth.get(image)
        known = {v.name: v for v in record.vertebrae} if record else {}
        if image in flagged or name not in known:
            continue
        errors = [np.hypot(*(xy - known[name].corners[CORNER_NAMES.index(c)])) for c, xy in found.items()]
        if np.mean(errors) * record.pixel_spacing_mm > limit_mm:
            far.add(image)
    return sorted(far)


def rightly_named(folder: Path, run: Path) -> dict[str, list[str]]:
    """Per image, the names the detector gave within 3 mm of the annotated centre of that name."""
    truth = {r.file: r for r in read_annotations(folder / "annotations.json")}
    out: dict[str, list[str]] = {}
    for row in csv.DictReader(open(run / "centers.detected.csv", encoding="utf-8")):
        record = truth.get(row["image"])
        known = {v.name: v.center for v in record.vertebrae} if record else {}
        xy = np.array([float(row["x"]), float(row["y"])])
        if row["vertebra"] in known and np.hypot(*(xy - known[row["vertebra"]])) * record.pixel_spacing_mm <= 3.0:
            out.setdefault(row["image"], []).append(row["vertebra"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="An annotated phantom set (vcorner synth).")
    parser.add_argument("--variants", nargs="+", default=["as_is", "mirror", "upside_down", "turned_-35",
                                                          "turned_35", "turned_180", "inverted", "cropped_C5_C7",
                                                          "cropped_C2_C5"])
    parser.add_argument("--detector", type=Path, help="A detector other than the shipped one.")
    parser.add_argument("--results", type=Path, default=RESULTS / "automatic_variants.md")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="vcorner-variants-"))
    lines = ["| variant | named-centre recall | misnamed | misnamed in films without a flag | films wrong without a "
             "flag | films with corners > 3 mm off without a flag | films all right but flagged | P2P of rightly "
             "named, detected centres (mm) | the same, clicked centres (mm) | unflagged corners in their 95% ellipse |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    extra = ["--detector", str(args.detector)] if args.detector else []
    for name in args.variants:
        folder = scratch / name
        write_variant(args.data, folder, name)
        run, clicked = scratch / f"{name}-out", scratch / f"{name}-clicked"
        subprocess.run([sys.executable, "-m", "vcorner", "batch", str(folder), "--out", str(run), *extra],
                       capture_output=True, check=False)
        subprocess.run([sys.executable, "-m", "vcorner", "batch", str(folder), "--centers", str(folder / "centers.csv"),
                        "--out", str(clicked)], capture_output=True, check=False)
        s = score(folder, run)
        rightly = {image: set(names) for image, names in rightly_named(folder, run).items()}
        coverage, covered = unflagged_coverage(folder, run)
        share = f"{coverage:.1%}" if covered else "n/a"
        lines.append(f"| {name} | {s['recall']:.1%} | {s['misnamed']} | {s['silent_misnamed']} | "
                     f"{s['unflagged_wrong_films']} of {s['films']} | {len(unflagged_far_films(folder, run))} | "
                     f"{s['right_flagged']} | {s['p2p_mean_mm']:.3f} | "
                     f"{p2p_mm(folder, clicked, rightly):.3f} | {share} of {covered} |")
        print(lines[-1], flush=True)
    args.results.parent.mkdir(exist_ok=True, parents=True)
    args.results.write_text(
        f"Detector {args.detector or 'shipped'} and the shipped corner model on {args.data}, `vcorner batch DIR --out "
        "OUT` per variant (clicked: `--centers` with the true centres and view)\n\n" + "\n".join(lines) + "\n",
        encoding="utf-8")


if __name__ == "__main__":
    main()
