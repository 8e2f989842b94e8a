"""TensorRT's own cache step: the plan of the export profile on this GPU."""

from __future__ import annotations

from dataclasses import replace

from vcorner.backends.base import ResolvedModel, Step
from vcorner.backends.shared import done
from vcorner.export.tensorrt_build import ensure_engine
from vcorner.models.profiles import DEFAULT_PROFILE, get_profile


def build_engine(resolved: ResolvedModel) -> ResolvedModel:
    """The cache step :attr:`Step.engine`: ``resolved`` with its plan built when missing or stale
    (:func:`vcorner.export.tensorrt_build.ensure_engine`).

    Raises:
        InputError: TensorRT cannot build the engine.
    """
    build = ensure_engine(resolved.graph, get_profile(resolved.profile or DEFAULT_PROFILE), device=resolved.cuda_index)
    return replace(resolved, engine=build.plan, pending=done(resolved, Step.engine))
