"""``vcorner baseline``: ``corners.csv`` from a baseline method instead of the network, for ``vcorner evaluate``.

The planned images (:func:`vcorner.stages.plan.make_plan`) are read one after another and answered by
:func:`vcorner.evaluation.baselines.baseline_corners`; rows and refusals go through the batch's own writers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from vcorner.evaluation.baselines import baseline_corners
from vcorner.io.atomic import write_text_atomic
from vcorner.io.claims import json_field
from vcorner.io.images import read_image
from vcorner.io.records import InputError
from vcorner.models.card import ModelCard
from vcorner.pipeline.outputs import CornerJournal, corner_rows, write_errors
from vcorner.stages.plan import Plan
from vcorner.stages.prepare import check_centers


def run_baseline(plan: Plan, out_dir: Path, method: str, card: ModelCard,
                 progress: Callable[[], None] | None = None) -> dict[str, str]:
    """Write ``out_dir/corners.csv`` and ``errors.csv`` of ``method`` (``prior`` or ``harris``) with ``card``'s
    prior; returns the failed images (name -> one-line reason), those refused by the plan included."""
    out_dir = Path(out_dir)
    journal = CornerJournal(out_dir / "corners.csv", {}, resume=False)
    failed = dict(plan.refused)
    try:
        for item in plan.images:
            try:
                pixels = read_image(item.path).pixels
                check_centers(item.record.centers, pixels.shape, [v.name for v in item.record.vertebrae])
                journal.add(corner_rows(item.record.file, baseline_corners(method, pixels, item.record, card)))
            except InputError as err:
                failed[item.record.file] = str(err)
            if progress:
                progress()
    finally:
        journal.close()
        write_errors(out_dir / "errors.csv", failed, dict(plan.refused_vertebrae))
        write_text_atomic(out_dir / BASELINE_MARKER, json.dumps({"format": BASELINE_FORMAT, "method": method}) + "\n")
    return failed


BASELINE_MARKER, BASELINE_FORMAT = "baseline.json", "vcorner-baseline/1"
"""The file that marks a folder ``vcorner baseline`` wrote (its corners.csv and errors.csv are its own)."""


def written_by_baseline(folder: Path) -> bool:
    """True when ``folder`` holds an earlier baseline's :data:`BASELINE_MARKER`."""
    return json_field(Path(folder) / BASELINE_MARKER) == BASELINE_FORMAT
