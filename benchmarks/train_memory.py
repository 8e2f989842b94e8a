"""Peak memory (RSS) of `vcorner train` against the number of films, for the corner and the detector recipes.

    python benchmarks/train_memory.py [--sizes 100 400 1600] [--seed 7] [--phantoms /tmp/vcorner-phantoms]
        [--label before|after] [--patches 4]

Synthesizes ``max(sizes)`` phantoms once (``vcorner synth``; a folder holding enough of them is reused) and
trains on the first N of them (a folder of links with its own ``annotations.json``) for each N: one full
epoch, no calibration, as a child process whose peak resident memory is read from
``os.wait4`` (that child's ``ru_maxrss``) when it ends.

Recipes (written next to the data): ``corners`` is ``train/lite.toml`` with the ``tiny`` UNet, 1 epoch,
``--patches`` patches per vertebra (2 for validation) so that a full epoch takes a minute on 2 cores;
``detector`` is ``train/detector-lite.toml`` with 1 epoch. The memory at stake is the data's (decoded films and
one epoch's patches), not the network's.

Appends a JSON line per (recipe, N) to ``benchmarks/results/train_memory.jsonl`` and rewrites
``benchmarks/results/train_memory.md`` (a table of every row there).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vcorner.benchmark.machine import stamp
from vcorner.models.evidence import append_rows

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def vcorner(*args: str) -> list[str]:
    """The command line of the vcorner CLI of this interpreter (the checkout's code first on PYTHONPATH)."""
    return [sys.executable, "-c", "import sys; from vcorner.cli import main; sys.argv[0] = 'vcorner'; main()", *args]


def phantoms(folder: Path, images: int, seed: int) -> Path:
    """``folder`` holding at least ``images`` phantoms, synthesized when it holds fewer."""
    annotations = folder / "annotations.json"
    if annotations.is_file() and len(json.loads(annotations.read_text())["images"]) >= images:
        return folder
    subprocess.run(vcorner("synth", str(folder), "--images", str(images), "--seed", str(seed)), check=True)
    return folder


def subset(source: Path, images: int, into: Path) -> Path:
    """A folder of links to the first ``images`` films of ``source`` with an ``annotations.json`` of them."""
    data = json.loads((source / "annotations.json").read_text())
    folder = into / f"films-{images}"
    folder.mkdir(parents=True, exist_ok=True)
    kept = data["images"][:images]
    for item in kept:
        link = folder / item["file"]
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source / item["file"])
    (folder / "annotations.json").write_text(json.dumps({**data, "images": kept}))
    return folder


def recipes(into: Path, patches: int) -> dict[str, Path]:
    """The two benchmark recipes, written into ``into``."""
    corners = (ROOT / "train" / "lite.toml").read_text()
    corners = (corners.replace('recipe = "lite"', 'recipe = "tiny"').replace("epochs = 8", "epochs = 1")
               .replace("patches_per_vertebra = 24", f"patches_per_vertebra = {patches}")
               .replace("val_patches_per_vertebra = 6", "val_patches_per_vertebra = 2"))
    detector = (ROOT / "train" / "detector-lite.toml").read_text().replace("epochs = 60", "epochs = 1")
    paths = {"corners": into / "corners.toml", "detector": into / "detector.toml"}
    paths["corners"].write_text(corners)
    paths["detector"].write_text(detector)
    return paths


def peak_rss(data: Path, recipe: Path, out: Path) -> dict:
    """Train once in a child process; its peak RSS (MiB, ``ru_maxrss`` of that child) and wall time (s)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    began = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        child = subprocess.Popen(vcorner("train", str(data), "--config", str(recipe), "--out", str(out), "--force",
                                         "--no-calibrate"), env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - began
        if child.returncode != 0:
            log.seek(0)
            raise SystemExit(f"training failed ({child.returncode}):\n{log.read()[-3000:]}")
    return {"peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "seconds": round(seconds, 1)}


def table(rows: list[dict]) -> str:
    """Markdown: one line per (label, recipe, films)."""
    lines = ["| code | recipe | films | peak RSS (MiB) | seconds | date |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['recipe']} | {r['films']} | {r['peak_rss_mib']} | {r['seconds']} | "
                     f"{r.get('date', '')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 400, 1600])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--phantoms", type=Path, default=Path(tempfile.gettempdir()) / "vcorner-phantoms")
    parser.add_argument("--recipes", nargs="+", default=["corners", "detector"], choices=["corners", "detector"])
    parser.add_argument("--patches", type=int, default=4, help="Training patches per vertebra (corners).")
    parser.add_argument("--label", default="after", help="Which code this is (e.g. before, after).")
    args = parser.parse_args()
    sizes = sorted(args.sizes)
    source = phantoms(args.phantoms, sizes[-1], args.seed)
    work = Path(tempfile.mkdtemp(prefix="train-memory-"))
    paths = recipes(work, args.patches)
    out = RESULTS / "train_memory.jsonl"
    for name in args.recipes:
        for n in sizes:
            row = {"label": args.label, "recipe": name, "films": n, "patches_per_vertebra": args.patches,
                   **peak_rss(subset(source, n, work), paths[name], work / f"run-{name}-{n}"), **stamp()}
            print(json.dumps(row), flush=True)
            append_rows(out, [row])
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    (RESULTS / "train_memory.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
