"""How many connections a server process takes: with "auto", what it can hold; with a
number, that number and the open files it needs. Each case runs in a child process,
whose limits it may change freely."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ringcast.fdlimit import FD_HEADROOM
from ringcast.server.capacity import MEMORY_PER_CONNECTION, RESERVED_IDS
from ringcast.server.clients import REFUSALS_IN_FLIGHT

CHILD = """
import dataclasses, json, resource, sys
from pathlib import Path
from ringcast.config import config_from_mapping
from ringcast.server.capacity import plan_capacity
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))
config = config_from_mapping(json.loads(sys.argv[3]))
got = plan_capacity(config, Path(sys.argv[4]))
print(json.dumps([dataclasses.asdict(got), list(resource.getrlimit(resource.RLIMIT_NOFILE))]))
"""
OWN = REFUSALS_IN_FLIGHT + RESERVED_IDS  # what one worker's loop holds beyond clients


def plan(tmp_path: Path, soft: int, hard: int, memory_kib: int,
         **sections: dict[str, object]) -> tuple[dict[str, object], list[int]]:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal: 99999999 kB\nMemAvailable: {memory_kib} kB\n")
    out = subprocess.run([sys.executable, "-c", CHILD, str(soft), str(hard),
                          json.dumps(sections), str(meminfo)],
                         capture_output=True, text=True, check=True, timeout=30)
    capacity, limits = json.loads(out.stdout)
    return capacity, limits


def test_auto_takes_every_file_the_hard_limit_allows(tmp_path: Path) -> None:
    capacity, limits = plan(tmp_path, 1024, 20_000, 24 << 20)
    assert limits == [20_000, 20_000]  # the soft limit was raised to the hard one
    assert capacity["connections"] == 20_000 - FD_HEADROOM - OWN
    assert capacity["loop_ids"] == 20_000 - FD_HEADROOM
    assert capacity["bound"] == "the open-files limit (20000)"
    assert capacity["files_short"] is False


def test_auto_takes_no_more_than_memory_allows(tmp_path: Path) -> None:
    memory_kib = 4096  # 4 MiB: room for 512 connections of 8 KiB
    capacity, _ = plan(tmp_path, 1024, 20_000, memory_kib)
    assert capacity["connections"] == (memory_kib << 10) // MEMORY_PER_CONNECTION == 512
    assert capacity["bound"] == "memory (4 MiB available, 1 worker)"


def test_auto_shares_memory_among_workers(tmp_path: Path) -> None:
    capacity, _ = plan(tmp_path, 1024, 20_000, 4096, server={"workers": 4})
    assert capacity["connections"] == 128
    assert capacity["bound"] == "memory (4 MiB available, 4 workers)"
    assert capacity["loop_ids"] == 128 + OWN + 2 * 3  # links to the three other workers


def test_a_number_is_taken_as_it_is(tmp_path: Path) -> None:
    capacity, limits = plan(tmp_path, 1024, 20_000, 24 << 20,
                            limits={"max_connections": 5000})
    assert capacity["connections"] == 5000
    assert capacity["bound"] == "limits.max_connections"
    assert limits[0] == 5000 + OWN + FD_HEADROOM  # raised as far as it needs, no further
    assert capacity["files_short"] is False


@pytest.mark.parametrize("hard", [2048])
def test_a_number_past_the_hard_limit_is_flagged(tmp_path: Path, hard: int) -> None:
    capacity, limits = plan(tmp_path, 1024, hard, 24 << 20, limits={"max_connections": 5000})
    assert capacity["files_short"] is True
    assert capacity["nofile"] == limits[0] == hard
