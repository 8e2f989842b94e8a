"""``vcorner evaluate PRED ANNOTATIONS``: the paper's Table 1, per-corner/per-vertebra tables and plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vcorner.cli.common import open_model, stderr, user_errors
from vcorner.io.records import InputError

COLUMNS = (("p2p_median", "P2P median"), ("p2p_mean", "mean"), ("p2p_std", "std"),
           ("fit_failure_pct", "fit failure %"), ("p2c_median", "P2C median"), ("p2c_mean", "mean"),
           ("p2c_std", "std"), ("inside_50", "in 50% ellipse"), ("inside_95", "in 95% ellipse"),
           ("corners", "corners"))


def _cell(key: str, value: float | None) -> str:
    """One table cell: "n/a" for a value that was not measured (NaN or None), whatever its column."""
    if key == "corners" and value is not None:
        return str(value)
    return _number(value, ".1%" if key.startswith("inside_") else ".2f")  # NaN: e.g. no network corner


def _number(value: float | None, spec: str, suffix: str = "") -> str:
    """``value`` formatted with ``spec`` (and ``suffix``), or "n/a" when it is missing (None or NaN)."""
    return "n/a" if value is None or value != value else f"{value:{spec}}{suffix}"


def finite_or_none(value):
    """``value`` with every NaN or infinity replaced by None, recursively (for valid JSON)."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value


def rich_table(title: str, rows: dict[str, dict[str, float]]) -> Table:
    """A Table-1 style table, one row per method/corner/vertebra."""
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for _, label in COLUMNS:
        table.add_column(label, justify="right")
    for name, row in rows.items():
        table.add_row(name, *(_cell(k, row.get(k, float("nan"))) for k, _ in COLUMNS))
    return table


def _pairs(items: list[str]) -> list[tuple[str, str]]:
    """Parse NAME=PATH items."""
    pairs = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--compare expects NAME=PATH, got {item!r}")
        pairs.append((name, path))
    return pairs


EVALUATION_FORMAT = "vcorner-evaluation/1"
"""The mark of the JSON files ``vcorner evaluate --out`` writes: a folder holding one is its own to rewrite."""
METRIC_FILES = ("metrics.json", "cumulative_error.png", "box_plots.png", "reliability.png")


def written_by_evaluate(folder: Path) -> bool:
    """True when ``folder`` holds a JSON an earlier ``vcorner evaluate --out`` wrote."""
    from vcorner.io.claims import json_field

    return any(json_field(folder / name) == EVALUATION_FORMAT for name in ("metrics.json", "detection.json",
                                                                           "patch_bc.json"))


def claim_outputs(out: Path | None, names: tuple[str, ...], inputs: list[Path], force: bool) -> None:
    """The output rule (:mod:`vcorner.io.claims`) for the files evaluate writes in ``out``."""
    from vcorner.io.claims import claim_folder

    if out is not None:
        claim_folder(out, names, inputs=inputs, force=force, own=lambda path: written_by_evaluate(path.parent))


