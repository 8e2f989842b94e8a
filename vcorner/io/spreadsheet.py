"""Text fields written to CSV files, made safe to open in a spreadsheet (OWASP's CSV injection advice).

A field starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read as a formula by
spreadsheet programs; :func:`neutralise` prefixes such a field (and one already starting with ``'``, so the
mapping stays reversible) with a single quote, and :func:`restore` undoes it when vcorner reads its own files.
Numbers are written by vcorner itself and are never passed through here.
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(text: str) -> str:
    """``text`` as a CSV field that a spreadsheet shows as text."""
    return "'" + text if text.startswith(FORMULA_STARTS + ("'",)) else text


def restore(text: str) -> str:
    """Inverse of :func:`neutralise`."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_STARTS + ("'",)) else text
