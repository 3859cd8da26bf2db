#!/usr/bin/env python3
"""``ringcast serve`` with every cyclic garbage collection counted and timed.

The arguments are ``ringcast``'s (``serve --port 8080 ...``). At exit (SIGTERM drains
and stops the server as usual) it writes, to ``--gc-json`` (default
bench/results/tmp/gc.json), the collections of each generation made while the server
served (from the moment ``ringcast serve`` set the collector up for serving;
``startup`` holds the ones before), their count and their total seconds, and the
thresholds in force. ``--python-default`` serves with Python's own thresholds instead,
for comparison:

    .venv/bin/python bench/gc_serve.py serve --port 8080 &
    bench/results/tmp/storm connect --port 8080 -n 10000 ...   # the load
    kill -TERM %1; cat bench/results/tmp/gc.json
"""

from __future__ import annotations

import atexit
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

import ringcast.cli

OUT = Path(__file__).resolve().parent / "results" / "tmp" / "gc.json"


class Recorder:
    def __init__(self) -> None:
        self.phases: dict[str, dict[int, list[float]]] = {"startup": {}, "serving": {}}
        self.serving = False
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
            return
        counts = self.phases["serving" if self.serving else "startup"]
        entry = counts.setdefault(info["generation"], [0, 0.0])
        entry[0] += 1
        entry[1] += time.perf_counter() - self._start

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        result: dict[str, object] = {
            phase: {str(gen): {"collections": int(n), "seconds": round(s, 6)}
                    for gen, (n, s) in sorted(counts.items())}
            for phase, counts in self.phases.items()}
        result["thresholds"] = list(gc.get_threshold())
        path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    out = OUT
    if "--gc-json" in sys.argv:
        at = sys.argv.index("--gc-json")
        out = Path(sys.argv[at + 1])
        del sys.argv[at : at + 2]
    python_default = "--python-default" in sys.argv
    if python_default:
        sys.argv.remove("--python-default")
    recorder = Recorder()
    setup = ringcast.cli._collect_for_serving  # (the step measured)

    def collect_for_serving() -> None:
        if not python_default:
            setup()
        recorder.serving = True

    ringcast.cli._collect_for_serving = collect_for_serving
    gc.callbacks.append(recorder)
    atexit.register(recorder.write, out)
    sys.exit(ringcast.cli.main())
