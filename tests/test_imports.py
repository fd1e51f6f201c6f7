"""Imports among tallylight's own modules run one way: no module is part of an import cycle.

The graph is read from the source with `ast`, and counts every import of a tallylight module, also
those inside functions: an import moved into a function still ties the two modules together, it
only hides the cycle from Python until that function runs. So does an import marked
`# lazy import: <why>` (kept at its point of use on purpose, for start time or memory): it is an edge
like any other, so a lazy import can save start-up time but never hide a cycle. An import under
`if TYPE_CHECKING:` is left out: it never runs, and only names a type for annotations.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "device" / "tallylight"
LAZY_MARK = "# lazy import:"  # what the package writes beside an import kept inside a function on purpose


@dataclass(frozen=True)
class ImportEdge:
    importer: str
    imported: str
    where: str  # "path:line", for the failure message
    local: bool  # inside a function or class rather than at the top of the module


def module_name(path: Path, package_dir: Path) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(package_dir: Path) -> dict[str, Path]:
    return {module_name(p, package_dir): p for p in sorted(package_dir.rglob("*.py"))}


def _is_type_checking_block(node: ast.AST) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:` (only its body is left out: an else runs)."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, modules: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in modules]
    base = node.module or ""
    if node.level:
        here = importer.split(".") if is_package else importer.split(".")[:-1]
        up = here[: len(here) - (node.level - 1)]
        base = ".".join([*up, base] if base else up)
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in modules:  # from tallylight import ledger: the submodule
            out.append(sub)
        elif base in modules:  # from tallylight.speech.numbers import MAX_INT: the module
            out.append(base)
    return list(dict.fromkeys(out))


def import_edges(package_dir: Path) -> list[ImportEdge]:
    modules = package_modules(package_dir)
    names = set(modules)
    edges = []
    for importer, path in modules.items():
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
        top = {id(n) for n in tree.body}
        type_only = {id(n) for block in ast.walk(tree) if _is_type_checking_block(block)
                     for stmt in block.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in type_only:
                continue
            where = f"{path.relative_to(package_dir.parent)}:{node.lineno}"
            for imported in _resolve(node, importer, path.name == "__init__.py", names):
                if imported != importer:
                    edges.append(ImportEdge(importer, imported, where, id(node) not in top))
    return edges


def import_cycles(edges: list[ImportEdge]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.importer, set()).add(e.imported)
        graph.setdefault(e.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

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
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(groups)


def describe_cycles(edges: list[ImportEdge]) -> str:
    lines = []
    for group in import_cycles(edges):
        members = set(group)
        lines.append("cycle: " + ", ".join(group))
        for e in edges:
            if e.importer in members and e.imported in members:
                lines.append(f"  {e.where}: {e.importer} -> {e.imported}{' (inside a function)' if e.local else ''}")
    return "\n".join(lines)


def test_no_import_cycles_among_tallylight_modules():
    edges = import_edges(PACKAGE_DIR)
    assert len({e.importer for e in edges}) > 10, "the graph should hold the package's modules"
    report = describe_cycles(edges)
    assert not report, "modules import each other (let imports run one way):\n" + report


# The checkout's own packages beside the installed one: the bench (scripts/bench) and what it shares
# with the tests (testkit), and how many of their modules import another at least.
CHECKOUT_PACKAGES = {"bench": 10, "testkit": 1}


@pytest.mark.parametrize("name", sorted(CHECKOUT_PACKAGES))
def test_no_import_cycles_in_the_bench_or_testkit(name):
    edges = import_edges(PACKAGE_DIR.parents[1] / name)
    assert len({e.importer for e in edges}) >= CHECKOUT_PACKAGES[name], "the graph should hold the package's modules"
    report = describe_cycles(edges)
    assert not report, "modules import each other (let imports run one way):\n" + report


def _write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_a_cycle_hidden_in_a_function_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    _write(pkg, "__init__.py", "")
    _write(pkg, "a.py", "from pkg.b import helper\n")
    _write(pkg, "b.py", "def helper():\n    from pkg.a import thing\n    return thing\n")
    _write(pkg, "c.py", "from pkg import a\n")
    edges = import_edges(pkg)
    assert import_cycles(edges) == [["pkg.a", "pkg.b"]]
    assert "pkg/b.py:2: pkg.b -> pkg.a (inside a function)" in describe_cycles(edges)


def test_relative_and_package_imports_are_edges(tmp_path):
    pkg = tmp_path / "pkg"
    _write(pkg, "__init__.py", "")
    _write(pkg, "sub/__init__.py", "from .x import X\n")
    _write(pkg, "sub/x.py", "from pkg import sub\nX = 1\n")
    assert import_cycles(import_edges(pkg)) == [["pkg.sub", "pkg.sub.x"]]


def test_a_cycle_hidden_behind_an_import_marked_lazy_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    _write(pkg, "__init__.py", "")
    _write(pkg, "a.py", "from pkg.b import helper\n")
    _write(pkg, "b.py", f"def helper():\n    {LAZY_MARK} start time\n    from pkg.a import thing\n    return thing\n")
    _write(pkg, "c.py", f"def helper():\n    from pkg.a import thing  {LAZY_MARK} start time\n    return thing\n")
    edges = import_edges(pkg)
    assert import_cycles(edges) == [["pkg.a", "pkg.b"]]
    assert "pkg/b.py:3: pkg.b -> pkg.a (inside a function)" in describe_cycles(edges)
    assert ImportEdge("pkg.c", "pkg.a", "pkg/c.py:2", True) in edges  # marked on its own line: an edge too


def test_an_import_under_type_checking_is_not_an_edge(tmp_path):
    pkg = tmp_path / "pkg"
    _write(pkg, "__init__.py", "")
    _write(pkg, "a.py", "from pkg.b import helper\n")
    _write(pkg, "b.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import Thing\nelse:\n    from pkg import c\n")
    _write(pkg, "c.py", "")
    edges = import_edges(pkg)
    assert import_cycles(edges) == []
    assert [e.imported for e in edges if e.importer == "pkg.b"] == ["pkg.c"]  # the else runs: an edge


# tallylight.__main__ is left out: importing it runs the command line.
@pytest.mark.parametrize("module", sorted(m for m in package_modules(PACKAGE_DIR) if not m.endswith("__main__")))
def test_each_module_imports_alone_in_a_fresh_interpreter(module):
    # Alone, so that no other module has been imported first to hide an order-dependent cycle.
    run = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"import {module} failed on its own:\n{run.stderr[-2000:]}"
