"""What may import what: the walls of DESIGN.md section 1, read from the source.

Every module of the package is parsed (never imported), and every import statement in it
is resolved to the module it names: absolute or relative, ``import a.b`` or
``from a import b`` (``b`` a submodule or a name defined in ``a``), at module level, under
``if TYPE_CHECKING:`` or inside a function. A wall counts every import, wherever it sits:
an import deferred to a function is still a dependency. The cycle check counts only what
runs when a module is loaded (module level, ``if TYPE_CHECKING:`` included: a type-only
import still says the two modules know each other), since a deferred import is the usual
way out of a cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import ringcast

SRC = Path(ringcast.__file__).parent.parent


@dataclass
class Module:
    name: str
    path: Path
    imports: set[str] = field(default_factory=set)  # every import, wherever it sits
    loaded: set[str] = field(default_factory=set)  # those that run when the module loads


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _at_load(tree: ast.Module) -> Iterator[ast.AST]:
    """The nodes that run when the module is loaded: everything but function bodies."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            stack.extend(ast.iter_child_nodes(node))


def _targets(node: ast.AST, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The modules an import statement imports (none for other nodes)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        package = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    # ``from a import b``: the submodule a.b when there is one, else a name of a.
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def read_package(root: Path, package: str) -> dict[str, Module]:
    """Every module of ``package`` (a directory or a single file under ``root``) with what
    it imports."""
    where = root / package.replace(".", "/")
    single = where.with_suffix(".py")
    paths = sorted(where.rglob("*.py")) if where.is_dir() else [single] if single.is_file() else []
    modules = {module_name(root, path): Module(module_name(root, path), path) for path in paths}
    known = {module_name(root, path) for path in root.rglob("*.py")}  # what a.b can name
    for name, module in modules.items():
        tree = ast.parse(module.path.read_text(), str(module.path))
        is_package = module.path.name == "__init__.py"
        at_load = {id(node) for node in _at_load(tree)}
        for node in ast.walk(tree):
            targets = _targets(node, name, is_package, known)
            module.imports.update(targets)
            if id(node) in at_load:
                module.loaded.update(targets)
    return modules


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def import_cycles(modules: dict[str, Module]) -> list[frozenset[str]]:
    """The sets of modules that import each other at load time, directly or not (the
    strongly connected components of more than one module, or of one importing itself)."""
    graph = {name: sorted(m.loaded & modules.keys()) for name, m in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[frozenset[str]] = []

    def visit(name: str) -> None:  # Tarjan's algorithm
        index[name] = low[name] = len(index)
        stack.append(name)
        for other in graph[name]:
            if other not in index:
                visit(other)
                low[name] = min(low[name], low[other])
            elif other in stack:
                low[name] = min(low[name], index[other])
        if low[name] == index[name]:
            component = {stack.pop()}
            while name not in component:
                component.add(stack.pop())
            if len(component) > 1 or name in graph[name]:
                cycles.append(frozenset(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return cycles


def violations(package: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()
               ) -> list[str]:
    """``module imports name`` for every import of a module of ``package`` that falls in
    ``forbidden`` and not in ``allowed``. Fails if the package has no modules."""
    modules = read_package(SRC, package)
    assert package in modules, f"no module {package} under {SRC}"
    return sorted(
        f"{name} imports {target}"
        for name, module in modules.items()
        for target in module.imports
        if any(within(target, f) for f in forbidden) and not any(within(target, a)
                                                                 for a in allowed)
    )


class TestDesignSection1Walls:
    def test_ringio_imports_nothing_of_the_rest_of_ringcast(self) -> None:
        # "ringio imports nothing from the rest of ringcast. It could be published alone."
        assert violations("ringcast.ringio", ("ringcast",), allowed=("ringcast.ringio",)) == []

    def test_config_knows_nothing_of_the_server(self) -> None:
        # "config knows nothing of the server; the server receives a Config."
        forbidden = ("ringcast.server", "ringcast.ringio", "ringcast.loadtest", "ringcast.cli")
        assert violations("ringcast.config", forbidden) == []

    def test_loadtest_uses_no_server_internals(self) -> None:
        # "loadtest may use ringio, never server internals."
        assert violations("ringcast.loadtest", ("ringcast.server", "ringcast.cli")) == []

    def test_the_protocol_imports_no_io_no_clock_no_ringio_and_no_runtime(self) -> None:
        # "The sans-I/O protocol modules [...] import no ringio, no socket, no time."
        io_and_clocks = ("socket", "time", "select", "selectors", "asyncio", "threading", "ssl")
        forbidden = (*io_and_clocks, "ringcast.ringio", "ringcast.server")
        allowed = ("ringcast.server.protocol",)
        assert violations("ringcast.server.protocol", forbidden, allowed) == []

    def test_importing_the_protocol_loads_no_socket_module(self) -> None:
        # PyJWT is imported only when a JWT key is configured: its JWKS client pulls in
        # urllib.request, hence socket and ssl.
        code = (
            "import sys, ringcast.server.protocol;"
            "print(sorted(m for m in ('socket', 'select', 'selectors', 'asyncio', 'ssl', 'jwt')"
            " if m in sys.modules))"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True, env={"PYTHONPATH": str(SRC)})
        assert result.stdout.strip() == "[]"


class TestNoImportCyclesInTheServer:
    def test_no_module_of_the_server_imports_one_that_imports_it(self) -> None:
        cycles = import_cycles(read_package(SRC, "ringcast.server"))
        assert [sorted(c) for c in cycles] == []


class TestReadingImports:
    """The reader the walls stand on, on a package made for it."""

    @pytest.fixture
    def root(self, tmp_path: Path) -> Path:
        files = {
            "pkg/__init__.py": "from .a import A\n",
            "pkg/a.py": (
                "from __future__ import annotations\n"
                "from typing import TYPE_CHECKING\n"
                "import os.path\n"
                "from pkg import b\n"
                "from pkg.sub import thing\n"
                "if TYPE_CHECKING:\n"
                "    from pkg.c import C\n"
                "class A:\n"
                "    from pkg.sub import deep as _deep\n"
                "    def f(self) -> None:\n"
                "        from . import lazy\n"
            ),
            "pkg/b.py": "",
            "pkg/c.py": "from pkg.a import A\n",
            "pkg/lazy.py": "from pkg import a\n",
            "pkg/sub/__init__.py": "thing = 1\n",
            "pkg/sub/deep.py": "from .. import b\nfrom ..sub import thing\n",
        }
        for name, text in files.items():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(text)
        return tmp_path

    def test_every_import_is_resolved_to_a_module(self, root: Path) -> None:
        modules = read_package(root, "pkg")
        assert sorted(modules) == ["pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.lazy", "pkg.sub",
                                   "pkg.sub.deep"]
        a = modules["pkg.a"]
        assert a.imports == {"__future__", "typing", "os.path", "pkg.b", "pkg.sub", "pkg.c",
                             "pkg.sub.deep", "pkg.lazy"}
        assert a.imports - a.loaded == {"pkg.lazy"}  # only the function's import waits
        assert modules["pkg"].loaded == {"pkg.a"}
        assert modules["pkg.sub.deep"].loaded == {"pkg.b", "pkg.sub"}

    def test_cycles_count_type_checking_imports_but_not_deferred_ones(self, root: Path) -> None:
        # a -> c under TYPE_CHECKING, c -> a: a cycle. a -> lazy in a function: none.
        assert import_cycles(read_package(root, "pkg")) == [frozenset({"pkg.a", "pkg.c"})]