def evaluate(
    predictions: Annotated[Path, typer.Argument(help="corners.csv written by vcorner batch (with --patches: "
                                                     "the ONNX model; a centres file of vcorner detect: detection "
                                                     "scores).")],
    annotations: Annotated[Path, typer.Argument(help="annotations.json with the true corners.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for metrics.json and plots.")] = None,
    label: Annotated[str, typer.Option(help="Name of PREDICTIONS in the tables.")] = "vcorner",
    compare: Annotated[list[str] | None, typer.Option(
        "--compare", help="NAME=corners.csv of another method (repeatable), e.g. prior=out/prior/corners.csv.")] = None,
    patches: Annotated[bool, typer.Option("--patches", help="Patch level instead: BC of PREDICTIONS (a model)'s "
                                                            "maps against ground truth, with a histogram.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace files in --out that an earlier vcorner evaluate "
                                                       "did not write (they are moved into previous-<time>/).")]
    = False,
    fit_failure_px: Annotated[float | None, typer.Option(
        "--fit-failure-px", min=0.0, help="Without a pixel spacing (errors in px): count a corner further than this "
                                          "many px as a fit failure (else fit failure is n/a).")] = None,
) -> None:
    """Compare predicted corners with annotations: P2P, P2C (mm, or px without spacing), fit failure (> 3 mm; in
    px only against --fit-failure-px), and how many true corners the 50% and 95% ellipses hold."""
    from vcorner.evaluation.metrics import (
        calibration,
        calibration_lines,
        grouped_rows,
        match,
        read_predictions,
        table1_row,
        unflagged,
    )
    from vcorner.io.annotations import read_annotations

    with user_errors():
        inputs = [predictions, annotations, *(Path(path) for _, path in _pairs(compare or []))]
    if patches:
        with user_errors():
            claim_outputs(out, ("patch_bc.json", "patch_bc.png"), inputs, force)
        evaluate_patches(predictions, annotations, out)
        return
    if is_centres_file(predictions):
        with user_errors():
            claim_outputs(out, ("detection.json",), inputs, force)
        evaluate_centres(predictions, annotations, out)
        return
    with user_errors():
        claim_outputs(out, METRIC_FILES, inputs, force)
        truth = read_annotations(annotations)
        errors = match(read_predictions(predictions), truth)
        others = {name: match(read_predictions(Path(path)), truth) for name, path in _pairs(compare or [])}
        for name, e in {label: errors, **others}.items():
            if not e.p2p:
                raise InputError(f"{name}: no predicted corner matches an annotated one (same image and vertebra "
                                 f"names? {len(e.missing)} annotated, {len(e.unexpected)} predicted)")
        calib = calibration(errors)
        overall = {**table1_row(errors, fit_failure_px), **calib}
        unit = overall["unit"]
        if errors.unit_note:
            stderr.print(f"warning: {errors.unit_note}", highlight=False)
        if fit_failure_px is not None and unit == "mm":
            stderr.print(f"warning: --fit-failure-px ignored: the errors are in mm, and fit failure is "
                         f"{overall['fit_failure_rule']}", highlight=False)
        rows = {label: overall, **{name: {**table1_row(e, fit_failure_px), **calibration(e)}
                                   for name, e in others.items()}}
        console = Console(soft_wrap=True)
        console.width = max(console.width, 120)  # keep Table 1 on one line per row in logs too
        console.print(rich_table(f"Corner error ({unit})", rows))
        console.print(f"fit failure: P2P {overall['fit_failure_rule']}"
                      + ("; pass --fit-failure-px N to judge errors in px" if overall["fit_failure_pct"]
                         != overall["fit_failure_pct"] else ""), highlight=False)
        calib = {**calib, "verdicts": calibration_lines(calib)}
        console.print(f"calibration of {label}'s ellipses ({calib['ellipse_corners']} network corners):",
                      highlight=False)
        for line in calib["verdicts"]:
            console.print(f"  {line}", highlight=False)
        kept = unflagged(errors)
        if kept is not None:
            calib["unflagged"] = {**calibration(kept), "verdicts": calibration_lines(calibration(kept))}
            console.print(f"calibration of the {calib['unflagged']['ellipse_corners']} network corners without a flag "
                          f"({len(errors.flags) - len(kept.flags)} of {len(errors.flags)} corners flagged):",
                          highlight=False)
            for line in calib["unflagged"]["verdicts"]:
                console.print(f"  {line}", highlight=False)
        for name, row in list(rows.items())[1:]:
            gain = 100.0 * (row["p2p_mean"] - overall["p2p_mean"]) / row["p2p_mean"]
            console.print(f"relative improvement of {label} over {name} in mean P2P: {gain:.0f}%", highlight=False)
        per_corner = grouped_rows(errors, "corner", fit_failure_px)
        per_vertebra = grouped_rows(errors, "vertebra", fit_failure_px)
        console.print(rich_table("Per corner", per_corner))
        console.print(rich_table("Per vertebra (cranial first)", per_vertebra))
        measures = compare_measures(predictions, truth, console)
        if "deformed" in measures:
            measures["p2p_by_shape"] = deformed_split(errors, measures.pop("deformed"), fit_failure_px)
            console.print(_deformed_line(measures["p2p_by_shape"], errors.unit), highlight=False)
        for kind in ("missing", "unexpected"):
            names = getattr(errors, kind)
            if names:
                stderr.print(f"{len(names)} {kind} corner(s), e.g. {', '.join(names[:3])}", highlight=False)
        if out is not None:
            from vcorner.evaluation.plots import box_plots, cumulative_curve, reliability_plot

            out.mkdir(parents=True, exist_ok=True)
            report = {"format": EVALUATION_FORMAT, "overall": overall, "unit_note": errors.unit_note,
                      "methods": rows, "calibration": calib,
                      "per_corner": per_corner, "per_vertebra": per_vertebra,
                      "missing": errors.missing, "unexpected": errors.unexpected, "measurements": measures}
            (out / "metrics.json").write_text(json.dumps(finite_or_none(report), indent=1, allow_nan=False))
            cumulative_curve({label: errors, **others}, out / "cumulative_error.png", unit)
            box_plots(errors, out / "box_plots.png", unit)
            reliability_plot(errors, out / "reliability.png")
            stderr.print(f"wrote {out / 'metrics.json'} and plots", highlight=False)


