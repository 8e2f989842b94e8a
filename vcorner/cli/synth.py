"""``vcorner synth OUT --images N --seed S``: a phantom dataset of lateral C-spine radiographs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from vcorner.cli.common import progress_bar, stderr, user_errors


def synth(
    out: Annotated[Path, typer.Argument(help="Output folder for images, annotations.json and centers.csv.")],
    images: Annotated[int, typer.Option("--images", min=1, help="Number of images.")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same bytes).")] = 0,
    workers: Annotated[int | None, typer.Option(min=1, help="Processes (default: up to 2).")] = None,
    style: Annotated[str, typer.Option(help="train: the renderer the models learn from; context: the same films "
                                            "with C2 and T1 annotated too (for the centre detector); holdout: a "
                                            "second, "
                                            "independent renderer for validation only (vcorner train and tune "
                                            "refuse it); tall: lateral thoracolumbar films, T1-L5 "
                                            "(a many-level detector's world); varied: half domain-randomized "
                                            "films (every film its own look of bone, posterior elements, neck, "
                                            "skull base and field of view), half context films (the centre "
                                            "detector's wider world); ap: frontal thoracolumbar "
                                            "films, T1-L5 (another view and region, for testing that "
                                            "the tool says so).")] = "train",
    pathology: Annotated[str, typer.Option(help="rare: the renderer's own few wedge fractures and 1.5-4 mm slips "
                                                "(the default, as every recorded figure before issue #29); "
                                                "clinical: Genant grade 1-3 wedge, crush and biconcave fractures, "
                                                "antero- and retrolisthesis of 1-8 mm, degenerated discs, "
                                                "osteophytes, fused levels (README.md, Phantoms).")] = "rare",
    force: Annotated[bool, typer.Option("--force", help="Write into a folder whose annotations.json, centers.csv "
                                                       "or truth.json "
                                                       "vcorner synth did not write (they are moved into "
                                                       "previous-<time>/).")] = False,
) -> None:
    """Write a seeded phantom dataset in the vcorner annotation format.

    An earlier phantom dataset in OUT (it has phantoms.json) is rewritten; a folder with an annotations.json,
    centers.csv or truth.json of its own is kept unless --force."""
    from vcorner.io.claims import claim_folder
    from vcorner.phantoms.dataset import synthesize_dataset

    with user_errors():
        claim_folder(out, ("annotations.json", "centers.csv", "truth.json"), force=force,
                     own=lambda path: (path.parent / "phantoms.json").is_file())
    with user_errors(), progress_bar() as bar:
        task = bar.add_task("phantoms", total=images)
        began = time.perf_counter()
        synthesize_dataset(out, images, seed, workers=workers, progress=lambda n: bar.update(task, advance=n),
                           style=style, pathology=pathology)
    stderr.print(f"{images} phantom(s) in {time.perf_counter() - began:.1f} s: {out}", highlight=False)
