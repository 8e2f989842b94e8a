"""``vcorner detect DIR --out centers.csv``: find and name the vertebrae of every image, for review."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import TextColumn

from vcorner.cli.common import EXIT_OK, EXIT_PARTIAL, fail, progress_bar, stderr, user_errors, validation_notes


def detect(
    image_dir: Annotated[Path, typer.Argument(help="Folder of X-rays (PNG, JPEG, TIFF, DICOM).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Centres file to write (image,vertebra,x,y,"
                                                          "pixel_spacing_mm,confidence).")] = Path("centers.csv"),
    detector: Annotated[Path | None, typer.Option(help="Centre detector ONNX (default: the shipped one).")] = None,
    model: Annotated[Path | None, typer.Option(
        help="Corner model whose card says whether films are checked for the anterior side their view puts "
             "corners on (flag view_contradicted, as vcorner batch does; default: the shipped one).")] = None,
    view_search: Annotated[bool, typer.Option(
        help="Let the view finder pick each film's view (mirrored, upside down, inverted) before naming; "
             "--no-view-search looks at the films as they are, the finder only checking each shows a spine "
             "(about 4x faster).")] = True,
    min_confidence: Annotated[float | None, typer.Option(
        min=0.0, max=0.999, help="Drop detections below this confidence (default: the detector card's); a body cut "
                                 "by the film's edge that continues the names kept is kept down to half of it, or "
                                 "placed by the view finder.")] = None,
    max_pixels: Annotated[int | None, typer.Option(min=1, help="Refuse larger images (default 200 megapixels).")]
    = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing OUT (and its errors file); the "
                                                       "earlier files are moved into previous-<time>/ beside it.")]
    = False,
) -> None:
    """Find and name the vertebrae of every image in IMAGE_DIR and write their centres with a confidence.

    Review or correct OUT, then run vcorner batch IMAGE_DIR --centers OUT. Images where no vertebra was found go to
    <OUT stem>.errors.csv. Exit code 0: every image answered; 1: some failed; 2: usage error.
    """
    from dataclasses import replace

    from vcorner.hardware.cpu import available_cores
    from vcorner.io.claims import claim_files
    from vcorner.models.modelfile import default_detector_path, default_model_path, read_card_and_digest
    from vcorner.pipeline.detection import detect_folder, open_detector_use, resolve_detector, write_detected
    from vcorner.pipeline.local import MAX_DEFAULT_WORKERS
    from vcorner.pipeline.outputs import write_errors
    from vcorner.stages.plan import plan_folder
    from vcorner.stages.prepare import VIEW_CONTRADICTED

    with user_errors():
        plan = plan_folder(image_dir)
        if out.suffix.lower() != ".csv":
            fail(f"{out}: choose a .csv file for the centres")
        errors = out.with_name(f"{out.stem}.errors.csv")
        claim_files([out, errors], inputs=[p.path for p in plan.images], force=force)
        choice = resolve_detector(detector or default_detector_path(), view_search)
        side_check = read_card_and_digest(model or default_model_path(), verify=False)[0].trust.side_check
        validation_notes(choice.card)
        if min_confidence is not None:
            choice = replace(choice, card=choice.card.with_detection(replace(choice.card.detection,
                                                                             min_confidence=min_confidence)))
        with open_detector_use(choice) as found:  # one thread per session, one film per core
            with progress_bar(TextColumn("{task.completed}/{task.total} images")) as bar:
                task = bar.add_task("detecting", total=len(plan.images))
                result = detect_folder(plan, found, max_pixels, lambda: bar.update(task, advance=1),
                                       side_check=side_check,
                                       workers=min(available_cores(), MAX_DEFAULT_WORKERS))
        out.parent.mkdir(parents=True, exist_ok=True)
        write_detected(out, result.found)
        write_errors(errors, result.failed)
    vertebrae = sum(len(f.listed.vertebrae) for f in result.found)
    stderr.print(f"{len(result.found)} image(s), {vertebrae} vertebra centre(s) in {out}; {len(result.failed)} "
                 f"failed; {result.dropped} detection(s) below confidence {found.card.detection.min_confidence:g} "
                 f"dropped; {result.seconds:.1f} s", highlight=False, soft_wrap=True)
    if result.failed:
        stderr.print(f"failed images are listed with reasons in {errors}", highlight=False, soft_wrap=True)
    flagged = Counter(flag for f in result.found for flag in f.flags)
    if flagged:
        counts = ", ".join(f"{flag} {n} image(s)" for flag, n in sorted(flagged.items()))
        stderr.print(f"flagged: {counts} (README.md, Flags): their names or view may be wrong; check them (vcorner "
                     "batch --vis draws them) and correct the centres file before vcorner batch --centers",
                     highlight=False, soft_wrap=True)
    renamed = sum(f.second_namer for f in result.found)
    if renamed:
        stderr.print(f"{renamed} image(s) flagged levels_uncertain were named by the detector's second namer; check "
                     "their names before vcorner batch --centers", highlight=False, soft_wrap=True)
    contradicted = flagged[VIEW_CONTRADICTED]
    if contradicted:
        stderr.print(f"{contradicted} image(s) flagged {VIEW_CONTRADICTED}: their anatomy puts the anterior side on "
                     "the other side of the view they were named in, so the view column may be wrong; check them "
                     "and give the right view before vcorner batch --centers", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_PARTIAL if result.failed else EXIT_OK)
