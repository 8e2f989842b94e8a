"""Join phantom folders into one training folder: each film linked under a prefix naming its source (``a_``, ``b_``,
...), one ``annotations.json`` listing them all, keeping only the vertebra names given (a detector fine-tuned from
another learns exactly that detector's names).

    python train/mix_folders.py data/det-mix data/det-varied data/det-train2 --names C3 C4 C5 C6 C7

The films are hard links (copies across file systems): the mixed folder stands on its own, and ``vcorner train``'s
closing calibration reads it (it refuses films that resolve outside the data folder, as symbolic links do).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import string
from pathlib import Path

from vcorner.io.annotations import read_annotations, write_annotations
from vcorner.io.records import ImageRecord


def place(film: Path, target: Path) -> None:
    """``film`` at ``target`` as a hard link (no copy, and inside the folder: ``vcorner tune``, which ends
    ``vcorner train``, reads no film that resolves outside its data folder), else as a copy (another file system)."""
    try:
        os.link(film, target)
    except OSError:
        shutil.copy2(film, target)


def mixed_records(sources: list[Path], names: set[str] | None) -> list[tuple[Path, ImageRecord]]:
    """(source film, record under its new name) for every film of ``sources``, each record keeping only ``names``
    (all when None)."""
    out = []
    for prefix, source in zip(string.ascii_lowercase, sources, strict=False):
        for record in read_annotations(source / "annotations.json"):
            kept = tuple(v for v in record.vertebrae if names is None or v.name in names)
            out.append((source / record.file, dataclasses.replace(record, file=f"{prefix}_{record.file}",
                                                                  vertebrae=kept)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the new folder (must not exist)")
    parser.add_argument("sources", type=Path, nargs="+", help="phantom folders, each with its annotations.json")
    parser.add_argument("--names", nargs="+", help="vertebra names to keep (default: all)")
    args = parser.parse_args()
    if len(args.sources) > len(string.ascii_lowercase):
        parser.error(f"at most {len(string.ascii_lowercase)} sources")
    if args.out.exists():
        parser.error(f"{args.out} exists; choose a new folder")
    mixed = mixed_records(args.sources, set(args.names) if args.names else None)
    args.out.mkdir(parents=True)
    for film, record in mixed:
        place(film.resolve(), args.out / record.file)
    write_annotations(args.out / "annotations.json", [record for _, record in mixed])
    print(f"{len(mixed)} films from {len(args.sources)} folders in {args.out}")


if __name__ == "__main__":
    main()
