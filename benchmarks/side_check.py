"""The ``view_contradicted`` flag on films users have (README.md, "Flags"; ``vcorner/geometry/sides.py``): a phantom
set's films through ``vcorner batch --centers`` as they are (with their view: how many right films it flags), and
mirrored or inverted with the view left out of ``centers.csv`` (a user who did not say the patient faces left or the
PNG is bone-dark: how many of those films it flags); then, without centres, as they are and turned by +-35 degrees:
the films read in the wrong mirror (their corners' anterior and posterior labels swapped) that carry no flag, and the
films read in the right one that the check alone flags. Writes a markdown table to ``--results`` (stdout without).

    python benchmarks/side_check.py --data DIR [--results F] [--automatic as_is turned_35 turned_-35]
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from automatic_variants import write_variant  # noqa: E402

FLAG = "view_contradicted"


def batch(folder: Path, out: Path, centres: Path | None) -> None:
    command = [sys.executable, "-m", "vcorner", "batch", str(folder), "--out", str(out), "--force"]
    subprocess.run(command + (["--centers", str(centres)] if centres else []), capture_output=True, check=False)


def film_flags(run: Path) -> dict[str, set[str]]:
    """Image -> the flags on any of its ``corners.csv`` rows."""
    films: dict[str, set[str]] = {}
    with open(run / "corners.csv", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            films.setdefault(row["image"], set()).update(f for f in row["flags"].split(";") if f)
    return films


def without_view(centres: Path, out: Path) -> Path:
    """``centres`` with every view written as ``as_is``: the file of a user who gave none."""
    out.write_text(re.sub(r",(mirrored|inverted)(\r?\n)", r",as_is\2", centres.read_text(encoding="utf-8")),
                   encoding="utf-8")
    return out


def clicked_rows(data: Path, work: Path) -> list[str]:
    rows = []
    for variant, given in (("as_is", True), ("mirror", False), ("inverted", False)):
        folder = work / variant
        write_variant(data, folder, variant)
        centres = folder / "centers.csv" if given else without_view(folder / "centers.csv", work / f"{variant}.csv")
        batch(folder, work / f"{variant}-clicked", centres)
        films = film_flags(work / f"{variant}-clicked")
        flagged = sum(FLAG in f for f in films.values())
        what = "its view given" if given else "no view given"
        rows.append(f"| clicked, {variant}, {what} | {len(films)} | {flagged} ({flagged / max(len(films), 1):.0%}) | |")
    return rows


def automatic_rows(data: Path, work: Path, variants: list[str]) -> list[str]:
    rows = []
    for variant in variants:
        folder = work / variant
        if not (folder / "annotations.json").exists():
            write_variant(data, folder, variant)
        batch(folder, work / f"{variant}-auto", None)
        seen: dict[str, tuple[str, str]] = {}
        with open(work / f"{variant}-auto" / "centers.detected.csv", encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                seen.setdefault(row["image"], (row["view"], row["flags"]))
        wrong = [f for f, (view, _) in seen.items() if "mirrored" in view]  # these variants are never mirrored
        silent = sum(not seen[f][1] for f in wrong)
        only = sum(flags == FLAG and "mirrored" not in view for view, flags in seen.values())
        rows.append(f"| automatic, {variant} | {len(seen)} | {only} right films flagged by it alone | "
                    f"{len(wrong)} read mirrored, {silent} of them without a flag |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--results", type=Path)
    parser.add_argument("--automatic", nargs="*", default=["as_is", "turned_35", "turned_-35"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = clicked_rows(args.data, work) + automatic_rows(args.data, work, args.automatic)
    table = "\n".join(["| films | answered | flagged `view_contradicted` | read in the wrong mirror |",
                       "|---|---|---|---|", *rows])
    text = f"`python benchmarks/side_check.py --data {args.data}`\n\n{table}\n"
    if args.results:
        args.results.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
