"""The run folder of ``vcorner train`` and the checks made before the first epoch, for both recipes.

- A run folder that holds an earlier run's files is continued with ``--resume`` (same recipe and sampling;
  only ``epochs`` and ``max_steps`` may change) or started over with ``--force``, which moves every earlier run
  file into ``RUN/previous-<UTC time>/`` (:func:`vcorner.io.claims.claim_folder`); otherwise it is refused.
- Data that cannot train is refused: fewer than two usable images (no validation image distinct from the
  training ones), or too few training samples for one optimizer step per epoch.
- A resume state whose weights do not fit the recipe's model is refused in one line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vcorner.io.claims import claim_folder
from vcorner.io.records import InputError

RUN_FILES = ("model.safetensors", "last.pt", "metrics.jsonl", "recipe.json")
"""What a training run writes into its folder."""
EXPORTED = ("model.onnx", "model.onnx.json", "model.*.onnx", "model.*.onnx.json", "model.*.plan",
            "model.*.plan.json")
"""What ``vcorner export RUN`` writes beside it by default (ONNX, FP16, INT8, TensorRT plans and their cards)."""
MAY_CHANGE_ON_RESUME = frozenset({"train.epochs", "train.max_steps"})
"""Recipe fields a ``--resume`` may change: they re-plan the one-cycle schedule of the same run."""
ABSENT = object()
"""Stands for a field one recipe has and the other lacks (:func:`first_difference`)."""
MIN_BATCH = 2
"""Samples an optimizer step needs (batch norm); smaller batches are skipped by both trainers."""


def earlier_run_files(out: Path) -> list[str]:
    """Names of the files in ``out`` that an earlier training run (or ``vcorner export`` of it) wrote."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [name for name in RUN_FILES if (out / name).is_file()]
    for pattern in EXPORTED:
        found += sorted(p.name for p in out.glob(pattern) if p.is_file() and p.name not in found)
    return found


def prepare_run_folder(out: Path, recipe: dict[str, Any], *, resume: bool, force: bool,
                       inputs: Iterable[Path | None] = ()) -> Path | None:
    """Check ``out`` before anything is written to it, and claim it.

    With ``resume`` the run must hold ``last.pt`` and a ``recipe.json`` equal to ``recipe`` but for
    :data:`MAY_CHANGE_ON_RESUME`. Without it, an earlier run's files are refused unless ``force``, which moves
    them into ``out/previous-<UTC time>/``.

    Returns:
        The folder the earlier files went to, or None.

    Raises:
        InputError: one line naming the folder, the file or the first differing recipe field, and the options.
    """
    out = Path(out)
    if resume and force:
        raise InputError("--resume and --force exclude each other: --resume continues the run in --out, --force "
                         "starts it over (keeping the earlier files in previous-<time>/)")
    if resume:
        check_resumable(out, recipe)
        return None
    found = earlier_run_files(out)
    if found and not force:
        raise InputError(f"{out}: holds an earlier training run ({', '.join(found)}); pass --resume to continue "
                         "it, or --force to start over (the earlier files are then moved into previous-<time>/ "
                         "there), or choose another --out")
    return claim_folder(out, found, inputs=inputs, force=True) if found else None


def check_resumable(out: Path, recipe: dict[str, Any]) -> None:
    """Refuse a ``--resume`` with nothing to resume, or with a recipe other than the run's ``recipe.json``."""
    if not (out / "last.pt").is_file():
        raise InputError(f"{out}: nothing to resume (no last.pt); train without --resume")
    recorded = out / "recipe.json"
    try:
        earlier = json.loads(recorded.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{recorded}: missing, so the run's recipe is unknown; cannot resume (pass --force to "
                         "start over)") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{recorded}: not valid JSON ({err}); cannot resume") from None
    changed = first_difference(earlier, json.loads(json.dumps(recipe)), skip=MAY_CHANGE_ON_RESUME)
    if changed is not None:
        field, was, now = changed
        raise InputError(f"{recorded}: --resume with a changed recipe: {field} was {_show(was)}, now {_show(now)} "
                         "(only epochs and max_steps may change); resume with the run's recipe, or train into "
                         "another --out")


def first_difference(old: dict[str, Any], new: dict[str, Any], skip: frozenset[str] = frozenset(),
                     prefix: str = "") -> tuple[str, Any, Any] | None:
    """The first dotted field (``sampling.patch_size``) whose value differs between two nested dicts, with both
    values (:data:`ABSENT` where a dict lacks the field), in the order of ``new`` then ``old``; None when equal
    but for ``skip``."""
    for key in list(new) + [k for k in old if k not in new]:
        field = f"{prefix}{key}"
        was, now = old.get(key, ABSENT), new.get(key, ABSENT)
        if field in skip:
            continue
        if isinstance(was, dict) and isinstance(now, dict):
            inner = first_difference(was, now, skip, f"{field}.")
            if inner is not None:
                return inner
        elif was != now:
            return field, was, now
    return None


def _show(value: Any) -> str:
    return "absent" if value is ABSENT else "unset" if value is None else json.dumps(value)


def steps_per_epoch(samples: int, batch_size: int) -> int:
    """Optimizer steps of one pass over ``samples`` in batches of ``batch_size`` (a last batch of fewer than
    :data:`MIN_BATCH` samples is skipped, as the trainers do)."""
    if batch_size < MIN_BATCH:
        return 0
    full, rest = divmod(samples, batch_size)
    return full + int(rest >= MIN_BATCH)


def check_trainable(data: Path, images: int, samples: int, what: str, epochs: int, batch_size: int,
                    recipe: str = "recipe") -> None:
    """Refuse data or settings that cannot train, before any epoch.

    Args:
        data: The dataset folder (named in the message).
        images: Usable annotated images.
        samples: Training samples of one epoch (patches, or views).
        what: How ``samples`` came about, e.g. ``"3 training image(s) give 3 views"``.
        epochs: The recipe's epochs.
        batch_size: The recipe's batch size.
        recipe: The recipe's name (named in the message).

    Raises:
        InputError: one line naming the dataset or the recipe field.
    """
    if epochs < 1:
        raise InputError(f"{recipe} [train] epochs = {epochs}: nothing to train; give 1 or more")
    if batch_size < MIN_BATCH:
        raise InputError(f"{recipe} [train] batch_size = {batch_size}: a training step needs {MIN_BATCH} or more "
                         "samples (batch norm); give 2 or more")
    if images < 2:
        raise InputError(f"{data}: {images} usable annotated image; training needs 2 or more, so that the "
                         "validation images (which pick the best epoch and calibrate the model) are not the "
                         "training ones")
    if steps_per_epoch(samples, batch_size) == 0:
        raise InputError(f"{data}: {what} per epoch, fewer than the {MIN_BATCH} a training step needs (batch_size "
                         f"{batch_size}): every epoch would leave the model untrained; add annotated images")


def load_weights(model, optimizer, state: dict[str, Any], path: Path) -> None:
    """Load a resume state's model and optimizer into ``model`` and ``optimizer``.

    Raises:
        InputError: one line naming ``path`` when its weights do not fit the model (another architecture, width
        or count of output maps).
    """
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0] if lines \
            else type(err).__name__
        if len(detail) > 160:
            detail = detail[:157] + "..."
        raise InputError(f"{path}: its weights do not fit this recipe's model ({detail}); resume with the run's "
                         "recipe, or train into another --out") from None
