"""Seconds to parse large ``centers.csv`` files (issue 12: parsing must stay linear in the rows).

    python benchmarks/parse_centers.py [--rows 20000 200000]

For each size, two files: every row on one image (a runaway export; refused at the 65th vertebra since the
cap is 64), and five vertebrae per image. Prints one line per file.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from vcorner.io.centers import load_centers


def timed(path: Path) -> tuple[float, str]:
    began = time.perf_counter()
    table = load_centers(path)
    seconds = time.perf_counter() - began
    return seconds, next(iter(table.problems.values()), f"{len(table.records)} image(s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000, 200_000])
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="vcorner-parse-"))
    for n in args.rows:
        one = folder / f"one-{n}.csv"
        one.write_text("image,vertebra,x,y\n" + "".join(f"a.png,V{i},{i},{i}\n" for i in range(n)))
        five = folder / f"five-{n}.csv"
        five.write_text("image,vertebra,x,y\n" + "".join(f"img{i // 5}.png,C{3 + i % 5},{i % 5},{60 * (i % 5)}\n"
                                                         for i in range(n)))
        for label, path in (("on one image", one), ("five per image", five)):
            seconds, outcome = timed(path)
            print(f"{n} rows {label}: {seconds:.2f} s ({outcome})", flush=True)


if __name__ == "__main__":
    main()
