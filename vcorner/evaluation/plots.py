"""Figures like the paper's Fig. 5: cumulative P2P error curves and box plots per corner and per vertebra."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from vcorner.evaluation.metrics import FIT_FAILURE_MM, CornerErrors, calibration


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def cumulative_curve(methods: Mapping[str, CornerErrors], path: Path, unit: str = "mm") -> None:
    """Fraction of corners with P2P error below each threshold, one line per method."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    for name, errors in methods.items():
        e = np.sort(np.asarray(errors.p2p))
        if len(e):
            ax.plot(e, np.arange(1, len(e) + 1) / len(e), label=name)
    ax.axvline(FIT_FAILURE_MM, color="grey", ls=":", lw=1)
    ax.set(xlabel=f"P2P error ({unit})", ylabel="fraction of corners", xlim=(0, 6), ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def box_plots(errors: CornerErrors, path: Path, unit: str = "mm") -> None:
    """Box plots of P2P error per corner and per vertebra, side by side."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for ax, by in zip(axes, ("corner", "vertebra"), strict=True):
        keys = getattr(errors, by)
        names = list(dict.fromkeys(sorted(keys))) if by == "vertebra" else list(dict.fromkeys(keys))
        data = [[e for e, k in zip(errors.p2p, keys, strict=True) if k == n] for n in names]
        ax.boxplot(data, showfliers=True)
        ax.set_xticks(range(1, len(names) + 1), [n.replace("_", "\n") for n in names])
        ax.set(ylabel=f"P2P error ({unit})", title=f"per {by}")
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def reliability_plot(errors: CornerErrors, path: Path) -> None:
    """Observed share of true corners inside the predicted p-ellipse against p (the diagonal is perfect)."""

    plt = _pyplot()
    levels = np.linspace(0.05, 0.95, 19)
    observed = [calibration(errors, (p,))[f"inside_{round(100 * p)}"] for p in levels]
    fig, ax = plt.subplots(figsize=(4, 4), dpi=120)
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="calibrated")
    ax.plot(levels, observed, marker="o", ms=3, label="vcorner")
    ax.set(xlabel="ellipse probability", ylabel="share of true corners inside", xlim=(0, 1), ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
