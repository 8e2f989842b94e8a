"""``vcorner tune MODEL DATA``: decoding constants and ellipse calibration chosen on a validation set."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from vcorner.backends import ModelRequest
from vcorner.cli.common import open_model, progress_bar, stderr, user_errors
from vcorner.config import to_dict
from vcorner.models.card import ModelCard

TUNE_REPORT = "vcorner-tune-report/1"
"""The mark of a ``--report`` file vcorner tune wrote: a re-run may replace it."""


def is_tune_report(path: Path) -> bool:
    """True when ``path`` is a report an earlier ``vcorner tune --report`` wrote."""
    from vcorner.io.claims import json_field

    return json_field(path) == TUNE_REPORT


def tune(
    model: Annotated[Path, typer.Argument(help="ONNX model whose sidecar card receives the tuned settings.")],
    data: Annotated[Path, typer.Argument(help="Annotated validation folder (never the test set).")],
    report: Annotated[Path | None, typer.Option(help="Write every candidate's scores as JSON here.")] = None,
    sampling: Annotated[bool, typer.Option(
        "--sampling/--no-sampling", help="Also pick the patch sampling with the fewest patches whose mean P2P is "
                                         "at most --sampling-tolerance above the model's own.")] = False,
    sampling_tolerance: Annotated[float, typer.Option(
        min=0.0, help="Largest mean P2P loss (mm; px when some image of DATA has no pixel spacing) accepted for "
                      "fewer patches per vertebra.")] = 0.01,
    precision: Annotated[str, typer.Option(
        help="Graph the network runs on the CPU while tuning: auto (what vcorner batch runs here), fp32 or "
             "int8.")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="Replace a --report file that an earlier vcorner tune did "
                                                       "not write (it is moved into previous-<time>/).")] = False,
    trust: Annotated[bool, typer.Option(
        "--trust/--no-trust", help="Also refit the card's trust on DATA: the evidence-grown ellipses and the limits "
                                   "of the implausible_shape and patches_disagree flags (README.md, Flags).")] = True,
) -> None:
    """Grid-search the decoding settings by mean P2P on DATA and calibrate the 95% ellipses; refit the flags' limits
    and ellipses of the card's trust; update MODEL's card."""
    from vcorner.evaluation.tune import DEFAULT_GRID, cheapest_sampling, infer_records, tune_decode, untuned
    from vcorner.io.annotations import read_annotations
    from vcorner.io.claims import claim_files
    from vcorner.models.modelfile import sidecar_path, write_sidecar
    from vcorner.phantoms.holdout import refuse_holdout

    with user_errors():
        refuse_holdout(data, "tuning")
        if report is not None:
            claim_files([report], inputs=[model, sidecar_path(model), *variant_sidecars(model),
                                          data / "annotations.json"], force=force, own=is_tune_report)
        records = read_annotations(data / "annotations.json")
        runner, resolved = open_model(ModelRequest(model, precision=precision))
        card = resolved.card
        sampling_scores: list[dict] = []
        with runner:
            if sampling:
                chosen, sampling_scores = cheapest_sampling(data, records, runner, card, sampling_tolerance)
                card = replace(card, sampling=chosen)
                stderr.print(f"sampling: {chosen.patches_per_vertebra} patches per vertebra", highlight=False)
            with progress_bar() as bar:
                task = bar.add_task("network maps", total=len(records))
                jobs = infer_records(data, records, runner, card, progress=lambda: bar.update(task, advance=1))
        total = 1
        for values in DEFAULT_GRID.values():
            total *= len(values)
        with progress_bar() as bar:
            task = bar.add_task("decoding settings", total=total)
            result = tune_decode(jobs, card, progress=lambda: bar.update(task, advance=1))
        previous = untuned(resolved.card)
        tuned = replace(card.with_decode(result.decode),
                        training={**card.training, "decode_tuned_on": str(data), "tune_images": len(jobs),
                                  "tune_unit": result.unit,
                                  "tune_coverage": result.coverage, "tuned_with": resolved.describe(),
                                  "before_tuning": previous,
                                  **({"sampling_scores": sampling_scores} if sampling else {})})
        if trust:
            tuned = with_trust(tuned, jobs, data)
        write_sidecar(model, tuned)
        for variant in update_variants(model, tuned):
            stderr.print(f"updated {variant}.json alike", highlight=False)
        if report:
            report.write_text(json.dumps({"format": TUNE_REPORT, "decode": to_dict(result.decode),
                                          "sampling": to_dict(card.sampling),
                                          "unit": result.unit, "unit_note": result.unit_note,
                                          "sampling_variants": sampling_scores, "coverage": result.coverage,
                                          "candidates": result.candidates}, indent=1))
    best = min(result.candidates, key=lambda c: c["p2p_mean"])
    stderr.print(f"tuned on {len(jobs)} images: mean P2P {best['p2p_mean']:.3f} {result.unit}, ellipse scale "
                 f"{result.decode.ellipse_scale} (95% ellipse holds {result.coverage['inside_95']:.1%}, 50% ellipse "
                 f"{result.coverage.get('inside_50', float('nan')):.1%}: only the 95% is fitted); "
                 f"{_offset_words(result.decode.corner_offset)}; updated {model}.json", highlight=False)


def _offset_words(offset: tuple[float, ...]) -> str:
    """The fitted corner offset in words: its largest move, in vertebra sizes."""
    if not offset:
        return "no corner offset (no network corner to fit it on)"
    largest = max(abs(x) for x in offset)
    return f"corner offset fitted (each network corner moved by up to {largest:.4f} vertebra sizes per axis)"


def with_trust(card: ModelCard, jobs: list, data: Path) -> ModelCard:
    """``card`` with its ``trust`` refitted on the inferred ``jobs`` of ``data`` (:mod:`vcorner.evaluation.trust`);
    the card as it was, and a line saying why, when ``data`` holds too few corners to fit it."""
    from vcorner.evaluation.trust import corner_evidence, fit_trust, reader_spread
    from vcorner.io.records import InputError

    try:
        trust, reached = fit_trust(corner_evidence(jobs, card))
    except InputError as err:
        stderr.print(f"trust: kept the card's ({err})", highlight=False)
        return card
    trust = replace(trust, reader_sd_mm=reader_spread([(data, [record for _, record in jobs])]))
    if trust.reader_sd_mm:
        stderr.print(f"trust: the annotator's clicks lie {trust.reader_sd_mm} mm (sd per axis) from {data}/truth.json: "
                     "measurements get anatomy intervals", highlight=False)
    chosen = (f"{reached['corners']} network corners of {reached['vertebrae']} vertebrae of {data}, flag limits at "
              f"the {reached['percentile']:g}th percentile: vcorner tune")
    stderr.print(f"trust: refitted on {reached['corners']} corners (95% ellipse holds {reached['inside_95']:.1%}); "
                 f"flag limits: height {trust.height_limit}, spread {trust.spread_limit}", highlight=False)
    return replace(card, trust=trust, training={**card.training, "trust_chosen_on": chosen,
                                                "trust_coverage": {k: reached[k] for k in ("inside_50", "inside_95")}})


def variant_sidecars(model: Path) -> list[Path]:
    """The cards of the INT8 and FP16 variants beside ``model`` that tune rewrites (inputs a --report must spare)."""
    from vcorner.models.modelfile import sidecar_path
    from vcorner.models.variants import fp16_path, int8_path

    return [sidecar_path(variant) for variant in (int8_path(model), fp16_path(model))]


def update_variants(model: Path, tuned: ModelCard) -> list[Path]:
    """Give the INT8 and FP16 variants beside ``model`` the tuned card (keeping each one's quantization note), so
    that every precision decodes alike; returns the variants updated."""
    from vcorner.models.modelfile import read_model_card, write_sidecar
    from vcorner.models.variants import fp16_path, int8_path

    updated = []
    for variant in (int8_path(model), fp16_path(model)):
        if variant.is_file():
            note = read_model_card(variant).training.get("quantization")
            write_sidecar(variant, replace(tuned, training={**tuned.training, "quantization": note}))
            updated.append(variant)
    return updated
