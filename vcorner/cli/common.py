"""What every command shares: one-line errors with exit codes, and progress on stderr (a rich bar on a terminal,
plain lines in a log)."""

from __future__ import annotations

import errno
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from vcorner.backends import ModelRequest, ResolvedModel
from vcorner.io.records import InputError, MachineError
from vcorner.runtime.base import Runner

log = logging.getLogger(__name__)

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_MACHINE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
"""0: every image done; 1: some images or vertebrae failed (see errors.csv); 2: usage or configuration error (the
user's options or files); 3: a failure of this machine or of a dependency (MachineError); 130: interrupted by
Ctrl-C (a re-run resumes)."""

stderr = Console(stderr=True, soft_wrap=True)
"""Messages and summaries: never wrapped mid-path, so logs stay greppable (tables still fit the width)."""


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: message`` on one line to stderr and exit with ``code``."""
    stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.ENOMEM, errno.EMFILE, errno.ENFILE,
                            errno.ESTALE, errno.EAGAIN})
"""OSErrors of the machine (a full disk or quota, an I/O error, no memory or file handles left, a stale network
file): exit 3. Every other OSError names a path the user gave (missing, not allowed, a file for a folder): exit 2."""


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn bad input (InputError, an OSError on a path the user gave) into a one-line error, exit 2; a failure
    of the machine or a dependency (MachineError, a full disk, an I/O error: :data:`MACHINE_ERRNOS`) into one,
    exit 3."""
    try:
        yield
    except InputError as err:
        fail(str(err))
    except MachineError as err:
        fail(f"{err} (a failure of this machine or of a dependency, not of your input)", EXIT_MACHINE)
    except OSError as err:
        message = f"{err.filename or ''}: {err.strerror or err}".lstrip(": ")
        if err.errno in MACHINE_ERRNOS:
            fail(f"{message} (a failure of this machine, not of your input)", EXIT_MACHINE)
        fail(message)


def open_model(request: ModelRequest | Path | None) -> tuple[Runner, ResolvedModel]:
    """Resolve a request (or a bare model path: ``--backend auto``) once, make what it still lacks (the cache
    step), and open (not enter) its runner."""
    from vcorner.backends import materialize, open_runner

    if not isinstance(request, ModelRequest):
        request = ModelRequest(request)
    resolved = materialize(request.resolve())
    log.info("model: %s", resolved.describe())
    return open_runner(resolved), resolved


def validation_notes(card, note: str = "validation") -> tuple[tuple[str, str], ...]:
    """When a model's or detector's card says it failed validation in training, print the warning once on stderr
    and return it as a ``run.json`` note (``note``); nothing otherwise (passed, or a card without a verdict)."""
    warning = card.validation_warning()
    if warning is None:
        return ()
    stderr.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    return ((note, warning),)


PROGRESS_SECONDS_ENV = "VCORNER_PROGRESS_SECONDS"
"""Environment variable: seconds between two plain progress lines when stderr is not a terminal (0: every
update, for tests)."""
PROGRESS_SECONDS = 30.0
"""Default seconds between two plain progress lines: a 57-minute training once logged nothing for 36 minutes."""


def progress_seconds() -> float:
    """Seconds between plain progress lines: ``$VCORNER_PROGRESS_SECONDS``, else :data:`PROGRESS_SECONDS` (with a
    warning when the variable is not a number >= 0)."""
    value = os.environ.get(PROGRESS_SECONDS_ENV, "").strip()
    if not value:
        return PROGRESS_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not seconds >= 0:  # NaN and negative numbers
        stderr.print(f"[yellow]warning:[/] {PROGRESS_SECONDS_ENV}={escape(value)} is not a number of seconds >= 0; "
                     f"using {PROGRESS_SECONDS:g}", highlight=False, soft_wrap=True)
        return PROGRESS_SECONDS
    return seconds


