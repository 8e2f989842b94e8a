"""Plot a run's validation BC per epoch: python docs/make_training_curve.py runs/lite [docs/training_curve.png]."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(run: Path, out: Path) -> None:
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    name = json.loads((run / "recipe.json").read_text())["name"]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    ax.plot([h["epoch"] for h in history], [h["val_bc"] for h in history], marker="o")
    ax.set(xlabel="epoch", ylabel="validation BC", title=f"recipe '{name}': validation Bhattacharyya coefficient")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2] if len(sys.argv) > 2 else "docs/training_curve.png"))
