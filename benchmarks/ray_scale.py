"""``vcorner batch`` locally and on a local Ray instance with 1 and 2 actors: images/s, peak memory, same bytes.

    python benchmarks/ray_scale.py [--data data/ray-scale] [--sizes 1000 2000] [--actors 1 2] [--model M]

``--data`` is a phantom folder (written once with ``vcorner synth DATA --images 2000 --seed 18`` if missing: PNG,
JPEG, TIFF and DICOM films). For each size N, the first N images of its ``centers.csv`` are run as a user runs
them (``python -m vcorner batch``, a subprocess each): locally, then with ``--ray local --ray-actors K`` for each
K. Per run it records the batch's images/s (from ``OUT/run.json``: the batch itself, without start-up) and the
wall time, and the peak resident memory (``VmHWM`` of ``/proc``, polled) of the driver (the vcorner process) and of
the largest actor; every Ray run's ``corners.csv`` and ``errors.csv`` are compared byte for byte with the local
run's. Memory must stay flat as N doubles: the driver holds no pixels or results, an actor one call's images.
Writes benchmarks/results/ray_scale.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
POLL_S = 0.25


def subset_centres(data: Path, count: int, dest: Path) -> int:
    """Write the rows of the first ``count`` images of ``data/centers.csv`` to ``dest``; the images written."""
    with open(data / "centers.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    header, body, images = rows[0], [], []
    for row in rows[1:]:
        if row[0] not in images:
            if len(images) == count:
                break
            images.append(row[0])
        body.append(row)
    with open(dest, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([header, *body])
    return len(images)


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids of every process on the machine."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(parent, []).append(int(entry.name))
    return tree


def _memory_kb(pid: int) -> tuple[dict[str, int], str]:
    """(``VmHWM``, ``RssAnon``, ``RssShmem`` in kB, command line) of ``pid``; ({}, "") once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return {}, ""
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {key: int(fields.get(key, "0 kB").split()[0]) for key in ("VmHWM", "RssAnon", "RssShmem")}, cmdline


class PeakMemory:
    """Polls the memory of a process tree: the root (the driver) and each process whose command line names the
    corner actor. ``peak`` holds, per role, the kernel's peak RSS (``VmHWM``, which counts the pages of Ray's
    shared object store a process has touched) and the largest private memory seen (``RssAnon``)."""

    def __init__(self, root: int) -> None:
        self.root, self.actors = root, set()
        self.peak = {(role, key): 0 for role in ("driver", "actor") for key in ("VmHWM", "RssAnon", "RssShmem")}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while not self.stop.is_set():
            tree, todo = _children(), [self.root]
            while todo:
                pid = todo.pop()
                todo.extend(tree.get(pid, []))
                kb, cmdline = _memory_kb(pid)
                role = "driver" if pid == self.root else "actor" if "CornerActor" in cmdline else None
                for key, value in kb.items() if role else ():
                    self.peak[role, key] = max(self.peak[role, key], value)
            self.stop.wait(POLL_S)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def run(data: Path, centres: Path, out: Path, model: Path | None, actors: int | None) -> dict:
    """One ``vcorner batch`` subprocess: its images/s, wall seconds and peak memory (MiB)."""
    command = [sys.executable, "-m", "vcorner", "batch", str(data), "--centers", str(centres), "--out", str(out),
               "--no-resume", *(["--model", str(model)] if model else []),
               *(["--ray", "local", "--ray-actors", str(actors)] if actors else [])]
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    memory = PeakMemory(process.pid)
    _, stderr = process.communicate()
    memory.close()
    wall = time.perf_counter() - began
    if process.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}): {stderr[-2000:]}")
    last = json.loads((out / "run.json").read_text())["last_run"]
    return {"mode": "local" if actors is None else f"ray x{actors}", "actors": actors, "done": last["done"],
            "failed": last["failed"], "batch_s": last["seconds"], "wall_s": round(wall, 2),
            "images_per_s": round(last["done"] / last["seconds"], 2), "backend": last["backend"],
            **{f"{role}_{key}_mib": round(kb / 1024, 1) for (role, key), kb in memory.peak.items()}}


def same_bytes(a: Path, b: Path) -> bool:
    """``corners.csv`` and ``errors.csv`` of two OUT folders are identical, byte for byte."""
    return all((a / name).read_bytes() == (b / name).read_bytes() for name in ("corners.csv", "errors.csv"))


def table(rows: list[dict]) -> str:
    """The Markdown table of the runs."""
    lines = ["| images | run | images/s | batch s | wall s | driver peak RSS / private MiB | actor peak RSS / "
             "private / object-store pages MiB | same bytes |", "|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        same = "-" if r["actors"] is None else ("yes" if r["same_bytes"] else "**no**")
        actor = "-" if r["actors"] is None else (f"{r['actor_VmHWM_mib']:.0f} / {r['actor_RssAnon_mib']:.0f} / "
                                                 f"{r['actor_RssShmem_mib']:.0f}")
        lines.append(f"| {r['images']} | {r['mode']} | {r['images_per_s']:.2f} | {r['batch_s']:.1f} | "
                     f"{r['wall_s']:.1f} | {r['driver_VmHWM_mib']:.0f} / {r['driver_RssAnon_mib']:.0f} | {actor} | "
                     f"{same} |")
    marginal = marginal_rates(rows)
    if marginal:
        lines += ["", "Marginal rate, (N2 - N1) images / (t2 - t1) batch seconds between the two largest sizes "
                  "(start-up, model load and warm-up cancel out):", ""]
        lines += [f"- {mode}: {rate:.1f} images/s" for mode, rate in marginal.items()]
    return "\n".join(lines)


def marginal_rates(rows: list[dict]) -> dict[str, float]:
    """Per run mode, the images/s of the extra images between the two largest sizes (fixed costs cancel)."""
    rates = {}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        runs = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["images"])[-2:]
        if len(runs) == 2 and runs[1]["batch_s"] > runs[0]["batch_s"]:
            rates[mode] = (runs[1]["done"] - runs[0]["done"]) / (runs[1]["batch_s"] - runs[0]["batch_s"])
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/ray-scale"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    if not (args.data / "centers.csv").is_file():
        subprocess.run([sys.executable, "-m", "vcorner", "synth", str(args.data), "--images", str(max(args.sizes)),
                        "--seed", str(args.seed)], check=True)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.sizes:
            centres = Path(scratch) / f"centers-{size}.csv"
            images = subset_centres(args.data, size, centres)
            local = Path(scratch) / f"local-{size}"
            rows.append(run(args.data, centres, local, args.model, None) | {"images": images})
            print(json.dumps(rows[-1]), flush=True)
            for actors in args.actors:
                out = Path(scratch) / f"ray{actors}-{size}"
                rows.append(run(args.data, centres, out, args.model, actors) | {
                    "images": images, "same_bytes": same_bytes(local, out)})
                print(json.dumps(rows[-1]), flush=True)
    record = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "rows": rows,
              "marginal_images_per_s": marginal_rates(rows)}
    (RESULTS / "ray_scale.json").write_text(json.dumps(record, indent=1) + "\n")
    (RESULTS / "ray_scale.md").write_text(
        f"# Ray at scale ({os.cpu_count()} cores)\n\n`python benchmarks/ray_scale.py "
        f"--sizes {' '.join(map(str, args.sizes))} --actors {' '.join(map(str, args.actors))}`\n\n"
        + table(rows) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
