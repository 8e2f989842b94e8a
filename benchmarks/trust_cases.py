"""Issue 12's bad inputs, run as a user would: exit code, rows, NaN rows and corner error per case.

    python benchmarks/trust_cases.py                        # this checkout
    PYTHONPATH=/path/to/old/checkout python benchmarks/trust_cases.py   # another version, for a before/after

Each case runs ``python -m vcorner batch`` (so ``PYTHONPATH`` picks the code) on the shipped example film
``examples/xrays/phantom_00000.png`` with its clicked centres changed as the case says, and prints one line:
exit code, corners.csv rows, rows holding ``nan``, mean and largest distance to the annotated corners
(pixels; 0.163 mm each), and the last line the user saw. Nothing is written outside a temporary folder.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "xrays"
IMAGE = "phantom_00000.png"
NAMES = ("C3", "C4", "C5", "C6", "C7")
CORNERS = ("superior_left", "superior_right", "inferior_left", "inferior_right")


def annotated() -> tuple[dict[str, list[float]], dict[str, np.ndarray]]:
    """Clicked centres and annotated corners of the example film, by vertebra name."""
    record = next(r for r in json.loads((EXAMPLES / "annotations.json").read_text())["images"] if r["file"] == IMAGE)
    return ({v["name"]: v["center"] for v in record["vertebrae"]},
            {v["name"]: np.array(v["corners"]) for v in record["vertebrae"]})


CENTRES, TRUTH = annotated()


def rows(moved: dict | None = None, order=NAMES, image: str = IMAGE) -> str:
    """centers.csv rows of the film, with ``moved`` = {name: (x, y)} replacing some centres."""
    return "".join(f"{image},{n},{(moved or {}).get(n, CENTRES[n])[0]},{(moved or {}).get(n, CENTRES[n])[1]}\n"
                   for n in order)


def error_px(row: dict, shift_y: float) -> float:
    """Distance of one corners.csv row to its annotated corner (NaN when unknown)."""
    if row["vertebra"] not in TRUTH or row["x"] == "nan":
        return float("nan")
    truth = TRUTH[row["vertebra"]][CORNERS.index(row["corner"])] - [0.0, shift_y]
    return float(np.hypot(float(row["x"]) - truth[0], float(row["y"]) - truth[1]))


def run(case: str, text: str, extra=(), setup: Callable[[Path, Path], None] | None = None,
        images: Callable[[Path], Path] | None = None, centers: Callable[[Path], Path] | None = None,
        shift_y: float = 0.0) -> Path:
    """Run one case in a fresh folder and print its line; the folder."""
    work = Path(tempfile.mkdtemp(prefix="vcorner-case-"))
    folder = work / "in"
    folder.mkdir()
    shutil.copy(EXAMPLES / IMAGE, folder / IMAGE)
    if setup:
        setup(work, folder)
    csv_path = centers(work) if centers else folder / "centers.csv"
    csv_path.write_text("image,vertebra,x,y\n" + text)
    out = work / "out"
    done = subprocess.run([sys.executable, "-m", "vcorner", "batch", str(images(work) if images else folder),
                           "--centers", str(csv_path), "--out", str(out), *extra], capture_output=True, text=True)
    said = [line for line in done.stderr.strip().splitlines() if line.strip()]
    found = ""
    if (out / "corners.csv").is_file():
        table = list(csv.DictReader(open(out / "corners.csv", encoding="utf-8")))
        errors = [error_px(r, shift_y) for r in table]
        nan_rows = sum(r["x"] == "nan" for r in table)
        mean = np.nanmean(errors) if errors and not np.all(np.isnan(errors)) else float("nan")
        top = np.nanmax(errors) if errors and not np.all(np.isnan(errors)) else float("nan")
        found = f"rows {len(table)}, nan rows {nan_rows}, mean error {mean:.1f} px, max {top:.1f} px; "
    print(f"{case}: exit {done.returncode}; {found}last line: {said[-1][:150] if said else ''}", flush=True)
    return work


def main() -> None:
    c3 = CENTRES["C3"]
    run("1 C5 given C3's centre", rows({"C5": c3}), ["--json"])
    run("1 C4 1e-4 px from C3", rows({"C4": [c3[0] + 1e-4, c3[1]]}))
    run("2 listed caudal first", rows(order=NAMES[::-1]))
    run("3 C6 clicked at the top", rows({"C6": [420.0, 5.0]}))
    top = int(np.ceil(c3[1] + 0.7))

    def crop(work: Path, folder: Path) -> None:
        pixels = cv2.imread(str(folder / IMAGE), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(folder / IMAGE), pixels[top:])

    run("4 C3's centre 0.7+ px above a cropped film", rows({n: [CENTRES[n][0], CENTRES[n][1] - top] for n in NAMES}),
        setup=crop, shift_y=top)

    def into_vis(work: Path, folder: Path) -> None:
        (work / "out" / "vis").mkdir(parents=True)
        shutil.copy(folder / IMAGE, work / "out" / "vis" / IMAGE)

    run("8 batch OUT/vis --out OUT --vis", rows(), ["--vis"], setup=into_vis, images=lambda w: w / "out" / "vis",
        centers=lambda w: w / "c.csv")
    run("10 --device foo", rows(), ["--device", "foo"])
    run("11 --threads 1000", rows(), ["--threads", "1000"])
    work = run("11 a vertebra named =1+1", rows().replace(",C3,", ",=1+1,"))
    if (work / "out" / "corners.csv").is_file():
        print("   its corners.csv field:", (work / "out" / "corners.csv").read_text().splitlines()[1].split(",")[1])
    work = run("7 first run", rows(), setup=lambda w, f: shutil.copy(f / IMAGE, f / "other.png"))
    second = work / "second.csv"
    second.write_text("image,vertebra,x,y\n" + rows(image="other.png"))
    done = subprocess.run([sys.executable, "-m", "vcorner", "batch", str(work / "in"), "--centers", str(second),
                           "--out", str(work / "out")], capture_output=True, text=True)
    images = sorted({r["image"] for r in csv.DictReader(open(work / "out" / "corners.csv", encoding="utf-8"))})
    print(f"7 second run with another centers.csv: exit {done.returncode}; images in corners.csv: {images}")


if __name__ == "__main__":
    main()