def deformed_split(errors, deformed: set[tuple[str, str]], fit_failure_px: float | None) -> dict[str, dict]:
    """Table 1 of the corners of deformed vertebrae (:func:`vcorner.measure.compare.deformed_vertebrae`) and of
    the normal ones."""
    from vcorner.evaluation.metrics import subset, table1_row

    out = {}
    for label, wanted in (("deformed", True), ("normal", False)):
        keys = zip(errors.image, errors.vertebra, strict=True)
        pick = [i for i, key in enumerate(keys) if (key in deformed) == wanted]
        out[label] = ({**table1_row(subset(errors, pick), fit_failure_px), "vertebrae": len(pick) // 4} if pick
                      else {"vertebrae": 0})
    return out


def _deformed_line(split: dict[str, dict], unit: str) -> str:
    """One line: mean P2P of deformed against normal vertebrae."""
    parts = [f"{label} {_number(row.get('p2p_mean'), '.3f')} {unit} ({row['vertebrae']} vertebrae)"
             for label, row in split.items()]
    return ("mean P2P of deformed vertebrae (Genant grade >= 1 or beside a slip >= 3 mm, by the annotated corners) "
            f"against normal ones: {parts[0]}; {parts[1]}")


def compare_measures(predictions: Path, truth: list, console: Console) -> dict:
    """Measurements of the predicted corners (with intervals) against those of the annotated corners: a table
    of error and 95%-interval coverage per measure (and anatomy-interval coverage, where the batch recorded the
    reader's spread in run.json beside ``predictions``), and fracture/slip detection; the figures as a dict."""
    from vcorner.io.spacing import common_unit, spacing_in
    from vcorner.measure.compare import (
        compare_measurements,
        deformed_vertebrae,
        detection,
        flag_detection,
        truth_measurements,
    )
    from vcorner.measure.table import measure_all, read_corners, reader_spread_of_run

    unit, _ = common_unit(truth)  # as the corner errors: mm only when every image has a spacing
    spacing = {r.file: spacing_in(unit, r) for r in truth}
    try:
        predicted = measure_all(read_corners(predictions), spacing,
                                reader_sd_mm=reader_spread_of_run(Path(predictions).parent))
    except InputError as err:  # a corners.csv of another tool, without uncertainty columns
        stderr.print(f"measurements not compared: {err}", highlight=False, soft_wrap=True)
        return {}
    expected = truth_measurements(truth, unit=unit)
    per_measure, detected = compare_measurements(predicted, expected), detection(predicted, expected)
    table = Table(title="Measurements against the annotated corners", title_justify="left")
    anatomy = any(row["coverage_anatomy"] is not None for row in per_measure.values())
    columns = ("measure", "unit", "MAE", "in 95% interval", *(("in anatomy interval",) if anatomy else ()), "n")
    for column in columns:
        table.add_column(column, justify="left" if column in ("measure", "unit") else "right")
    for name, row in per_measure.items():
        cells = (_number(row["coverage_anatomy"], ".1%"),) if anatomy else ()
        table.add_row(name, row["unit"], _number(row["mae"], ".3f"), _number(row["coverage_95"], ".1%"), *cells,
                      str(row["n"]))
    console.print(table)
    for label, row in detected.items():
        sens, spec = _number(row["sensitivity"], ".1%"), _number(row["specificity"], ".1%")
        console.print(f"{label} (found value): sensitivity {sens} ({row['positives']} annotated), specificity {spec} "
                      f"({row['negatives']} annotated)", highlight=False)
    flagged = flag_detection(predicted, expected)
    for label, row in flagged.items():
        sens, spec = _number(row["sensitivity"], ".1%"), _number(row["specificity"], ".1%")
        console.print(f"flag {label}: sensitivity {sens}, specificity {spec}", highlight=False)
    return {"per_measure": per_measure, "detection": detected, "flags": flagged,
            "deformed": deformed_vertebrae(expected)}


def is_centres_file(path: Path) -> bool:
    """A centres file (``vcorner detect``'s, or ``OUT/centers.detected.csv``) rather than a ``corners.csv``: its
    header has x and y but no corner column."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            header = {h.strip().lower() for h in handle.readline().replace(";", ",").replace("\t", ",").split(",")}
    except (OSError, UnicodeDecodeError):
        return False
    return {"x", "y", "vertebra"} <= header and "corner" not in header


def evaluate_centres(predictions: Path, annotations: Path, out: Path | None) -> None:
    """Detection scores of a centres file against the annotated centres."""
    from vcorner.evaluation.detection import score_detections
    from vcorner.io.annotations import read_annotations
    from vcorner.io.centers import load_centers

    with user_errors():
        scores = score_detections(load_centers(predictions).records, read_annotations(annotations))
    radius = f"{scores.radius:g} mm" if scores.unit == "mm" else f"{scores.radius:g} vertebra spacings"
    table = Table(title=f"Centre detection (correct: the right name within {radius})", title_justify="left")
    for column in ("annotated", "predicted", "correct", "recall", "precision", "misnamed", "error median",
                   "error mean", "images without"):
        table.add_column(column, justify="right")
    table.add_row(str(scores.annotated), str(scores.predicted), str(scores.correct), _number(scores.recall, ".1%"),
                  _number(scores.precision, ".1%"), str(scores.misnamed),
                  _number(scores.error_median, ".2f", f" {scores.unit}"),
                  _number(scores.error_mean, ".2f", f" {scores.unit}"), str(scores.images_without))
    console = Console(soft_wrap=True)
    console.width = max(console.width, 120)
    console.print(table)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        document = {"format": EVALUATION_FORMAT, **scores.to_dict()}
        (out / "detection.json").write_text(json.dumps(finite_or_none(document), indent=1, allow_nan=False))
        stderr.print(f"wrote {out / 'detection.json'}", highlight=False)


def evaluate_patches(model: Path, annotations: Path, out: Path | None) -> None:
    """Patch-level BC of a model on the annotated images beside ANNOTATIONS."""
    from vcorner.evaluation.patch_bc import bc_histogram, dataset_patch_bc, summarize_bc
    from vcorner.io.annotations import read_annotations

    with user_errors():
        records = read_annotations(annotations)
        runner, resolved = open_model(model)
        card = resolved.card
        with runner:
            scores = dataset_patch_bc(annotations.parent, records, runner, card)
        summary = summarize_bc(scores)
        Console(soft_wrap=True).print(f"patch-level BC over {summary['patches']} patches: mean {summary['mean']:.4f}, "
                        f"median {summary['median']:.4f}, 5th percentile {summary['p5']:.4f}, "
                        f"min {summary['min']:.4f}", highlight=False)
        if out is not None and len(scores):
            out.mkdir(parents=True, exist_ok=True)
            (out / "patch_bc.json").write_text(json.dumps({"format": EVALUATION_FORMAT, **summary}, indent=1))
            bc_histogram(scores, out / "patch_bc.png")
            stderr.print(f"wrote {out / 'patch_bc.json'} and {out / 'patch_bc.png'}", highlight=False)
