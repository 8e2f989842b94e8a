"""Spines with the pathology readers look for (``vcorner synth --pathology clinical``), in millimetres.

:func:`vcorner.phantoms.anatomy.sample_spine` (``--pathology rare``, the default, which every seeded test and
recorded figure was made with) fractures one body in 8% of spines (25% osteoporotic), always as a 18-42%
anterior wedge, and slips one level by 1.5-4 mm in 12%. :func:`sample_clinical_spine` draws instead, per spine:

- fractures in 22% of spines (50% of osteoporotic ones), one or two of C3-C7, Genant grade 1 (20-25% height
  loss, 40%), 2 (25-40%, 40%) or 3 (40-55%, 20%), shaped as an anterior ``wedge`` (50%), a ``crush`` of the whole
  body (30%) or a ``biconcave`` collapse of both endplates (20%); and, in 6% of the other C3-C7 bodies, a
  ``mild`` wedge of 8-19% that is no fracture (the deformities a reader must not flag);
- a slip in 35% of spines (a second one in 7%): anterolisthesis (65%) or retrolisthesis of 1-8 mm,
  log-uniform (median 2.8 mm), of one of C3-C6 on the body below;
- degenerative disc height loss (30-75% of the disc left) at each of C3-C4 ... C7-T1 with probability
  0.55 x age; anterior osteophytes at the corners with probability 0.6 x age; a fused level (bone bridging a
  1-2 mm disc) in 6% of spines. Implants (plates, screws, cages) stay the renderer's ``metal`` hard case.

The annotations keep the true corners of the deformed bodies: a fracture changes the :class:`BodyShape` whose
:func:`vcorner.phantoms.anatomy.body_corners` are annotated. A biconcave collapse lowers the middle of the
endplates more than their corners, so a measure from four corners sees only part of it (README.md, Measurements).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from vcorner.phantoms.anatomy import (
    DISC_MM,
    LEVELS,
    BodyShape,
    Spine,
    assemble,
    body_corners,
    sample_shape,
    sample_spine,
    slip_above,
)

PATHOLOGIES: tuple[str, ...] = ("rare", "clinical")
"""``vcorner synth --pathology`` choices: ``rare`` (the default renderer's own) and ``clinical`` (this module)."""
GRADE_LOSS = ((0.20, 0.25), (0.25, 0.40), (0.40, 0.55))
"""Height-loss ranges drawn for Genant grades 1, 2 and 3."""
SHAPES = ("wedge", "crush", "biconcave")


def corner_loss(shape: BodyShape) -> float:
    """1 - smallest / posterior of the anterior, middle and posterior heights of ``shape``'s corners (its own loss,
    without the neighbours that :func:`vcorner.measure.definitions.height_loss` also compares with)."""
    c = body_corners(shape)
    anterior, posterior = np.hypot(*(c[1] - c[3])), np.hypot(*(c[0] - c[2]))
    middle = np.hypot(*((c[0] + c[1]) / 2 - (c[2] + c[3]) / 2))
    return float(1.0 - min(anterior, posterior, middle) / posterior)


def wedge_for(shape: BodyShape, loss: float) -> BodyShape:
    """``shape`` with the anterior wedge whose corners lose ``loss`` (fraction) of the posterior height (bisection)."""
    low, high = 0.0, 0.95
    for _ in range(30):
        mid = (low + high) / 2
        low, high = (mid, high) if corner_loss(replace(shape, wedge=mid)) < loss else (low, mid)
    return replace(shape, wedge=(low + high) / 2)


def fracture_shape(shape: BodyShape, kind: str, loss: float, rng: np.random.Generator) -> BodyShape:
    """``shape`` fractured as ``kind`` (:data:`SHAPES` or ``mild``) with a height loss of ``loss`` (fraction).

    wedge and mild: the anterior height falls (the corners' loss is ``loss``); crush: the whole body is ``loss``
    lower (against its neighbours) and a little deeper; biconcave: both endplates sink by ``loss`` x height at
    their middle, and the body loses a third of that at its corners.
    """
    if kind in ("wedge", "mild"):
        return wedge_for(shape, loss)
    if kind == "crush":
        return replace(shape, height=shape.height * (1 - loss), depth=shape.depth * (1 + 0.15 * loss),
                       wedge=float(rng.normal(0.0, 0.02)))
    if kind == "biconcave":
        sink = loss * shape.height / 2
        lowered = replace(shape, height=shape.height * (1 - loss / 3), wedge=float(rng.normal(0.0, 0.02)))
        return replace(lowered, concavity=(shape.concavity[0] + sink, shape.concavity[1] + sink))
    raise ValueError(f"unknown fracture shape {kind!r}")


def _fractures(rng: np.random.Generator, osteoporotic: bool) -> list[tuple[int, str, float]]:
    """(level index, shape, height loss) of the fractured and mildly deformed bodies among C3-C7."""
    found: list[tuple[int, str, float]] = []
    if rng.random() < (0.5 if osteoporotic else 0.22):
        count = 1 + int(rng.random() < 0.3)
        for level in rng.choice(np.arange(1, 6), size=count, replace=False):
            grade = int(rng.choice(3, p=[0.4, 0.4, 0.2]))
            kind = str(rng.choice(SHAPES, p=[0.5, 0.3, 0.2]))
            found.append((int(level), kind, float(rng.uniform(*GRADE_LOSS[grade]))))
    taken = {f[0] for f in found}
    for level in range(1, 6):
        if level not in taken and rng.random() < 0.06:
            found.append((level, "mild", float(rng.uniform(0.08, 0.19))))
    return sorted(found)


def _spurs(rng: np.random.Generator, age: float) -> tuple[tuple[int, float], ...]:
    """Anterior osteophytes (corner index, length mm) of one body."""
    return tuple((corner, float(rng.uniform(1.0, 5.0))) for corner in (1, 3) if rng.random() < 0.6 * age)


def _slips(rng: np.random.Generator) -> list[tuple[int, float]]:
    """(level index, mm) of the slips: C3-C6 on the body below, 1-8 mm log-uniform, 65% anterior."""
    if rng.random() >= 0.35:
        return []
    count = 1 + int(rng.random() < 0.2)
    levels = sorted(int(v) for v in rng.choice(np.arange(1, 5), size=count, replace=False))
    return [(level, float(np.exp(rng.uniform(0.0, np.log(8.0))) * (1 if rng.random() < 0.65 else -1)))
            for level in levels]


def sample_clinical_spine(rng: np.random.Generator, *, osteoporotic: bool = False) -> Spine:
    """A random adult C2-T1 spine with the module's pathology: fractures, slips, degenerated discs, spurs, fusion."""
    scale, age = float(np.clip(rng.normal(1.0, 0.05), 0.88, 1.12)), float(rng.uniform())
    shapes = [sample_shape(rng, i, scale, age, osteoporotic=osteoporotic) for i in range(len(LEVELS))]
    shapes = [replace(s, osteophytes=_spurs(rng, age) if 0 < i < 6 else ()) for i, s in enumerate(shapes)]
    fractures = _fractures(rng, osteoporotic)
    for level, kind, loss in fractures:
        shapes[level] = fracture_shape(shapes[level], kind, loss, rng)
    discs = np.array(DISC_MM) * scale * rng.uniform(0.85, 1.15, len(DISC_MM))
    discs[1:] *= np.where(rng.random(5) < 0.55 * age, rng.uniform(0.3, 0.75, 5), 1.0)
    fused: tuple[str, ...] = ()
    if rng.random() < 0.06:
        level = int(rng.integers(1, 6))
        discs[level] = rng.uniform(1.0, 2.0)
        fused = (LEVELS[level],)
    bodies, curve, angle, kind = assemble(rng, shapes, discs)
    slips = [(level, slip) for level, slip in _slips(rng) if LEVELS[level] not in fused]  # a fused level holds
    for level, slip in slips:
        bodies = slip_above(bodies, level, slip)
    named_fractures = tuple((LEVELS[level], kind, round(loss, 4)) for level, kind, loss in fractures)
    named_slips = tuple((LEVELS[level], round(slip, 4)) for level, slip in slips)
    real = [f for f in named_fractures if f[1] != "mild"]
    return Spine(tuple(bodies), discs, curve, angle, kind, named_slips[0] if named_slips else None,
                 real[0][0] if real else None, fractures=named_fractures, slips=named_slips, fused=fused)


def sample_spine_with(pathology: str, rng: np.random.Generator, *, osteoporotic: bool = False) -> Spine:
    """A spine of the named :data:`PATHOLOGIES` kind.

    Raises:
        ValueError: ``pathology`` is not one of :data:`PATHOLOGIES`.
    """
    if pathology == "rare":
        return sample_spine(rng, osteoporotic=osteoporotic)
    if pathology == "clinical":
        return sample_clinical_spine(rng, osteoporotic=osteoporotic)
    raise ValueError(f"pathology must be one of {', '.join(PATHOLOGIES)}, got {pathology!r}")
