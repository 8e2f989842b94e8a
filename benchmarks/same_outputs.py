"""Are a batch's outputs byte-identical before and after a change (issue #30)? Records the digests of every file
`vcorner batch` writes, for the shipped examples and N training-style phantoms, from clicked centres and
automatically, locally and on Ray; then compares two records.

``run.json`` is compared without what changes from run to run (timings, absolute paths); every other file
(``corners.csv``, ``errors.csv``, ``centers.detected.csv``, ``json/*.json``) byte for byte.

    python benchmarks/same_outputs.py record before.json [--images 100 --seed 303030] [--no-ray]
    (change the code)
    python benchmarks/same_outputs.py record after.json
    python benchmarks/same_outputs.py compare before.json after.json      # exit 1 when anything differs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = {"seconds", "setup_seconds", "patches_per_s", "images", "path"}


def stable(value):
    """run.json without timings and absolute paths."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in sorted(value.items()) if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def digests(out: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file of a batch's output folder (run.json made stable first)."""
    found = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        if rel.startswith("previous-"):
            continue
        data = path.read_bytes()
        if rel == "run.json":
            data = json.dumps(stable(json.loads(data)), sort_keys=True).encode()
        found[rel] = hashlib.sha256(data).hexdigest()
    return found


def batch(args: list[str], out: Path) -> dict[str, str]:
    """Run `vcorner batch` with ``args`` into a fresh ``out``; its exit code and output digests."""
    cmd = [sys.executable, "-m", "vcorner", "batch", *args, "--out", str(out), "--json", "--no-resume"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()[-400:]}")
    return {"exit": str(done.returncode), **digests(out)}


def record(path: Path, images: int, seed: int, ray: bool) -> None:
    """Run every case and write the digests to ``path``."""
    with tempfile.TemporaryDirectory(prefix="vcorner-same-") as tmp:
        phantoms = Path(tmp) / "phantoms"
        subprocess.run([sys.executable, "-m", "vcorner", "synth", str(phantoms), "--images", str(images),
                        "--seed", str(seed)], check=True, capture_output=True)
        examples = ROOT / "examples" / "xrays"
        sets = {"examples": (examples, examples / "centers.csv"),
                "phantoms": (phantoms, phantoms / "centers.csv")}
        cases = {}
        for name, (folder, centers) in sets.items():
            for mode, extra in (("clicked", ["--centers", str(centers)]), ("automatic", [])):
                for where in ("local", "ray") if ray else ("local",):
                    more = ["--ray", "local"] if where == "ray" else []
                    key = f"{name}/{mode}/{where}"
                    print(key, file=sys.stderr)
                    cases[key] = batch([str(folder), *extra, *more], Path(tmp) / key.replace("/", "-"))
    path.write_text(json.dumps({"images": images, "seed": seed, "cases": cases}, indent=1) + "\n")


def compare(before: Path, after: Path) -> int:
    """Print every case and file that differs; 0 when all are identical."""
    a, b = (json.loads(p.read_text())["cases"] for p in (before, after))
    differ = 0
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key, {}), b.get(key, {})
        files = sorted(f for f in set(left) | set(right) if left.get(f) != right.get(f))
        differ += len(files)
        print(f"{key}: {'identical' if not files else 'DIFFERS: ' + ', '.join(files[:8])}"
              f" ({len(left)} file(s))")
    return 1 if differ else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("path", type=Path)
    rec.add_argument("--images", type=int, default=100)
    rec.add_argument("--seed", type=int, default=303030)
    rec.add_argument("--no-ray", action="store_true")
    cmp_ = sub.add_parser("compare")
    cmp_.add_argument("before", type=Path)
    cmp_.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.what == "record":
        record(args.path, args.images, args.seed, not args.no_ray)
    else:
        raise SystemExit(compare(args.before, args.after))


if __name__ == "__main__":
    main()
