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
