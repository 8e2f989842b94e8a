"""Shared fixtures: a small hand-made spine whose geometry is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from vcorner.io.records import ImageRecord, Vertebra


def make_spine(n: int = 4, angle_deg: float = 10.0, size: float = 60.0, origin=(200.0, 80.0)) -> ImageRecord:
    """Vertebrae spaced ``size`` px along a straight spine tilted by ``angle_deg``; rectangular bodies."""
    a = np.deg2rad(angle_deg)
    down = np.array([-np.sin(a), np.cos(a)])
    right = np.array([down[1], -down[0]])
    vertebrae = []
    for i in range(n):
        c = np.asarray(origin) + i * size * down
        half_w, half_h = 0.42 * size, 0.33 * size
        corners = np.array([c - half_w * right - half_h * down, c + half_w * right - half_h * down,
                            c - half_w * right + half_h * down, c + half_w * right + half_h * down])
        vertebrae.append(Vertebra(f"C{i + 3}", c, corners, None))
    return ImageRecord("spine.png", tuple(vertebrae), 0.15)


@pytest.fixture
def spine() -> ImageRecord:
    return make_spine()
