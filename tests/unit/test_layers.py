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


def test_the_checks_catch_what_they_look_for(tmp_path, monkeypatch):
    """A shell import in an inner layer and an adapter import outside the root are both found."""
    monkeypatch.setattr(__import__(__name__, fromlist=["PROJECT"]), "PROJECT", tmp_path)
    (tmp_path / "projections").mkdir()
    (tmp_path / "projections" / "worker.py").write_text(
        "def run():\n    from harmony.settings import load\n    from projections import sqlite_store\n")
    assert layer_violations("projections") == ["projections/worker.py:2 imports harmony.settings"]
    assert adapter_violations("projections") == [
        "projections/worker.py:3 imports the adapter projections.sqlite_store"]
