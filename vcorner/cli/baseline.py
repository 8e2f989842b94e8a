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
    force: Annotated[bool, typer.Option("--force", help="Write into an OUT whose corners.csv or errors.csv an "
                                                       "earlier baseline did not write (they are moved into "
                                                       "previous-<time>/).")] = False,
) -> None:
    """Write OUT/corners.csv from a baseline, for `vcorner evaluate` to compare with the network.

    Exit code 0: every vertebra answered; 1: some images or vertebrae failed (errors.csv, as vcorner batch)."""
    from vcorner.io.claims import claim_folder
    from vcorner.models.modelfile import card_of, default_model_path
    from vcorner.pipeline.baseline import run_baseline, written_by_baseline
    from vcorner.stages.plan import make_plan

    with user_errors():
        card = card_of(model or default_model_path())
        plan = make_plan(image_dir, centers)
        claim_folder(out, ("corners.csv", "errors.csv"), inputs=[centers, *(p.path for p in plan.images)],
                     force=force, own=lambda path: written_by_baseline(path.parent))
        with progress_bar() as bar:
            task = bar.add_task(method.value, total=len(plan.images))
            failed = run_baseline(plan, out, method.value, card, lambda: bar.update(task, advance=1))
    stderr.print(f"{len(plan.images) + len(plan.refused) - len(failed)} image(s) by {method.value}; {len(failed)} "
                 f"failed: {out / 'corners.csv'}", highlight=False)
    if plan.refused_vertebrae:
        stderr.print(f"{len(plan.refused_vertebrae)} vertebra(e) left out for bad centres: listed in "
                     f"{out / 'errors.csv'}", highlight=False)
    raise typer.Exit(EXIT_PARTIAL if failed or plan.refused_vertebrae else EXIT_OK)
