"""The library's import structure: no import cycles anywhere (imports inside functions
included), and no stage imports the runner that drives the stages."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
# The installed package name of each top-level folder (pyproject's package-dir).
FOLDERS = {
    "uqbench": "uqbench",
    "methods": "uqbench.methods",
    "datamodules": "uqbench.datamodules",
    "deploy": "uqbench.deploy",
}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            relative = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports, at module level or inside functions."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            wanted = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            wanted = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        for target in wanted:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                targets.add(target)
    return targets


def _graph() -> nx.DiGraph:
    modules = _modules()
    graph = nx.DiGraph()
    for name, path in modules.items():
        graph.add_node(name)
        graph.add_edges_from((name, target) for target in _imports(name, path, modules))
    return graph


def test_the_library_has_no_import_cycle():
    cycles = [sorted(c) for c in nx.strongly_connected_components(_graph()) if len(c) > 1]
    assert cycles == []


def test_no_stage_imports_the_runner():
    graph = _graph()
    stages = [n for n in graph if n.startswith("uqbench.stages.")]
    assert len(stages) >= 8
    assert [s for s in stages if graph.has_edge(s, "uqbench.runner")] == []
