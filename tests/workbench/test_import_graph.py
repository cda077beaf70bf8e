"""The modules of ``workbench`` import each other without a cycle.

Every import counts: at module level, inside a function (a lazy import) and under
``if TYPE_CHECKING:``. A cycle is fixed by moving code down to a lower module, never by
hiding the import. The package itself (``workbench/__init__.py``) imports nearly every
module, so no module inside it may import from the package.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "workbench"


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package under ``root``."""
    found = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        name = ".".join(path.with_suffix("").relative_to(root).parts)
        found[name.removesuffix(".__init__")] = path
    return found


def import_edges(root: Path) -> dict[str, dict[str, list[int]]]:
    """Module -> imported module of the package -> line numbers, for every import."""
    mods = modules(root)
    edges: dict[str, dict[str, list[int]]] = {name: {} for name in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[:len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for alias in node.names:  # a submodule (from . import x), else the module
                    candidate = f"{base}.{alias.name}"
                    targets.append(candidate if candidate in mods else base)
            elif isinstance(node, ast.Import):
                targets.extend(alias.name for alias in node.names)
            for target in targets:
                if target in mods and target != name:
                    edges[name].setdefault(target, []).append(node.lineno)
    return edges


def cycles(edges: dict[str, dict[str, list[int]]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def describe(component: list[str], edges: dict[str, dict[str, list[int]]]) -> Iterator[str]:
    inside = set(component)
    yield f"{len(component)} modules import each other: {component}"
    for a in component:
        for b, lines in sorted(edges[a].items()):
            if b in inside:
                yield f"  {a} -> {b} (line {', '.join(map(str, sorted(set(lines))))})"


def test_the_package_has_no_import_cycle():
    edges = import_edges(REPO)
    found = cycles(edges)
    assert not found, "\n".join(line for c in found for line in describe(c, edges))


def test_no_module_imports_the_package_itself():
    edges = import_edges(REPO)
    importers = sorted(name for name, targets in edges.items() if PACKAGE in targets)
    assert not importers, (f"{importers} import from the package {PACKAGE!r}, which imports "
                           "nearly every module; import from the module that defines the name")


def test_lazy_and_type_checking_imports_count(tmp_path):
    """The graph sees imports inside functions and under TYPE_CHECKING, relative or not."""
    files = {
        "__init__.py": "from .low import x\n",
        "low.py": """
            from typing import TYPE_CHECKING

            if TYPE_CHECKING:
                from .sub.high import y
            x = 1
            """,
        "sub/__init__.py": "",
        "sub/high.py": """
            def y():
                from .. import low
                import workbench.low
                return low.x
            """,
    }
    for name, text in files.items():
        path = tmp_path / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    edges = import_edges(tmp_path)
    assert edges["workbench"] == {"workbench.low": [1]}
    assert edges["workbench.low"] == {"workbench.sub.high": [5]}
    assert edges["workbench.sub.high"] == {"workbench.low": [3, 4]}
    assert cycles(edges) == [["workbench.low", "workbench.sub.high"]]
