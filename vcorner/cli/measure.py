"""``vcorner measure CORNERS_CSV --out DIR``: heights, wedging, slips and angles with 95% intervals."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from vcorner.cli.common import stderr, user_errors


class Side(str, Enum):
    """Which side of the vertebra frame is anterior (right: a lateral film with the patient facing right)."""

    right = "right"
    left = "left"


def measure(
    corners: Annotated[Path, typer.Argument(help="corners.csv written by vcorner batch.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for measurements.csv.")] = Path("."),
    images: Annotated[Path | None, typer.Option(help="The images folder: DICOM headers give the pixel spacing.")]
    = None,
    centers: Annotated[Path | None, typer.Option(help="centers.csv whose pixel_spacing_mm column gives the spacing.")]
    = None,
    spacing: Annotated[float | None, typer.Option(
        help="Pixel spacing in mm for images without one (else lengths stay in pixels); 0.02-2 mm.")] = None,
    anterior: Annotated[Side, typer.Option(help="Anterior side of the vertebra frame (lateral films).")]
    = Side.right,
    ap: Annotated[bool, typer.Option("--ap", help="AP film: only what an AP film shows: middle height, width and "
                                                  "lateral tilt per vertebra, coronal angle per level, the Cobb "
                                                  "angle (no anterior/posterior heights, wedging, Genant grade or "
                                                  "listhesis).")] = False,
    reader_sd_mm: Annotated[float | None, typer.Option(
        "--reader-sd-mm", min=0.0, max=10.0,
        help="The calibration annotator's click spread about the true corners, mm per axis, for the anatomy "
             "intervals (default: the one the batch recorded in run.json beside CORNERS, from the model card; "
             "0: none).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an OUT/measurements.csv that vcorner did not write "
                                                       "(it is moved into previous-<time>/).")] = False,
) -> None:
    """Recompute OUT/measurements.csv from an existing corners.csv (the same as vcorner batch --measure).

    An earlier vcorner measurements.csv in OUT is rewritten; any other file of that name is kept unless --force."""
    from vcorner.io.claims import claim_files
    from vcorner.io.records import InputError
    from vcorner.measure.table import is_measurements, measure_run

    with user_errors():
        if reader_sd_mm is not None and not reader_sd_mm == reader_sd_mm:
            raise InputError("--reader-sd-mm must be a number of mm (0 for no anatomy intervals), got nan")
        claim_files([out / "measurements.csv"], inputs=[corners, centers], force=force, own=is_measurements)
        began = time.perf_counter()
        found, rows, mm = measure_run(corners, out / "measurements.csv", images, centers, anterior.value, ap, spacing,
                                      reader_sd_mm)
        seconds = time.perf_counter() - began
    without = sum(1 for c in found if not mm.get(c.image))
    note = f"; {without} image(s) without a pixel spacing are in pixels" if without else ""
    stderr.print(f"{len(rows)} measurement(s) of {len(found)} image(s) in {seconds:.2f} s{note}: "
                 f"{out / 'measurements.csv'}", highlight=False, soft_wrap=True)
