"""The package's import graph has no cycle: every module-level import of ``nas_reid`` (with the
package ``__init__`` each one runs) read from the source, then every module imported in one
fresh interpreter in dependency order (each module after everything it imports)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "nas_reid"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imported(node: ast.stmt, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parent = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(parent + ([base] if base else []))
        return [base] + [f"{base}.{a.name}" for a in node.names]
    return []


def import_graph() -> nx.DiGraph:
    """``a -> b``: importing module ``a`` runs module ``b`` first (imports under ``if`` blocks,
    ``TYPE_CHECKING`` among them, and inside functions are not counted)."""
    modules = _modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = nx.DiGraph()
    for module, path in modules.items():
        graph.add_node(module)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.parse(path.read_text()).body:
            for name in _imported(node, package):
                target = owner(name) if name.startswith("nas_reid") else None
                if target is None or target == module:
                    continue
                graph.add_edge(module, target)
                parts = target.split(".")
                for i in range(1, len(parts)):  # importing a.b.c runs a.b's __init__ first
                    ancestor = ".".join(parts[:i])
                    if not (module + ".").startswith(ancestor + "."):
                        graph.add_edge(module, ancestor)
    return graph


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 50 and graph.has_edge("nas_reid.search.loop", "nas_reid.search.bilevel")
    cycles = [" -> ".join(c) for c in nx.simple_cycles(graph)]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_every_module_imports_in_dependency_order():
    order = list(reversed(list(nx.topological_sort(import_graph()))))
    code = ("import importlib, sys\n"
            f"for name in {order!r}:\n"
            "    importlib.import_module(name)\n"
            "print(len(sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=PACKAGE.parent, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
