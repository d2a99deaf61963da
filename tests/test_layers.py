"""The package's shape, checked: the two edges (api/, ws/) are peers over the pipelines and never
import each other, dependencies are declared in one place, and no module (Python or the page's
scripts) outgrows ~300 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "capsearch"
MAX_LINES = 300


def _modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (imports inside functions count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize(("edge", "peer"), [("api", "capsearch.ws"), ("ws", "capsearch.api")])
def test_the_edges_do_not_import_each_other(edge: str, peer: str) -> None:
    offenders = {
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in _modules(PACKAGE / edge)
        for name in _imports(path)
        if name == peer or name.startswith(peer + ".")
    }
    assert not offenders


def test_lower_layers_import_neither_edge() -> None:
    lower = [PACKAGE / "pipelines", PACKAGE / "services", PACKAGE / "shapes.py", PACKAGE / "events.py"]
    paths = [p for folder in lower for p in (_modules(folder) if folder.is_dir() else [folder])]
    offenders = {
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in paths
        for name in _imports(path)
        if name.startswith(("capsearch.api", "capsearch.ws", "fastapi", "starlette"))
    }
    assert not offenders


def test_dependency_aliases_live_in_deps() -> None:
    declaring = {
        str(path.relative_to(PACKAGE))
        for path in _modules(PACKAGE)
        if "Depends(" in path.read_text() and path.name != "deps.py"
    }
    assert not declaring


def test_no_module_over_the_size_limit() -> None:
    tests = Path(__file__).resolve().parent
    scripts = sorted((tests.parent / "web" / "static" / "js").glob("*.js"))
    too_long = {
        f"{path.name}: {n} lines"
        for path in [*_modules(PACKAGE), *_modules(tests), *scripts]
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not too_long
