"""Image paths named by users' files (centres, annotations), resolved so that they never leave their folder."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from vcorner.io.records import InputError


def safe_path(root: Path, name: str) -> Path:
    """``root / name`` if it stays inside ``root`` (no absolute path, no ``..``), else InputError."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or Path(name).is_absolute():
        raise InputError(f"{name}: image paths must be relative to DIR without '..'")
    path = (root / Path(*pure.parts)).resolve()
    if not path.is_relative_to(root.resolve()):
        raise InputError(f"{name}: resolves outside DIR (symbolic link?)")
    return path


RUN_MARKER = "run.json"
"""The file every ``vcorner batch`` OUT holds (vcorner/pipeline/manifest.py); it marks a folder vcorner wrote."""
RUN_FORMAT = "vcorner-run/1"


def written_by_vcorner(folder: Path) -> bool:
    """True when ``folder`` holds a batch's ``run.json`` (its overlays and JSON are outputs, not radiographs)."""
    from vcorner.io.claims import json_field

    return json_field(Path(folder) / RUN_MARKER) == RUN_FORMAT


def walk_files(root: Path, exclude: Path | None = None) -> tuple[list[Path], list[Path]]:
    """Every file under ``root`` (subfolders included), leaving out ``exclude`` and every folder vcorner wrote.

    Returns:
        (files, skipped): the files found, and the vcorner output folders that were left out.
    """
    import os

    root = Path(root)
    skip = Path(exclude).resolve() if exclude is not None else None
    files, skipped = [], []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        if (skip is not None and here.resolve() == skip) or written_by_vcorner(here):
            skipped.append(here)
            dirs[:] = []
            continue
        dirs.sort()
        files.extend(here / name for name in names)
    return files, skipped
