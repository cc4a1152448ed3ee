"""The package's import graph: no cycle, and nothing imports from a later stage.

Every module under ``src/recpress`` is parsed with `ast`; every ``import x`` and
``from x import y`` counts, at module level and inside functions alike (an import hidden in a
function is still a dependency), relative imports resolved. ``from pkg import name`` is an edge
to ``pkg.name`` when that is a module, else to ``pkg`` (its ``__init__``).

The stages, in order (a module may import from its own stage or an earlier one)::

    base (errors, fileio, schema) -> data -> models -> runs
        -> distill | evaluation | training -> serving -> experiments -> cli

``recpress/__init__.py`` and ``__main__.py`` are the top. How it fails, e.g. after adding
``from recpress.experiments.run import train_run`` inside a function of ``distill/teachers.py``::

    AssertionError: imports from a later stage:
      recpress.distill.teachers (distill) imports recpress.experiments.run (experiments)

and after adding ``from recpress.data import load_split`` inside a function of
``data/splits.py`` (the package ``__init__`` imports ``splits``)::

    AssertionError: import cycles:
      recpress.data -> recpress.data.splits -> recpress.data
"""

from __future__ import annotations

import ast
from pathlib import Path

import recpress

ROOT = Path(recpress.__file__).resolve().parent
PACKAGE = "recpress"

STAGES: list[set[str]] = [
    {"errors", "fileio", "schema"},
    {"data"},
    {"models"},
    {"runs"},
    {"distill", "evaluation", "training"},
    {"serving"},
    {"experiments"},
    {"cli"},
]
TOP = {PACKAGE, f"{PACKAGE}.__main__"}


def module_names() -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the package that `name` imports anywhere in its file."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def stage(name: str) -> int:
    """Index of a module's stage in STAGES (len(STAGES) for the top)."""
    if name in TOP:
        return len(STAGES)
    first = name.split(".")[1]
    for i, names in enumerate(STAGES):
        if first in names:
            return i
    raise AssertionError(f"{name} belongs to no stage: add it to STAGES in {__file__}")


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_cycle(graph, set(comp)) for comp in components]


def _one_cycle(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first)."""
    start = min(comp)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError("a strongly connected component without a cycle")


def test_graph_sees_function_level_and_relative_imports() -> None:
    graph = import_graph()
    assert len(graph) > 40
    assert "recpress.errors" in graph["recpress"]  # module level, from-import of a module
    assert "recpress.cli" in graph["recpress.__main__"]


def test_imports_inside_functions_and_relative_imports_count(tmp_path: Path) -> None:
    pkg = tmp_path / "recpress" / "sub"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import a\n")
    (pkg / "a.py").write_text("def f():\n    from ..errors import ConfigError\n")
    modules = {"recpress.sub": pkg / "__init__.py", "recpress.sub.a": pkg / "a.py"}
    modules["recpress.errors"] = ROOT / "errors.py"
    assert imports_of("recpress.sub", modules["recpress.sub"], modules) == {"recpress.sub.a"}
    assert imports_of("recpress.sub.a", modules["recpress.sub.a"], modules) == {"recpress.errors"}


def test_cycle_finder_reports_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join("  " + " -> ".join(c) for c in cycles)


def test_no_import_from_a_later_stage() -> None:
    bad = [
        f"  {a} ({_label(a)}) imports {b} ({_label(b)})"
        for a, targets in sorted(import_graph().items())
        for b in sorted(targets)
        if stage(b) > stage(a)
    ]
    assert not bad, "imports from a later stage:\n" + "\n".join(bad)


def _label(name: str) -> str:
    return "top" if name in TOP else name.split(".")[1]
