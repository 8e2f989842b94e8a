"""The automatic path on degraded films (issue #27: say when a film is outside what the models learned): an annotated
phantom set downscaled (0.5x) or upscaled (2x), blurred (sd 3 px), noised (sd 0.15), at a quarter of its contrast,
under gamma 3, saved as JPEG at quality 8, each film put side by side with the next one (two spines in one film), and
processed as clinical films often are (CLAHE, an unsharp mask, global histogram equalization), each through
``vcorner batch DIR --out OUT`` without centres.

Per variant: named-centre recall, misnamed centres, films wrong without a flag (names), films without a flag whose
corners lie more than 3 mm off under a right name, films refused, and the unflagged corners' 95% ellipse coverage
(``benchmarks/automatic_variants.py``'s scoring). Side by side, where the annotations hold the left film only, the
films are also sorted by which spine their names sit on: all on the left one, all on the right one, mixed (names
taken from both spines), or other. Writes a markdown table to ``--results`` (stdout without).

    python benchmarks/degraded_films.py --data DIR [--variants scale0.5 sidebyside ...] [--results F]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from automatic_variants import flagged_films, score, unflagged_coverage, unflagged_far_films  # noqa: E402

from vcorner.io.annotations import read_annotations, write_annotations  # noqa: E402
from vcorner.io.images import read_image  # noqa: E402
from vcorner.io.records import ImageRecord, Vertebra  # noqa: E402

VARIANTS = ("scale0.5", "scale2", "blur3", "noise", "lowcontrast", "gamma3", "jpeg", "sidebyside", "clahe", "unsharp",
            "equalized")


def _as_uint8(pixels: np.ndarray) -> np.ndarray:
    """A 0-1 film as 8-bit grey levels."""
    return np.clip(np.round(np.clip(pixels, 0.0, 1.0) * 255), 0, 255).astype(np.uint8)


def degraded(pixels: np.ndarray, name: str, rng: np.random.Generator, beside: np.ndarray) -> tuple[np.ndarray, float]:
    """The (H, W) 0-1 film as variant ``name`` (``beside``: the film put to its right side by side), and the factor
    its coordinates were scaled by."""
    if name.startswith("scale"):
        factor = float(name[len("scale"):])
        interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
        return cv2.resize(pixels, None, fx=factor, fy=factor, interpolation=interpolation), factor
    if name == "blur3":
        return cv2.GaussianBlur(pixels, (0, 0), 3), 1.0
    if name == "noise":
        return pixels + rng.normal(0.0, 0.15, pixels.shape).astype(np.float32), 1.0
    if name == "lowcontrast":
        return 0.5 + 0.25 * (pixels - 0.5), 1.0
    if name == "gamma3":
        return np.clip(pixels, 0.0, 1.0) ** 3, 1.0
    if name == "sidebyside":
        height = min(pixels.shape[0], beside.shape[0])
        return np.hstack([pixels[:height], beside[:height]]), 1.0
    if name == "clahe":  # the local contrast equalization of many processed digital radiographs
        clahe = cv2.createCLAHE(clipLimit=4.0, tileGridSize=(8, 8))
        return clahe.apply(_as_uint8(pixels)).astype(np.float32) / 255.0, 1.0
    if name == "unsharp":  # the edge enhancement of CR/DR processing: 1.5 x the detail finer than 2% of the film
        sigma = 0.02 * max(pixels.shape)
        return pixels + 1.5 * (pixels - cv2.GaussianBlur(pixels, (0, 0), sigma)), 1.0
    if name == "equalized":
        return cv2.equalizeHist(_as_uint8(pixels)).astype(np.float32) / 255.0, 1.0
    return pixels, 1.0


def write_degraded(data: Path, out: Path, name: str) -> None:
    """The films of ``data`` as variant ``name`` in ``out`` (8-bit PNG, JPEG for ``jpeg``) with their annotations
    (side by side: the left film's)."""
    out.mkdir(parents=True, exist_ok=True)
    records = read_annotations(data / "annotations.json")
    rng = np.random.default_rng(5)
    written = []
    for i, record in enumerate(records):
        pixels = read_image(data / record.file).pixels.astype(np.float32)
        beside = read_image(data / records[(i + 1) % len(records)].file).pixels.astype(np.float32)
        film, factor = degraded(pixels, name, rng, beside)
        film8 = _as_uint8(film)
        file = Path(record.file).with_suffix(".jpg" if name == "jpeg" else ".png").name
        cv2.imwrite(str(out / file), film8, [cv2.IMWRITE_JPEG_QUALITY, 8] if name == "jpeg" else [])
        vertebrae = tuple(Vertebra(v.name, np.asarray(v.center) * factor, np.asarray(v.corners) * factor)
                          for v in record.vertebrae)
        spacing = record.pixel_spacing_mm / factor if record.pixel_spacing_mm else None
        written.append(ImageRecord(file, vertebrae, spacing))
    write_annotations(out / "annotations.json", written)


def spines_named(data: Path, run: Path) -> dict[str, int]:
    """Side-by-side films by where their detected names lie (within 3 mm of that name on the left film, or on the
    right one): ``left``, ``right``, ``mixed`` (both), ``other``; with ``flagged`` counts of each."""
    records = read_annotations(data / "annotations.json")
    found: dict[str, dict[str, np.ndarray]] = {}
    for row in csv.DictReader(open(run / "centers.detected.csv", encoding="utf-8")):
        found.setdefault(row["image"], {})[row["vertebra"]] = np.array([float(row["x"]), float(row["y"])])
    flagged = flagged_films(run)
    counts: dict[str, int] = {}
    for i, record in enumerate(records):
        film = Path(record.file).with_suffix(".png").name
        other = records[(i + 1) % len(records)]
        width = read_image(data / record.file).pixels.shape[1]
        left = {v.name: v.center for v in record.vertebrae}
        right = {v.name: np.asarray(v.center) + [width, 0.0] for v in other.vertebrae}
        sides = set()
        for name, xy in found.get(film, {}).items():
            on_left = name in left and np.hypot(*(xy - left[name])) * record.pixel_spacing_mm <= 3.0
            on_right = name in right and np.hypot(*(xy - right[name])) * other.pixel_spacing_mm <= 3.0
            sides.add("left" if on_left else "right" if on_right else "off")
        kind = ("refused" if not sides else "mixed" if {"left", "right"} <= sides else
                "left" if sides == {"left"} else "right" if sides == {"right"} else "other")
        key = f"{kind}, {'flagged' if film in flagged or kind == 'refused' else 'no flag'}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="An annotated phantom set (vcorner synth).")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--results", type=Path, help="Markdown file to write (stdout without).")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="vcorner-degraded-"))
    lines = ["| variant | named-centre recall | misnamed | films wrong without a flag | films without a flag, corners "
             "> 3 mm off | films refused | unflagged corners in their 95% ellipse |", "|---|---|---|---|---|---|---|"]
    notes = []
    for name in args.variants:
        folder, run = scratch / name, scratch / f"{name}-out"
        write_degraded(args.data, folder, name)
        subprocess.run([sys.executable, "-m", "vcorner", "batch", str(folder), "--out", str(run)],
                       capture_output=True, check=False)
        s = score(folder, run)
        coverage, covered = unflagged_coverage(folder, run)
        answered = {row["image"] for row in csv.DictReader(open(run / "corners.csv", encoding="utf-8"))}
        refused = s["films"] - len(answered)
        lines.append(f"| {name} | {s['recall']:.1%} | {s['misnamed']} | {s['unflagged_wrong_films']} of {s['films']} | "
                     f"{len(unflagged_far_films(folder, run))} | {refused} | "
                     f"{f'{coverage:.1%}' if covered else 'n/a'} of {covered} |")
        print(lines[-1], flush=True)
        if name == "sidebyside":
            notes.append(f"Side by side, films by the spine their names sit on: {spines_named(args.data, run)}")
    text = "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"
    if args.results:
        args.results.write_text(text, encoding="utf-8")
    else:
        print(text)


if __name__ == "__main__":
    main()
