"""`scripts/setup`, as `scripts/serve` runs it, on a copy of this checkout with no venv: it
installs what the server needs and not the test tool chain, installs it once, and again only
when a build input changes. Needs the network (pip), like the script itself."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .helpers import REPO

pytestmark = pytest.mark.slow

# What a checkout holds that the copy must not: build products, caches, the venv.
LEFT_OUT = shutil.ignore_patterns(".git", ".venv", "bench", "build", "*.so", "*.o",
                                  "__pycache__", "*.egg-info", ".mypy_cache", ".ruff_cache",
                                  ".hypothesis", ".pytest_cache")
TEST_TOOLS = ("pytest", "mypy", "ruff", "hypothesis", "matplotlib")


def setup(checkout: Path, *args: str) -> tuple[float, str]:
    """Run scripts/setup; how long it took and what it said."""
    t0 = time.monotonic()
    res = subprocess.run(["bash", "scripts/setup", *args], cwd=checkout, capture_output=True,
                         text=True, timeout=900, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    return time.monotonic() - t0, res.stderr


def installed(checkout: Path) -> set[str]:
    res = subprocess.run([str(checkout / ".venv/bin/python"), "-m", "pip", "list",
                          "--format=freeze"], capture_output=True, text=True, timeout=60,
                         check=True)
    return {line.split("==")[0].lower() for line in res.stdout.splitlines()}


def test_setup_installs_the_server_once(tmp_path: Path) -> None:
    checkout = tmp_path / "ringcast"
    shutil.copytree(REPO, checkout, ignore=LEFT_OUT)

    _, said = setup(checkout)
    assert "setup: installing ringcast into .venv" in said, said
    packages = installed(checkout)
    assert "ringcast" in packages and not packages & set(TEST_TOOLS), packages
    version = subprocess.run([str(checkout / ".venv/bin/ringcast"), "--version"],
                             capture_output=True, text=True, timeout=30, check=True)
    assert version.stdout.startswith("ringcast ")

    took, said = setup(checkout)
    assert said == "" and took < 5, f"a second start installed again ({took:.1f}s): {said}"

    with (checkout / "pyproject.toml").open("a") as f:
        f.write("\n# changed\n")
    _, said = setup(checkout)
    assert "setup: installing ringcast into .venv" in said, "a changed pyproject.toml"
