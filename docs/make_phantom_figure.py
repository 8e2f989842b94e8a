"""Make ``docs/phantoms.png``: the example phantoms with their annotations overlaid.

Usage (from the repository root)::

    vcorner synth examples/xrays --images 6 --seed 2024
    python docs/make_phantom_figure.py [--data examples/xrays] [--out docs/phantoms.png]

Each panel shows the raw image (left half) and the overlay (right half): clicked boundary spline (cyan),
centre (magenta ring) and corners coloured by name.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from vcorner.io.annotations import read_annotations  # noqa: E402
from vcorner.io.images import read_image  # noqa: E402
from vcorner.phantoms.overlay import CORNER_COLOURS, draw_annotations  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _panel(data: Path, record, info: dict) -> tuple[np.ndarray, str]:
    """Side-by-side raw image and overlay (RGB uint8), and a title."""
    image = read_image(data / record.file)
    rgb = np.dstack([np.clip(image.pixels * 255.0 + 0.5, 0, 255).astype(np.uint8)] * 3)  # as read, no stretch
    both = np.hstack([rgb, np.full((rgb.shape[0], rgb.shape[1] // 50, 3), 255, np.uint8),
                      draw_annotations(rgb, record)])
    hard = ", ".join(info.get("hard_cases", [])) or "typical"
    title = f"{record.file} ({info.get('format', '?')}, {image.pixel_spacing_mm or record.pixel_spacing_mm:.3f} mm)\n"
    return both, title + hard


def main() -> None:
    """Draw a 2 x 3 grid of the first six images of ``--data``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "examples" / "xrays")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "phantoms.png")
    parser.add_argument("--title", default="lateral C-spine radiographs", help="what the films are")
    args = parser.parse_args()
    records = read_annotations(args.data / "annotations.json")[:6]
    meta_path = args.data / "phantoms.json"
    meta = {m["file"]: m for m in json.loads(meta_path.read_text())["images"]} if meta_path.exists() else {}
    fig, axes = plt.subplots(2, 3, figsize=(16, 9), dpi=100)
    for ax, record in zip(axes.flat, records, strict=False):
        panel, title = _panel(args.data, record, meta.get(record.file, {}))
        ax.imshow(panel, interpolation="lanczos")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    for ax in axes.flat[len(records) :]:
        ax.axis("off")
    handles = [Line2D([], [], marker="o", ls="", color=np.array(c) / 255, label=n) for n, c in CORNER_COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False, fontsize=9)
    fig.suptitle(f"vcorner phantoms: {args.title} (raw | annotations)", fontsize=12)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.05, top=0.92, wspace=0.03, hspace=0.15)
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
