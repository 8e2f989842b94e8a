"""What every command shares: one-line errors with exit codes, and progress bars on stderr."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from vcorner.io.records import InputError
from vcorner.models.resolve import ModelRequest, ResolvedModel
from vcorner.runtime.base import Runner

log = logging.getLogger(__name__)

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
"""0: every image done; 1: some images or vertebrae failed (see errors.csv); 2: usage or configuration error;
130: interrupted by Ctrl-C (a re-run resumes)."""

stderr = Console(stderr=True, soft_wrap=True)
"""Messages and summaries: never wrapped mid-path, so logs stay greppable (tables still fit the width)."""


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: message`` on one line to stderr and exit with ``code``."""
    stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn bad input (InputError, OSError, ValueError from configuration) into a one-line error, exit 2."""
    try:
        yield
    except InputError as err:
        fail(str(err))
    except OSError as err:
        fail(f"{err.filename or ''}: {err.strerror or err}".lstrip(": "))


def open_model(request: ModelRequest | Path | None) -> tuple[Runner, ResolvedModel]:
    """Resolve a request (or a bare model path: ``--backend auto``) once, make what it still lacks (the cache
    step), and open (not enter) its runner."""
    from vcorner.export.materialize import materialize
    from vcorner.runtime.open import open_runner

    if not isinstance(request, ModelRequest):
        request = ModelRequest(request)
    resolved = materialize(request.resolve())
    log.info("model: %s", resolved.describe())
    return open_runner(resolved), resolved


def progress_bar(*extra_columns) -> Progress:
    """A rich progress bar on stderr, disabled when stderr is not a terminal."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), *extra_columns,
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=stderr, disable=not sys.stderr.isatty(), transient=False,
    )
