"""Write the report page: the collected entries through a jinja2 template (autoescaped)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vcorner.io.atomic import write_text_atomic
from vcorner.io.records import ImageRecord
from vcorner.pipeline.manifest import read_manifest
from vcorner.report.collect import ImageEntry, collect, link_entries, summary
from vcorner.report.thumbnails import image_thumbnail, overlay_thumbnail


def render(entries: list[ImageEntry], facts: dict, title: str, annotated: str | None) -> str:
    """The HTML page of ``entries`` (already sorted, thumbnails filled)."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("vcorner.report", "templates"), autoescape=select_autoescape(["j2"]))
    from vcorner import CORNER_NAMES

    data = {"corners": list(CORNER_NAMES), "rows": [e.corner_rows() for e in entries]}
    return env.get_template("report.html.j2").render(entries=entries, s=facts, title=title, annotated=annotated,
                                                     corner_data=data)


def add_thumbnails(out_dir: Path, entries: list[ImageEntry], images: Path | None,
                   progress: Callable[[], None] | None = None) -> None:
    """Fill each entry's thumbnail: from its overlay when there is one, else from the image under ``images``."""
    for entry in entries:
        if entry.overlay:
            entry.thumbnail = overlay_thumbnail(Path(out_dir) / entry.overlay)
        elif images is not None and ".." not in Path(entry.image).parts and not Path(entry.image).is_absolute():
            entry.thumbnail = image_thumbnail(Path(images) / entry.image, entry.corners)
        if progress:
            progress()


def write_report(out_dir: Path, dest: Path, images: Path | None = None, truth: list[ImageRecord] | None = None,
                 annotated: str | None = None, progress: Callable[[int], Callable[[], None]] | None = None
                 ) -> list[ImageEntry]:
    """Write the report of the batch in ``out_dir`` to ``dest``; its entries, most doubtful first.

    ``images`` (default: the folder recorded in ``OUT/run.json``) supplies thumbnails where no overlay exists.
    """

    out_dir = Path(out_dir)
    entries = collect(out_dir, truth)
    if images is None and (folder := (read_manifest(out_dir) or {}).get("images")):
        images = Path(folder)
    add_thumbnails(out_dir, entries, images, progress(len(entries)) if progress else None)
    link_entries(out_dir, entries, Path(dest))
    title = out_dir.resolve().name
    write_text_atomic(Path(dest), render(entries, summary(out_dir, entries), title, annotated))
    return entries


GENERATOR = '<meta name="generator" content="vcorner report">'
"""The mark of a page this module wrote (vcorner/report/templates/report.html.j2): a re-run may replace it."""


def is_report(path: Path) -> bool:
    """True when ``path`` is a page ``vcorner report`` wrote (its first 2 kB carry :data:`GENERATOR`)."""
    try:
        with open(path, "rb") as handle:
            return GENERATOR.encode() in handle.read(2048)
    except OSError:
        return False
