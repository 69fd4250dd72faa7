"""The package's import graph runs one way: no module imports another that imports it back (at run time), and every
module imports on its own, in any order, in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "spanet"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _run_time_imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """spanet modules imported by `path` when it runs (at the top or inside functions), `if TYPE_CHECKING:` excluded."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(node) for stmt in ast.walk(tree) if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test)
               for node in ast.walk(stmt)}  # fmt: skip
    names = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name in modules}


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = {name: _run_time_imports(path, modules) - {name} for name, path in modules.items()}
    for name in graph:  # a package's __init__ re-exporting its own submodules is not a cycle of the data flow
        if modules[name].name == "__init__.py":
            graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    cycles = []

    def visit(node: str, stack: list[str], done: set[str]) -> None:
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in done:
            return
        for child in sorted(graph[node]):
            visit(child, stack + [node], done)
        done.add(node)

    done: set[str] = set()
    for name in sorted(graph):
        visit(name, [], done)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("order", ["sorted", "reversed"])
def test_every_module_imports_in_any_order(order: str) -> None:
    names = sorted(_modules())
    if order == "reversed":
        names.reverse()
    script = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError as exc:\n"
        "        if exc.name.split('.')[0] == 'spanet':\n"
        "            raise\n"  # an optional extra that is not installed is fine, a missing spanet module is not
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
