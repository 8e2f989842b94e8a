"""vcorner's per-user cache folder (TensorRT engines, recorded benchmark results)."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """``$VCORNER_CACHE``, else ``$XDG_CACHE_HOME/vcorner``, else ``~/.cache/vcorner``."""
    if os.environ.get("VCORNER_CACHE"):
        return Path(os.environ["VCORNER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vcorner"
