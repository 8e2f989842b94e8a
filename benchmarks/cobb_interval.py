"""Coverage and bias of the Cobb angle's 95% interval on simulated scoliotic spines with known angles, for three
estimators: the maximum taken anew per Monte Carlo draw (before issue #29), fixed end vertebrae, and fixed end
vertebrae with the bootstrap bias correction vcorner uses (``cobb_with_interval``, vcorner/measure/intervals.py).

    python benchmarks/cobb_interval.py [--spines 300] [--noise 0.5 1.5 3.0]
"""

from __future__ import annotations

import argparse

import numpy as np

from vcorner.measure import definitions as d
from vcorner.measure.intervals import cobb_with_interval

DRAWS = 2000


def scoliotic_spine(rng: np.random.Generator, count: int = 12, width: float = 40.0, height: float = 30.0
                    ) -> np.ndarray:
    """(count, 4, 2) corners (px) of a spine whose tilts follow a sine of random amplitude (5-30 deg) and phase."""
    tilts = np.deg2rad(rng.uniform(5, 30) * np.sin(np.linspace(0, np.pi, count) + rng.uniform(0, np.pi)))
    xy = np.zeros((count, 4, 2))
    for i, t in enumerate(tilts):
        centre = np.array([300 + 20 * np.sin(i / 3), 100 + i * (height + 10)])
        right, down = np.array([np.cos(t), np.sin(t)]), np.array([-np.sin(t), np.cos(t)])
        xy[i] = [centre + sx * right * width / 2 + sy * down * height / 2 for sy in (-1, 1) for sx in (-1, 1)]
    return xy


def estimate(both: np.ndarray, method: str) -> np.ndarray:
    """(1 + S,) Cobb angles of found corners and draws (row 0: the value) by ``method``."""
    if method == "max per draw":
        return d.cobb_angle(both)[0]
    if method == "fixed ends":
        _, upper, lower = d.cobb_angle(both[0])
        return d.cobb_between(both, int(upper), int(lower))
    return cobb_with_interval(both)[0]


def score(spines: int, sd: float, method: str) -> tuple[float, float, float]:
    """(coverage, mean error in degrees, median interval width) of ``method`` at corner noise ``sd`` px."""
    rng = np.random.default_rng(1)
    inside, errors, widths = [], [], []
    for _ in range(spines):
        truth = scoliotic_spine(rng)
        found = truth + rng.normal(0.0, sd, truth.shape)
        both = np.concatenate([found[None], found[None] + rng.normal(0.0, sd, (DRAWS, *truth.shape))])
        values = estimate(both, method)
        low, high = np.percentile(values[1:], [2.5, 97.5])
        true_cobb = float(d.cobb_angle(truth)[0])
        inside.append(low <= true_cobb <= high)
        errors.append(values[0] - true_cobb)
        widths.append(high - low)
    return float(np.mean(inside)), float(np.mean(errors)), float(np.median(widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spines", type=int, default=300)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.5, 1.5, 3.0])
    args = parser.parse_args()
    print("| estimator | noise sd px | 95% coverage | mean error deg | median width deg |\n|---|---|---|---|---|")
    for method in ("max per draw", "fixed ends", "fixed ends, bias-corrected"):
        for sd in args.noise:
            coverage, error, width = score(args.spines, sd, method)
            print(f"| {method} | {sd:g} | {coverage:.1%} | {error:+.2f} | {width:.1f} |")


if __name__ == "__main__":
    main()
