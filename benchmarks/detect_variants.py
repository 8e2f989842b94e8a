"""The centre detection alone on the films users have (how the view finder was chosen, issue #33): each variant of
``benchmarks/automatic_variants.py`` (mirrored, upside down, turned, inverted, cropped) through ``vcorner detect``
without corners, scored as there: named-centre recall (the right name within 3 mm), misnamed centres, misnamed centres
of films without a flag (no ``.errors.csv`` line, no image flag), films answered wrong without a flag, and films all
right but flagged. About 10 s a variant of 100 films, against about a minute through ``vcorner batch``.

    python benchmarks/detect_variants.py --data DIR [--detector D.onnx] [--variants as_is mirror ...]

DIR must not be the holdout style when the figures choose between detectors.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from automatic_variants import naming_counts, write_variant  # noqa: E402

from vcorner.io.annotations import read_annotations  # noqa: E402

VARIANTS = ["as_is", "mirror", "upside_down", "turned_-35", "turned_35", "turned_180", "inverted", "cropped_C5_C7",
            "cropped_C2_C5"]


def score(folder: Path, centres: Path) -> dict[str, int | float]:
    """Detection scores of ``centres`` (a ``vcorner detect`` output) against the annotations of ``folder``
    (flagged: a line in its ``.errors.csv`` or an image flag)."""
    truth = {r.file: r for r in read_annotations(folder / "annotations.json")}
    errors = centres.with_name(centres.stem + ".errors.csv")
    flagged = {row["image"] for row in csv.DictReader(open(errors, encoding="utf-8"))} if errors.exists() else set()
    found: dict[str, list[tuple[str, np.ndarray]]] = {}
    for row in csv.DictReader(open(centres, encoding="utf-8")):
        found.setdefault(row["image"], []).append((row["vertebra"], np.array([float(row["x"]), float(row["y"])])))
        if row.get("flags"):
            flagged.add(row["image"])
    return naming_counts(truth, found, flagged)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="An annotated phantom set (vcorner synth).")
    parser.add_argument("--detector", type=Path, help="A detector other than the shipped one (its view finder beside).")
    parser.add_argument("--variants", nargs="+", default=VARIANTS)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="vcorner-detect-variants-"))
    extra = ["--detector", str(args.detector)] if args.detector else []
    print("| variant | named-centre recall | misnamed | misnamed in films without a flag | films wrong without a flag "
          "| films all right but flagged |\n|---|---|---|---|---|---|")
    for name in args.variants:
        folder = scratch / name
        write_variant(args.data, folder, name)
        out = scratch / f"{name}-centres.csv"
        subprocess.run([sys.executable, "-m", "vcorner", "detect", str(folder), "--out", str(out), *extra],
                       capture_output=True, check=False)
        s = score(folder, out)
        print(f"| {name} | {s['recall']:.1%} | {s['misnamed']} | {s['silent_misnamed']} | "
              f"{s['unflagged_wrong_films']} of {s['films']} | {s['right_flagged']} |", flush=True)


if __name__ == "__main__":
    main()
