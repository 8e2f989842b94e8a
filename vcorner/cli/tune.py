"""``vcorner tune MODEL DATA``: decoding constants and ellipse calibration chosen on a validation set."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from vcorner.cli.common import open_model, progress_bar, stderr, user_errors
from vcorner.config import to_dict


def tune(
    model: Annotated[Path, typer.Argument(help="ONNX model whose sidecar card receives the tuned settings.")],
    data: Annotated[Path, typer.Argument(help="Annotated validation folder (never the test set).")],
    report: Annotated[Path | None, typer.Option(help="Write every candidate's scores as JSON here.")] = None,
    sampling: Annotated[bool, typer.Option(
        "--sampling/--no-sampling", help="Also pick the cheapest patch sampling with no loss of mean P2P.")] = False,
) -> None:
    """Grid-search the decoding settings by mean P2P on DATA and calibrate the 95% ellipses; update MODEL's card."""
    from vcorner.evaluation.tune import DEFAULT_GRID, cheapest_sampling, infer_records, tune_decode
    from vcorner.io.annotations import read_annotations
    from vcorner.models.modelfile import write_sidecar

    with user_errors():
        records = read_annotations(data / "annotations.json")
        runner, resolved = open_model(model)
        card = resolved.card
        sampling_scores: list[dict] = []
        with runner:
            if sampling:
                chosen, sampling_scores = cheapest_sampling(data, records, runner, card)
                card = replace(card, sampling=chosen)
                stderr.print(f"sampling: {chosen.patches_per_vertebra} patches per vertebra", highlight=False)
            jobs = infer_records(data, records, runner, card)
        total = 1
        for values in DEFAULT_GRID.values():
            total *= len(values)
        with progress_bar() as bar:
            task = bar.add_task("decoding settings", total=total)
            result = tune_decode(jobs, card, progress=lambda: bar.update(task, advance=1))
        tuned = replace(card.with_decode(result.decode),
                        training={**card.training, "decode_tuned_on": str(data), "tune_images": len(jobs),
                                  "tune_coverage": result.coverage})
        write_sidecar(model, tuned)
        if report:
            report.write_text(json.dumps({"decode": to_dict(result.decode), "sampling": to_dict(card.sampling),
                                          "sampling_variants": sampling_scores, "coverage": result.coverage,
                                          "candidates": result.candidates}, indent=1))
    best = min(result.candidates, key=lambda c: c["p2p_mean"])
    stderr.print(f"tuned on {len(jobs)} images: mean P2P {best['p2p_mean']:.3f}, ellipse scale "
                 f"{result.decode.ellipse_scale} (95% ellipse holds {result.coverage['inside_95']:.1%}); "
                 f"updated {model}.json", highlight=False)
