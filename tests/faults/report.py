"""Numbers a fault test measured, for docs/reliability.md.

`record` prints one ``RESULT`` line (visible with ``-rA`` or ``-s``) and, when
``RINGCAST_FAULTS_REPORT`` names a file, appends the numbers to it as a JSON line.
"""

from __future__ import annotations

import json
import os
import time


def record(test: str, backend: str, **numbers: object) -> None:
    doc = {"test": test, "backend": backend, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
           "loadavg_1m": round(os.getloadavg()[0], 2), **numbers}
    print("RESULT " + json.dumps(doc))
    path = os.environ.get("RINGCAST_FAULTS_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(doc) + "\n")
