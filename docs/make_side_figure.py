"""docs/sides.png: the anterior side read from the film (README.md, "The anterior side, read from the film"). An
example film (examples/xrays/phantom_00000.png) mirrored, its clicked centres moved along, through ``vcorner batch
--centers`` without its view and with it; and a varied validation film turned by 35 degrees that the view finder
reads mirrored (tests/data/varied_turned_read_mirrored.png), through ``vcorner batch`` without centres. Corners
labelled anterior (``superior_right``, ``inferior_right``) are orange, posterior ones cyan; each panel names the
film's flags.

    python docs/make_side_figure.py
"""

from __future__ import annotations

import csv
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HEIGHT = 420
ANTERIOR = ("superior_right", "inferior_right")


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def batch(films: Path, out: Path, centres: Path | None = None) -> list[dict[str, str]]:
    command = [sys.executable, "-m", "vcorner", "batch", str(films), "--out", str(out)]
    subprocess.run(command + (["--centers", str(centres)] if centres else []), check=False, capture_output=True)
    return read_rows(out / "corners.csv")


def panel(pixels: np.ndarray, corners: list[dict[str, str]], label: str) -> np.ndarray:
    """One film with its corners (orange: labelled anterior, cyan: posterior) and ``label`` (RGB uint8)."""
    scale = HEIGHT / pixels.shape[0]
    small = cv2.resize(pixels, (int(pixels.shape[1] * scale), HEIGHT), interpolation=cv2.INTER_AREA)
    out = np.repeat(small[..., None], 3, axis=2)
    for r in corners:
        colour = (255, 140, 0) if r["corner"] in ANTERIOR else (0, 220, 255)
        cv2.circle(out, (int(float(r["x"]) * scale), int(float(r["y"]) * scale)), 3, colour, -1, cv2.LINE_AA)
    cv2.rectangle(out, (0, 0), (out.shape[1], 22), (255, 255, 255), -1)
    cv2.putText(out, label, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.hstack([out, np.full((HEIGHT, 8, 3), 255, np.uint8)])


def flags_of(corners: list[dict[str, str]]) -> str:
    flags = sorted({f for r in corners for f in r["flags"].split(";") if f})
    return ", ".join(flags) or "no flag"


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="vcorner-sides-"))
    films = scratch / "films"
    films.mkdir()
    grey = cv2.imread(str(ROOT / "examples" / "xrays" / "phantom_00000.png"), cv2.IMREAD_GRAYSCALE)
    mirrored = cv2.flip(grey, 1)
    cv2.imwrite(str(films / "mirrored.png"), mirrored)
    rows = [r for r in read_rows(ROOT / "examples" / "xrays" / "centers.csv") if r["image"] == "phantom_00000.png"]
    panels = []
    for view in ("", "mirrored"):
        centres = scratch / f"centres{view}.csv"
        with open(centres, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "vertebra", "x", "y", "pixel_spacing_mm", "view"])
            writer.writerows(["mirrored.png", r["vertebra"], f"{grey.shape[1] - 1 - float(r['x']):.3f}", r["y"],
                              r["pixel_spacing_mm"], view or "as_is"] for r in rows)
        corners = batch(films, scratch / f"out{view}", centres)
        given = f"view {view}" if view else "no view"
        panels.append(panel(mirrored, corners, f"clicked, mirrored, {given}: {flags_of(corners)}"))
    turned = scratch / "turned"
    turned.mkdir()
    fixture = ROOT / "tests" / "data" / "varied_turned_read_mirrored.png"
    (turned / fixture.name).write_bytes(fixture.read_bytes())
    corners = batch(turned, scratch / "out-turned")
    view = read_rows(scratch / "out-turned" / "centers.detected.csv")[0]["view"]
    pixels = cv2.imread(str(fixture), cv2.IMREAD_GRAYSCALE)
    panels.append(panel(pixels, corners, f"automatic, read {view}: {flags_of(corners)}"))
    out = ROOT / "docs" / "sides.png"
    cv2.imwrite(str(out), np.hstack(panels)[..., ::-1])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
