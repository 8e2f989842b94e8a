"""vcorner's per-user cache folder (TensorRT engines, recorded benchmark results)."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """``$VCORNER_CACHE``, else ``$XDG_CACHE_HOME/vcorner``, else ``~/.cache/vcorner``."""
    if os.environ.get("VCORNER_CACHE"):
        return Path(os.environ["VCORNER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vcorner"


def numba_cache_dir() -> Path:
    """Where numba caches vcorner's compiled kernels: ``user_cache_dir()/numba``, created; a private folder
    under the system's temporary folder when that one cannot be written (never the install folder)."""
    import tempfile

    for folder in (user_cache_dir() / "numba", Path(tempfile.gettempdir()) / f"vcorner-numba-{os.getuid()}"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    raise OSError(f"no writable folder for numba's cache (tried {user_cache_dir() / 'numba'}); set VCORNER_CACHE")
