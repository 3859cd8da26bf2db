"""Packaging metadata: the license as an SPDX expression with its file (PEP 639), which
setuptools reads without a deprecation warning from version 77 on."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement

from .helpers import REPO


def test_license_is_an_spdx_expression_with_its_file() -> None:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = meta["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    assert (REPO / "LICENSE").read_text().startswith("MIT License\n")
    (setuptools,) = [Requirement(r) for r in meta["build-system"]["requires"]
                     if Requirement(r).name == "setuptools"]
    assert "77" in setuptools.specifier and "76.9" not in setuptools.specifier, setuptools
