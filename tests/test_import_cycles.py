"""No import cycles at module level anywhere under ``src/replens`` (read from the source with ``ast``).

Edges are the imports a module runs when it is imported: those at module level,
also inside ``if``/``try``/``with`` blocks, but not those under
``if TYPE_CHECKING:`` or inside functions. ``from pkg import name`` is an edge
to ``pkg`` (its ``__init__`` runs first) and, when ``pkg.name`` is a module, to
``pkg.name`` as well; ``import a.b`` is an edge to ``a.b``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (file, is a package)}`` of every module under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _module_level(block)
        elif isinstance(node, ast.With):
            yield from _module_level(node.body)


def _targets(node: ast.Import | ast.ImportFrom, package: str, modules: dict) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        bits = package.split(".")
        bits = bits[: len(bits) - (node.level - 1)]
        base = ".".join([*bits, base] if base else bits)
    out = [base]
    out += [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
    return out


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    """``{module: modules it imports at module level}``, restricted to modules under ``root``."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, is_pkg) in modules.items():
        package = name if is_pkg else name.rpartition(".")[0]
        for node in _module_level(ast.parse(path.read_text(encoding="utf-8")).body):
            graph[name] |= {t for t in _targets(node, package, modules) if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_checker_finds_a_cycle_through_a_package_init(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from pkg.a import x\n")
    (pkg / "a.py").write_text("from pkg import b\nx = 1\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n")
    (pkg / "c.py").write_text("def f():\n    import pkg.a\n")
    assert cycles(import_graph(tmp_path)) == [["pkg", "pkg.a"]]


def test_no_module_level_import_cycles_in_replens() -> None:
    graph = import_graph()
    assert "replens.report.html" in graph and len(graph) > 50
    assert cycles(graph) == []


def test_cli_start_up_imports_no_torchvision_lightly_or_dynamo() -> None:
    """``replens --help`` and every command start without torchvision, lightly or torch._dynamo (about 2.5 s of
    imports on a 2-core machine); they load when a command needs them."""
    import subprocess
    import sys

    code = ("import sys, replens.cli; "
            "print(','.join(m for m in ('torchvision', 'lightly', 'torch._dynamo', 'open_clip', 'timm') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "", out.stdout
