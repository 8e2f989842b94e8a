"""Export profiles: per target, the exported precision and the TensorRT batch range and workspace.

The repository's ``export/profiles.toml`` holds the profiles; :data:`DEFAULT_PROFILES` is a copy of them
inside the package, so an installed vcorner (without the repository) works. A TOML file overrides the
defaults field by field and may add profiles; ``tests/test_profiles.py`` checks the two agree.

Torch-free and TensorRT-free: the runner and the engine cache read profiles at inference time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from vcorner.io.records import InputError
from vcorner.models.precision import Precision

PRECISIONS = (Precision.fp32, Precision.fp16)
"""The precisions an engine is built in (INT8 runs on the CPU only)."""
DEFAULT_PROFILE = "gpu"

DEFAULT_PROFILES: dict[str, dict[str, Any]] = {
    "cpu": {"description": "ONNX Runtime CPU execution provider: FP32 graph (no TensorRT engine needed)",
            "precision": "fp32", "batch_min": 1, "batch_opt": 64, "batch_max": 256, "workspace_mb": 256},
    "gpu": {"description": "TensorRT FP16 engine for one GPU of 8 GiB or more; batches of the default 256 patches",
            "precision": "fp16", "batch_min": 1, "batch_opt": 256, "batch_max": 512, "workspace_mb": 2048},
    "gpu-large": {"description": "TensorRT FP16 engine for data-centre GPUs (A100/H100 class): large batches",
                  "precision": "fp16", "batch_min": 1, "batch_opt": 1024, "batch_max": 4096,
                  "workspace_mb": 8192},
    "gpu-fp32": {"description": "TensorRT FP32 engine: the GPU reference the FP16 engine is compared against",
                 "precision": "fp32", "batch_min": 1, "batch_opt": 256, "batch_max": 512, "workspace_mb": 2048},
}
"""The shipped defaults; keep in sync with ``export/profiles.toml``."""


@dataclass(frozen=True)
class ExportProfile:
    """One export target.

    Attributes:
        name: the TOML table name (``gpu``, ``gpu-large``, ...).
        precision: ``fp32`` or ``fp16`` (the ONNX graph the engine is built from).
        batch_min: smallest batch (patches) the TensorRT optimization profile accepts.
        batch_opt: batch TensorRT tunes its kernels for.
        batch_max: largest batch; larger ones are split into chunks of this size.
        workspace_mb: TensorRT builder workspace limit, MiB.
        description: one line for humans.
    """

    name: str
    precision: Precision
    batch_min: int
    batch_opt: int
    batch_max: int
    workspace_mb: int
    description: str = ""

    def __post_init__(self) -> None:
        problem = profile_problem(self)
        if problem:
            raise InputError(f"export profile [{self.name}]: {problem}")
        object.__setattr__(self, "precision", Precision(self.precision))  # a TOML string, checked above

    @property
    def batch(self) -> tuple[int, int, int]:
        """(min, opt, max) patches per batch."""
        return self.batch_min, self.batch_opt, self.batch_max

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (JSON-ready; the engine cache key uses it)."""
        return dataclasses.asdict(self)


def profile_problem(profile: ExportProfile) -> str | None:
    """What is wrong with ``profile`` in one line, or None."""
    if not profile.name:
        return "the name is empty"
    if profile.precision not in PRECISIONS:
        return f"precision must be one of {', '.join(PRECISIONS)}, got {profile.precision!r}"
    for field in ("batch_min", "batch_opt", "batch_max", "workspace_mb"):
        value = getattr(profile, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"{field} must be a positive integer, got {value!r}"
    if not profile.batch_min <= profile.batch_opt <= profile.batch_max:
        return (f"needs batch_min <= batch_opt <= batch_max, got {profile.batch_min}, {profile.batch_opt}, "
                f"{profile.batch_max}")
    if not isinstance(profile.description, str):
        return "description must be a string"
    return None


def repo_profiles_path() -> Path:
    """The repository's ``export/profiles.toml`` (may not exist in an installed package)."""
    return Path(__file__).resolve().parents[2] / "export" / "profiles.toml"


def read_profiles_toml(path: Path) -> dict[str, dict[str, Any]]:
    """The tables of a profiles TOML file, unvalidated.

    Raises:
        InputError: missing file, invalid TOML, or a top-level value that is not a table.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such export profiles file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid TOML ({err})") from None
    for name, table in data.items():
        if not isinstance(table, dict):
            raise InputError(f"{path}: '{name}' must be a [table] of profile settings")
    return data


def make_profile(name: str, fields: dict[str, Any], where: str = "export profiles") -> ExportProfile:
    """An ExportProfile from a table's fields.

    Raises:
        InputError: unknown or missing fields, or invalid values.
    """
    known = {f.name for f in dataclasses.fields(ExportProfile)} - {"name"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise InputError(f"{where}: export profile [{name}]: unknown setting(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(known))}")
    missing = sorted(f.name for f in dataclasses.fields(ExportProfile)
                     if f.name not in fields and f.name != "name" and f.default is dataclasses.MISSING)
    if missing:
        raise InputError(f"{where}: export profile [{name}]: missing setting(s) {', '.join(missing)}")
    try:
        return ExportProfile(name=name, **fields)
    except InputError as err:
        raise InputError(f"{where}: {err}") from None


def load_profiles(path: Path | None = None) -> dict[str, ExportProfile]:
    """The export profiles: the defaults, overridden field by field (and extended) by a TOML file.

    Args:
        path: a profiles TOML file; default the repository's ``export/profiles.toml`` when it exists
            (an installed package without it uses :data:`DEFAULT_PROFILES` alone).

    Raises:
        InputError: unreadable file or an invalid profile (one line naming the file and the table).
    """
    tables = {name: dict(fields) for name, fields in DEFAULT_PROFILES.items()}
    source = Path(path) if path is not None else repo_profiles_path()
    if path is not None or source.is_file():
        for name, fields in read_profiles_toml(source).items():
            tables[name] = {**tables.get(name, {}), **fields}
    where = str(source) if source.is_file() else "export profiles"
    return {name: make_profile(name, fields, where) for name, fields in tables.items()}


def get_profile(name: str = DEFAULT_PROFILE, path: Path | None = None) -> ExportProfile:
    """The profile called ``name``.

    Raises:
        InputError: no such profile (the message lists the known ones).
    """
    profiles = load_profiles(path)
    if name not in profiles:
        raise InputError(f"unknown export profile {name!r}; known: {', '.join(sorted(profiles))}")
    return profiles[name]
