"""The load client raises its open-files limit to what its connections need, as the server
does (one function for both: ringcast.fdlimit, tested in tests/unit/test_fdlimit.py).

In a child process, whose limits the test may change freely.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest

from ringcast.fdlimit import FD_HEADROOM

CONNECTIONS = 3000
CHILD = f"""
import json, resource
from ringcast.loadtest.client import LoadTest, Options
resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
lt = LoadTest(Options(url="ws://127.0.0.1:9/x", connections={CONNECTIONS}, messages=1,
                      progress=False))
print(json.dumps([lt.max_conns, resource.getrlimit(resource.RLIMIT_NOFILE)[0]]))
lt.close()
"""


def test_a_low_soft_limit_is_raised_for_every_connection() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < CONNECTIONS * 2:
        pytest.skip(f"the hard open-files limit ({hard}) is too low to show it")
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         check=True, timeout=60)
    max_conns, soft = json.loads(out.stdout)
    assert max_conns > CONNECTIONS
    assert soft == max_conns + FD_HEADROOM
