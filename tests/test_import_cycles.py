"""No import cycles: neither between Loom's top-level packages nor between modules inside them.

Every import counts, including those inside functions (a function-level import is still a
dependency; it only hides the cycle from Python's loader). Imports under `if TYPE_CHECKING:`
do not run and are left out. Modules are Loom's own source files (not tests, benchmarks,
custom node packs or the editor).
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

REPO = Path(__file__).resolve().parents[1]
NOT_SOURCE = {".venv", "tests", "bench", "custom_nodes", "web", "examples", "scripts", "docs", "models", ".cache",
              "output", "input", "temp", "user", ".git"}


def _modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for path in REPO.rglob("*.py"):
        relative = path.relative_to(REPO)
        if relative.parts[0] in NOT_SOURCE or "node_modules" in relative.parts:
            continue
        name = ".".join(relative.with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def _imports(tree: ast.AST) -> list[ast.AST]:
    """Every import node except those under `if TYPE_CHECKING:`."""
    found: list[ast.AST] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _targets(node: ast.AST, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    assert isinstance(node, ast.ImportFrom)
    base = node.module or ""
    if node.level:
        parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_graph() -> nx.DiGraph:
    """Module → module edges for every import between Loom's own modules."""
    modules = _modules()
    graph = nx.DiGraph()
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph.add_node(name)
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            for target in _targets(node, package):
                if target in modules and target != name and not name.startswith(target + "."):
                    graph.add_edge(name, target)
    return graph


def test_no_cycle_between_modules() -> None:
    cycles = sorted(sorted(cycle) for cycle in nx.simple_cycles(import_graph()))
    assert cycles == [], f"import cycles between modules: {cycles}"


def test_no_cycle_between_top_level_packages() -> None:
    packages = nx.DiGraph()
    for source, target in import_graph().edges():
        top_source, top_target = source.split(".")[0], target.split(".")[0]
        if top_source != top_target:
            packages.add_edge(top_source, top_target)
    cycles = sorted(sorted(cycle) for cycle in nx.simple_cycles(packages))
    assert cycles == [], f"import cycles between top-level packages: {cycles}"


def test_the_graph_sees_real_imports() -> None:
    """The scan finds the imports it should (so an empty cycle list means something)."""
    graph = import_graph()
    assert graph.has_edge("server.app", "executor.queue")
    assert graph.has_edge("executor.workflow", "executor.workflow_ui")
