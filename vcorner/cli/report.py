"""``vcorner report OUT``: one static HTML page of a batch, worst images first."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from vcorner.cli.common import fail, progress_bar, stderr, user_errors


def report(
    out: Annotated[Path, typer.Argument(help="A vcorner batch output folder (corners.csv, errors.csv, run.json).")],
    annotations: Annotated[Path | None, typer.Option(help="annotations.json: rank images by their largest "
                                                          "corner error too.")] = None,
    dest: Annotated[Path | None, typer.Option("--out", "-o", help="The page to write (default OUT/report.html).")]
    = None,
    images: Annotated[Path | None, typer.Option(help="Images folder for thumbnails where no --vis overlay exists "
                                                     "(default: the folder run.json records).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out file that is not an earlier "
                                                       "vcorner report (it is moved into previous-<time>/).")]
    = False,
) -> None:
    """Write one static HTML page (no server, works offline) listing every image of the batch, most doubtful
    first, with thumbnails, each image's corners, and the run's summary.

    An earlier vcorner report at --out is rewritten; any other existing file is kept unless --force."""
    from vcorner.io.claims import claim_files
    from vcorner.report.render import is_report, write_report

    with user_errors():
        if not (out / "corners.csv").is_file() and not (out / "errors.csv").is_file():
            fail(f"{out}: not a vcorner batch output (no corners.csv or errors.csv)")
        truth = None
        if annotations is not None:
            from vcorner.io.annotations import read_annotations

            truth = read_annotations(annotations)
        dest = dest or out / "report.html"
        inputs = [out / name for name in ("corners.csv", "errors.csv", "run.json", "centers.detected.csv")]
        claim_files([dest], inputs=[*inputs, annotations], force=force, own=is_report)
        began = time.perf_counter()
        with progress_bar() as bar:
            def progress(total: int):
                task = bar.add_task("thumbnails", total=total)
                return lambda: bar.update(task, advance=1)

            entries = write_report(out, dest, images, truth, str(annotations) if annotations else None, progress)
    size = dest.stat().st_size
    stderr.print(f"{len(entries)} image(s), {size / 1e6:.2f} MB in {time.perf_counter() - began:.1f} s: {dest}",
                 highlight=False, soft_wrap=True)
