"""The ``vcorner`` command line: one module per command, each a thin layer over a library call."""

from __future__ import annotations

import logging

import typer

app = typer.Typer(
    name="vcorner",
    help="Vertebral corners in X-ray images: synthesize, train, export, batch-infer, evaluate, benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    """Attach each command module's function to the app (imports stay light: no torch here)."""
    from vcorner.cli import (
        baseline,
        batch,
        benchmark,
        convert,
        detect,
        evaluate,
        export,
        measure,
        report,
        synth,
        train,
        tune,
    )

    app.command("synth")(synth.synth)
    app.command("train")(train.train)
    app.command("export")(export.export)
    app.command("batch")(batch.batch)
    app.command("detect")(detect.detect)
    app.command("evaluate")(evaluate.evaluate)
    app.command("measure")(measure.measure)
    app.command("convert")(convert.convert)
    app.command("report")(report.report)
    app.command("tune")(tune.tune)
    app.command("baseline")(baseline.baseline)
    app.command("benchmark")(benchmark.benchmark)


class UserFormatter(logging.Formatter):
    """A log record as the user reads it: ``warning: message`` on one line (the module only with --verbose)."""

    def __init__(self, verbose: bool) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s")
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if self.verbose else f"{record.levelname.lower()}: {text}"


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages.")) -> None:
    level = logging.DEBUG if verbose else logging.WARNING
    handler = logging.StreamHandler()
    handler.setFormatter(UserFormatter(verbose))
    logging.basicConfig(level=level, handlers=[handler])
    if not verbose:  # OpenCV's own decoder warnings duplicate our one-line errors
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


_register()


def main() -> None:
    """Console-script entry point."""
    app()
