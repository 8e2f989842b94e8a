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
    from vcorner.models.modelfile import default_model_path
    from vcorner.models.resolve import card_of
    from vcorner.pipeline.baseline import run_baseline
    from vcorner.stages.plan import make_plan

    with user_errors():
        card = card_of(model or default_model_path())
        plan = make_plan(image_dir, centers)
        with progress_bar() as bar:
            task = bar.add_task(method.value, total=len(plan.images))
            failed = run_baseline(plan, out, method.value, card, lambda: bar.update(task, advance=1))
    stderr.print(f"{len(plan.images) + len(plan.refused) - len(failed)} image(s) by {method.value}; {len(failed)} "
                 f"failed: {out / 'corners.csv'}", highlight=False)
    raise typer.Exit(EXIT_PARTIAL if failed else EXIT_OK)
