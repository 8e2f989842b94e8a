"""The shape of vcorner's code (issue #30): module count, median module and function length, the largest modules
and functions, and the vcorner modules a reader reaches from one module by its imports.

    python benchmarks/code_shape.py [--package vcorner] [--from vcorner.cli.batch] [--top 8] [--json]

Lengths are physical lines: a module's whole file, a function's ``def`` line to its last line (methods and
nested functions counted on their own too). The reach is the closure of ``import``s of vcorner modules (module
level and inside functions) from ``--from``; ``--within`` limits it to some subpackages (e.g. ``pipeline,cli``).
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path, package: Path) -> str:
    """``vcorner/pipeline/run.py`` -> ``vcorner.pipeline.run`` (a package's ``__init__`` -> the package)."""
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def functions(tree: ast.AST) -> list[tuple[str, int]]:
    """(name, lines) of every function and method of a parsed module."""
    return [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]


def imported(tree: ast.AST, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The vcorner modules a module imports (``from a import b`` counts ``a.b`` when that is a module)."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in known}


def shape(package: Path, start: str, within: tuple[str, ...], top: int) -> dict:
    """The figures of the package folder ``package``."""
    files = sorted(package.rglob("*.py"))
    trees = {module_name(p, package): (p, ast.parse(p.read_text(encoding="utf-8"))) for p in files}
    lengths = {name: len(p.read_text(encoding="utf-8").splitlines()) for name, (p, _) in trees.items()}
    funcs = [(f"{name}.{fn}", n) for name, (_, tree) in trees.items() for fn, n in functions(tree)]
    known = set(trees)
    edges = {name: imported(tree, name, p.name == "__init__.py", known) for name, (p, tree) in trees.items()}
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen or name not in known:
            continue
        seen.add(name)
        todo.extend(edges[name])
    reach = sorted(m for m in seen if not within or (m.split(".") + [""])[1] in within)
    return {"modules": len(files), "lines": sum(lengths.values()),
            "median_module_lines": statistics.median(lengths.values()),
            "functions": len(funcs), "median_function_lines": statistics.median(n for _, n in funcs),
            "largest_modules": sorted(lengths.items(), key=lambda kv: -kv[1])[:top],
            "largest_functions": sorted(funcs, key=lambda kv: -kv[1])[:top],
            "reach_from": start, "reach_within": list(within), "reach": len(reach), "reached": reach}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", type=Path, default=ROOT / "vcorner")
    parser.add_argument("--from", dest="start", default="vcorner.cli.batch")
    parser.add_argument("--within", default="", help="comma-separated subpackages the reach counts (default all)")
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    within = tuple(w for w in args.within.split(",") if w)
    figures = shape(args.package.resolve(), args.start, within, args.top)
    if args.json:
        print(json.dumps(figures, indent=1))
        return
    print(f"{figures['modules']} modules, {figures['lines']} lines; median module {figures['median_module_lines']} "
          f"lines; {figures['functions']} functions, median {figures['median_function_lines']} lines")
    print("largest modules: " + ", ".join(f"{m} {n}" for m, n in figures["largest_modules"]))
    print("largest functions: " + ", ".join(f"{f} {n}" for f, n in figures["largest_functions"]))
    print(f"modules reached from {args.start}{' within ' + ','.join(within) if within else ''}: {figures['reach']}: "
          + " ".join(m.removeprefix("vcorner.") for m in figures["reached"]))


if __name__ == "__main__":
    main()
