"""A connection storm: a fraction of the subscribers dropped at once, mid-run, while
publishing goes on; then how long until every one of them is back (its 101 read) and
receiving (an intact message published after it came back has reached it).

This is what a server meets after a deploy, a worker restart or a network blip: every
client reconnecting at once. Dropped subscribers reconnect at once (the usual
``--connect-concurrency`` in flight); a reconnect that fails is tried again after
`RETRY_SECONDS` and a little jitter, as a real client would, until the run ends.
Messages published while a subscriber is away are not faults: the scanner stops
expecting them at the drop and expects again from its new join.

The times are CLOCK_MONOTONIC nanoseconds, the same in every process of a run, so that
the storms of several client processes (`team`) merge into one: the earliest drop,
the latest back, the latest first message.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RETRY_SECONDS", "Storm", "StormPlan", "merge_storms", "parse_storm"]

RETRY_SECONDS = 0.1

_PLAN = re.compile(r"(?P<f>\d+(?:\.\d*)?|\.\d+)(?P<pct>%?)@(?P<at>\d+(?:\.\d*)?|\.\d+)s?")


@dataclass(frozen=True)
class StormPlan:
    fraction: float             # of the subscribers open at the time, (0, 1]
    at: float                   # seconds into the publishing phase


def parse_storm(text: str) -> StormPlan:
    """``FRACTION@SECONDS``: ``1@5`` (all, 5 s in), ``0.25@10`` or ``25%@10``."""
    m = _PLAN.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"--storm {text!r}: expected FRACTION@SECONDS, e.g. 1@5 (drop every "
                         "subscriber 5 s into the run) or 25%@10")
    fraction = float(m["f"]) / (100.0 if m["pct"] else 1.0)
    if not 0 < fraction <= 1:
        raise ValueError(f"--storm {text!r}: the fraction must be in (0, 1] (or (0%, 100%])")
    return StormPlan(fraction, float(m["at"]))


@dataclass
class Storm:
    """One process's storm, as it happens."""

    plan: StormPlan
    t_drop_ns: int = 0                  # 0: not yet
    dropped: int = 0
    back: int = 0
    t_back_ns: int = 0                  # 0: not all back yet
    receiving_base: int = 0             # the scanner's `receiving` count at the drop
    receiving: int = 0
    t_receiving_ns: int = 0             # 0: not all receiving yet
    failed: Counter[str] = field(default_factory=Counter)     # reconnect attempts
    reconnect_ns: list[int] = field(default_factory=list)     # drop to each 101

    def dropped_now(self, count: int, now_ns: int, receiving_count: int) -> None:
        self.t_drop_ns, self.dropped, self.receiving_base = now_ns, count, receiving_count
        if count == 0:
            self.t_back_ns = self.t_receiving_ns = now_ns

    def came_back(self, now_ns: int) -> None:
        self.back += 1
        self.reconnect_ns.append(now_ns - self.t_drop_ns)
        if self.back == self.dropped:
            self.t_back_ns = now_ns

    def check_receiving(self, receiving_count: int, now_ns: int) -> None:
        """Called with the scanner's `receiving` count; all receiving once every
        dropped subscriber is back and has had a message since."""
        if self.t_receiving_ns or not self.t_drop_ns:
            return
        self.receiving = min(self.dropped, receiving_count - self.receiving_base)
        if self.t_back_ns and self.receiving >= self.dropped:
            self.t_receiving_ns = now_ns

    @property
    def active(self) -> bool:
        """Dropped and not yet all receiving."""
        return bool(self.t_drop_ns) and not self.t_receiving_ns

    def state(self) -> dict[str, Any]:
        """JSON-able, for `merge_storms` (and from a follower process to the lead)."""
        return {"at": self.plan.at, "fraction": self.plan.fraction,
                "t_drop_ns": self.t_drop_ns, "dropped": self.dropped, "back": self.back,
                "t_back_ns": self.t_back_ns, "receiving": self.receiving,
                "t_receiving_ns": self.t_receiving_ns, "failed": dict(self.failed),
                "reconnect_ns": self.reconnect_ns}


def merge_storms(states: list[dict[str, Any]]) -> dict[str, Any]:
    """One storm from every process's `Storm.state`: counts add up, the drop is the
    earliest, back and receiving the latest (0 if any process is not there)."""
    drops = [s["t_drop_ns"] for s in states if s["t_drop_ns"]]
    out: dict[str, Any] = {"at": states[0]["at"], "fraction": states[0]["fraction"]}
    out["t_drop_ns"] = min(drops) if drops else 0
    for key in ("dropped", "back", "receiving"):
        out[key] = sum(s[key] for s in states)
    for key in ("t_back_ns", "t_receiving_ns"):
        ends = [s[key] for s in states]
        out[key] = max(ends) if drops and all(ends) else 0
    failed: Counter[str] = Counter()
    for s in states:
        failed.update(s["failed"])
    out["failed"] = dict(failed)
    out["reconnect_ns"] = [ns for s in states for ns in s["reconnect_ns"]]
    return out
