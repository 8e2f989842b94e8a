"""The layering of docs/architecture.md holds: every import of vcorner's own modules, at module level or inside a
function, points to its own subpackage or to a lower layer; siblings of a layer (runtime and export) do not
import each other; so there is no cycle between subpackages."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import vcorner

LAYERS: tuple[tuple[str, ...], ...] = (
    ("<root>", "config"),
    ("io",),
    ("hardware",),
    ("geometry",),
    ("postprocess",),
    ("measure", "phantoms"),
    ("models",),
    ("network",),
    ("stages",),
    ("runtime", "export"),
    ("backends",),
    ("evaluation",),
    ("training",),
    ("pipeline",),
    ("benchmark",),
    ("report",),
    ("cli",),
    ("__main__",),
)
"""Bottom to top, as docs/architecture.md draws them; names within one tuple are siblings."""
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


@dataclass(frozen=True)
class Import:
    """One import of a vcorner module: where it is and which part of the package it joins to which."""

    file: str
    line: int
    source: str
    target: str
    module: str


def part_of(module: str) -> str:
    """The subpackage (or root module) a dotted ``vcorner.`` module belongs to: ``vcorner.io.images`` -> ``io``."""
    parts = module.split(".")
    return "<root>" if len(parts) == 1 else parts[1]


def imports_of(path: Path, root: Path) -> list[Import]:
    """Every import of a ``vcorner`` module in one file (module level and inside functions), relative ones resolved."""
    name = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                targets = [".".join(base + ([node.module] if node.module else []))]
            else:
                targets = [node.module or ""]
            if targets[0] == "vcorner":  # from vcorner import x: x may be a subpackage
                targets = [f"vcorner.{alias.name}" if (root / alias.name).exists() or
                           (root / f"{alias.name}.py").exists() else "vcorner" for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        found += [Import(str(path.relative_to(root.parent)), node.lineno, part_of(name), part_of(t), t)
                  for t in targets if t == "vcorner" or t.startswith("vcorner.")]
    return found


def all_imports(root: Path) -> list[Import]:
    """The imports of every module under ``root`` (a ``vcorner`` package folder)."""
    return [imp for path in sorted(root.rglob("*.py")) for imp in imports_of(path, root)]


def violations(imports: list[Import]) -> list[str]:
    """One line per import that points upward, sideways to a sibling, or out of the layer list."""
    bad = []
    for imp in imports:
        if imp.source == imp.target:
            continue
        if imp.source not in RANK or imp.target not in RANK:
            bad.append(f"{imp.file}:{imp.line}: {imp.source} -> {imp.target}: not a layer of docs/architecture.md")
        elif RANK[imp.target] >= RANK[imp.source]:
            way = "sideways to a sibling" if RANK[imp.target] == RANK[imp.source] else "upward"
            bad.append(f"{imp.file}:{imp.line}: {imp.source} imports {imp.module} ({way})")
    return bad


def cycles(imports: list[Import]) -> list[set[str]]:
    """Groups of subpackages that import each other, directly or through others (strongly connected, size > 1)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.source != imp.target:
            graph.setdefault(imp.source, set()).add(imp.target)

    def reach(start: str) -> set[str]:
        seen, stack = set(), [start]
        while stack:
            for nxt in graph.get(stack.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    reachable = {node: reach(node) for node in graph}
    groups = {frozenset({a} | {b for b in reachable[a] if a in reachable.get(b, ())}) for a in graph}
    return [set(g) for g in groups if len(g) > 1]


PACKAGE = Path(vcorner.__file__).parent


def test_every_import_points_down_the_layers():
    assert violations(all_imports(PACKAGE)) == []


def test_no_cycle_between_subpackages():
    assert cycles(all_imports(PACKAGE)) == []


def test_runtime_imports_nothing_above_it():
    above = {"pipeline", "export", "benchmark", "evaluation", "training", "cli", "report"}
    assert [i for i in all_imports(PACKAGE) if i.source == "runtime" and i.target in above] == []


def test_every_subpackage_has_a_layer():
    parts = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    parts |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert parts <= set(RANK), f"add {sorted(parts - set(RANK))} to LAYERS and docs/architecture.md"


def test_the_check_catches_an_upward_import_a_sibling_import_and_a_cycle(tmp_path):
    root = tmp_path / "vcorner"
    for folder in ("runtime", "export", "pipeline"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "runtime" / "select.py").write_text(
        "def pick():\n    from vcorner.pipeline.batch import run_batch\n    return run_batch\n")
    (root / "runtime" / "trt.py").write_text("from ..export import build\n")
    (root / "pipeline" / "batch.py").write_text("from vcorner.runtime import select\n")
    found = violations(all_imports(root))
    assert any("runtime imports vcorner.pipeline.batch (upward)" in v for v in found)
    assert any("runtime imports vcorner.export (sideways to a sibling)" in v for v in found)
    assert {"runtime", "pipeline"} in cycles(all_imports(root))