def duration(seconds: float) -> str:
    """``45 s``, ``12 min`` or ``2.1 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class LoggedProgress(Progress):
    """A rich progress bar on a terminal; elsewhere (a log, a pipe, a batch job) the same updates print one plain
    line at most every ``every`` seconds, e.g. ``train: epoch 3/60, 41% (512/1248), 812 patches/s, loss 0.4123,
    eta 12 min``.

    The line holds the task's description, its share done, the text of the extra columns (a figure that is not a
    number yet, such as the loss before the first step, is left out) and the time left: the task's ``eta_s``
    field where the caller knows better (a training's remaining epochs), else rich's estimate for the task.
    """

    def __init__(self, *columns, command: str, extra: tuple[ProgressColumn, ...], every: float, **kwargs) -> None:
        super().__init__(*columns, **kwargs)
        self.command, self.extra, self.every = command, extra, every
        self.logged = self.disable
        self.last_line = time.monotonic()

    def update(self, task_id: TaskID, **kwargs) -> None:
        super().update(task_id, **kwargs)
        if self.logged and time.monotonic() - self.last_line >= self.every:
            self.last_line = time.monotonic()
            stderr.print(self.line(task_id), highlight=False, soft_wrap=True, markup=False)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def line(self, task_id: TaskID) -> str:
        """The plain progress line of a task."""
        with self._lock:
            task = self._tasks[task_id]
        parts = [task.description]
        if task.total:
            parts.append(f"{task.completed / task.total:.0%} ({task.completed:.0f}/{task.total:.0f})")
        for column in self.extra:
            try:
                text = column.render(task)
            except (KeyError, ValueError, TypeError):
                continue
            text = getattr(text, "plain", str(text)).strip()
            if text and "nan" not in text:
                parts.append(text)
        eta = task.fields.get("eta_s", task.time_remaining)
        if eta is not None and math.isfinite(eta):
            parts.append(f"eta {duration(eta)}")
        return f"{self.command}: {', '.join(parts)}"


def command_name() -> str:
    """The running vcorner command's name (``train``, ``batch``...), for progress lines; ``vcorner`` outside one.

    Typer 0.2x runs commands on its own copy of click (``typer._click``), earlier ones on click itself."""
    import importlib

    for module in ("typer._click.globals", "click"):
        try:
            context = importlib.import_module(module).get_current_context(silent=True)
        except (ImportError, AttributeError):
            continue
        if context is not None and context.info_name:
            return context.info_name
    return "vcorner"


def progress_bar(*extra_columns: ProgressColumn) -> Progress:
    """Progress on stderr: a rich bar when stderr is a terminal, otherwise one plain line at most every
    :func:`progress_seconds` (``$VCORNER_PROGRESS_SECONDS``, default 30 s) from the same updates
    (:class:`LoggedProgress`)."""
    return LoggedProgress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), *extra_columns,
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        command=command_name(), extra=extra_columns, every=progress_seconds(),
        console=stderr, disable=not sys.stderr.isatty(), transient=False,
    )


class StepStatus:
    """Named steps of a long command without a share done (``vcorner benchmark``): a rich spinner on a terminal,
    otherwise a plain ``command: step`` line at most every :func:`progress_seconds`."""

    def __init__(self, first: str) -> None:
        self.command, self.every, self.last_line = command_name(), progress_seconds(), -math.inf
        self.spinner = stderr.status(first) if sys.stderr.isatty() else None

    def __enter__(self) -> StepStatus:
        if self.spinner is not None:
            self.spinner.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.spinner is not None:
            self.spinner.__exit__(*exc)

    def update(self, message: str) -> None:
        """Show the step now running."""
        if self.spinner is not None:
            self.spinner.update(f"{self.command}: {message}")
        elif time.monotonic() - self.last_line >= self.every:
            self.last_line = time.monotonic()
            stderr.print(f"{self.command}: {message}", highlight=False, soft_wrap=True, markup=False)
