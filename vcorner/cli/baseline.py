"""``vcorner baseline DIR --centers centers.csv --method prior|harris``: corners.csv from a baseline."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from vcorner.cli.common import EXIT_OK, EXIT_PARTIAL, progress_bar, stderr, user_errors


class Method(str, Enum):
    prior = "prior"
    harris = "harris"


def baseline(
    image_dir: Annotated[Path, typer.Argument(help="Folder of X-rays.")],
    centers: Annotated[Path, typer.Option("--centers", help="centers.csv.")],
    method: Annotated[Method, typer.Option(help="prior: the prior's mean; harris: prior-weighted Harris.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("vcorner-baseline"),
    model: Annotated[Path | None, typer.Option(help="Model whose prior is used (default: shipped).")] = None,
) -> None:
    """Write OUT/corners.csv from a baseline, for `vcorner evaluate` to compare with the network."""
    from vcorner.evaluation.baselines import baseline_corners
    from vcorner.io.images import read_image
    from vcorner.io.records import InputError
    from vcorner.modelfile import default_model_path, read_model_card
    from vcorner.pipeline.outputs import CornerJournal, corner_rows, write_errors
    from vcorner.pipeline.plan import make_plan
    from vcorner.pipeline.stages import check_centers

    with user_errors():
        card = read_model_card(model or default_model_path())
        plan = make_plan(image_dir, centers)
        journal = CornerJournal(out / "corners.csv", {}, resume=False)
        failed = dict(plan.refused)
        with progress_bar() as bar:
            task = bar.add_task(method.value, total=len(plan.images))
            for item in plan.images:
                try:
                    pixels = read_image(item.path).pixels
                    check_centers(item.record.centers, pixels.shape, [v.name for v in item.record.vertebrae])
                    journal.add(corner_rows(item.record.file, baseline_corners(method.value, pixels,
                                                                               item.record, card)))
                except InputError as err:
                    failed[item.record.file] = str(err)
                bar.update(task, advance=1)
        journal.close()
        write_errors(out / "errors.csv", failed)
    stderr.print(f"{len(plan.images) - len(failed)} image(s) by {method.value}; {len(failed)} failed: "
                 f"{out / 'corners.csv'}", highlight=False)
    raise typer.Exit(EXIT_PARTIAL if failed else EXIT_OK)
