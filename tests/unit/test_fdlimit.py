"""raise_nofile: the soft open-files limit goes up to what the connections need, never down.

The server calls it for limits.max_connections, the load tester for its
connections. Each case runs in a child process, whose limits it may change freely.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ringcast.fdlimit import FD_HEADROOM

CHILD = """
import json, resource, sys
from ringcast.fdlimit import raise_nofile
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))
got = raise_nofile(int(sys.argv[3]))
print(json.dumps([list(got), list(resource.getrlimit(resource.RLIMIT_NOFILE))]))
"""


def _run(soft: int, hard: int, max_connections: int) -> tuple[tuple[int, int], tuple[int, int]]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(soft), str(hard),
                          str(max_connections)], capture_output=True, text=True, check=True,
                         timeout=30)
    (soft_now, needed), limits = json.loads(out.stdout)
    return (soft_now, needed), (limits[0], limits[1])


@pytest.mark.parametrize(("soft", "hard", "conns", "want_soft"), [
    (256, 4096, 1000, 1000 + FD_HEADROOM),   # raised to what is needed
    (256, 512, 1000, 512),                   # no further than the hard limit
    (4096, 4096, 1000, 4096),                # never lowered
], ids=["raised", "capped-by-hard", "never-lowered"])
def test_soft_limit_is_raised_to_what_max_connections_needs(
        soft: int, hard: int, conns: int, want_soft: int) -> None:
    (soft_now, needed), limits = _run(soft, hard, conns)
    assert needed == conns + FD_HEADROOM
    assert soft_now == want_soft
    assert limits == (want_soft, hard), "the process's limit is what raise_nofile reports"
