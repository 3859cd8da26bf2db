"""The load client's modules import one another in one direction only: no cycle.

Read from the source with the reader of tests/unit/test_walls.py. The client and
the report share what a run recorded through `record`, not each other.
"""

from __future__ import annotations

from tests.unit.test_walls import SRC, import_cycles, read_package


def test_no_import_cycle_in_the_loadtest() -> None:
    assert import_cycles(read_package(SRC, "ringcast.loadtest")) == []
