"""Films without a spine through the automatic path: smooth gradients, blurred noise and flat noisy films of
cervical-film sizes (seeded), run through ``vcorner detect`` with and without the view search. Each must be
refused ("no vertebrae found"); any answered film is counted, and whether it carries a flag.

    python benchmarks/no_spine.py [--films 30] [--seed 3030] [--detector D.onnx] [--keep DIR]
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


def film(kind: str, rng: np.random.Generator) -> np.ndarray:
    """(H, W) uint8 film without a spine: ``gradient``, ``blurred_noise`` or ``flat``."""
    h, w = int(rng.integers(400, 900)), int(rng.integers(300, 700))
    if kind == "gradient":
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * xx / w + np.sin(angle) * yy / h
        pixels = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-9) * rng.uniform(0.4, 0.9) + rng.uniform(0, 0.1)
    elif kind == "blurred_noise":
        sigma = rng.uniform(3, 25)
        pixels = cv2.GaussianBlur(rng.random((h, w)), (0, 0), sigma)
        pixels = (pixels - pixels.min()) / max(np.ptp(pixels), 1e-9)
    else:
        pixels = np.full((h, w), rng.uniform(0.2, 0.8)) + rng.normal(0, rng.uniform(0.01, 0.08), (h, w))
    return np.clip(np.round(pixels * 255), 0, 255).astype(np.uint8)


KINDS = ("gradient", "blurred_noise", "flat")


def answered(out: Path) -> tuple[int, int]:
    """(films answered, of them without any image flag) in ``out`` (a centers.detected-style CSV)."""
    flags: dict[str, str] = {}
    with open(out, encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            flags[row["image"]] = row.get("flags", "")
    return len(flags), sum(not f for f in flags.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, default=30)
    parser.add_argument("--seed", type=int, default=3030)
    parser.add_argument("--detector", type=Path)
    parser.add_argument("--keep", type=Path, help="write the films here (kept) instead of a temporary folder")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch) / "films"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(args.films):
            kind = KINDS[i % len(KINDS)]
            cv2.imwrite(str(folder / f"{kind}_{i:03d}.png"), film(kind, rng))
        extra = ["--detector", str(args.detector)] if args.detector else []
        for search in ("--view-search", "--no-view-search"):
            out = Path(scratch) / search / "centers.csv"
            subprocess.run([sys.executable, "-m", "vcorner", "detect", str(folder), "--out", str(out), search, *extra],
                           check=False, capture_output=True)
            n, unflagged = answered(out) if out.exists() else (0, 0)
            print(f"{search}: {n} of {args.films} films without a spine answered, {unflagged} without a flag")


if __name__ == "__main__":
    main()
