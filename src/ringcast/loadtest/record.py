"""What a run recorded, as the report reads it: what `client` hands to `report`.

The client keeps a `Tally` per kind of connection while connecting and makes
one `RunRecord` when the run is over; `report` turns the record into the
result. Neither of those two modules imports the other.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from ringcast.loadtest.options import Options
from ringcast.loadtest.procstat import ProcSample


@dataclass
class Tally:
    """The connections of one kind (subscribers, publishers...) asked for and opened."""

    requested: int = 0
    opened: int = 0
    refused: int = 0
    failed: Counter[str] = field(default_factory=Counter)      # by reason
    handshake_ns: list[int] = field(default_factory=list)      # per opened connection
    deflate: Counter[str] = field(default_factory=Counter)     # opened with permessage-
                                                               # deflate, by its parameters

    def state(self) -> dict[str, Any]:
        """Plain values, to cross a process boundary and `add` up."""
        return {"requested": self.requested, "opened": self.opened, "refused": self.refused,
                "failed": dict(self.failed), "handshake_ns": self.handshake_ns,
                "deflate": dict(self.deflate)}

    def add(self, state: dict[str, Any]) -> None:
        self.requested += state["requested"]
        self.opened += state["opened"]
        self.refused += state["refused"]
        self.failed.update(state["failed"])
        self.handshake_ns.extend(state["handshake_ns"])
        self.deflate.update(state["deflate"])


@dataclass(frozen=True)
class RunRecord:
    """One finished run. Durations are seconds; the publishing phase starts at 0."""

    options: Options
    engine: str                         # the client's I/O engine, and why that one
    started_at: float                   # wall clock, seconds since the epoch
    idle: bool                          # connections only, no messages
    source_addresses: int               # 127.0.0.x spread over; 0: none
    processes: int                      # client processes (a team when > 1)
    subscribers: Tally
    publishers: Tally
    connect_seconds: float
    sending_seconds: float              # until the last message was sent
    run_seconds: float                  # until the drain ended
    sent: int                           # messages
    reads: int                          # subscriber reads fed to the scanner
    counts: dict[str, int]              # the scanner's counters (`scanner.COUNT_NAMES`)
    delivery: HdrHistogram              # latency of every delivery, ns
    to_last: HdrHistogram               # latency of each message to its last subscriber, ns
    closed_by_server: dict[str, int]    # by kind of connection and how
    publish_errors: dict[str, int]      # HTTP publishing: by status or reason
    timeline: list[dict[str, float]]    # one point a second
    server: tuple[list[ProcSample], ...]    # per --server-pid: before connecting, once
                                            # connected, at the end
    client_cpu_ns: list[int]            # per client process, publishing and draining
    storm: dict[str, Any] | None        # `storm.merge_storms` of every process; None: none
    server_pids: list[int] = field(default_factory=list)   # what `server` samples: the
                                        # --server-pid ones and their children
    hold: tuple[float, list[ProcSample]] | None = None  # --hold: seconds held, and the
                                        # server samples at its end (its start: server[1])
    team: dict[str, Any] = field(default_factory=dict)   # monotonic ns: each process's
                                        # begin and all-connected, the go, the first publish
    binding: list[dict[str, Any]] = field(default_factory=list)  # per process: its source
                                        # pairs (`connector.PairPlan`) or the kernel's
    round_ns: list[int] = field(default_factory=list)    # --rounds: each round's time
