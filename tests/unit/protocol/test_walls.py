"""The protocol core stays sans-I/O (DESIGN.md section 1, "Walls")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ringcast.server.protocol

PACKAGE = Path(ringcast.server.protocol.__file__).parent
FORBIDDEN = {"socket", "time", "select", "selectors", "asyncio", "threading", "ssl"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


class TestSansIO:
    def test_no_module_imports_io_clocks_or_ringio(self) -> None:
        for path in sorted(PACKAGE.glob("*.py")):
            for name in imported_modules(path):
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
                assert not name.startswith("ringcast.ringio"), f"{path.name} imports {name}"
                assert not name.startswith("ringcast.server.") or name.startswith(
                    "ringcast.server.protocol"
                ), f"{path.name} imports the runtime: {name}"

    def test_importing_it_loads_no_socket_module(self) -> None:
        # PyJWT is imported only when a JWT key is configured: its JWKS client pulls in
        # urllib.request, hence socket and ssl.
        code = (
            "import sys, ringcast.server.protocol;"
            "print(sorted(m for m in ('socket', 'select', 'selectors', 'asyncio', 'ssl', 'jwt')"
            " if m in sys.modules))"
        )
        env_path = str(PACKAGE.parents[2])
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONPATH": env_path},
        )
        assert result.stdout.strip() == "[]"
