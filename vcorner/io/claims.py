"""The one output rule of every command: an output never lands on an input, and never replaces a file the user
had unless asked (``--force``), and even then the earlier file is kept.

Every writer of a user-named path (``vcorner detect --out``, ``report --out``, ``convert DST``, ``train --out``,
``measure --out``, ``evaluate --out``, ``export --out``) claims its paths here before it writes anything:

- a path that is an input of the same command is refused, ``--force`` or not;
- an existing file is refused in one line naming ``--force``, unless the command recognizes it as its own
  earlier output (``own``: e.g. a page ``vcorner report`` wrote, which a re-run rewrites);
- with ``--force`` the existing file is moved into ``previous-<UTC time>/`` beside it (as ``vcorner batch
  --no-resume`` does with an earlier run), so nothing the user had is deleted.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from vcorner.io.records import InputError

PREVIOUS = "previous-%Y%m%dT%H%M%SZ"
"""``time.strftime`` pattern of the folder an earlier output is moved into (UTC)."""


def json_field(path: Path, key: str = "format") -> object:
    """The ``key`` of the JSON object in ``path`` (a command's mark on its own output), or None when the file
    is missing, unreadable, not JSON or not an object."""
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data.get(key) if isinstance(data, dict) else None


def csv_header(path: Path) -> list[str] | None:
    """The first row of the CSV file ``path`` ([] for an empty file; None when it cannot be read)."""
    import csv

    try:
        with open(path, encoding="utf-8", newline="") as handle:
            return next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def previous_folder(parent: Path) -> Path:
    """A new, empty ``parent/previous-<UTC time>/`` (``-2``, ``-3``... when one of that second exists), created:
    two runs within a second never put their earlier files in the same folder."""
    base = Path(parent) / time.strftime(PREVIOUS, time.gmtime())
    Path(parent).mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        folder = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise OSError(f"{parent}: too many previous-* folders of this second")


def refuse_inputs(outputs: Iterable[Path], inputs: Iterable[Path | None]) -> None:
    """Refuse when any output resolves to one of ``inputs`` (a file the same command reads).

    Raises:
        InputError: one line naming the output.
    """
    taken = {Path(p).resolve() for p in inputs if p is not None}
    for path in outputs:
        if Path(path).resolve() in taken:
            raise InputError(f"{path}: is an input of this command; choose another output path")


def claim_files(paths: Sequence[Path], *, inputs: Iterable[Path | None] = (), force: bool = False,
                own: Callable[[Path], bool] | None = None) -> Path | None:
    """Make ``paths`` safe to write: refuse inputs, refuse existing files unless ``force`` or ``own(path)``.

    With ``force`` the existing files that are not ``own`` are moved into ``previous-<UTC time>/`` beside each
    of them (one such folder per parent folder). Nothing is touched before every path has been checked.

    Returns:
        The (first) folder the earlier files were moved into, or None when nothing moved.

    Raises:
        InputError: one line naming the path: an input, a folder where a file is written, or an existing file
        without ``force``.
    """
    paths = [Path(p) for p in paths]
    refuse_inputs(paths, inputs)
    existing = []
    for path in paths:
        if path.is_dir():
            raise InputError(f"{path}: is a folder; give a file path")
        if path.exists() and not (own is not None and own(path)):
            existing.append(path)
    if existing and not force:
        names = ", ".join(str(p) for p in existing)
        raise InputError(f"{names}: exists and would be replaced; choose another output, or pass --force "
                         f"(the earlier file is then moved into previous-<time>/ beside it)")
    if not existing:
        return None
    folders: dict[Path, Path] = {}  # one previous-<time>/ beside each file's own folder: names never collide
    for path in existing:
        parent = path.parent.resolve()
        if parent not in folders:
            folders[parent] = previous_folder(path.parent)
        os.replace(path, folders[parent] / path.name)
    return next(iter(folders.values()))


def claim_folder(folder: Path, names: Iterable[str], *, inputs: Iterable[Path | None] = (), force: bool = False,
                 own: Callable[[Path], bool] | None = None) -> Path | None:
    """:func:`claim_files` for the files ``names`` a command writes inside ``folder`` (which may not exist)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: is a file; give a folder for the outputs")
    return claim_files([folder / name for name in names], inputs=inputs, force=force, own=own)
