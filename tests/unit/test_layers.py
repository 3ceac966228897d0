"""The layers' imports point inward (docs/architecture.md): read with `ast`, no module is run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]

# What each layer may import of the project (itself included); the shell (`harmony`) may import all.
ALLOWED = {
    "events": {"events"},
    "commands": {"events", "commands"},
    "projections": {"events", "projections"},
    "keys": {"events", "projections", "keys"},  # the Cassandra adapter shares the store's connection pieces
    "archive": {"events", "archive"},
    "ml": {"events", "projections", "archive", "ml"},
    "api": {"events", "commands", "projections", "ml", "api"},
    "web": {"web"},  # the website talks to the API over HTTP only
}
LAYERS = set(ALLOWED) | {"harmony"}
# Store adapters: only the composition root (and the tests) may name one.
ADAPTERS = {"projections.sqlite_store", "keys.sqlite_keys", "keys.cassandra_keys"}
MAY_NAME_ADAPTERS = {"harmony", "tests"}


def imported_modules(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names imported from it) of every import in `path`, at any depth (lazy
    imports count)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
    return found


def python_files(folder: str) -> list[Path]:
    return sorted((PROJECT / folder).rglob("*.py"))


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PROJECT).with_suffix("").parts).removesuffix(".__init__")


def import_cycles() -> list[list[str]]:
    """The project's modules that import themselves through others (lazy imports count: they only
    hide a cycle), each group sorted: Tarjan's strongly connected components of the import graph."""
    paths = {module_name(path): path for layer in sorted(LAYERS) for path in python_files(layer)}
    graph = {module: {name for _, imported, names in imported_modules(path)
                      for name in (imported, *(f"{imported}.{n}" for n in names)) if name in paths and name != module}
             for module, path in paths.items()}
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for other in graph[module]:
            if other not in order:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], order[other])
        if low[module] == order[module]:
            group = stack[stack.index(module):]
            del stack[stack.index(module):]
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in graph:
        if module not in order:
            visit(module)
    return cycles


def layer_violations(folder: str) -> list[str]:
    wrong = []
    for path in python_files(folder):
        for line, module, _ in imported_modules(path):
            top = module.split(".")[0]
            if top in LAYERS and top not in ALLOWED[folder]:
                wrong.append(f"{path.relative_to(PROJECT)}:{line} imports {module}")
    return wrong


def adapter_violations(folder: str) -> list[str]:
    wrong = []
    for path in python_files(folder):
        for line, module, names in imported_modules(path):
            # `from projections import sqlite_store` names the adapter too
            for adapter in ADAPTERS & {module, *(f"{module}.{name}" for name in names)}:
                wrong.append(f"{path.relative_to(PROJECT)}:{line} imports the adapter {adapter}")
    return wrong


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_layer_imports_only_the_layers_inside_it(layer):
    assert python_files(layer), f"no layer {layer}"
    assert layer_violations(layer) == []


@pytest.mark.parametrize("folder", sorted(set(ALLOWED) | {"bench"}))
def test_only_the_composition_root_names_a_store_adapter(folder):
    assert adapter_violations(folder) == []


def test_no_module_imports_itself_through_others():
    assert import_cycles() == []


def test_the_checks_catch_what_they_look_for(tmp_path, monkeypatch):
    """A shell import in an inner layer and an adapter import outside the root are both found."""
    monkeypatch.setattr(__import__(__name__, fromlist=["PROJECT"]), "PROJECT", tmp_path)
    (tmp_path / "projections").mkdir()
    (tmp_path / "projections" / "worker.py").write_text(
        "def run():\n    from harmony.settings import load\n    from projections import sqlite_store\n")
    assert layer_violations("projections") == ["projections/worker.py:2 imports harmony.settings"]
    assert adapter_violations("projections") == [
        "projections/worker.py:3 imports the adapter projections.sqlite_store"]
    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "training.py").write_text("def fit():\n    from ml.selection import tune\n")
    (tmp_path / "ml" / "selection.py").write_text("from ml import training\n")
    (tmp_path / "ml" / "als.py").write_text("import ml.training\n")
    assert import_cycles() == [["ml.selection", "ml.training"]]
