"""deploy/seccomp/make-profile.py: the engine's default profile plus io_uring, nothing else."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .helpers import REPO, missing

SCRIPT = REPO / "deploy" / "seccomp" / "make-profile.py"
IO_URING = ["io_uring_setup", "io_uring_enter", "io_uring_register"]
PODMAN_DEFAULT = Path("/usr/share/containers/seccomp.json")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=60, check=False)


def allowed_unconditionally(profile: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for rule in profile["syscalls"]:
        if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args") \
                and not any(rule.get("includes", {}).values()):
            out.update(rule["names"])
    return out


def mentioned_elsewhere(profile: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
    return [r for r in profile["syscalls"]
            if set(r.get("names", [])) & set(names) and r["names"] != names]


SYNTHETIC: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "architectures": ["SCMP_ARCH_X86_64"],
    "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "args": []},
        {"names": ["io_uring_setup", "bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
        {"names": ["io_uring_enter"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        {"name": "io_uring_register", "action": "SCMP_ACT_ERRNO"},
    ],
}


def test_derives_from_a_given_profile(tmp_path: Path) -> None:
    src = tmp_path / "default.json"
    src.write_text(json.dumps(SYNTHETIC))
    out = tmp_path / "out" / "io_uring.json"
    res = run(str(out), "--from", str(src))
    assert res.returncode == 0, res.stderr
    derived = json.loads(out.read_text())
    assert derived["defaultAction"] == "SCMP_ACT_ERRNO"
    assert derived["architectures"] == ["SCMP_ARCH_X86_64"]
    assert set(IO_URING) <= allowed_unconditionally(derived)
    assert not mentioned_elsewhere(derived, IO_URING)  # the denials are gone...
    rules = derived["syscalls"]
    assert {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1} in rules  # ...not bpf's
    assert rules[0] == SYNTHETIC["syscalls"][0]
    assert len(rules) == 3


def test_idempotent(tmp_path: Path) -> None:
    src = tmp_path / "default.json"
    src.write_text(json.dumps(SYNTHETIC))
    first, second = tmp_path / "1.json", tmp_path / "2.json"
    assert run(str(first), "--from", str(src)).returncode == 0
    assert run(str(second), "--from", str(first)).returncode == 0
    assert json.loads(first.read_text()) == json.loads(second.read_text())


@pytest.mark.parametrize("content", ["not json", "[]", '{"syscalls": []}'])
def test_refuses_what_is_not_a_profile(tmp_path: Path, content: str) -> None:
    src = tmp_path / "bad.json"
    src.write_text(content)
    res = run(str(tmp_path / "out.json"), "--from", str(src))
    assert res.returncode == 1
    assert "make-profile:" in res.stderr
    assert not (tmp_path / "out.json").exists()


def test_missing_source_is_explained(tmp_path: Path) -> None:
    res = run(str(tmp_path / "out.json"), "--from", str(tmp_path / "nope.json"))
    assert res.returncode == 1 and "cannot read" in res.stderr


def test_from_the_installed_podman_default() -> None:
    if not PODMAN_DEFAULT.exists():
        missing(f"{PODMAN_DEFAULT} is absent (installed with podman: "
                "golang-github-containers-common)")
    res = run("-")
    assert res.returncode == 0, res.stderr
    derived = json.loads(res.stdout)
    base = json.loads(PODMAN_DEFAULT.read_text())
    assert set(IO_URING) <= allowed_unconditionally(derived)
    assert not set(IO_URING) & allowed_unconditionally(base)  # the engine really blocks it
    assert derived["syscalls"][:-1] == [r for r in base["syscalls"]
                                        if not set(r.get("names", [])) & set(IO_URING)]
    assert {k: v for k, v in derived.items() if k != "syscalls"} == \
        {k: v for k, v in base.items() if k != "syscalls"}
